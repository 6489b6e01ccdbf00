"""The point-in-time join of ``training_set.get_training_set`` on Spark, with the same bits.

Per view, Spark tasks read the source's row groups with pyarrow, the local reader's code
and types, and number the rows in file order; entity rows and feature rows are unioned,
hash-partitioned by join key and ordered by (event time, kind, created time, file order),
so a running ``last`` over each key carries the latest earlier feature row to every entity
row. Results come back to the driver by entity row number. Values cross Spark as int64 bit
patterns, bytes or booleans: no float, time unit or zone is ever converted by Spark.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.materialize import open_source
from pipelines.point_in_time import _ts_filter
from pipelines.training_set import ViewRequest, ViewStats
from transforms.errors import SchemaError

_MASTER = re.compile(
    r"local(\[(\*|[1-9]\d*)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]|yarn|(spark|k8s)://\S+"
)
# kinds of rows in the union; at one event time the smaller sorts first, so an entity row
# sees the feature rows of its instant only when it sorts after them (inclusive join)
_FIRST, _SECOND = 0, 1
_ROW_BITS = 40  # file order = (row group number in file order) << 40 | row in the group
_BATCH_ROWS = 100_000
_BROADCAST_KEYS = 1_000_000  # distinct entity keys up to which feature rows are pre-filtered
_ROWS_PER_PARTITION = 1_000_000


def check_master(master: str) -> None:
    """A Spark master URL skewless accepts: ``local[N]``/``local[*]``, ``spark://``,
    ``k8s://``, ``yarn``."""
    if not _MASTER.fullmatch(master):
        raise SchemaError(
            f"--master {master!r}: expected local, local[N], local[*], spark://HOST:PORT, "
            "yarn or k8s://URL"
        )


def _session(master: str | None) -> Any:
    """The process's one Spark session (created on ``master``, ``local[*]`` by default)."""
    from pipelines.spark_session import get_spark

    session = get_spark(master or "local[*]", "skewless-training-set")
    running = session.sparkContext.master
    if master is not None and running != master:
        raise SchemaError(
            f"--master {master!r}: this process already runs a Spark session on {running!r} "
            "(one session per process)"
        )
    return session


# ------------------------------------------------------------------- wire types


