"""Window aggregations as of a query time: what every engine calls.

Two steps, both engine-neutral:

1. :meth:`WindowRunner.event_values` turns raw event rows into the *event log* form: the
   entity keys, the event time in microseconds (``EVENT_TIME``), the event id
   (``EVENT_ID``, when the set declares one) and one column per aggregation holding the
   value its function computed (null where it is missing or ``where`` is not true). The
   value functions run in the one executor (:class:`transforms.runtime.FeatureSetRunner`),
   row by row (rule 19), so any batching gives the same log.
2. :meth:`WindowRunner.aggregate_entity` takes one entity's log (any order) and query
   times and returns every window feature as of each query time (rules 23-30). It turns
   the log into rows and calls :meth:`transforms.window_rows.RowWindows.aggregate_many`,
   the one implementation of the window arithmetic, which the lookup server also calls
   on the rows it reads from Redis. Spark and Beam call it once per entity after
   grouping (:meth:`answer_arrow`, :meth:`answer_rows`), and :meth:`run_local` is the
   single-process reference.

Arithmetic is exact: sums are exact integers (:mod:`transforms._exact`'s scaling) rounded
once, so any order or split of the events gives the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import _columns
from transforms.aggregations import (
    VALUE_SUFFIX,
    WHERE_SUFFIX,
    Aggregation,
    WindowFeature,
    WindowSet,
)
from transforms.errors import SchemaError
from transforms.runtime import FeatureSetRunner
from transforms.types import Field, TimestampType
from transforms.window_rows import RowWindows, exact_int

__all__ = ["EVENT_ID", "EVENT_TIME", "WindowRunner", "exact_int"]

EVENT_TIME = "__event_time_us"
EVENT_ID = "__event_id"


def _micros(array: pa.Array | pa.ChunkedArray, where: str) -> np.ndarray:
    """UTC instants as int64 microseconds (rule 9: zoned timestamps only)."""
    if array.null_count:
        raise SchemaError(f"{where} has {array.null_count} null(s)")
    return _micros_or_zero(array, where)


def _micros_or_zero(array: pa.Array | pa.ChunkedArray, where: str) -> np.ndarray:
    """As :func:`_micros`, nulls read as 0 (for the caller to mask)."""
    t = array.type
    if not pa.types.is_timestamp(t):
        raise SchemaError(f"{where} expected a timestamp, got {t}")
    if t.tz is None:
        raise SchemaError(f"{where} is a timestamp without time zone; give it a zone (UTC)")
    try:
        us = array.cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid as exc:
        raise SchemaError(f"{where} has sub-microsecond precision: {exc}") from None
    if isinstance(us, pa.ChunkedArray):
        us = us.combine_chunks()
    ints = us.cast(pa.int64())
    if ints.null_count:
        ints = ints.fill_null(0)
    return np.asarray(ints.to_numpy(zero_copy_only=False), dtype=np.int64)


def _arrow_type(f: WindowFeature) -> pa.DataType:
    base = TimestampType.arrow if f.type is TimestampType else f.type.arrow
    return pa.list_(base) if f.op == "last_k" else base


class WindowRunner:
    """A :class:`WindowSet` ready to compute its log and its features."""

    def __init__(self, window_set: WindowSet) -> None:
        self.ws = window_set
        self.values = FeatureSetRunner(window_set.values, None)
        self.keys = list(window_set.entities)
        self.features = window_set.features
        self.rows = RowWindows(window_set)
        self.schema = pa.schema(
            [pa.field(f.name, _arrow_type(f), nullable=f.op not in ("count", "distinct"))
             for f in self.features]
        )  # fmt: skip

    # ------------------------------------------------------------ the event log

    def log_schema(self, source: pa.Schema) -> pa.Schema:
        """The event log's schema for events in ``source``."""
        self._check_events(source)
        fields = [source.field(k) for k in self.keys]
        fields.append(pa.field(EVENT_TIME, pa.int64(), nullable=False))
        if self.ws.event_id:
            fields.append(pa.field(EVENT_ID, source.field(self.ws.event_id).type))
        for a in self.ws.aggregations:
            fields.append(pa.field(a.name, _value_arrow(a)))
        return pa.schema(fields)

    def _check_events(self, source: pa.Schema) -> None:
        ws = self.ws
        for c in (*self.keys, ws.event_timestamp, *([ws.event_id] if ws.event_id else [])):
            if c not in source.names:
                raise SchemaError(
                    f"window set '{ws.name}': column '{c}' is missing from the events"
                )

    def event_values(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """Raw event rows -> the event log form (module doc, step 1)."""
        ws = self.ws
        self._check_events(batch.schema)
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        placed = [*self.keys, ws.event_timestamp]
        if any(table.column(c).null_count for c in placed):  # rule 22: no place, left out
            mask = pc.is_valid(table.column(placed[0]))
            for c in placed[1:]:
                mask = pc.and_(mask, pc.is_valid(table.column(c)))
            table = table.filter(mask)
        n = table.num_rows
        out = self.values.run_columns(self.values.canonical_from_arrow(table), n)
        arrays: list[pa.Array | pa.ChunkedArray] = [table.column(k) for k in self.keys]
        arrays.append(pa.array(_micros(table.column(ws.event_timestamp), f"window set '{ws.name}': event time '{ws.event_timestamp}'"), pa.int64()))  # fmt: skip
        names = [*self.keys, EVENT_TIME]
        if ws.event_id:
            arrays.append(table.column(ws.event_id))
            names.append(EVENT_ID)
        for a in ws.aggregations:
            values, valid = out[a.name + VALUE_SUFFIX]
            if a.where is not None:
                cond, cond_valid = out[a.name + WHERE_SUFFIX]
                keep = cond.astype(bool) if cond_valid is None else cond.astype(bool) & cond_valid
                valid = keep if valid is None else valid & keep
            field = Field(a.name, a.value.output.type, nullable=True)
            arrays.append(_columns.to_arrow(field, values, valid))
            names.append(a.name)
        return pa.Table.from_arrays(arrays, schema=self.log_schema(table.schema).with_metadata(None)) if names else table  # fmt: skip

    # ------------------------------------------------------------ one entity

    def log_rows(self, log: pa.Table) -> list[tuple[Any, ...]]:
        """One entity's log table as :class:`RowWindows` rows: event time, event id (None
        without one), then the values in aggregation order (timestamps as micros)."""
        n = log.num_rows
        cols: list[list[Any]] = [log.column(EVENT_TIME).to_pylist()]
        has_id = EVENT_ID in log.schema.names
        cols.append(log.column(EVENT_ID).to_pylist() if has_id else [None] * n)
        for a in self.ws.aggregations:
            col = log.column(a.name)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            cols.append(col.to_pylist())
        return list(zip(*cols, strict=True))

    def aggregate_entity(
        self, log: pa.Table, query_micros: Sequence[int] | np.ndarray
    ) -> dict[str, list[Any]]:
        """Every feature of one entity as of each query time (in the queries' order),
        from its log rows in any order (rules 23-30, see the module doc)."""
        if isinstance(query_micros, np.ndarray):
            queries: list[int] = query_micros.astype(np.int64).tolist()
        else:
            queries = [int(q) for q in query_micros]
        return self.rows.aggregate_many(self.log_rows(log), queries)

    # ------------------------------------------------------------ the local reference

    def run_local(
        self, events: pa.Table, queries: pa.Table, query_time: str, passthrough: Sequence[str] = ()
    ) -> pa.Table:
        """Window features for every query row (its keys and ``query_time``), computed in
        one process: the reference the engines are compared with."""
        log = self.event_values(events)
        return self.aggregate_grouped(log, queries, query_time, passthrough)

    def aggregate_grouped(
        self, log: pa.Table, queries: pa.Table, query_time: str, passthrough: Sequence[str] = ()
    ) -> pa.Table:
        """Every query row's features from a log of many entities: grouped by key here,
        one :meth:`aggregate_entity` call per entity. A query row with a null key or a null
        query time has no place (rule 24): its features are null."""
        for c in (*self.keys, query_time):
            if c not in queries.schema.names:
                raise SchemaError(f"window set '{self.ws.name}': query column '{c}' is missing")
        times = queries.column(query_time)
        qt = _micros_or_zero(times, f"query time '{query_time}'")
        rows_of = _group(queries, self.keys, times.is_null())
        events_of = _group(log, self.keys)
        log = log.combine_chunks()  # take() concatenates a chunked table's chunks every call
        columns: dict[str, list[Any]] = {f.name: [None] * queries.num_rows for f in self.features}
        empty = log.schema.empty_table()
        for key, idx in rows_of.items():
            ev = events_of.get(key)
            part = log.take(pa.array(ev, pa.int64())) if ev is not None else empty
            got = self.aggregate_entity(part, qt[idx])
            for name, values in got.items():
                col = columns[name]
                for i, v in zip(idx, values, strict=True):
                    col[i] = v
        arrays = [queries.column(c) for c in passthrough]
        arrays += [pa.array(columns[f.name], self.schema.field(f.name).type) for f in self.features]
        return pa.Table.from_arrays(arrays, names=[*passthrough, *(f.name for f in self.features)])

    # ------------------------------------------------------------ for the engines

    def output_schema(
        self, queries: pa.Schema, query_time: str, passthrough: Sequence[str] = ()
    ) -> pa.Schema:
        """``passthrough`` query columns, then every feature (nullable: a query row
        without a place has null features)."""
        for c in dict.fromkeys((*self.keys, query_time, *passthrough)):
            if c not in queries.names:
                raise SchemaError(f"window set '{self.ws.name}': query column '{c}' is missing")
        return pa.schema(
            [queries.field(c) for c in passthrough] + [f.with_nullable(True) for f in self.schema]
        )

    def unplaced(self, query_time: str) -> list[str]:
        """The query columns whose null leaves a row without a place (rule 24)."""
        return [*self.keys, query_time]

    def answer_arrow(
        self, log: pa.Table, queries: pa.Table, query_time: str, out_schema: pa.Schema
    ) -> pa.Table:
        """One entity's query rows (keys and time present) as ``out_schema`` (from
        :meth:`output_schema`): their passthrough columns, then the features as of each
        row's time, from the entity's log rows (any order; none at all is fine)."""
        if not queries.num_rows:
            return out_schema.empty_table()
        qt = _micros(queries.column(query_time), f"query time '{query_time}'")
        got = self.aggregate_entity(log, qt)
        n_pass = len(out_schema) - len(self.features)
        arrays = [queries.column(f.name).cast(f.type) for f in list(out_schema)[:n_pass]]
        arrays += [pa.array(got[f.name], self.schema.field(f.name).type) for f in self.features]
        return pa.Table.from_arrays(arrays, schema=out_schema)

    def answer_rows(
        self,
        log_rows: Sequence[dict[str, Any]],
        log_schema: pa.Schema,
        query_rows: Sequence[dict[str, Any]],
        query_time: str,
        passthrough: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """:meth:`answer_arrow` for dict rows: one entity's log rows (as
        :meth:`event_values` gives them, in ``log_schema``) and query rows."""
        if not query_rows:
            return []
        log = pa.Table.from_pylist(list(log_rows), schema=log_schema)
        times = pa.array([r[query_time] for r in query_rows])
        got = self.aggregate_entity(log, _micros(times, f"query time '{query_time}'"))
        out = [{c: r[c] for c in passthrough} for r in query_rows]
        for f in self.features:
            for row, v in zip(out, got[f.name], strict=True):
                row[f.name] = v
        return out

    def unplaced_row(self, row: dict[str, Any], passthrough: Sequence[str] = ()) -> dict[str, Any]:
        """A query row without a place: its passthrough columns, every feature null."""
        return {**{c: row[c] for c in passthrough}, **dict.fromkeys(f.name for f in self.features)}


def _value_arrow(a: Aggregation) -> pa.DataType:
    t = a.value.output.type
    return pa.timestamp("us", tz="UTC") if t is TimestampType else t.arrow


def _group(
    table: pa.Table, keys: Sequence[str], skip: pa.ChunkedArray | None = None
) -> dict[tuple[Any, ...], list[int]]:
    """Row indices by key tuple (rows with a null key, or where ``skip`` is true, belong
    to no entity: left out)."""
    cols = [table.column(k).to_pylist() for k in keys]
    skipped = skip.to_pylist() if skip is not None else [False] * table.num_rows
    out: dict[tuple[Any, ...], list[int]] = {}
    for i, (key, no) in enumerate(zip(zip(*cols, strict=True), skipped, strict=True)):
        if no or any(k is None for k in key):
            continue
        out.setdefault(key, []).append(i)
    return out
