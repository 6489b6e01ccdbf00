"""The frozen, content-hashed statistics artifact a feature set's transforms read."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transforms.atomic import atomic_file
from transforms.errors import ArtifactError

FORMAT_VERSION = 1


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces, floats as shortest repr)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class StatisticsArtifact:
    """Analyzer values by analyzer key, e.g. ``{"mean(amount)": 42.5}``.

    ``content_hash`` covers the feature set name and the values only, so the same data
    gives the same hash whichever engine computed it and whenever.
    """

    feature_set: str
    values: dict[str, Any]
    engine: str = "python"
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @property
    def content_hash(self) -> str:
        body = {"format": FORMAT_VERSION, "feature_set": self.feature_set, "values": self.values}
        return hashlib.sha256(canonical_json(body)).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "feature_set": self.feature_set,
            "content_hash": self.content_hash,
            "engine": self.engine,
            "created_at": self.created_at,
            "values": self.values,
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half an artifact."""
        path = Path(path)
        with atomic_file(path) as fh:
            fh.write(json.dumps(self.to_json(), indent=2, sort_keys=True).encode() + b"\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> StatisticsArtifact:
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ArtifactError(f"statistics artifact {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"statistics artifact {path} is not valid JSON: {exc}") from None
        return cls.from_json(raw, source=str(path))

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str = "artifact") -> StatisticsArtifact:
        try:
            if raw["format"] != FORMAT_VERSION:
                raise ArtifactError(f"{source}: format {raw['format']} is not {FORMAT_VERSION}")
            art = cls(raw["feature_set"], raw["values"], raw.get("engine", "?"), raw["created_at"])
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{source}: missing field {exc}") from None
        if raw.get("content_hash") not in (None, art.content_hash):
            raise ArtifactError(
                f"{source}: content hash {raw['content_hash'][:12]} does not match its values "
                f"({art.content_hash[:12]}); the file was edited or corrupted"
            )
        return art
