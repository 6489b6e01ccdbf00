"""Why a served value differs from its offline recomputation: one cause per mismatch.

View features (read from Redis):

* ``ttl_expiry``: the log says OUTSIDE_MAX_AGE, or the offline row is older than the TTL;
* ``missing_online_key``: NOT_FOUND online while offline has a row (materialization gap);
* ``freshness_lag``: the served row is older than the latest offline row before the
  request (from the logged ``<feature>__event_ts`` when present, else because the served
  value equals an older offline row of that entity);
* ``online_ahead``: the served row is not strictly before the request (or offline has no row);
* ``code_skew``: same row, different value.

Request-time features:

* ``statistics_artifact``: the logged fingerprint differs and so does the logged artifact
  hash (``artifact_hashes`` column); without that column a fingerprint change of a
  transform that reads statistics is attributed here (marked ``inferred``);
* ``transform_fingerprint``: the logged fingerprint differs (code or declaration changed);
* the cause of a mismatched view input it reads (inherited);
* ``code_skew``: same fingerprint, same inputs, different value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.skew.consistency import MAX_EXAMPLES, Consistency, logged_json
from store.manifest import Manifest
from transforms.artifact import StatisticsArtifact

TRANSFORM_FINGERPRINT = "transform_fingerprint"
STATISTICS_ARTIFACT = "statistics_artifact"
FRESHNESS_LAG = "freshness_lag"
TTL_EXPIRY = "ttl_expiry"
MISSING_KEY = "missing_online_key"
ONLINE_AHEAD = "online_ahead"
CODE_SKEW = "code_skew"
CAUSES = (
    TRANSFORM_FINGERPRINT,
    STATISTICS_ARTIFACT,
    FRESHNESS_LAG,
    TTL_EXPIRY,
    MISSING_KEY,
    ONLINE_AHEAD,
    CODE_SKEW,
)


@dataclass
class Current:
    """What offline recomputation uses now: per request-time set, fingerprints and hash."""

    fingerprints: dict[str, str]  # transform -> fingerprint
    artifact_hashes: dict[str, str]  # feature set name -> content hash
    owner: dict[str, Any]  # transform output -> FeatureSet
    transforms: dict[str, Any]  # transform output -> Transform


def current_state(manifest: Manifest) -> Current:
    fps: dict[str, str] = {}
    hashes: dict[str, str] = {}
    owner: dict[str, Any] = {}
    transforms: dict[str, Any] = {}
    for rt in manifest.request_transforms.values():
        fs = manifest.feature_set(rt)
        art = StatisticsArtifact.load(manifest.artifact_file(rt))
        fps.update(fs.fingerprints(art))
        hashes[fs.name] = art.content_hash
        for t in fs.transforms:
            owner[t.name] = fs
            transforms[t.name] = t
    return Current(fps, hashes, owner, transforms)


class ViewHistory:
    """Offline rows of one view for the entities that mismatched: key -> (ts ns, values)."""

    def __init__(
        self,
        repo: str | Path,
        view: str,
        keys: Sequence[tuple[Any, ...]],
        key_names: Sequence[str] | None = None,
    ) -> None:
        """``keys`` are tuples of the columns ``key_names`` (default: the view's join keys,
        in its order); ``lookup`` takes them in the same order."""
        from pipelines.materialize import load_repo, open_source

        plan = load_repo(repo, [view]).plans[0]
        dataset, cols = open_source(plan)
        self.join_keys = list(plan.join_keys)
        names = list(key_names) if key_names is not None else self.join_keys
        self._order = [names.index(k) for k in self.join_keys]
        keys = [self._reorder(k) for k in keys]
        self.ttl_ns = int(plan.ttl.total_seconds() * 1e9) if plan.ttl else 0
        names = [cols[k] for k in plan.join_keys] + [cols[plan.timestamp_field]]
        names += [cols[f] for f in plan.features]
        first = sorted({k[0] for k in keys})
        flt = pc.field(cols[plan.join_keys[0]]).isin(first) if first else None
        table = dataset.to_table(columns=names, filter=flt)
        ts_col = table.column(cols[plan.timestamp_field])
        ts = np.asarray(
            pc.cast(ts_col, pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy(),
            dtype=np.int64,
        )
        key_cols = [table.column(cols[k]).to_pylist() for k in plan.join_keys]
        feats = {f: table.column(cols[f]).to_pylist() for f in plan.features}
        rows: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(zip(*key_cols, strict=True)):
            rows.setdefault(key, []).append(i)
        self.rows: dict[tuple[Any, ...], tuple[np.ndarray, dict[str, list[Any]]]] = {}
        for key, idx in rows.items():
            order = sorted(idx, key=lambda j: ts[j])
            self.rows[key] = (ts[order], {f: [v[j] for j in order] for f, v in feats.items()})

    def _reorder(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(key[i] for i in self._order)

    def lookup(self, key: tuple[Any, ...]) -> tuple[np.ndarray, dict[str, list[Any]]]:
        return self.rows.get(self._reorder(key), (np.empty(0, dtype=np.int64), {}))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.float64(a).view(np.int64) == np.float64(b).view(np.int64))
    return bool(a == b) and type(a) is type(b)


def _ts_ns(col: pa.ChunkedArray) -> list[int | None]:
    return pc.cast(pc.cast(col, pa.timestamp("ns", tz="UTC")), pa.int64()).to_pylist()


def _event_ts_column(served: pa.Table, feature: str, view: str) -> list[int | None] | None:
    for name in (f"{feature}__event_ts", f"{view}__event_ts"):
        if name in served.column_names:
            return _ts_ns(served.column(name))
    return None


def attribute(
    repo: str | Path, manifest: Manifest, result: Consistency, current: Current | None = None
) -> dict[str, Any]:
    """Fill each feature's ``causes`` and ``examples``; return notes on what was inferred."""
    current = current or current_state(manifest)
    served = result.served
    row_causes: dict[str, list[str | None]] = {}
    notes: dict[str, Any] = {
        "event_ts_logged": any(c.endswith("__event_ts") for c in served.column_names),
        "artifact_hashes_logged": "artifact_hashes" in served.column_names,
        "inferred": Counter(),
    }
    by_view: dict[str, list[str]] = {}
    for name, fc in result.features.items():
        if fc.kind == "view":
            by_view.setdefault(fc.source, []).append(name)
    for view, names in by_view.items():
        _attribute_view(repo, manifest, result, view, names, row_causes, notes)
    _attribute_transforms(manifest, result, current, row_causes, notes)
    notes["inferred"] = dict(notes["inferred"])
    return notes


