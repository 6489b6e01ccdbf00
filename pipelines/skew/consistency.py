"""Online/offline consistency: recompute every logged vector offline and compare bit for bit.

For each logged request (time ``T``) the offline side is what a training set would hold for
it: view features from the latest offline row strictly before ``T`` within the view TTL,
then the request-time transforms with the current code and artifact
(:func:`pipelines.training_data.model_inputs`, the function training sets are built with).
Floats match when their bits are equal; two nulls match.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from store.manifest import Manifest
from transforms.errors import SchemaError

MAX_EXAMPLES = 20


def read_logs(log_dir: str | Path) -> pa.Table:
    """Every feature-log Parquet file under ``log_dir`` (hidden/temporary files skipped)."""
    root = Path(log_dir)
    if not root.is_dir():
        raise SchemaError(f"--log {root} is not a directory")
    files = sorted(
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise SchemaError(f"--log {root} holds no feature-log Parquet files")
    try:
        table = ds.dataset([str(f) for f in files], format="parquet").to_table()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        # files from different services or versions: unify their schemas one by one
        import pyarrow.parquet as pq

        try:
            table = pa.concat_tables(
                [pq.read_table(f) for f in files], promote_options="permissive"
            )
        except Exception:
            raise SchemaError(f"--log {root}: unreadable feature logs: {exc}") from None
    for col in ("request_ts", "service"):
        if col not in table.column_names:
            raise SchemaError(f"--log {root}: feature logs lack the '{col}' column")
    return table


@dataclass
class FeatureConsistency:
    """One feature's online vs offline comparison."""

    name: str
    kind: str  # "view", "window" or "transform"
    source: str  # view, window set or request-time feature set
    rows: int = 0
    exact: int = 0
    missing: int = 0  # served null, offline has a value
    extra: int = 0  # served a value, offline null
    differ: int = 0  # both present, different bits
    abs_diff_sum: float = 0.0
    rel_diff_sum: float = 0.0
    deltas: list[float] = field(default_factory=list)
    causes: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exact_match_rate(self) -> float:
        return self.exact / self.rows if self.rows else 1.0

    @property
    def mean_abs_diff(self) -> float | None:
        return self.abs_diff_sum / self.differ if self.differ else None

    @property
    def mean_rel_diff(self) -> float | None:
        return self.rel_diff_sum / self.differ if self.differ else None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "rows": self.rows,
            "exact": self.exact,
            "exact_match_rate": self.exact_match_rate,
            "mismatches": self.rows - self.exact,
            "missing": self.missing,
            "extra": self.extra,
            "differ": self.differ,
            "mean_abs_diff": self.mean_abs_diff,
            "mean_rel_diff": self.mean_rel_diff,
            "causes": dict(sorted(self.causes.items())),
            "examples": self.examples,
        }


@dataclass
class Consistency:
    """All features of one service: served and offline tables, per-feature results."""

    service: str
    served: pa.Table
    offline: pa.Table
    features: dict[str, FeatureConsistency]
    mismatch_masks: dict[str, np.ndarray]

    @property
    def cells(self) -> int:
        return sum(f.rows for f in self.features.values())

    @property
    def exact_match_rate(self) -> float:
        cells = self.cells
        return sum(f.exact for f in self.features.values()) / cells if cells else 1.0

    @property
    def causes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.features.values():
            total.update(f.causes)
        return total


def entity_frame(
    log: pa.Table, manifest: Manifest, service: str
) -> tuple[pa.Table, list[str], list[str]]:
    """The log's keys, ``request_ts`` and request data: the offline recomputation's input."""
    spec = manifest.services[service]
    keys: list[str] = []
    request: list[str] = []
    for ref in spec.features:
        view, _, _ = ref.partition(":")
        if view in manifest.views:
            keys += [k for k in manifest.views[view].entities if k not in keys]
        elif view in manifest.window_sets:
            keys += [k for k in manifest.window_sets[view].entities if k not in keys]
        elif view in manifest.request_transforms:
            rt = manifest.request_transforms[view]
            request += [k for k in rt.request_schema if k not in request and k not in keys]
    request = [k for k in request if k not in keys]
    times = ["request_ts", *(["window_ts"] if "window_ts" in log.column_names else [])]
    missing = [c for c in (*keys, *request) if c not in log.column_names]
    if missing:
        raise SchemaError(f"feature logs of '{service}' lack columns {missing}")
    return log.select([*keys, *times, *request]), keys, request


