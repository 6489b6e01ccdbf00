"""Window features offline: each row's windows as of its own request time.

A training set (and the skew report's recomputation of logged requests) asks, per row,
the window features of a feature service as of that row's time: the windows
``[t - w, t)`` of CONTRACT rules 23-30 over the window set's raw events, computed by the
one implementation every engine and the lookup server share
(:meth:`transforms.window_runtime.WindowRunner.run_local`). The events are the window
set's source as recorded in the manifest (``skewless apply``), read once per set and only
for the keys the rows ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from store.manifest import Manifest, WindowSetSpec
from transforms.errors import SchemaError

NEWEST_SUFFIX = "__newest_event_ts"  # the newest event before each row's time


def window_refs(manifest: Manifest, features: Sequence[str]) -> dict[str, list[str]]:
    """Window set -> its features a service reads, in the service's order."""
    out: dict[str, list[str]] = {}
    for ref in features:
        src, _, feat = ref.partition(":")
        if src in manifest.window_sets:
            out.setdefault(src, []).append(feat)
    return out


def load_window_set(repo: str | Path, spec: WindowSetSpec) -> Any:
    """The WindowSet a manifest entry names, refused when its definition drifted from
    the manifest (:func:`store.window_layout.checked_window_set`, as the server does)."""
    from store.window_layout import checked_window_set

    return checked_window_set(repo, spec)


def read_events(spec: WindowSetSpec, ws: Any, rows: pa.Table) -> pa.Table:
    """The window set's raw events whose keys occur in ``rows`` (every event time: a later
    copy of an event id decides, rule 27), with only the columns the set reads."""
    if not spec.source:
        raise SchemaError(
            f"window set '{spec.name}': the manifest records no source of its events; "
            "re-run `skewless apply` on the project"
        )
    try:
        data = ds.dataset(spec.source, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"window set '{spec.name}': source {spec.source}: {exc}") from None
    wanted = [*ws.entities, ws.event_timestamp, *ws.values.inputs]
    if ws.event_id:
        wanted.append(ws.event_id)
    columns = [c for c in dict.fromkeys(wanted) if c in data.schema.names]
    flt = None
    if len(ws.entities) == 1:
        (key,) = ws.entities
        values = pc.unique(rows.column(key).drop_null())
        flt = ds.field(key).isin(values.cast(data.schema.field(key).type))
    return data.to_table(columns=columns, filter=flt)


def window_columns(
    repo: str | Path,
    manifest: Manifest,
    rows: pa.Table,
    features: Sequence[str],
    time_column: str,
    *,
    spark_master: str | None = None,
) -> dict[str, pa.Array]:
    """Each window feature of ``features`` ("set:feature" refs; others are ignored) for
    every row of ``rows`` (its keys and ``time_column``), in row order: in this process,
    or on Spark when ``spark_master`` is given (the same bits, rule 23-30 tests)."""
    out: dict[str, pa.Array] = {}
    for name, feats in window_refs(manifest, features).items():
        spec = manifest.window_sets[name]
        missing = [k for k in (*spec.entities, time_column) if k not in rows.column_names]
        if missing:
            raise SchemaError(f"window set '{name}' needs the columns {missing}")
        ws = load_window_set(repo, spec)
        queries = rows.select([*spec.entities, time_column])
        if spark_master is None:
            from transforms.window_runtime import WindowRunner

            got = WindowRunner(ws).run_local(read_events(spec, ws, rows), queries, time_column)
        else:
            got = _on_spark(spark_master, spec, ws, queries, time_column)
        for f in feats:
            out[f] = got.column(f).combine_chunks()
    return out


_ROW = "__skewless_row"