def _plain(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_text(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _wire_type(t: pa.DataType) -> pa.DataType:
    """How a value column of Arrow type ``t`` crosses Spark: bool, bytes or int64 bits."""
    t = _plain(t)
    if pa.types.is_boolean(t):
        return pa.bool_()
    if _is_text(t):
        return pa.binary()
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t):
        return pa.int64()
    raise SchemaError(f"--engine spark: feature columns of type {t} are not supported")


def _float_bits(t: pa.DataType) -> pa.DataType:
    return {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[t.bit_width]


def _to_wire(col: pa.ChunkedArray) -> pa.Array:
    col = _one_chunk(col)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_floating(t):
        return col.view(_float_bits(t)).cast(pa.int64())
    if t == pa.uint64() or pa.types.is_timestamp(t):
        return col.view(pa.int64())
    if pa.types.is_integer(t) or _is_text(t):
        return col.cast(_wire_type(t))
    return col


def _from_wire(col: pa.ChunkedArray, t: pa.DataType) -> pa.ChunkedArray:
    """Undo ``_to_wire``: the column as the local path gives it (dictionaries decoded)."""
    t = _plain(t)
    col = _one_chunk(col)
    if pa.types.is_floating(t):
        col = col.cast(_float_bits(t)).view(t)
    elif t == pa.uint64() or pa.types.is_timestamp(t):
        col = col.view(t)
    elif col.type != t:
        col = col.cast(t)
    return pa.chunked_array([col], t)


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _key_wire_type(entity_type: pa.DataType, view: str, key: str) -> pa.DataType:
    """Join keys meet as the local KeyCoder meets them: integers of any width as int64,
    strings by their UTF-8 bytes, bytes and booleans as themselves."""
    t = _plain(entity_type)
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_boolean(t):
        return pa.bool_()
    raise SchemaError(f"--engine spark: view {view!r} key {key!r} of type {t} is not supported")


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql import types as st

    spark_type = {
        pa.int64(): st.LongType(),
        pa.binary(): st.BinaryType(),
        pa.string(): st.StringType(),
        pa.bool_(): st.BooleanType(),
    }
    return st.StructType([st.StructField(f.name, spark_type[f.type]) for f in schema])


# -------------------------------------------------------------- reading a source


@dataclass(frozen=True)
class _SourceRead:
    """A view's feature rows as Spark tasks read them: one task per row group, in file
    order (``tasks``), the scan's schema, the time filter ``lo <= ts <= hi`` (ns)."""

    tasks: tuple[tuple[str, int], ...]  # (file path, row group id)
    rows: int  # rows of those row groups plus the entity rows: the size of the join
    filesystem: Any
    schema: pa.Schema
    keys: tuple[str, ...]
    key_types: tuple[pa.DataType, ...]
    ts: str
    created: str | None
    features: tuple[str, ...]
    lo: int | None
    hi: int

    def wire_schema(self) -> pa.Schema:
        fields = [pa.field(f"_k{i}", t) for i, t in enumerate(self.key_types)]
        fields.append(pa.field("_ts", pa.int64()))
        if self.created:
            fields.append(pa.field("_created", pa.int64()))
        fields.append(pa.field("_order", pa.int64()))
        for i, name in enumerate(self.features):
            fields.append(pa.field(f"_f{i}", _wire_type(self.schema.field(name).type)))
        return pa.schema(fields)

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for task in batch.column(0).to_pylist():
                yield from self._read(task)

    def _read(self, task: int) -> Iterator[pa.RecordBatch]:
        path, row_group = self.tasks[task]
        fragment = ds.ParquetFileFormat().make_fragment(
            path, filesystem=self.filesystem, row_groups=[row_group]
        )
        names = list(dict.fromkeys([*self.keys, self.ts, *self._created(), *self.features]))
        schema = pa.schema([self.schema.field(n) for n in names])
        # to_batches yields in file order; the local reader scans with the same schema
        parts = fragment.to_batches(schema=self.schema, columns=names)
        table = pa.Table.from_batches(list(parts), schema=schema)
        ts = _nanos(table.column(self.ts))
        keep = pc.less_equal(ts, self.hi)
        if self.lo is not None:
            keep = pc.and_(keep, pc.greater_equal(ts, self.lo))
        rows = np.flatnonzero(keep.fill_null(False).to_numpy(zero_copy_only=False))
        table = table.take(pa.array(rows))
        columns = [table.column(k).cast(t) for k, t in zip(self.keys, self.key_types, strict=True)]
        columns.append(ts.take(pa.array(rows)))
        for name in self._created():  # a null created time loses every tie
            columns.append(_nanos(table.column(name)).fill_null(np.iinfo(np.int64).min))
        columns.append(pa.array((task << _ROW_BITS) + rows, pa.int64()))
        columns.extend(_to_wire(table.column(f)) for f in self.features)
        out = pa.Table.from_arrays(columns, schema=self.wire_schema())
        yield from out.to_batches(max_chunksize=_BATCH_ROWS)

    def _created(self) -> list[str]:
        return [self.created] if self.created else []


def _nanos(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp column as int64 UTC nanoseconds (nulls kept), as the local scan."""
    return pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64())


def _row_groups(dataset: ds.Dataset, flt: ds.Expression) -> tuple[list[tuple[str, int]], int]:
    """(file path, row group id) of every row group that may pass ``flt``, in the order the
    local reader scans them; and their row count."""
    tasks, rows = [], 0
    for fragment in dataset.get_fragments():
        for part in fragment.split_by_row_group(flt, schema=dataset.schema):
            (group,) = part.row_groups
            tasks.append((fragment.path, group.id))
            rows += group.num_rows
    if len(tasks) >= 2 ** (63 - _ROW_BITS):
        raise SchemaError(f"--engine spark: {len(tasks)} row groups in one view, too many")
    return tasks, rows


# ---------------------------------------------------------------------- the join


@dataclass
class _Entities:
    """The checked entity rows on the driver, their UTC ns times, and the join rule."""

    table: pa.Table
    ts: np.ndarray
    strict_before: bool


def _entity_frames(
    session: Any, ent: _Entities, req: ViewRequest, key_types: Sequence[pa.DataType]
) -> tuple[Any, Any]:
    """Entity rows for one view (keys, time, row number, ``time - ttl`` with a ttl) and
    their distinct keys (None when there are too many to broadcast)."""
    pairs = zip(req.entity_keys, key_types, strict=True)
    keys = pa.table(
        [_plain_column(ent.table.column(k)).cast(t) for k, t in pairs],
        names=[f"_k{i}" for i in range(len(key_types))],
    )
    rows = keys.append_column("_ts", pa.array(ent.ts))
    rows = rows.append_column("_idx", pa.array(np.arange(len(ent.ts), dtype=np.int64)))
    ttl_ns = _ttl_ns(req.plan.ttl)
    if ttl_ns:
        rows = rows.append_column("_emin", pa.array(ent.ts - ttl_ns))  # numpy int64, as local
    distinct = keys.group_by(keys.column_names).aggregate([])
    wanted = None
    if distinct.num_rows <= _BROADCAST_KEYS:
        wanted = session.createDataFrame(distinct)
    return session.createDataFrame(rows), wanted


def _plain_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _ttl_ns(ttl: timedelta | None) -> int:
    return int(ttl / timedelta(microseconds=1)) * 1000 if ttl else 0


def _parallelism(session: Any) -> int:
    return max(1, int(session.sparkContext.defaultParallelism))


def _feature_frame(session: Any, read: _SourceRead, scanned: Any) -> Any:
    """The feature rows with a key; ``scanned`` (an Observation or None) counts the rows
    that passed the time filter, as the local scan counts them."""
    from pyspark.sql import functions as F

    n = len(read.tasks)
    tasks = session.range(n, numPartitions=max(1, min(n, 4 * _parallelism(session))))
    frame = tasks.mapInArrow(read, _spark_schema(read.wire_schema()))
    if scanned is not None:
        frame = frame.observe(scanned, F.count(F.lit(1)).alias("rows"))
    has_key = F.col("_k0").isNotNull()
    for i in range(1, len(read.keys)):
        has_key = has_key & F.col(f"_k{i}").isNotNull()
    return frame.where(has_key)  # a null key never equals an entity key


def _join_frame(entity: Any, features: Any, read: _SourceRead, ent: _Entities) -> Any:
    """Entity rows with their feature row's values (null when none or older than ttl):
    per key, rows ordered by (time, kind, created, file order); the last feature row at or
    before an entity row in that order is its row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ent_kind, feat_kind = (_FIRST, _SECOND) if ent.strict_before else (_SECOND, _FIRST)
    keys = [f"_k{i}" for i in range(len(read.keys))]
    union = entity.withColumn("_kind", F.lit(ent_kind)).unionByName(
        features.withColumn("_kind", F.lit(feat_kind)), allowMissingColumns=True
    )
    parts = max(_parallelism(entity.sparkSession), math.ceil(read.rows / _ROWS_PER_PARTITION))
    order = ["_ts", "_kind", *(["_created"] if read.created else []), "_order"]
    window = (
        Window.partitionBy(*keys)
        .orderBy(*order)
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    values = [f"_f{i}" for i in range(len(read.features))]
    is_feature = F.col("_kind") == F.lit(feat_kind)
    last = F.last(F.when(is_feature, F.struct("_ts", *values)), ignorenulls=True)
    joined = union.repartition(parts, *keys).withColumn("_win", last.over(window))
    joined = joined.where(~is_feature)
    hit = F.col("_win").isNotNull()
    if "_emin" in entity.columns:
        hit = hit & (F.col("_win._ts") >= F.col("_emin"))
    joined = joined.withColumn("_hit", F.coalesce(hit, F.lit(False)))
    return joined.select(
        "_idx", "_hit", *(F.when(F.col("_hit"), F.col(f"_win.{v}")).alias(v) for v in values)
    )


def _source_read(ent: _Entities, req: ViewRequest) -> tuple[_SourceRead, pa.Schema]:
    """How Spark tasks read ``req``'s source, and the source's schema."""
    plan = req.plan
    dataset, cols = open_source(plan)
    ts_col = cols[plan.timestamp_field]
    ttl_ns = _ttl_ns(plan.ttl)
    lo = int(ent.ts.min()) - ttl_ns if ttl_ns else None
    hi = int(ent.ts.max())
    tasks, rows = _row_groups(
        dataset, _ts_filter(ts_col, dataset.schema.field(ts_col).type, lo, hi)
    )
    read = _SourceRead(
        tasks=tuple(tasks),
        rows=rows + len(ent.ts),
        filesystem=dataset.filesystem,
        schema=dataset.schema,
        keys=tuple(cols[k] for k in plan.join_keys),
        key_types=tuple(
            _key_wire_type(ent.table.column(k).type, plan.name, k) for k in req.entity_keys
        ),
        ts=ts_col,
        created=cols[plan.created_field] if plan.created_field else None,
        features=tuple(cols[f] for f in req.features),
        lo=lo,
        hi=hi,
    )
    return read, dataset.schema


def _join_view(
    session: Any, ent: _Entities, req: ViewRequest, count: bool
) -> tuple[list[pa.ChunkedArray], int, int]:
    """One view's feature columns in entity order; rows scanned (when ``count``) and entity
    rows matched."""
    import uuid

    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    read, schema = _source_read(ent, req)
    scanned = Observation(f"scanned_{uuid.uuid4().hex}") if count and read.tasks else None
    features = _feature_frame(session, read, scanned)
    entity, wanted = _entity_frames(session, ent, req, read.key_types)
    if wanted is not None:  # drop feature rows of keys no entity row asks for, map side
        keys = [f"_k{i}" for i in range(len(read.keys))]
        features = features.join(F.broadcast(wanted), on=keys, how="left_semi")
    result = _join_frame(entity, features, read, ent).toArrow()
    n = len(ent.ts)
    if result.num_rows != n:
        raise SchemaError(f"view {req.plan.name}: Spark returned {result.num_rows} of {n} rows")
    place = np.empty(n, dtype=np.int64)
    place[result.column("_idx").to_numpy()] = np.arange(n)
    result = result.take(pa.array(place))
    out = [
        _from_wire(result.column(f"_f{i}"), schema.field(name).type)
        for i, name in enumerate(read.features)
    ]
    matched = int(pc.sum(result.column("_hit")).as_py() or 0)
    return out, int(scanned.get["rows"]) if scanned is not None else 0, matched


def join_views(
    table: pa.Table,
    entity_ts: np.ndarray,
    requests: Sequence[ViewRequest],
    strict_before: bool,
    master: str | None,
    stats: list[ViewStats] | None,
) -> pa.Table:
    """``table`` (checked entity rows, at least one; ``entity_ts`` their UTC ns times) with
    every requested view's features appended, computed on Spark as the local path does."""
    if master is not None:
        check_master(master)
    session = _session(master)
    ent = _Entities(table, entity_ts, strict_before)
    out = table
    for req in requests:
        columns, scanned, matched = _join_view(session, ent, req, stats is not None)
        for name, col in zip(req.out_names, columns, strict=True):
            out = out.append_column(name, col)
        if stats is not None:
            stats.append(ViewStats(req.plan.name, scanned, matched))
    return out