def _attribute_view(
    repo: str | Path,
    manifest: Manifest,
    result: Consistency,
    view: str,
    names: list[str],
    row_causes: dict[str, list[str | None]],
    notes: dict[str, Any],
) -> None:
    """Causes of the mismatched rows of one view's features, from the view's history."""
    served, offline = result.served, result.offline
    n = served.num_rows
    request_ns = _ts_ns(served.column("request_ts"))
    bad = np.zeros(n, dtype=bool)
    for name in names:
        bad |= result.mismatch_masks[name]
    join_keys = list(manifest.views[view].entities)
    key_cols = [served.column(k).to_pylist() for k in join_keys]
    wanted = sorted({tuple(c[i] for c in key_cols) for i in np.flatnonzero(bad)})
    history = ViewHistory(repo, view, wanted, join_keys) if wanted else None
    for name in names:
        fc = result.features[name]
        causes: list[str | None] = [None] * n
        row_causes[name] = causes
        mask = result.mismatch_masks[name]
        if not mask.any() or history is None:
            continue
        status = (
            served.column(f"{name}__status").to_pylist()
            if f"{name}__status" in served.column_names
            else [None] * n
        )
        event_ts = _event_ts_column(served, name, view)
        s_vals = served.column(name).to_pylist() if name in served.column_names else [None] * n
        for i in np.flatnonzero(mask).tolist():
            ts, vals = history.lookup(tuple(c[i] for c in key_cols))
            served_ts = None if event_ts is None else event_ts[i]
            cause, extra = _view_cause(
                ts, vals.get(name, []), history.ttl_ns, request_ns[i] or 0,
                status[i], served_ts, s_vals[i], notes,
            )  # fmt: skip
            causes[i] = cause
            fc.causes[cause] += 1
            record_example(fc, served, offline, i, join_keys, status[i], cause, extra)


