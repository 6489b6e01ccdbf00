"""Fast, verified materialization of Feast FeatureViews from Parquet into Redis, in the
exact bytes Feast's Redis online store writes; the design (reduction, the latest-row rule,
RESTORE and the write pipeline) is in docs/materialize.md."""

from __future__ import annotations

import functools
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines import redis_dump
from pipelines.feast_objects import VALUE_TYPES
from serving import redis_layout as rl
from transforms.errors import (
    ConfigError,
    SchemaError,
    StoreError,
    StoreUnavailable,
)

CHUNK_KEYS = 5000  # keys per pipelined round trip
IN_FLIGHT = 2  # chunks of writes queued in a standalone Redis
PARTS = 8  # the latest-row reduction runs per part of the entities, during the writes
_REDUCE_ROWS = 2_000_000  # reduce the buffered scanned rows once they exceed this

# ------------------------------------------------------------------------- reports


@dataclass
class ViewReport:
    """What happened to one FeatureView: rows read, keys expected/written/verified."""

    view: str
    rows_scanned: int = 0
    expected: int = 0  # distinct entities with a row in the window
    written: int = 0  # keys written by this run (RESTORE of new keys, HSET of newer rows)
    skipped_not_newer: int = 0  # Redis already held an equal or newer event time
    present: int | None = None  # verify: expected keys whose stored event time >= ours
    sampled: int = 0
    verified: int = 0  # verify: sampled entities whose decoded values equal the offline row
    superseded: int = 0  # verify: sampled entities holding a newer row (e.g. a push)
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        """Entities missing or wrong in Redis (0 when unverified)."""
        missing = 0 if self.present is None else self.expected - self.present
        return missing + len(self.mismatches)


@dataclass
class MaterializeReport:
    """Per-view results of one ``materialize`` or ``verify`` call."""

    start: datetime
    end: datetime
    views: list[ViewReport] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. why RESTORE was not used

    @property
    def rows_scanned(self) -> int:
        return sum(v.rows_scanned for v in self.views)

    @property
    def ok(self) -> bool:
        """False when verification found missing or wrong entities."""
        return all(v.lost == 0 for v in self.views)


# ------------------------------------------------------------------------ the plan


@dataclass
class ViewPlan:
    """Everything needed to materialize one view, read once from the Feast registry."""

    name: str  # Feast FeatureView name
    online_name: str  # name used in Redis fields (versioned when versioning is on)
    join_keys: list[str]
    join_types: list[str]
    features: list[str]
    feature_types: list[str]
    source_path: str
    timestamp_field: str
    created_field: str | None
    field_mapping: dict[str, str]
    ttl: timedelta | None
    feast_view: Any = None


@dataclass
class RepoTarget:
    """Project, Redis settings and view plans of one Feast repo."""

    store: Any
    project: str
    redis_type: str
    connection_string: str
    key_ttl_seconds: int | None
    skip_dedup: bool
    plans: list[ViewPlan]


def load_repo(repo_path: str | Path, views: Sequence[str] | None = None) -> RepoTarget:
    """Read the Feast registry of ``repo_path`` into plans (imports the Feast SDK)."""
    from feast import FeatureStore
    from feast.infra.offline_stores.file_source import FileSource
    from feast.infra.online_stores.helpers import compute_versioned_name

    try:
        store = FeatureStore(repo_path=str(repo_path))
    except Exception as exc:  # Feast raises many types for a bad repo
        raise ConfigError(f"cannot load Feast repo at {repo_path}: {exc}") from exc
    cfg = store.config
    online = cfg.online_store
    if getattr(online, "type", None) != "redis":
        raise ConfigError(f"online_store of {repo_path} is {online.type!r}, not redis")
    if cfg.entity_key_serialization_version != rl.ENTITY_KEY_VERSION:
        raise ConfigError("only entity_key_serialization_version 3 is supported")
    redis_type = str(getattr(online.redis_type, "value", online.redis_type))
    if redis_type not in ("redis", "redis_cluster"):
        raise ConfigError(f"redis_type {redis_type!r} is not supported (redis, redis_cluster)")
    versioning = bool(cfg.registry.enable_online_feature_view_versioning)

    all_views = {fv.name: fv for fv in store.list_feature_views()}
    wanted = list(views) if views else sorted(all_views)
    unknown = [v for v in wanted if v not in all_views]
    if unknown:
        raise ConfigError(f"unknown feature view(s) {unknown}; known: {sorted(all_views)}")
    plans = []
    for name in wanted:
        fv = all_views[name]
        src = fv.batch_source
        if not isinstance(src, FileSource):
            raise SchemaError(f"view {name}: batch source is {type(src).__name__}, not FileSource")
        path = FileSource.get_uri_for_file_path(repo_path=cfg.repo_path, uri=src.path)
        plans.append(
            ViewPlan(
                name=name,
                online_name=compute_versioned_name(fv, versioning),
                join_keys=[c.name for c in fv.entity_columns],
                join_types=[_codec_type(name, c.name, c.dtype) for c in fv.entity_columns],
                features=[f.name for f in fv.features],
                feature_types=[_codec_type(name, f.name, f.dtype) for f in fv.features],
                source_path=str(path),
                timestamp_field=src.timestamp_field,
                created_field=src.created_timestamp_column or None,
                field_mapping=dict(src.field_mapping or {}),
                ttl=fv.ttl if fv.ttl else None,
                feast_view=fv,
            )
        )
    return RepoTarget(
        store=store,
        project=cfg.project,
        redis_type=redis_type,
        connection_string=online.connection_string,
        key_ttl_seconds=online.key_ttl_seconds,
        skip_dedup=bool(getattr(online, "skip_dedup", False)),
        plans=plans,
    )


def _codec_type(view: str, column: str, dtype: Any) -> str:
    codec = VALUE_TYPES.get(str(dtype))
    if codec is None:
        raise SchemaError(
            f"view {view}: column {column!r} has type {dtype}, not a supported scalar"
        )
    return codec


# ------------------------------------------------------------------ reading Parquet


def arrow_ok(codec: str, t: pa.DataType) -> bool:
    """Can an Arrow column of type ``t`` feed a feature of codec type ``codec``?"""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if codec == "int64":
        return pa.types.is_integer(t) and t != pa.uint64()
    if codec == "int32":
        return t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16())
    if codec == "double":
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    if codec == "float":
        return pa.types.is_floating(t)
    if codec == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if codec == "bytes":
        return pa.types.is_binary(t) or pa.types.is_large_binary(t)
    if codec == "bool":
        return pa.types.is_boolean(t)
    if codec == "unix_timestamp":
        return pa.types.is_timestamp(t) or pa.types.is_integer(t)
    return False


def open_source(plan: ViewPlan) -> tuple[ds.Dataset, dict[str, str]]:
    """Open the Parquet source and check its schema; returns (dataset, out name -> file col)."""
    try:
        dataset = ds.dataset(plan.source_path, format="parquet")
    except (FileNotFoundError, OSError) as exc:
        raise StoreUnavailable(f"offline Parquet {plan.source_path} unreadable: {exc}") from exc
    schema = dataset.schema
    inverse = {v: k for k, v in plan.field_mapping.items()}  # feature name -> file column
    cols: dict[str, str] = {}

    def need(name: str) -> pa.DataType:
        col = inverse.get(name, name)
        if col not in schema.names:
            raise SchemaError(
                f"view {plan.name}: column {col!r} missing from {plan.source_path} "
                f"(has {schema.names})"
            )
        cols[name] = col
        return schema.field(col).type

    for name in (plan.timestamp_field, plan.created_field):
        if name is None:
            continue
        t = need(name)
        if not pa.types.is_timestamp(t):
            raise SchemaError(f"view {plan.name}: column {name!r} is {t}, expected a timestamp")
    for name, codec in zip(
        plan.join_keys + plan.features, plan.join_types + plan.feature_types, strict=True
    ):
        t = need(name)
        if not arrow_ok(codec, t):
            raise SchemaError(
                f"view {plan.name}: column {name!r} in {plan.source_path} is {t}, "
                f"incompatible with the FeatureView type {codec}"
            )
    return dataset, cols


def _ts_scalar(value: datetime, t: pa.DataType) -> pa.Scalar:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    if t.tz is None:  # naive column: Feast reads it as UTC
        return pa.scalar(aware.astimezone(UTC).replace(tzinfo=None), type=pa.timestamp("us"))
    return pa.scalar(aware, type=pa.timestamp("us", tz=t.tz))


