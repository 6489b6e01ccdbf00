"""The serving manifest: what the online server needs from the feature repo, as JSON.

``skewless apply`` writes it next to ``feature_store.yaml`` when it registers the repo in
Feast; the server reads it instead of Feast's registry so it never imports Feast (about
10 s) and knows the frozen artifact hash and transform fingerprints registered for each
FeatureService.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transforms.atomic import atomic_file
from transforms.errors import ArtifactError

MANIFEST_NAME = "skewless_manifest.json"


@dataclass(frozen=True)
class ViewSpec:
    """A Feast FeatureView as materialized in Redis."""

    name: str
    entities: dict[str, str]  # join key -> value type ("int64", "string")
    features: dict[str, str]  # feature -> value type ("int64", "double", "string", "bool")
    ttl_seconds: int  # 0 = no expiry


@dataclass(frozen=True)
class RequestTransformSpec:
    """Request-time transforms of one feature set (a Feast OnDemandFeatureView)."""

    name: str  # the on-demand feature view name
    feature_set: str  # "module:attribute" of the FeatureSet
    artifact_path: str  # relative to the repo
    artifact_hash: str
    fingerprints: dict[str, str]  # transform -> fingerprint
    request_schema: dict[str, str]  # request field -> type name ("float64", ...)
    view_inputs: dict[str, str]  # transform input -> "view:feature" it reads
    # transform input -> "window set:feature" it reads, as of the request time
    window_inputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    """A Feast FeatureService: the features a model version reads, in order."""

    name: str
    features: list[str]  # "view:feature" references, request-time ones included
    artifact_hashes: dict[str, str] = field(default_factory=dict)  # feature set -> hash
    fingerprints: dict[str, str] = field(default_factory=dict)  # transform -> fingerprint


@dataclass(frozen=True)
class WindowSetSpec:
    """A WindowSet served from the online window state (:mod:`store.window_state`): its
    features are read as ``<name>:<feature>`` and its events pushed as ``<name>``."""

    name: str
    window_set: str  # "module:attribute" of the WindowSet in the project's definitions
    entities: dict[str, str]  # join key -> key type ("int64", "string")
    features: dict[str, str]  # feature -> type name ("int64", "float64", "list<float64>")
    event_timestamp: str
    event_id: str | None
    max_window_micros: int
    grace_micros: int
    source: str = ""  # the raw events offline (Parquet path or URI), "" when not known


@dataclass(frozen=True)
class Manifest:
    project: str
    entity_key_serialization_version: int
    views: dict[str, ViewSpec]
    request_transforms: dict[str, RequestTransformSpec]
    services: dict[str, ServiceSpec]
    redis_connection_string: str = "127.0.0.1:6379"
    root: str = field(default="", compare=False)  # the project directory it was loaded from
    window_sets: dict[str, WindowSetSpec] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("root")
        return out

    def transform_reads(self, name: str) -> list[tuple[str, str, str]]:
        """What the request-time set ``name`` reads besides the request, in input order:
        ``(kind, view or window set, feature)`` with kind ``"view"`` or ``"window"`` (a
        window as of the request time). The server reads them without returning those the
        service does not list, and training sets compute them the same way; ArtifactError
        when one names no feature of this manifest."""
        rt = self.request_transforms[name]
        out: list[tuple[str, str, str]] = []
        sources: tuple[tuple[str, dict[str, str], Mapping[str, Any]], ...] = (
            ("view", rt.view_inputs, self.views),
            ("window", rt.window_inputs, self.window_sets),
        )
        for kind, inputs, known in sources:
            for inp, ref in inputs.items():
                src, _, feat = ref.partition(":")
                spec = known.get(src)
                if spec is None or feat not in spec.features:
                    raise ArtifactError(f"'{name}': input {inp} reads unknown {ref}")
                out.append((kind, src, feat))
        return out

    def feature_set(self, spec: RequestTransformSpec) -> Any:
        """The FeatureSet a request-time view runs, imported from the project."""
        from transforms.modules import resolve_feature_set

        return resolve_feature_set(spec.feature_set, self.root or None)

    def artifact_file(self, spec: RequestTransformSpec) -> Path:
        """Its statistics artifact (the manifest records it relative to the project)."""
        return Path(self.root or ".") / spec.artifact_path

    def save(self, repo: str | Path) -> Path:
        """Write atomically into ``repo`` (temp file + rename)."""
        path = Path(repo) / MANIFEST_NAME
        with atomic_file(path, "w") as fh:
            json.dump(self.to_json(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        return path

    @classmethod
    def load(cls, repo: str | Path) -> Manifest:
        path = Path(repo) / MANIFEST_NAME
        try:
            raw = json.loads(path.read_text())
            return cls(
                project=raw["project"],
                entity_key_serialization_version=raw["entity_key_serialization_version"],
                views={k: ViewSpec(**v) for k, v in raw["views"].items()},
                request_transforms={
                    k: RequestTransformSpec(**v) for k, v in raw["request_transforms"].items()
                },
                services={k: ServiceSpec(**v) for k, v in raw["services"].items()},
                redis_connection_string=raw.get("redis_connection_string", "127.0.0.1:6379"),
                root=str(Path(repo).resolve()),
                window_sets={k: WindowSetSpec(**v) for k, v in raw.get("window_sets", {}).items()},
            )
        except FileNotFoundError:
            raise ArtifactError(
                f"{path} does not exist; run `skewless apply` on the feature repo first"
            ) from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path} is not a valid skewless manifest: {exc}") from None