def feature_sources(manifest: Manifest, service: str) -> dict[str, tuple[str, str]]:
    """Output name -> ("view" | "window" | "transform", view, window set or request-time
    set)."""
    out = {}
    for ref in manifest.services[service].features:
        src, _, feat = ref.partition(":")
        kind = (
            "view"
            if src in manifest.views
            else "window"
            if src in manifest.window_sets
            else "transform"
        )
        out[feat] = (kind, src)
    return out


def recompute(repo: str | Path, log: pa.Table, service: str) -> pa.Table:
    """Offline model inputs for every logged row, in log order."""
    from pipelines.training_data import model_inputs

    manifest = Manifest.load(repo)
    entities, _, _ = entity_frame(log, manifest, service)
    window_time = "window_ts" if "window_ts" in entities.column_names else None
    offline, _ = model_inputs(
        repo, entities, service, timestamp_column="request_ts", window_time_column=window_time
    )
    return offline


def _bits(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(comparable values, valid mask): floats as int64 bit patterns, others as objects."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_floating(col.type):
        x = np.asarray(col.cast(pa.float64()).fill_null(0.0).to_numpy(), dtype=np.float64)
        return x.view(np.int64), valid
    if pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
        return np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(), dtype=np.int64), valid
    return np.asarray(col.to_pylist(), dtype=object), valid


def _floats(col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return np.asarray(
            pc.cast(col, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )
    return None


def compare(
    service: str, served: pa.Table, offline: pa.Table, sources: dict[str, tuple[str, str]]
) -> Consistency:
    """Per-feature exact match, missing/extra, differences and their deltas."""
    features: dict[str, FeatureConsistency] = {}
    masks: dict[str, np.ndarray] = {}
    n = served.num_rows
    for name, (kind, src) in sources.items():
        fc = FeatureConsistency(name, kind, src, rows=n)
        features[name] = fc
        if name not in served.column_names:
            fc.missing = n
            masks[name] = np.ones(n, dtype=bool)
            continue
        s_col, o_col = served.column(name), offline.column(name)
        s_val, s_ok = _bits(s_col)
        o_val, o_ok = _bits(o_col)
        same_type = s_val.dtype == o_val.dtype
        equal = (s_ok == o_ok) & (~s_ok | ((s_val == o_val) if same_type else False))
        fc.exact = int(equal.sum())
        fc.missing = int((~s_ok & o_ok).sum())
        fc.extra = int((s_ok & ~o_ok).sum())
        both = s_ok & o_ok & ~equal
        fc.differ = int(both.sum())
        masks[name] = ~equal
        sf, of = _floats(s_col), _floats(o_col)
        if fc.differ and sf is not None and of is not None:
            d = sf[both] - of[both]
            scale = np.maximum(np.abs(of[both]), np.finfo(np.float64).tiny)
            finite = np.isfinite(d)
            fc.deltas = [float(x) for x in d[finite]]
            fc.abs_diff_sum = float(np.abs(d[finite]).sum())
            fc.rel_diff_sum = float((np.abs(d[finite]) / scale[finite]).sum())
    return Consistency(service, served, offline, features, masks)


def logged_json(served: pa.Table, column: str) -> list[dict[str, str] | None]:
    """A JSON column of the log (``fingerprints``, ``artifact_hashes``) parsed per row."""
    if column not in served.column_names:
        return [None] * served.num_rows
    cache: dict[str, dict[str, str]] = {}
    out: list[dict[str, str] | None] = []
    for raw in served.column(column).to_pylist():
        if raw is None:
            out.append(None)
            continue
        if raw not in cache:
            try:
                cache[raw] = json.loads(raw)
            except json.JSONDecodeError:
                cache[raw] = {}
        out.append(cache[raw])
    return out