def _group_ids(columns: Sequence[pa.ChunkedArray | pa.Array]) -> tuple[np.ndarray, int]:
    """Dense entity id (0..groups-1) of every row of the join key ``columns``, by hashing
    (no sort). Nulls form a group of their own, like equal values."""
    ids: np.ndarray | None = None
    groups = 1
    for col in columns:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        codes = pc.dictionary_encode(col, null_encoding="encode")
        idx = codes.indices.to_numpy().astype(np.int64)
        if ids is None:
            ids, groups = idx, len(codes.dictionary)
            continue
        # (group so far, code) as one int64 (< rows**2), densified by a second hash pass
        dense = pc.dictionary_encode(pa.array(ids * len(codes.dictionary) + idx))
        ids, groups = dense.indices.to_numpy().astype(np.int64), len(dense.dictionary)
    assert ids is not None, "a view has at least one join key"
    return ids, groups


def _time_ints(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """A timestamp column as (int64 values with nulls as 0, validity or None if no null);
    one copy (the cast to int64 is a view, chunks are joined by ``to_numpy``)."""
    return _numpy(col.cast(pa.int64()), 0), (_valid(col) if col.null_count else None)


def _keep_max(
    ids: np.ndarray,
    groups: int,
    pos: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray | None,
) -> np.ndarray:
    """The candidates ``pos`` holding their group's highest of ``values`` (per candidate
    row, as ``ids``), invalid values ranking below every value (as ``sort_indices`` places
    nulls last)."""
    g, v = ids[pos], values[pos]
    if valid is not None:
        ok = valid[pos]
        has_value = np.zeros(groups, dtype=bool)
        has_value[g[ok]] = True
        keep = ok | ~has_value[g]  # a null only competes in a group of nulls (all 0)
        pos, g, v = pos[keep], g[keep], v[keep]
    best = np.full(groups, np.iinfo(np.int64).min)
    np.maximum.at(best, g, v)
    return pos[v == best[g]]


def _take_sorted(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)`` for ascending ``rows``, batch by batch: Arrow's take on a
    chunked table first concatenates every chunk, a copy of the whole table per call
    (3.5 ms per part on the benchmark's 1M scanned rows, for 12.5k rows taken)."""
    batches = table.to_batches()
    if len(batches) <= 1:
        return table.take(rows)
    bounds = np.cumsum([0] + [b.num_rows for b in batches])
    cuts = np.searchsorted(rows, bounds)
    taken = [
        batch.take(pa.array(rows[lo:hi] - start))
        for batch, start, lo, hi in zip(batches, bounds, cuts, cuts[1:], strict=False)
        if hi > lo
    ]
    return pa.Table.from_batches(taken, schema=table.schema)


class _Candidates:
    """Scanned rows of one view (file order) and those in the window, ready to reduce to
    the latest row per entity: the event and created times as int64 arrays, converted
    once and shared by every part of the reduction."""

    def __init__(self, table: pa.Table, in_window: np.ndarray, plan: ViewPlan) -> None:
        self.table = table
        self.plan = plan
        self.rows = np.flatnonzero(in_window)
        self.times = [_time_ints(table.column(plan.timestamp_field))]
        if plan.created_field:
            self.times.append(_time_ints(table.column(plan.created_field)))

    def latest(
        self, rows: np.ndarray | None = None, keys: Sequence[pa.Array] | None = None
    ) -> np.ndarray:
        """Row numbers (ascending) of Feast's winner per entity among ``rows`` (ascending;
        default all candidates), whose join key columns are ``keys`` when given: max
        event time, then max created time, then the last row in table order (= file
        order). Hash-grouped with unbuffered ufunc reductions, several times faster than
        a multi-key sort; since winners keep table order, reducing [winners so far, next
        rows] keeps the file-order rule."""
        rows = self.rows if rows is None else rows
        n = len(rows)
        if keys is None:
            table = self.table.select(self.plan.join_keys)
            keys = (table if n == self.table.num_rows else _take_sorted(table, rows)).columns
        ids, groups = _group_ids(keys)
        pos = np.arange(n)
        for values, valid in self.times:
            pos = _keep_max(ids, groups, pos, values[rows], None if valid is None else valid[rows])
        last = np.full(groups, -1)
        np.maximum.at(last, ids[pos], pos)
        return rows[np.sort(last[last >= 0])]  # groups without a candidate have none

    def parts(self, n: int) -> Iterator[tuple[np.ndarray, list[pa.Array] | None]]:
        """The candidate rows split into about ``n`` (a power of two, at most 256) parts by
        entity, each as (rows ascending, their join key column or None), so each part
        reduces on its own: a multiplicative hash of a single integer join key. Other
        keys stay in one part (splitting them would cost the hashing it saves)."""
        codec = self.plan.join_types[0]
        if n <= 1 or len(self.plan.join_keys) != 1 or codec not in ("int64", "int32"):
            yield self.rows, None
            return
        bits = max(1, (n - 1).bit_length())
        col = self.table.column(self.plan.join_keys[0]).cast(pa.int64())
        keys = _numpy(col, 0)[self.rows]  # nulls are outside the window (else an error)
        hashed = keys.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
        part = (hashed >> np.uint64(64 - bits)).astype(np.uint8)
        order = np.argsort(part, kind="stable")  # radix sort; keeps rows ascending per part
        bounds = np.concatenate(([0], np.cumsum(np.bincount(part, minlength=1 << bits))))
        for lo, hi in itertools.pairwise(bounds):
            if hi > lo:
                yield self.rows[order[lo:hi]], [pa.array(keys[order[lo:hi]])]

    def winners(self, parts: int = 1) -> Iterator[pa.Table]:
        """The latest row per entity, one table per part (each in file order), reduced
        when the part is reached: a writer pulling from it reduces part i + 1 while Redis
        applies part i."""
        for rows, keys in self.parts(parts):
            yield _take_sorted(self.table, self.latest(rows, keys))


def _window_mask(col: pa.ChunkedArray | pa.Array, lo: pa.Scalar, hi: pa.Scalar) -> np.ndarray:
    """True where the event time is in [lo, hi] (null event times are not)."""
    inside = pc.and_(pc.greater_equal(col, lo), pc.less_equal(col, hi))
    return np.asarray(inside.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _dictionary_reads(dataset: ds.Dataset, columns: list[str]) -> ds.Dataset:
    """The same files, reading ``columns`` (string/binary features) as dictionary arrays.
    Parquet writers store such columns dictionary-encoded unless values are nearly unique,
    and reading the indices skips building every row's bytes: on the benchmark file the
    scan takes a quarter less time (0.031 -> 0.023 s) and touches ~16 MB less fresh
    memory, whose page faults dominate the first run in a process. Only winners are
    decoded, per chunk, by ``encode_column``. (Pages the writer stored plain, e.g. unique ids, are
    hashed into a dictionary instead: slower for that column, still correct.)"""
    if not columns:
        return dataset
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=columns))
    return ds.dataset(dataset.files, format=fmt, filesystem=dataset.filesystem)


def _pruned(dataset: ds.Dataset, flt: ds.Expression) -> ds.Dataset:
    """The dataset without the row groups whose statistics rule out ``flt`` (e.g. a
    narrow window on a time-sorted file). Rows are not filtered: see ``read_latest``."""
    fragments = [f.subset(filter=flt) for f in dataset.get_fragments(filter=flt)]
    return ds.FileSystemDataset(
        fragments, dataset.schema, dataset.format, filesystem=dataset.filesystem
    )


def scan_window(plan: ViewPlan, start: datetime, end: datetime) -> tuple[_Candidates, int]:
    """Stream the view's Parquet into candidates for the latest row per entity in the window.

    Row groups are pruned by their statistics, but rows are not filtered in the scan:
    filtering copies every column of every row (a third of the scan time), while a
    window mask costs one comparison of the event time column and only winners are ever
    copied (``take``). Batches are buffered and reduced to their winners whenever the
    buffer exceeds ``_REDUCE_ROWS`` rows, so memory follows the number of entities, not
    rows. Returns (candidates in file order, columns renamed to Feast names; rows scanned
    in the window); ``_Candidates.winners`` does the final reduction.
    """
    dataset, cols = open_source(plan)
    text = [
        cols[f]
        for f, codec in zip(plan.features, plan.feature_types, strict=True)
        if codec in ("string", "bytes")
        and not pa.types.is_dictionary(dataset.schema.field(cols[f]).type)
    ]
    dataset = _dictionary_reads(dataset, text)
    ts_col = cols[plan.timestamp_field]
    ts_type = dataset.schema.field(ts_col).type
    lo, hi = _ts_scalar(start, ts_type), _ts_scalar(end, ts_type)
    flt = (ds.field(ts_col) >= lo) & (ds.field(ts_col) <= hi)
    names = list(cols)
    scanner = _pruned(dataset, flt).scanner(columns=[cols[n] for n in names], batch_size=262_144)
    pending: list[pa.Table] = []  # in file order: earlier winners first, then newer batches
    masks: list[np.ndarray] = []  # in-window rows of each pending table
    pending_rows = 0
    scanned = 0
    for batch in scanner.to_batches():
        if batch.num_rows == 0:
            continue
        mask = _window_mask(batch.column(names.index(plan.timestamp_field)), lo, hi)
        for k in plan.join_keys:
            keys = batch.column(names.index(k))
            if keys.null_count and not _valid(keys)[mask].all():
                raise SchemaError(f"view {plan.name}: join key column {k!r} has nulls")
        pending.append(pa.Table.from_batches([batch]).rename_columns(names))
        masks.append(mask)
        pending_rows += batch.num_rows
        scanned += int(mask.sum())
        if pending_rows > _REDUCE_ROWS and len(pending) > 1:
            table = pa.concat_tables(pending)
            pending = list(_Candidates(table, np.concatenate(masks), plan).winners())
            masks = [np.ones(pending[0].num_rows, dtype=bool)]
            pending_rows = pending[0].num_rows
    if not pending:
        empty = dataset.schema.empty_table().select([cols[n] for n in names]).rename_columns(names)
        return _Candidates(empty, np.zeros(0, dtype=bool), plan), 0
    return _Candidates(pa.concat_tables(pending), np.concatenate(masks), plan), scanned


def read_latest(plan: ViewPlan, start: datetime, end: datetime) -> tuple[pa.Table, int]:
    """The latest row per entity in the window, one row per entity in file order (see
    ``scan_window``); returns (that table, rows scanned in the window)."""
    candidates, scanned = scan_window(plan, start, end)
    (table,) = candidates.winners()
    return table, scanned


# --------------------------------------------------------------------- encoding
#
# Every encoded column is a pyarrow large_binary array built from numpy matrices (no Python
# work per cell): a row's bytes are the concatenation of fixed-width segments, each cut to
# a per-row length. RESP commands are then element-wise concatenations of such arrays, and
# a chunk's payload is one contiguous slice of the result's data buffer.

_LB = pa.large_binary()
_VARINT_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)  # 10 groups of 7 bits


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, type=_LB)


