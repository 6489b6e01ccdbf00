"""Point-in-time correct training sets from Feast FeatureViews, vectorised with pyarrow/numpy.

Same answer as Feast's ``FeatureStore.get_historical_features`` (file offline store,
``feast.infra.offline_stores.dask``) for every entity row, without its row explosion:
Feast left-joins every entity row with *all* feature rows of its key, filters on
``entity_ts - ttl <= feature_ts <= entity_ts``, sorts by (event, created) time and keeps the
last row per (join keys, entity timestamp) - which also silently drops duplicate entity rows.

Here, per view:

1. the join keys of the entity rows are dictionary-encoded (``pc.unique`` + ``pc.index_in``,
   several keys folded into one dense code), so int64, string and multi-column keys all
   become one int64 code per row; feature rows whose key is not requested are dropped;
2. pass 1 streams only (join keys, event time, created time) with pyarrow.dataset, filtered
   to the entity time range, and packs (code, event time) into one sortable int64 (event
   time scaled by its unit, or ranked when that does not fit); one argsort, then per equal
   (code, event time) the row with the greatest created time (last in file order on full
   ties) is kept;
3. one ``searchsorted`` per entity row finds the last feature row with key < (code, entity
   time) - at most the entity time with ``strict_before=False`` - checked for the code and ttl
   (``feature_ts >= entity_ts - ttl``; ttl 0 means unlimited);
4. pass 2 streams the feature columns and keeps only the winning rows, so memory follows
   the number of distinct winners, not the feature rows times the entity rows.

Every entity row comes out exactly once, in input order (duplicates kept); entity columns
first, then the features named like Feast (``feature`` or ``view__feature``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines.materialize import ViewPlan, arrow_ok, load_repo, open_source
from pipelines.point_in_time import (
    BATCH_ROWS,
    KeyCoder,
    _int64,
    _scan_keys,
    _ts_filter,
    as_of,
)
from transforms.atomic import atomic_file
from transforms.errors import SchemaError

_NS = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True)
class Engine:
    """Where a training set is built: ``local`` (this process) or ``spark`` (``master``:
    the Spark master URL, ``local[*]`` when None). Every engine gives the same rows."""

    name: str = "local"
    master: str | None = None


LOCAL = Engine()
ENGINES = ("local", "spark")


# ---------------------------------------------------------------------- requests


@dataclass
class ViewRequest:
    """One view's share of a request: which features, under which names, joined how."""

    plan: ViewPlan
    name_to_use: str  # projection name (alias) used in full feature names
    features: list[str]
    entity_keys: list[str]  # entity_df column for each of plan.join_keys
    out_names: list[str]