def _view_cause(
    ts: np.ndarray,
    values: list[Any],
    ttl_ns: int,
    t_req: int,
    status: str | None,
    served_ts: int | None,
    served_value: Any,
    notes: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """Why one served view feature differs from its offline value: its status, else the
    view's history before the request time against the served event time (or value)."""
    before = ts < t_req
    latest = int(ts[before][-1]) if before.any() else None
    if status == "OUTSIDE_MAX_AGE":
        return TTL_EXPIRY, {}
    if status == "NOT_FOUND":
        return MISSING_KEY, {}
    if latest is None:
        return ONLINE_AHEAD, {}
    if ttl_ns and t_req - latest > ttl_ns:
        return TTL_EXPIRY, {}
    if served_ts is not None:
        if served_ts < latest:
            return FRESHNESS_LAG, {"lag_seconds": (latest - served_ts) / 1e9}
        return (ONLINE_AHEAD if served_ts >= t_req else CODE_SKEW), {}
    older = [
        int(ts[j]) for j in range(len(ts)) if ts[j] < latest and _same(values[j], served_value)
    ]
    if older:
        notes["inferred"][FRESHNESS_LAG] += 1
        return FRESHNESS_LAG, {"lag_seconds": (latest - older[-1]) / 1e9}
    if any(ts[j] >= t_req and _same(values[j], served_value) for j in range(len(ts))):
        return ONLINE_AHEAD, {}
    return CODE_SKEW, {}


def _attribute_transforms(
    manifest: Manifest,
    result: Consistency,
    current: Current,
    row_causes: dict[str, list[str | None]],
    notes: dict[str, Any],
) -> None:
    """Causes of request-time features: a changed fingerprint (code or statistics), else
    the cause of an upstream input, else code skew."""
    served, offline = result.served, result.offline
    n = served.num_rows
    logged_fps = logged_json(served, "fingerprints")
    logged_hashes = logged_json(served, "artifact_hashes")
    transform_names = [nm for nm, fc in result.features.items() if fc.kind == "transform"]
    order = {t.name: i for fs in {id(v): v for v in current.owner.values()}.values()
             for i, t in enumerate(fs.order)}  # fmt: skip
    transform_names.sort(key=lambda nm: order.get(nm, 0))
    key_names = [k for v in manifest.views.values() for k in v.entities]
    keys = [k for k in key_names if k in served.column_names]
    for name in transform_names:
        fc = result.features[name]
        causes: list[str | None] = [None] * n
        row_causes[name] = causes
        t = current.transforms.get(name)
        for i in np.flatnonzero(result.mismatch_masks[name]).tolist():
            found = _fingerprint_cause(
                name, current, (logged_fps[i] or {}).get(name), logged_hashes[i], notes
            )
            if found is None and t is not None:
                for f in t.inputs:
                    upstream = row_causes.get(f.name)
                    if upstream is not None and upstream[i] is not None:
                        found = upstream[i]
                        break
            cause = found or CODE_SKEW
            causes[i] = cause
            fc.causes[cause] += 1
            record_example(fc, served, offline, i, keys, None, cause, {})


def _fingerprint_cause(
    name: str,
    current: Current,
    logged: str | None,
    hashes: dict[str, Any] | None,
    notes: dict[str, Any],
) -> str | None:
    """A logged fingerprint other than the current one: the statistics artifact changed
    (its hash differs, or the transform reads statistics and no hash was logged), else
    the code; None when the fingerprints agree."""
    if logged is None or logged == current.fingerprints.get(name):
        return None
    fs = current.owner.get(name)
    t = current.transforms.get(name)
    if hashes is not None and fs is not None:
        differs = hashes.get(fs.name) not in (None, current.artifact_hashes[fs.name])
        return STATISTICS_ARTIFACT if differs else TRANSFORM_FINGERPRINT
    if t is not None and t.analyzers:
        notes["inferred"][STATISTICS_ARTIFACT] += 1
        return STATISTICS_ARTIFACT
    return TRANSFORM_FINGERPRINT


def record_example(
    fc: Any,
    served: pa.Table,
    offline: pa.Table,
    i: int,
    keys: list[str],
    status: str | None,
    cause: str,
    extra: dict[str, Any],
) -> None:
    if len(fc.examples) >= MAX_EXAMPLES:
        return
    row: dict[str, Any] = {k: served.column(k)[i].as_py() for k in dict.fromkeys(keys)}
    row["request_ts"] = str(served.column("request_ts")[i].as_py())
    row["served"] = served.column(fc.name)[i].as_py() if fc.name in served.column_names else None
    row["offline"] = offline.column(fc.name)[i].as_py()
    if status is not None:
        row["status"] = status
    row["cause"] = cause
    row.update(extra)
    fc.examples.append(row)