Segments = list[tuple[np.ndarray, np.ndarray]]  # (n x width byte matrix, bytes used per row)


def _ragged(segments: Segments) -> pa.Array:
    """large_binary array whose row i is ``b"".join(mat[i, :length[i]] for mat, length)``."""
    mats = [m for m, _ in segments]
    n = mats[0].shape[0]
    mat = mats[0] if len(mats) == 1 else np.hstack(mats)
    widths = [m.shape[1] for m in mats]
    # column j of segment s is used where j < that row's length of s
    lengths = np.stack([ln for _, ln in segments], axis=1).astype(np.int32)
    column = np.concatenate([np.arange(w, dtype=np.int32) for w in widths])
    mask = np.repeat(lengths, widths, axis=1) > column
    data = np.ascontiguousarray(mat)[mask]  # row-major: row 0's bytes, then row 1's, ...
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sum(ln.astype(np.int64) for _, ln in segments), out=offsets[1:])
    return pa.Array.from_buffers(_LB, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _const(value: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The same bytes in every row, as a segment."""
    row = np.frombuffer(value, dtype=np.uint8)
    return np.broadcast_to(row, (n, len(row))), np.full(n, len(row))


def _bulk_header(length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RESP bulk string header ``$<length>\r\n`` of every row, as a segment. Built once per
    distinct length (a column has few: 0 and 9 for doubles, 1 to 11 for varints)."""
    distinct, row = np.unique(length, return_inverse=True)
    heads = [b"$%d\r\n" % v for v in distinct.tolist()]
    width = max((len(h) for h in heads), default=0)
    table = np.zeros((len(heads), width), dtype=np.uint8)
    for i, h in enumerate(heads):
        table[i, : len(h)] = np.frombuffer(h, dtype=np.uint8)
    sizes = np.array([len(h) for h in heads])
    return table[row], sizes[row]


def _varint(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 values: an (n, width) byte matrix and each value's length,
    width being the longest varint's (1 to 10 bytes; e.g. 5 for epoch seconds)."""
    u = u.astype(np.uint64, copy=False)
    width = max(1, (int(u.max(initial=0)).bit_length() + 6) // 7)
    shifts = _VARINT_SHIFTS[:width]
    groups = ((u[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    length = 1 + (u[:, None] >= (np.uint64(1) << shifts[1:])).sum(axis=1)
    groups |= np.where(np.arange(width) < (length - 1)[:, None], 0x80, 0).astype(np.uint8)
    return groups, length


def _tagged(tag: int, body: np.ndarray, length: np.ndarray, valid: np.ndarray) -> Segments:
    """tag byte + the first ``length`` bytes of each body row; b"" where not ``valid``."""
    n = body.shape[0]
    mat = np.empty((n, body.shape[1] + 1), dtype=np.uint8)
    mat[:, 0] = tag
    mat[:, 1:] = body
    return [(mat, np.where(valid, length + 1, 0))]


def _valid(col: pa.Array) -> np.ndarray:
    if col.null_count == 0:
        return np.ones(len(col), dtype=bool)
    return np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _numpy(col: pa.Array, fill: Any) -> np.ndarray:
    """The column's values as numpy, nulls replaced by ``fill`` (no copy when no null)."""
    return (col.fill_null(fill) if col.null_count else col).to_numpy(zero_copy_only=False)


def _value_segments(
    col: pa.ChunkedArray | pa.Array, codec: str
) -> tuple[Segments, pa.Array | None]:
    """Value bytes of every cell of one column, exactly as Feast's materialization: byte
    segments, then (strings and bytes) the raw payloads as an arrow array to append after
    them. Nulls (and NaN for floating types, as Feast's pd.isnull) give b""."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    n = len(col)
    valid = _valid(col)
    if codec in ("double", "float"):
        np_type = np.dtype("<f8") if codec == "double" else np.dtype("<f4")
        arr = col.cast(pa.float64() if codec == "double" else pa.float32())
        raw = _numpy(arr, 0).astype(np_type, copy=False)
        valid &= ~np.isnan(raw)
        body = np.ascontiguousarray(raw).view(np.uint8).reshape(n, np_type.itemsize)
        width = np.full(n, np_type.itemsize)
        return _tagged(0x29 if codec == "double" else 0x35, body, width, valid), None
    if codec in ("int64", "int32"):
        ints = _numpy(col.cast(pa.int64()), 0)
        groups, length = _varint(ints.astype(np.int64, copy=False).view(np.uint64))
        return _tagged(0x20 if codec == "int64" else 0x18, groups, length, valid), None
    if codec == "bool":
        bits = _numpy(col, False).astype(np.uint8)
        return _tagged(0x38, bits.reshape(n, 1), np.ones(n, dtype=np.int64), valid), None
    if codec in ("string", "bytes"):
        raw = col.cast(_LB).fill_null(b"")
        groups, length = _varint(pc.binary_length(raw).to_numpy(zero_copy_only=False))
        return _tagged(0x12 if codec == "string" else 0x0A, groups, length, valid), raw
    enc = rl.value_encoder(codec)  # unix_timestamp: rare, row by row
    return [], pa.array([enc(v) for v in col.to_pylist()], type=_LB)


def encode_column(col: pa.ChunkedArray | pa.Array, codec: str) -> pa.Array:
    """Value bytes of every cell of one column (see ``_value_segments``), as a
    large_binary array."""
    segments, tail = _value_segments(col, codec)
    if not segments:
        return tail
    head = _ragged(segments)
    return head if tail is None else pc.binary_join_element_wise(head, tail, _lb(b""))


def _timestamp_segments(micros: np.ndarray) -> Segments:
    """google.protobuf.Timestamp bytes of microseconds since the epoch, like
    ``rl.encode_timestamp_micros`` (zero seconds or nanos omitted)."""
    seconds, rem = np.divmod(micros.astype(np.int64, copy=False), 1_000_000)
    nanos = rem * 1000
    n = len(micros)
    sec_groups, sec_len = _varint(seconds.view(np.uint64))
    ns_groups, ns_len = _varint(nanos.view(np.uint64))
    sec = np.empty((n, 1 + sec_groups.shape[1]), dtype=np.uint8)
    sec[:, 0], sec[:, 1:] = 0x08, sec_groups
    ns = np.empty((n, 1 + ns_groups.shape[1]), dtype=np.uint8)
    ns[:, 0], ns[:, 1:] = 0x10, ns_groups
    return [
        (sec, np.where(seconds != 0, sec_len + 1, 0)),
        (ns, np.where(nanos != 0, ns_len + 1, 0)),
    ]


def encode_timestamps(micros: np.ndarray) -> pa.Array:
    """Timestamp bytes of microseconds since the epoch (see ``_timestamp_segments``)."""
    return _ragged(_timestamp_segments(micros))


def _commands(
    head: bytes, keys: pa.Array, fields: Sequence[tuple[bytes, Segments, pa.Array | None]]
) -> pa.Array:
    """One RESP command per row: the constant ``head``, the row's key (bulk strings), then
    per field its name and value as bulk strings. Built from byte segments in one pass
    per run of fixed-width values; raw string/bytes payloads are spliced in by arrow."""
    n = len(keys)
    pieces: list[Any] = [_lb(head), keys]
    run: Segments = []
    glue = b""  # constant bytes due before the next value: CR LF of the last one, a name
    for name, segments, tail in fields:
        length = sum((ln for _, ln in segments), np.zeros(n, dtype=np.int64))
        if tail is not None:
            length = length + pc.binary_length(tail).to_numpy(zero_copy_only=False)
        run += [_const(glue + _bulk(name), n), _bulk_header(length), *segments]
        glue = b"\r\n"
        if tail is not None:
            pieces += [_ragged(run), tail]
            run = []
    pieces.append(_ragged([*run, _const(glue, n)]))
    return pc.binary_join_element_wise(*pieces, _lb(b""))


def _micros(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Microseconds since the epoch of a timestamp column (ns truncated like Feast)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    ints = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    unit = col.type.unit
    if unit == "ns":
        return ints // 1000
    if unit == "us":
        return ints
    return ints * (1000 if unit == "ms" else 1_000_000)


def encode_keys(table: pa.Table, plan: ViewPlan, project: str) -> pa.Array:
    """Redis key of every row (single int64 key vectorized, others row by row)."""
    enc = rl.EntityKeyEncoder(project, plan.join_keys, plan.join_types)
    n = table.num_rows
    fixed = enc.fixed_int64()
    if fixed is not None:
        prefix, suffix = fixed
        vals = table.column(plan.join_keys[0]).combine_chunks().cast(pa.int64()).to_numpy()
        width = len(prefix) + 8 + len(suffix)
        mat = np.empty((n, width), dtype=np.uint8)
        mat[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        mat[:, len(prefix) : len(prefix) + 8] = vals.astype("<i8").view(np.uint8).reshape(n, 8)
        mat[:, len(prefix) + 8 :] = np.frombuffer(suffix, dtype=np.uint8)
        return _ragged([(mat, np.full(n, width))])
    columns = [table.column(k).to_pylist() for k in plan.join_keys]
    return pa.array([enc.encode(vals) for vals in zip(*columns, strict=True)], type=_LB)


def _bulk_strings(arr: pa.Array) -> pa.Array:
    """RESP bulk string of every cell: ``$<len>\r\n<bytes>\r\n`` (``_bulk_header``)."""
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
    head = _ragged([_bulk_header(lengths)])
    return pc.binary_join_element_wise(head, arr, _lb(b"\r\n"), _lb(b""))


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


@dataclass
class EncodedRows:
    """Ready-to-send bytes of one chunk of a view's rows, one row per entity (arrow
    large_binary arrays).

    Keys are encoded up front (the chunk's staleness read needs them before its values);
    event times and feature values on demand (``ts_values``, ``bodies``), so the writer can
    encode chunk i+1 while Redis applies chunk i.
    """

    keys: pa.Array  # Redis keys
    ts_micros: np.ndarray  # event time of each row, µs since the epoch (int64)
    ts_nanos: np.ndarray  # the same in ns, as Feast's staleness rule compares them
    fields: list[bytes]  # hashed feature field names, in ``plan.features`` order
    columns: list[tuple[pa.ChunkedArray, str]]  # (feature column, codec), ``fields`` order
    ts_field: bytes  # b"_ts:<view>"
    key_bulks: pa.Array  # ``$<len>\r\n<key>\r\n`` per key

    def __len__(self) -> int:
        return len(self.keys)

    def key_list(self) -> list[bytes]:
        return list(self.keys.to_pylist())

    def ts_values(self) -> pa.Array:
        """Timestamp bytes of the event time of every row."""
        return encode_timestamps(self.ts_micros)

    def values(self) -> list[pa.Array]:
        """Value bytes of every feature of every row, one array per feature."""
        return [encode_column(col, codec) for col, codec in self.columns]

    def commands(self) -> pa.Array:
        """The HSET command of every row: key, ``_ts`` and its event time, then each
        feature's field and value."""
        fields = [(self.ts_field, _timestamp_segments(self.ts_micros), None)]
        for fld, (col, codec) in zip(self.fields, self.columns, strict=True):
            fields.append((fld, *_value_segments(col, codec)))
        head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(fields))
        return _commands(head, self.key_bulks, fields)

    def restores(self, ttl_ms: int, max_entries: int, max_value: int) -> memoryview:
        """The RESTORE command of every row, creating the very hash its HSET would
        (``redis_dump``), as one buffer in row order."""
        commands, _ = redis_dump.restore_commands(
            self.keys,
            [self.ts_field, *self.fields],
            [self.ts_values(), *self.values()],
            ttl_ms,
            max_entries,
            max_value,
        )
        return commands

    def take(self, rows: np.ndarray) -> EncodedRows:
        """The chunk's ``rows`` (indices) only."""
        idx = pa.array(rows, type=pa.int64())
        return EncodedRows(
            keys=self.keys.take(idx),
            ts_micros=self.ts_micros[rows],
            ts_nanos=self.ts_nanos[rows],
            fields=self.fields,
            columns=[(col.take(idx), codec) for col, codec in self.columns],
            ts_field=self.ts_field,
            key_bulks=self.key_bulks.take(idx),
        )


def encode_rows(table: pa.Table, plan: ViewPlan, project: str) -> EncodedRows:
    """Encode the keys of a table of latest rows (event times and values on demand)."""
    micros = _micros(table.column(plan.timestamp_field))
    keys = encode_keys(table, plan, project)
    return EncodedRows(
        keys=keys,
        ts_micros=micros,
        ts_nanos=micros.astype(np.int64) * 1000,
        fields=[rl.feature_field(plan.online_name, f) for f in plan.features],
        columns=[
            (table.column(f), t) for f, t in zip(plan.features, plan.feature_types, strict=True)
        ],
        ts_field=rl.timestamp_field(plan.online_name),
        key_bulks=_bulk_strings(keys),
    )


def encode_chunks(
    tables: pa.Table | Iterable[pa.Table], plan: ViewPlan, project: str, chunk: int = CHUNK_KEYS
) -> Iterator[EncodedRows]:
    """``encode_rows`` of the rows of ``tables`` (one table, or several pulled one at a
    time, e.g. ``_Candidates.winners``), ``chunk`` rows at a time, each encoded when
    reached: the writer pulls chunk i+1 while Redis applies chunk i, so only the first
    chunk's keys delay the first write."""
    for rows in _rechunk([tables] if isinstance(tables, pa.Table) else tables, chunk):
        yield encode_rows(rows, plan, project)


def _rechunk(tables: Iterable[pa.Table], size: int) -> Iterator[pa.Table]:
    """The rows of ``tables`` in order, as tables of ``size`` rows (the last may be short)."""
    parts: list[pa.Table] = []
    have = 0
    for table in tables:
        at = 0
        while at < table.num_rows:
            part = table.slice(at, size - have)
            parts.append(part)
            have += part.num_rows
            at += part.num_rows
            if have == size:
                yield parts[0] if len(parts) == 1 else pa.concat_tables(parts)
                parts, have = [], 0
    if have:
        yield parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _buffer_bytes(arr: pa.Array) -> memoryview:
    """The concatenated cell bytes of a binary array (a view of its data buffer)."""
    return redis_dump.cells(arr)[1].data


# ------------------------------------------------------------------------ Redis I/O


class RedisWriter:
    """Pipelined HGET/HSET/EXPIRE/HMGET against one Redis or a Redis Cluster.

    Standalone Redis gets hand-packed RESP on one connection (far less per-command
    Python work than redis-py's packer); a cluster goes through redis-py's ClusterPipeline,
    which routes each key to its slot owner.
    """

    def __init__(self, redis_type: str, connection_string: str) -> None:
        import redis as redis_mod
        from redis.cluster import ClusterNode, RedisCluster

        nodes, params = rl.parse_connection_string(connection_string)
        params.setdefault("socket_connect_timeout", 5)
        params.setdefault("socket_timeout", 60)
        self.where = ",".join(f"{h}:{p}" for h, p in nodes)
        self._errors = (redis_mod.ConnectionError, redis_mod.TimeoutError, OSError)
        self._cluster_errors = (
            *self._errors,
            redis_mod.RedisClusterException,
            redis_mod.exceptions.ClusterError,
        )
        self.cluster = redis_type == "redis_cluster"
        self.client: Any
        try:
            if self.cluster:
                params.pop("db", None)
                self.client = RedisCluster(
                    startup_nodes=[ClusterNode(h, p) for h, p in nodes], **params
                )
            else:
                from redis.backoff import ExponentialBackoff
                from redis.retry import Retry

                # redis-py's default retry spends ~6 s on a refused connection; fail fast.
                params.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
                host, port = nodes[0]
                self.client = redis_mod.Redis(host=host, port=port, **params)
            self.client.ping()
        except self._errors as exc:
            raise self.unavailable(exc) from exc
        except redis_mod.RedisClusterException as exc:
            raise self.unavailable(exc) from exc
        self.restore_refused: str | None = None  # why the server refused a RESTORE, if it did

    @functools.cached_property
    def restore_limits(self) -> tuple[int, int] | None:
        """(hash-max-listpack-entries, -value) of a standalone Redis >= 7.0, which loads the
        listpack hashes of ``redis_dump``'s RESTORE payloads; None where new keys go by HSET
        (a cluster, no compiled writer, CONFIG disabled). Asked on first use, so a writer
        that only reads (``verify``) costs no extra round trips."""
        import redis as redis_mod

        if self.cluster or not redis_dump.available():
            return None
        try:
            version = str(self.client.info("server").get("redis_version", "0"))
            if int(version.split(".")[0]) < 7:  # listpack hashes in DUMP payloads: 7.0
                return None
            config = self.client.config_get("hash-max-listpack-*")
            return int(config["hash-max-listpack-entries"]), int(config["hash-max-listpack-value"])
        except self._errors as exc:
            raise self.unavailable(exc) from exc
        except (redis_mod.ResponseError, KeyError, ValueError):
            return None  # e.g. CONFIG disabled: HSET only

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"REDIS connection to {self.where} failed: {exc}")

    def close(self) -> None:
        self.client.close()

    def _connection(self) -> Any:
        try:
            return self.client.connection_pool.get_connection()
        except self._errors as exc:
            raise self.unavailable(exc) from exc

    def _send(self, conn: Any, payload: bytes | memoryview) -> None:
        try:
            conn.send_packed_command([payload], check_health=False)
        except self._errors as exc:
            conn.disconnect()
            raise self.unavailable(exc) from exc

    def _read(self, conn: Any, n_replies: int) -> list[Any]:
        """Read ``n_replies`` replies (error replies come back as ResponseError objects)."""
        import redis as redis_mod

        out: list[Any] = []
        try:
            parser = getattr(conn, "_parser", None)
            reader = getattr(parser, "_reader", None)
            if reader is not None and hasattr(parser, "read_from_socket"):
                # hiredis fast path: pull replies straight from its reader, refilling from
                # the socket as needed.
                from redis._parsers import hiredis as hiredis_parser

                not_enough = getattr(hiredis_parser, "NOT_ENOUGH_DATA", False)
                gets = reader.gets
                while len(out) < n_replies:
                    reply = gets()
                    if reply is not_enough:
                        parser.read_from_socket()  # type: ignore[union-attr]
                    else:
                        out.append(reply)
                return out
            for _ in range(n_replies):
                try:
                    out.append(conn.read_response())
                except redis_mod.ResponseError as exc:
                    out.append(exc)
            return out
        except self._errors as exc:
            conn.disconnect()
            raise self.unavailable(exc) from exc

    def _raw(self, payload: bytes | memoryview, n_replies: int) -> list[Any]:
        """Send packed commands on one connection and read ``n_replies`` replies."""
        conn = self._connection()
        try:
            self._send(conn, payload)
            return self._read(conn, n_replies)
        finally:
            self.client.connection_pool.release(conn)

    def hget_many(self, keys: Sequence[bytes], fld: bytes) -> list[bytes | None]:
        """HGET ``fld`` of every key, in one pipelined round trip."""
        if self.cluster:
            try:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hget(k, fld)
                return list(pipe.execute())
            except self._cluster_errors as exc:
                raise self.unavailable(exc) from exc
        f = _bulk(fld)
        return self._raw(
            b"".join([b"*3\r\n$4\r\nHGET\r\n" + _bulk(k) + f for k in keys]), len(keys)
        )

    def hmget_many(self, keys: Sequence[bytes], fields: Sequence[bytes]) -> list[list[Any]]:
        """HMGET ``fields`` of every key, in one pipelined round trip."""
        if self.cluster:
            try:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hmget(k, list(fields))
                return list(pipe.execute())
            except self._cluster_errors as exc:
                raise self.unavailable(exc) from exc
        head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
        tail = b"".join(_bulk(f) for f in fields)
        return self._raw(b"".join([head + _bulk(k) + tail for k in keys]), len(keys))

    def hset_many(
        self,
        keys: Sequence[bytes],
        mappings: Sequence[Mapping[bytes, bytes]],
        ttl_seconds: int | None,
    ) -> None:
        """HSET each key's field/value mapping, plus EXPIRE when ``ttl_seconds`` (cluster)."""
        if not keys:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for k, mapping in zip(keys, mappings, strict=True):
                pipe.hset(k, mapping=mapping)
                if ttl_seconds:
                    pipe.expire(k, ttl_seconds)
            results = pipe.execute(raise_on_error=False)
        except self._cluster_errors as exc:
            raise self.unavailable(exc) from exc
        _check_writes(results)


def _check_writes(results: Sequence[Any]) -> None:
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise StoreError(f"Redis rejected {len(errors)} writes, first: {errors[0]}")


_NIL = b"$-1\r\n"


class _ReplyStream:
    """Replies of one standalone connection, read straight from its socket and checked in
    bulk with C-level byte operations instead of one Python call per reply (that costs as
    much Python time as Redis spends applying the HSET).

    HSET, EXPIRE and EXISTS replies are single-line integers (``:5\r\n``), errors single
    lines too (``-ERR ...\r\n``), so counting newlines finds where n of them end; the
    ``_ts`` HGETs of keys the view never wrote are all ``$-1\r\n``. Only other HGET replies go
    through a hiredis reader, which is then told nothing past them. Bytes are read past
    redis-py's parser, so every earlier reply on the connection must have been read.
    """

    def __init__(self, conn: Any) -> None:
        self._sock = conn._sock
        self._buf = bytearray()

    def _fill(self) -> bytes:
        data = self._sock.recv(1 << 20)
        if not data:
            raise ConnectionError("Redis closed the connection")
        self._buf += data
        return data

    def statuses(self, n: int) -> tuple[np.ndarray, list[str]]:
        """Consume ``n`` single-line replies; return the indices of the error replies among
        them and their texts."""
        if n == 0:
            return np.zeros(0, dtype=np.int64), []
        while self._buf.count(b"\n") < n:
            self._fill()
        view = np.frombuffer(self._buf, dtype=np.uint8)
        ends = np.flatnonzero(view == 0x0A)[:n] + 1  # the first n newlines end these lines
        starts = np.concatenate(([0], ends[:-1]))
        failed = np.flatnonzero(view[starts] == ord("-"))
        del view  # release the buffer export before resizing
        texts = [
            self._buf[starts[i] + 1 : ends[i] - 2].decode(errors="replace") for i in failed.tolist()
        ]
        del self._buf[: int(ends[-1])]
        return failed, texts

    def lines(self, n: int) -> None:
        """Consume ``n`` single-line replies; raise if any is an error."""
        failed, texts = self.statuses(n)
        if len(failed):
            raise StoreError(f"Redis rejected {len(failed)} writes, first: {texts[0]}")

    def integer(self) -> int:
        """Consume one integer reply (e.g. EXISTS)."""
        while b"\n" not in self._buf:
            self._fill()
        end = self._buf.index(b"\n") + 1
        line = bytes(self._buf[: end - 2])
        del self._buf[:end]
        if not line.startswith(b":"):
            raise StoreError(f"Redis rejected a read: {line[1:].decode(errors='replace')}")
        return int(line[1:])

    def hget_values(self, n: int) -> pa.Array | None:
        """Consume ``n`` HGET replies: None when all are nil (no key had the field), else
        the values (binary, null for nil)."""
        nils = _NIL * n
        while True:
            head = bytes(self._buf[: len(nils)])
            if not nils.startswith(head):
                return self._parse(n)
            if len(head) == len(nils):
                del self._buf[: len(nils)]
                return None
            self._fill()

    def _parse(self, n: int) -> pa.Array:
        """The next ``n`` bulk-string replies, parsed by hiredis as one array (a ``*n``
        header put in front of them) and counted by arrow: no Python call per reply. Only
        their bytes are consumed; later replies stay buffered."""
        import hiredis

        reader = hiredis.Reader()
        reader.feed(b"*%d\r\n" % n)
        reader.feed(bytes(self._buf))
        while (replies := reader.gets()) is False:
            reader.feed(self._fill())
        try:
            values = pa.array(replies, type=pa.binary())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            error = next(r for r in replies if isinstance(r, hiredis.ReplyError))
            raise StoreError(f"Redis rejected a read of the _ts field: {error}") from None
        length = pc.binary_length(values).fill_null(-1).to_numpy(zero_copy_only=False)
        digits = np.floor(np.log10(np.maximum(length, 1))).astype(np.int64) + 1
        # $-1\r\n, or $<len>\r\n<bytes>\r\n
        del self._buf[: int(np.where(length < 0, 5, length + digits + 5).sum())]
        return values


def _stale(enc: EncodedRows, prev: Sequence[bytes | None] | pa.Array) -> np.ndarray:
    """Feast's staleness rule (RedisOnlineStore.online_write_batch) for the chunk's rows
    given their stored ``_ts`` values: True where the row must NOT be written, i.e. Redis
    holds a non-zero event time at least as new as the row's. Stored times are decoded
    vectorized (``_timestamp_nanos``); bytes in another layout go to the scalar decoder,
    which raises on garbage."""
    stored = prev if isinstance(prev, pa.Array) else pa.array(prev, type=pa.binary())
    present = pc.binary_length(stored).fill_null(0).to_numpy(zero_copy_only=False) > 0
    if not present.any():
        return np.zeros(len(stored), dtype=bool)  # no key of this chunk has the view yet
    nanos, decoded = _timestamp_nanos(stored)
    latest = np.maximum(nanos, 0)
    stale = present & decoded & (latest != 0) & (enc.ts_nanos <= latest)
    for j in np.flatnonzero(present & ~decoded).tolist():
        scalar = max(rl.decode_timestamp_nanos(stored[j].as_py()), 0)
        stale[j] = scalar != 0 and int(enc.ts_nanos[j]) <= scalar
    return stale


def _timestamp_nanos(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since the epoch of google.protobuf.Timestamp bytes, as
    ``rl.decode_timestamp_nanos`` (b"" or null: 0), vectorized for the layouts proto3
    writes: [0x08 varint seconds][0x10 varint nanos], each optional. Returns (values,
    decoded); rows in any other layout, or with seconds beyond int64 nanoseconds, are not
    decoded (value 0)."""
    n = len(arr)
    width = 24  # the longest such layout is 1 + 10 + 1 + 10 bytes
    length = pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    mat = np.zeros((n, width), dtype=np.uint8)
    used = np.arange(width) < np.minimum(length, width)[:, None]
    if used.any():
        offsets, data = redis_dump.cells(arr)
        mat[used] = data[(offsets[:-1, None] + np.arange(width))[used]]
    rows = np.arange(n)
    pos = np.zeros(n, dtype=np.int64)
    decoded = length <= width - 2
    fields = []
    for tag in (0x08, 0x10):
        has = (pos < length) & (mat[rows, np.minimum(pos, width - 1)] == tag)
        value = np.zeros(n, dtype=np.uint64)
        at, going = pos + 1, has.copy()
        for k in range(10):  # varint: 7 bits per byte, low first, high bit = more follow
            byte = mat[rows, np.minimum(at, width - 1)].astype(np.uint64)
            value |= np.where(going, (byte & np.uint64(0x7F)) << np.uint64(7 * k), 0)
            at = np.where(going, at + 1, at)
            going &= byte >= 0x80
        decoded &= ~going
        pos = np.where(has, at, pos)
        fields.append(np.where(has, value.view(np.int64), 0))
    seconds, nanos = fields
    decoded &= (pos == length) & (np.abs(seconds) < 9 * 10**9) & (np.abs(nanos) < 10**17)
    return np.where(decoded, seconds * 1_000_000_000 + nanos, 0), decoded


def _hset_payload(
    enc: EncodedRows, commands: pa.Array, keep: np.ndarray | None, expire: bytes | None
) -> tuple[bytes | memoryview, int]:
    """RESP HSET (+ EXPIRE) commands of the chunk, given its ``enc.commands()`` (only
    ``keep`` rows if given), as one contiguous buffer; returns (payload, number of
    replies)."""
    key_bulks = enc.key_bulks
    if keep is not None:
        key_bulks, commands = key_bulks.filter(pa.array(keep)), commands.filter(pa.array(keep))
    n = len(commands)
    if n == 0:
        return b"", 0
    if expire:
        parts = [commands, _lb(b"*3\r\n$6\r\nEXPIRE\r\n"), key_bulks, _lb(expire), _lb(b"")]
        commands = pc.binary_join_element_wise(*parts)
    return _buffer_bytes(commands), n * (2 if expire else 1)


def _exists_payload(enc: EncodedRows) -> bytes:
    """One ``EXISTS key...`` of the chunk: a single reply, and ~4x less Redis time than
    the HGETs when (as in a first materialization) no key exists yet."""
    head = b"*%d\r\n$6\r\nEXISTS\r\n" % (len(enc) + 1)
    return b"".join([head, _buffer_bytes(enc.key_bulks)])


def _hget_payload(enc: EncodedRows) -> bytes | memoryview:
    parts = [_lb(b"*3\r\n$4\r\nHGET\r\n"), enc.key_bulks, _lb(_bulk(enc.ts_field))]
    return _buffer_bytes(pc.binary_join_element_wise(*parts, _lb(b"")))


def write_encoded(
    writer: RedisWriter,
    chunks: Iterable[EncodedRows],
    ttl_seconds: int | None,
    skip_dedup: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write chunks of encoded rows with Feast's staleness rule; returns (written, skipped).

    Standalone Redis: ``_write_pipelined`` on one connection, creating new keys with
    RESTORE where the server allows it (``RedisWriter.restore_limits``). A Redis Cluster
    goes through redis-py's ClusterPipeline. ``progress(keys)`` is called as chunks' writes
    are acknowledged.
    """
    if writer.cluster:
        return _write_cluster(writer, chunks, ttl_seconds, skip_dedup, progress)
    restore = None
    if writer.restore_limits is not None:
        restore = _Restore((ttl_seconds or 0) * 1000, *writer.restore_limits)
    expire = _bulk(str(ttl_seconds).encode()) if ttl_seconds else None
    conn = writer._connection()
    try:
        return _write_pipelined(
            writer,
            conn,
            _ReplyStream(conn),
            iter(chunks),
            expire,
            skip_dedup,
            progress,
            restore,
        )
    except writer._errors as exc:
        conn.disconnect()
        raise writer.unavailable(exc) from exc
    except BaseException:
        conn.disconnect()  # unread replies may be left on the socket
        raise
    finally:
        writer.client.connection_pool.release(conn)


@dataclass
class _Restore:
    """How new keys are created with RESTORE: the expiry argument (ms, 0 for none) and the
    server's hash-max-listpack-entries and -value."""

    ttl_ms: int
    max_entries: int
    max_value: int


def _write_pipelined(
    writer: RedisWriter,
    conn: Any,
    replies: _ReplyStream,
    pull: Iterator[EncodedRows],
    expire: bytes | None,
    skip_dedup: bool,
    progress: Callable[[int], None] | None,
    restore: _Restore | None,
) -> tuple[int, int]:
    """Chunks written with at most ``IN_FLIGHT`` chunks of writes queued in Redis; returns
    (written, skipped).

    Once a chunk's keys turn out to be all new (its EXISTS finds none), chunks are written
    without any read: RESTORE (``redis_dump``) creates each key that is new and answers
    BUSYKEY for one that exists, whose row then takes the checked path below. Once more
    than a tenth of a chunk exists, or the server refuses RESTORE, later chunks are
    checked first again. (The first chunks are always checked: a rerun, or a view whose
    entity another view already wrote, then sends no RESTORE in vain.)

    A checked chunk's staleness read (its probe) goes out two chunks ahead: the wire
    carries the probes of chunks 0 and 1, then per chunk i its writes and the probe of
    chunk i + 2 (pulled, so key-encoded, only after chunk i's writes are sent). Chunk i's
    writes go out once its probe is answered, which follows chunk i - 2's write replies:
    so the writes of chunk i - 1 are still queued in Redis while Python encodes and sends
    chunk i. (A probe cannot see writes of this run: one row per entity, so the chunks'
    keys are distinct.) The probe is one EXISTS of the chunk's keys while chunks come back
    without any stored ``_ts``, else the HGETs of ``_ts`` (keys come in runs). An EXISTS that
    finds no key lets the chunk be restored; one that finds keys is followed by the
    HGETs, and only rows newer than what Redis holds are written, with HSET.
    """
    wire: deque[tuple[str, Any]] = deque()  # replies due: (kind, what), in order
    ahead: deque[tuple[EncodedRows, str]] = deque()  # (chunk, how: restore|unchecked|probe)
    answers: dict[int, tuple[str, Any]] = {}  # id(chunk) -> its probe's answer
    written = skipped = unacked = 0
    optimistic = False  # restore chunks unprobed (the last checked one was all new)
    hget_next = False  # probe the next chunk with HGETs (the last one held stored keys)

    def consume() -> None:
        nonlocal unacked
        kind, what = wire.popleft()
        if kind == "ack":
            unacked -= 1
            _acknowledge(replies, what, progress)
        elif kind == "restored":
            unacked -= 1
            restored(what)
        elif kind == "exists":
            answers[id(what)] = (kind, replies.integer())
        else:
            answers[id(what)] = (kind, replies.hget_values(len(what)))

    def restored(enc: EncodedRows) -> None:
        """RESTORE replies of a chunk: rows it did not create go on as a new, checked
        chunk."""
        nonlocal written, optimistic, restore
        failed, texts = replies.statuses(len(enc))
        written += len(enc) - len(failed)
        if progress and len(enc) > len(failed):
            progress(len(enc) - len(failed))
        if not len(failed):
            return
        refused = [t for t in texts if not t.startswith("BUSYKEY")]
        if refused:  # e.g. NOPERM, or a server that does not load this payload version
            writer.restore_refused, restore = refused[0], None
        if (len(failed) - len(refused)) * 10 > len(enc) or refused:
            optimistic = False
        line_up(enc.take(failed), hget=len(refused) < len(failed))

    def probe(enc: EncodedRows, hget: bool) -> None:
        if hget:
            writer._send(conn, _hget_payload(enc))
            wire.append(("hget", enc))
        else:
            writer._send(conn, _exists_payload(enc))
            wire.append(("exists", enc))

    def answer(enc: EncodedRows) -> tuple[str, Any]:
        while id(enc) not in answers:
            consume()
        return answers.pop(id(enc))

    def line_up(enc: EncodedRows, hget: bool | None = None) -> None:
        """Queue a chunk to write: unprobed while optimistic (``hget`` None), else probed
        (by HGETs if ``hget``, by EXISTS if False, as the last chunk suggests if None)."""
        if skip_dedup:
            ahead.append((enc, "restore" if hget is None and restore else "unchecked"))
        elif hget is None and optimistic:
            ahead.append((enc, "restore"))
        else:
            hget = hget_next if hget is None else hget
            probe(enc, hget)
            ahead.append((enc, "hget" if hget else "exists"))

    def send_writes(payload: bytes | memoryview, due: tuple[str, Any]) -> None:
        nonlocal unacked
        while unacked >= IN_FLIGHT:
            consume()
        writer._send(conn, payload)
        wire.append(due)
        unacked += 1

    def write_hset(
        enc: EncodedRows, keep: np.ndarray | None, commands: pa.Array | None = None
    ) -> None:
        nonlocal written, skipped
        commands = enc.commands() if commands is None else commands
        payload, n_replies = _hset_payload(enc, commands, keep, expire)
        if n_replies:
            send_writes(payload, ("ack", (len(enc), n_replies)))
        elif progress:
            progress(len(enc))
        kept = len(enc) if keep is None else int(keep.sum())
        written += kept
        skipped += len(enc) - kept

    def write_restore(enc: EncodedRows) -> None:
        assert restore is not None
        payload = enc.restores(restore.ttl_ms, restore.max_entries, restore.max_value)
        send_writes(payload, ("restored", enc))

    for enc in itertools.islice(pull, IN_FLIGHT):
        line_up(enc)
    while ahead or wire:
        if not ahead:  # replies may still line up rows RESTORE did not create
            consume()
            continue
        enc, how = ahead.popleft()
        if how == "restore" and restore is None:  # refused meanwhile
            line_up(enc, hget=False)
        elif how == "restore":
            write_restore(enc)
        elif how == "unchecked":
            write_hset(enc, None)
        else:
            # HSETs encoded while Redis applies the chunks in flight (unless to be restored)
            commands = enc.commands() if how == "hget" or restore is None else None
            kind, found = answer(enc)
            if kind == "exists" and found:  # some key exists: read every key's _ts
                probe(enc, True)
                kind, found = answer(enc)
            stored = found if kind == "hget" else None  # None: no key holds the view
            hget_next = stored is not None
            if kind == "exists" and restore is not None:
                optimistic = True
                write_restore(enc)
            else:
                stale = None if stored is None else _stale(enc, stored)
                keep = None if stale is None or not stale.any() else ~stale
                write_hset(enc, keep, commands)
        following = next(pull, None)  # keys encoded (its part reduced) while Redis writes
        if following is not None:
            line_up(following)
    return written, skipped


def _acknowledge(
    replies: _ReplyStream, unacked: tuple[int, int], progress: Callable[[int], None] | None
) -> None:
    """Read the replies of the chunk in flight (``(keys, replies)``), then report it."""
    keys, n_replies = unacked
    replies.lines(n_replies)
    if keys and progress:
        progress(keys)


def _write_cluster(
    writer: RedisWriter,
    chunks: Iterable[EncodedRows],
    ttl_seconds: int | None,
    skip_dedup: bool,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """Redis Cluster: redis-py's ClusterPipeline routes every key to its slot's node."""
    written = skipped = 0
    for enc in chunks:
        names = [enc.ts_field, *enc.fields]
        keys = enc.key_list()
        keep = np.ones(len(enc), dtype=bool)
        if not skip_dedup:
            keep = ~_stale(enc, writer.hget_many(keys, enc.ts_field))
        columns = [a.to_pylist() for a in [enc.ts_values(), *enc.values()]]
        rows = np.flatnonzero(keep).tolist()
        writer.hset_many(
            [keys[j] for j in rows],
            [dict(zip(names, [c[j] for c in columns], strict=True)) for j in rows],
            ttl_seconds,
        )
        written += len(rows)
        skipped += len(enc) - len(rows)
        if progress:
            progress(len(enc))
    return written, skipped


# ------------------------------------------------------------------------ public API


def _window(plan: ViewPlan, start: datetime | None, end: datetime) -> tuple[datetime, datetime]:
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    if start is None:
        # a view without ttl never expires: every row counts (Feast's incremental
        # materialization starts a year back then, a TODO of theirs)
        start = datetime(1970, 1, 1, tzinfo=UTC) if plan.ttl is None else end - plan.ttl
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    if start > end:
        raise ConfigError(f"start {start} is after end {end}")
    return start, end


class _NoProgress:
    """Stand-in for rich's Progress when no bar is shown: importing rich.progress costs
    more than a whole chunk of writes."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int) -> int:
        return 0

    def advance(self, task: int, advance: int) -> None:
        return None

    def update(self, task: int, total: int) -> None:
        return None


def _progress(show: bool) -> Any:
    if not show:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def materialize(
    repo_path: str | Path,
    start: datetime | None,
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    verify: bool = False,
    sample: int = 1000,
    show_progress: bool = True,
    record_interval: bool = True,
    chunk: int = CHUNK_KEYS,
    on_chunk: Callable[[str, int], None] | None = None,
) -> MaterializeReport:
    """Materialize ``views`` (all by default) of a Feast repo for event times in [start, end].

    ``verify`` runs the completeness check right after writing; ``record_interval`` stores
    the window in the registry like ``feast materialize`` (so materialize-incremental
    continues from ``end``). ``chunk`` is the number of keys per pipelined round trip.
    ``on_chunk(view, keys_done)`` is called after each chunk's writes are acknowledged
    (``keys_done`` counts the view's keys handled so far); an exception it raises stops the
    run. It exists for progress reporting and for fault tests (e.g. kill Redis after N
    chunks); the progress bar does not need it.
    """
    t0 = time.perf_counter()
    target = load_repo(repo_path, views)
    writer = RedisWriter(target.redis_type, target.connection_string)
    report = MaterializeReport(start=start or end, end=end)
    try:
        with _progress(show_progress) as bar:
            for plan in target.plans:
                v0 = time.perf_counter()
                lo, hi = _window(plan, start, end)
                report.start = lo
                candidates, scanned = scan_window(plan, lo, hi)
                vr = ViewReport(view=plan.name, rows_scanned=scanned)
                task = bar.add_task(plan.name, total=None)  # known once all parts reduced
                winners: list[pa.Table] = []

                def reduced(
                    candidates: _Candidates = candidates,
                    task: Any = task,
                    vr: ViewReport = vr,
                    winners: list[pa.Table] = winners,
                ) -> Iterator[pa.Table]:
                    for part in candidates.winners(PARTS):
                        winners.append(part)
                        vr.expected += part.num_rows
                        yield part
                    bar.update(task, total=vr.expected)

                done = [0]

                def advance(
                    k: int, task: Any = task, view: str = plan.name, done: list[int] = done
                ) -> None:
                    bar.advance(task, k)
                    if on_chunk is not None:
                        done[0] += k
                        on_chunk(view, done[0])

                vr.written, vr.skipped_not_newer = write_encoded(
                    writer,
                    encode_chunks(reduced(), plan, target.project, chunk),
                    target.key_ttl_seconds,
                    target.skip_dedup,
                    progress=advance,
                )
                if verify:
                    table = pa.concat_tables(winners) if winners else candidates.table.slice(0, 0)
                    _verify_view(writer, plan, target.project, table, sample, vr)
                if record_interval:
                    target.store.registry.apply_materialization(
                        plan.feast_view, target.project, lo, hi
                    )
                vr.seconds = time.perf_counter() - v0
                report.views.append(vr)
        if writer.restore_refused:
            report.notes.append(
                f"Redis refused RESTORE ({writer.restore_refused}); keys were written by HSET"
            )
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report


def verify(
    repo_path: str | Path,
    start: datetime | None,
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    sample: int = 1000,
) -> MaterializeReport:
    """Completeness check of a past materialization: recompute the offline latest rows and
    compare them with Redis (key presence for all, values for a sample)."""
    t0 = time.perf_counter()
    target = load_repo(repo_path, views)
    writer = RedisWriter(target.redis_type, target.connection_string)
    report = MaterializeReport(start=start or end, end=end)
    try:
        for plan in target.plans:
            v0 = time.perf_counter()
            lo, hi = _window(plan, start, end)
            report.start = lo
            table, scanned = read_latest(plan, lo, hi)
            vr = ViewReport(view=plan.name, rows_scanned=scanned, expected=table.num_rows)
            _verify_view(writer, plan, target.project, table, sample, vr)
            vr.seconds = time.perf_counter() - v0
            report.views.append(vr)
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report


def _expected_python(value: Any, codec: str) -> Any:
    """Offline cell -> the Python value Feast's online read returns for it."""
    if value is None:
        return None
    if codec in ("double", "float"):
        f = float(value)
        if f != f:
            return None
        return float(np.float32(f)) if codec == "float" else f
    if codec == "unix_timestamp":
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            value = int(aware.timestamp())
        return datetime.fromtimestamp(int(value), tz=UTC)
    if codec == "string":
        return str(value)
    return value


def _verify_view(
    writer: RedisWriter,
    plan: ViewPlan,
    project: str,
    table: pa.Table,
    sample: int,
    vr: ViewReport,
) -> None:
    """Check that Redis holds the view's latest rows (``table``): the stored event time
    of every key, the values of a sample of entities."""
    ts_field = rl.timestamp_field(plan.online_name)
    present = 0
    newer: set[int] = set()
    lo = 0
    for enc in encode_chunks(table, plan, project):
        stored = writer.hget_many(enc.key_list(), ts_field)
        ours = zip(stored, enc.ts_values().to_pylist(), enc.ts_nanos, strict=True)
        for i, (raw, mine, nanos) in enumerate(ours, start=lo):
            if raw == mine:
                present += 1  # the very same Timestamp bytes
            elif raw:
                got = rl.decode_timestamp_nanos(raw)
                if got >= nanos:
                    present += 1
                    if got > nanos:
                        newer.add(i)
        lo += len(enc)
    vr.present = present
    n = table.num_rows
    picks = sorted(random.Random(0).sample(range(n), min(sample, n)))
    if not picks:
        return
    picked = table.take(picks)
    fields = [rl.feature_field(plan.online_name, f) for f in plan.features]
    stored_rows = writer.hmget_many(
        encode_keys(picked, plan, project).to_pylist(), fields + [ts_field]
    )
    for i, row, fetched in zip(picks, picked.to_pylist(), stored_rows, strict=True):
        vr.sampled += 1
        if i in newer:
            vr.superseded += 1
            continue
        if fetched[-1] is None:
            continue  # already counted as missing
        bad = []
        for j, (fname, codec) in enumerate(zip(plan.features, plan.feature_types, strict=True)):
            want = _expected_python(row[fname], codec)
            have = rl.decode_value(fetched[j])
            if want != have:
                bad.append(f"{fname}: offline {want!r} != redis {have!r}")
        if bad:
            keys = {k: row[k] for k in plan.join_keys}
            vr.mismatches.append(f"{keys}: " + "; ".join(bad))
        else:
            vr.verified += 1


def push(
    repo_path: str | Path,
    view: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    force: bool = False,
) -> int:
    """Write freshly computed rows (dicts with join keys, features and optionally the event
    timestamp; default now) for a few entities, with the materializer's encoder.

    Follows Feast's staleness rule unless ``force``: a row older than, or as old as, what
    Redis holds is skipped. Returns how many entities were written.
    """
    target = load_repo(repo_path, [view])
    plan = target.plans[0]
    rows = list(rows)
    if not rows:
        return 0
    now = datetime.now(tz=UTC)
    columns: dict[str, list[Any]] = {}
    for name in plan.join_keys + plan.features:
        missing = [r for r in rows if name not in r]
        if missing:
            raise SchemaError(f"push to {view}: row without column {name!r}: {missing[0]}")
        columns[name] = [r[name] for r in rows]
    columns[plan.timestamp_field] = [r.get(plan.timestamp_field) or now for r in rows]
    arrow_types = {"int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(),
                   "float": pa.float32(), "string": pa.string(), "bool": pa.bool_(),
                   "bytes": pa.binary(), "unix_timestamp": pa.int64()}  # fmt: skip
    schema_fields = [
        pa.field(n, arrow_types[t])
        for n, t in zip(
            plan.join_keys + plan.features, plan.join_types + plan.feature_types, strict=True
        )
    ]
    schema_fields.append(pa.field(plan.timestamp_field, pa.timestamp("us", tz="UTC")))
    if plan.created_field:
        columns[plan.created_field] = [r.get(plan.created_field) or now for r in rows]
        schema_fields.append(pa.field(plan.created_field, pa.timestamp("us", tz="UTC")))
    try:
        table = pa.Table.from_pydict(columns, schema=pa.schema(schema_fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise SchemaError(
            f"push to {view}: rows do not match the FeatureView schema: {exc}"
        ) from exc
    table = table.take(_Candidates(table, np.ones(table.num_rows, dtype=bool), plan).latest())
    writer = RedisWriter(target.redis_type, target.connection_string)
    try:
        written, _ = write_encoded(
            writer,
            encode_chunks(table, plan, target.project),
            target.key_ttl_seconds,
            skip_dedup=force or target.skip_dedup,
        )
    finally:
        writer.close()
    return written


def redis_client(connection_string: str) -> Any:
    """redis-py client for a Feast connection string (standalone Redis)."""
    import redis

    nodes, params = rl.parse_connection_string(connection_string)
    return redis.Redis(host=nodes[0][0], port=nodes[0][1], **params)


def project_keys(client: Any, project: str) -> list[bytes]:
    """All keys of one Feast project (Feast keys end with the project name)."""
    return list(client.scan_iter(match=b"*" + project.encode(), count=10_000))


def clear_project(client: Any, project: str) -> int:
    """Delete only the keys of ``project``; returns how many."""
    keys = project_keys(client, project)
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])
    return len(keys)


def source_row_counts(repo_path: str | Path, views: Sequence[str] | None = None) -> dict[str, int]:
    """Rows in each view's offline source, whatever their event time (to tell an empty
    window from an empty source)."""
    return {
        plan.name: open_source(plan)[0].count_rows() for plan in load_repo(repo_path, views).plans
    }


def reset_online_project(repo_path: str | Path) -> int:
    """Delete the online rows of this repo's project (and nothing else), e.g. before
    loading regenerated data: the newer-only write rule would otherwise keep rows of an
    earlier dataset whose event times happen to be later."""
    target = load_repo(repo_path)
    if target.redis_type != "redis":
        raise ConfigError("reset_online_project supports a single Redis server only")
    try:
        return clear_project(redis_client(target.connection_string), target.project)
    except Exception as exc:  # redis-py raises several connection error types
        raise StoreUnavailable(f"REDIS connection failed: {exc}") from None


def iter_report_lines(report: MaterializeReport) -> Iterator[str]:
    """Plain-text summary lines (used by the CLI and the benchmark)."""
    for v in report.views:
        present = "-" if v.present is None else str(v.present)
        yield (
            f"{v.view}: rows={v.rows_scanned} expected={v.expected} written={v.written} "
            f"skipped_not_newer={v.skipped_not_newer} present={present} "
            f"verified={v.verified}/{v.sampled} superseded={v.superseded} lost={v.lost} "
            f"({v.seconds:.2f}s)"
        )
    yield from report.notes