def _on_spark(
    master: str, spec: WindowSetSpec, ws: Any, queries: pa.Table, time_column: str
) -> pa.Table:
    """:func:`transforms.engines.spark.apply_windows` over the whole source, the query
    rows numbered so that the answer comes back in their order."""
    import sys

    from pyspark import cloudpickle

    from pipelines.spark_session import get_spark
    from transforms.engines.spark import apply_windows

    for agg in ws.aggregations:  # the project's modules travel with the functions
        module = sys.modules.get(agg.value.fn.__module__)
        if module is not None and not str(getattr(module, "__file__", "")).startswith(sys.prefix):
            cloudpickle.register_pickle_by_value(module)
    session = get_spark(master)
    numbered = queries.append_column(_ROW, pa.array(range(queries.num_rows), pa.int64()))
    events = session.read.parquet(spec.source)
    answer = apply_windows(ws, events, session.createDataFrame(numbered), time_column, [_ROW])
    table = answer.toArrow()
    return table.sort_by(_ROW)


def newest_before(events: pa.Table, ws: Any, queries: pa.Table, time_column: str) -> pa.Array:
    """Per query row: the newest event time of its entity strictly before its time (UTC
    microseconds; null when none). The freshness reference of served window features.

    One sort of events and queries together by (entity, time, queries first at a tie), a
    running maximum of the event positions: each query sees the last event sorted before
    it, which counts when it belongs to the same entity."""
    keys = list(ws.entities)
    ev_t = pc.cast(events.column(ws.event_timestamp), pa.timestamp("us", tz="UTC"))
    q_t = pc.cast(queries.column(time_column), pa.timestamp("us", tz="UTC"))
    ev_codes, q_codes = _codes(events, queries, keys)
    ev_us = np.asarray(ev_t.cast(pa.int64()).fill_null(0).to_numpy())
    ev_ok = ~np.asarray(ev_t.is_null().to_numpy(zero_copy_only=False)) & (ev_codes >= 0)
    q_us = np.asarray(q_t.cast(pa.int64()).fill_null(0).to_numpy())
    q_ok = ~np.asarray(q_t.is_null().to_numpy(zero_copy_only=False)) & (q_codes >= 0)
    n_ev = int(ev_ok.sum())
    codes = np.concatenate([ev_codes[ev_ok], q_codes])
    times = np.concatenate([ev_us[ev_ok], q_us])
    is_event = np.concatenate([np.ones(n_ev, np.int8), np.zeros(len(q_codes), np.int8)])
    order = np.lexsort((is_event, times, codes))  # at one instant the query comes first
    sorted_event = is_event[order] == 1
    last = np.maximum.accumulate(np.where(sorted_event, np.arange(len(order)), -1))
    at = np.empty(len(order), np.int64)
    at[order] = np.arange(len(order))  # each row's position in the sorted order
    q_last = last[at[n_ev:]]
    seen = q_last >= 0
    same = np.zeros(len(q_codes), bool)
    same[seen] = codes[order[q_last[seen]]] == q_codes[seen]
    found = q_ok & seen & same
    newest = np.where(found, times[order[np.maximum(q_last, 0)]], 0)
    return pa.array(newest, pa.int64(), mask=~found).cast(pa.timestamp("us", tz="UTC"))


def _codes(events: pa.Table, queries: pa.Table, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One int64 code per row for the key tuple, shared by events and queries (-1: a null
    key or a query key with no event)."""
    if len(keys) == 1:
        ev = events.column(keys[0]).combine_chunks()
        q = queries.column(keys[0]).combine_chunks()
    else:
        ev = _joined(events, keys)
        q = _joined(queries, keys)
    dictionary = pc.unique(ev.drop_null())
    ev_codes = pc.index_in(ev, value_set=dictionary).fill_null(-1)
    q_codes = pc.index_in(q.cast(ev.type), value_set=dictionary).fill_null(-1)
    return (
        np.asarray(ev_codes.to_numpy(zero_copy_only=False), dtype=np.int64),
        np.asarray(q_codes.to_numpy(zero_copy_only=False), dtype=np.int64),
    )


def _joined(table: pa.Table, keys: list[str]) -> pa.Array:
    """Composite keys as one string column (null when any part is null)."""
    parts = [pc.cast(table.column(k), pa.string()) for k in keys]
    return pc.binary_join_element_wise(*parts, "\x1f").combine_chunks()