def _parse_refs(refs: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for ref in refs:
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise SchemaError(f"feature reference {ref!r} is not 'view:feature'")
        view, feat = ref.split(":")
        if "@" in view:
            raise SchemaError(f"feature reference {ref!r}: versioned views are not supported")
        out.append((view, feat))
    return out


def resolve_features(
    repo_path: str | Path, features: Sequence[str] | str, full_feature_names: bool
) -> list[ViewRequest]:
    """Feature refs (or a feature service name) -> per-view requests, in request order.

    Follows Feast: a feature service contributes its projections (alias, feature subset,
    join key map); output names are ``feature`` or ``<view or alias>__feature`` and must
    not collide.
    """
    # (view name, name to use, features, join key map) in first-appearance order
    groups: dict[str, tuple[str, list[str], dict[str, str]]] = {}
    if isinstance(features, str):
        from feast import FeatureStore

        try:
            service = FeatureStore(repo_path=str(repo_path)).get_feature_service(features)
        except Exception as exc:  # Feast raises its own not-found types
            raise SchemaError(f"feature service {features!r}: {exc}") from exc
        for proj in service.feature_view_projections:
            if proj.version_tag is not None:
                raise SchemaError(f"feature service {features!r}: versioned views unsupported")
            use = proj.name_to_use()
            groups[use] = (proj.name, [f.name for f in proj.features], dict(proj.join_key_map))
    else:
        if not features:
            raise SchemaError("no features requested")
        for view, feat in _parse_refs(features):
            groups.setdefault(view, (view, [], {}))[1].append(feat)
    target = load_repo(repo_path, sorted({view for view, _, _ in groups.values()}))
    plans = {p.name: p for p in target.plans}
    requests = []
    for use, (view, feats, key_map) in groups.items():
        plan = plans[view]
        unknown = [f for f in feats if f not in plan.features]
        if unknown:
            raise SchemaError(f"view {view}: unknown feature(s) {unknown}; has {plan.features}")
        names = [f"{use}__{f}" if full_feature_names else f for f in feats]
        requests.append(
            ViewRequest(
                plan=plan,
                name_to_use=use,
                features=feats,
                entity_keys=[key_map.get(k, k) for k in plan.join_keys],
                out_names=names,
            )
        )
    all_names = [n for r in requests for n in r.out_names]
    dup = sorted({n for n in all_names if all_names.count(n) > 1})
    if dup:
        hint = "" if full_feature_names else " (use full_feature_names=True)"
        raise SchemaError(f"feature name collision: {dup}{hint}")
    return requests


# ---------------------------------------------------------------------- entity rows


def _entity_table(entity_df: pa.Table | Any) -> pa.Table:
    if isinstance(entity_df, pa.Table):
        return entity_df
    import pandas as pd

    if isinstance(entity_df, pd.DataFrame):
        try:
            return pa.Table.from_pandas(entity_df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(f"entity_df cannot be converted to Arrow: {exc}") from exc
    raise SchemaError(f"entity_df is {type(entity_df).__name__}, not a pyarrow.Table or DataFrame")


def _entity_timestamps(table: pa.Table, column: str) -> np.ndarray:
    """The entity timestamp column as int64 UTC nanoseconds; must be tz-aware, no nulls."""
    if column not in table.column_names:
        raise SchemaError(
            f"entity_df has no timestamp column {column!r} (has {table.column_names})"
        )
    col = table.column(column)
    if not pa.types.is_timestamp(col.type):
        raise SchemaError(f"entity_df column {column!r} is {col.type}, expected a timestamp")
    if col.type.tz is None:
        raise SchemaError(
            f"entity_df column {column!r} has timestamps without time zone; "
            "localize them (e.g. to UTC) first"
        )
    if col.null_count:
        raise SchemaError(f"entity_df column {column!r} has {col.null_count} null timestamps")
    try:
        ns = pc.cast(col, _NS)
    except pa.ArrowInvalid as exc:
        raise SchemaError(f"entity_df column {column!r}: {exc}") from exc
    return _int64(ns)


def _check_keys(table: pa.Table, req: ViewRequest) -> None:
    view = req.plan.name
    for k, key_type in zip(req.entity_keys, req.plan.join_types, strict=True):
        if k not in table.column_names:
            raise SchemaError(
                f"entity_df has no join key column {k!r} needed by view {view} "
                f"(has {table.column_names})"
            )
        col = table.column(k)
        if col.null_count:
            raise SchemaError(f"entity_df join key column {k!r} has {col.null_count} null values")
        t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not _same_key_kind(key_type, t):
            raise SchemaError(
                f"entity_df: key {k!r} is {t}, the view {view!r} keys it as {key_type}"
            )


def _same_key_kind(key_type: str, t: pa.DataType) -> bool:
    """Can entity values of Arrow type ``t`` equal keys a view declares as ``key_type``?

    Integers of any width meet an integer key (cast exactly), string and large_string a
    string key; nothing converts between kinds: ``"7"`` and ``7`` are different entities,
    and a cast would only turn a wrong file into all-null features.
    """
    if key_type in ("int64", "int32"):
        return pa.types.is_integer(t)
    if key_type == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if key_type == "bytes":
        return pa.types.is_binary(t) or pa.types.is_large_binary(t)
    return arrow_ok(key_type, t)


# ------------------------------------------------------------------------ pass 2


def _gather(
    dataset: ds.Dataset,
    columns: list[str],
    flt: ds.Expression,
    needed: np.ndarray,
) -> pa.Table:
    """Rows ``needed`` (sorted scan row numbers) of ``columns``, streamed batch by batch."""
    parts = []
    offset = 0
    for batch in dataset.to_batches(columns=columns, filter=flt, batch_size=BATCH_ROWS):
        n = batch.num_rows
        lo, hi = np.searchsorted(needed, [offset, offset + n])
        if hi > lo:
            parts.append(batch.take(pa.array(needed[lo:hi] - offset)))
        offset += n
    if not parts:
        return dataset.schema.empty_table().select(columns)
    return pa.Table.from_batches(parts)


# ----------------------------------------------------------------------- public API


@dataclass
class ViewStats:
    """What one view contributed: rows scanned, entity rows matched."""

    view: str
    rows_scanned: int
    matched: int


def _decoded(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded feature column as its values: a feature's type in a training
    set does not depend on how its file stored it (nor on whether any row matched)."""
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _join_local(
    table: pa.Table,
    e_ts: np.ndarray,
    requests: Sequence[ViewRequest],
    strict_before: bool,
    stats: list[ViewStats] | None,
) -> pa.Table:
    """``table`` with every view's features appended, joined in this process."""
    out = table
    n = table.num_rows
    for req in requests:
        plan = req.plan
        dataset, cols = open_source(plan)
        ts_col = cols[plan.timestamp_field]
        fields = [cols[f] for f in req.features]
        if n == 0:
            empty = dataset.schema.empty_table().select(fields)
            for name, col in zip(req.out_names, empty.columns, strict=True):
                out = out.append_column(name, _decoded(col))
            continue
        file_schema = dataset.schema
        coder = KeyCoder(
            [table.column(k) for k in req.entity_keys],
            [file_schema.field(cols[k]).type for k in plan.join_keys],
        )
        hi = int(e_ts.max())
        ttl_ns = int(plan.ttl / timedelta(microseconds=1)) * 1000 if plan.ttl else 0
        lo = int(e_ts.min()) - ttl_ns if ttl_ns else None
        flt = _ts_filter(ts_col, file_schema.field(ts_col).type, lo, hi)
        scan = _scan_keys(dataset, cols, plan, coder, flt)
        scanned, rows = scan.scanned, scan.rows
        idx = as_of(scan, coder.entity_codes, e_ts, coder.size, plan.ttl, strict_before)
        del scan, coder
        valid = idx >= 0
        if rows is not None and valid.any():
            idx = np.where(valid, rows[np.maximum(idx, 0)], -1)
        needed = np.unique(idx[valid])
        compact = _gather(dataset, fields, flt, needed)
        pos = np.searchsorted(needed, idx)
        take = pa.array(pos, mask=~valid)
        for name, col in zip(req.out_names, compact.take(take).columns, strict=True):
            out = out.append_column(name, _decoded(col))
        if stats is not None:
            stats.append(ViewStats(plan.name, scanned, int(valid.sum())))
    return out


def _check_engine(engine: Engine) -> None:
    if engine.name not in ENGINES:
        raise SchemaError(f"--engine {engine.name!r}: expected one of {', '.join(ENGINES)}")
    if engine.master is not None:
        if engine.name != "spark":
            raise SchemaError(f"--master {engine.master!r} is only for --engine spark")
        from pipelines.training_spark import check_master

        check_master(engine.master)


def get_training_set(
    repo_path: str | Path,
    entity_df: pa.Table | Any,
    features: Sequence[str] | str,
    *,
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
    strict_before: bool = True,
    stats: list[ViewStats] | None = None,
    engine: Engine = LOCAL,
) -> pa.Table:
    """Point-in-time join of ``features`` ("view:feature" refs or a feature service name)
    onto ``entity_df`` (join keys + a tz-aware ``timestamp_column``), like Feast's
    ``get_historical_features`` but keeping every entity row once, in input order.

    By default only feature rows strictly before the entity timestamp join, what the online
    store can hold at that instant (the same default as ``skewless training-set``);
    ``strict_before=False`` also joins a row at the very instant, as Feast does. ``stats``,
    when given, receives one ``ViewStats`` per view. ``engine`` says where the join
    runs (:class:`Engine`: this process, or Spark); every engine gives the same table.
    """
    _check_engine(engine)
    table = _entity_table(entity_df)
    requests = resolve_features(repo_path, features, full_feature_names)
    e_ts = _entity_timestamps(table, timestamp_column)
    for req in requests:
        _check_keys(table, req)
    clash = [n for r in requests for n in r.out_names if n in table.column_names]
    if clash:
        raise SchemaError(f"feature column(s) {clash} already exist in entity_df")
    if engine.name == "spark" and table.num_rows:
        from pipelines.training_spark import join_views

        out = join_views(table, e_ts, requests, strict_before, engine.master, stats)
    else:
        out = _join_local(table, e_ts, requests, strict_before, stats)

    refs = [f"{r.name_to_use}:{f}" for r in requests for f in r.features]
    meta = dict(out.schema.metadata or {})
    meta.pop(b"pandas", None)  # its index/column description no longer matches
    meta[b"skewless.features"] = json.dumps(refs).encode()
    meta[b"skewless.full_feature_names"] = str(full_feature_names).lower().encode()
    meta[b"skewless.strict_before"] = str(strict_before).lower().encode()
    return out.replace_schema_metadata(meta)


def write_training_set(table: pa.Table, path: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``table`` to Parquet with ``metadata`` in its schema, atomically.

    The file appears complete or not at all (temp file in the same directory, fsync,
    rename), so a reader never trains on a half-written set.
    """
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise SchemaError(f"metadata keys and values must be str: {bad}")
    path = Path(path)
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in metadata.items()})
    table = table.replace_schema_metadata(meta)
    with atomic_file(path) as fh:
        pq.write_table(table, fh)
    return path
