"""Window parity at scale: the same events and queries through the local reference
(``WindowRunner.run_local``), Spark (``apply_windows``), Beam (``ComputeWindows``) and the
online state in Redis (``push``, then a read of every query as of its time), compared bit
for bit (floats by their 64 bits, nulls by position, lists item by item)."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.parity import compare_columns
from pipelines.window_parity_cases import PARITY_WINDOWS, QUERY_TIME
from store.window_layout import WindowLayout
from transforms.aggregations import WindowSet
from transforms.errors import StoreError
from transforms.window_runtime import WindowRunner

__all__ = ["ENGINES", "WindowParityReport", "compare_tables", "run_window_parity"]

ENGINES = ("local", "spark", "beam", "online")
PUSH_ROWS = 50_000  # events per online push (one round trip each)
READ_QUERIES = 5_000  # queries per pipelined round trip of online reads
BEAM_BATCH = 10_000  # event or query rows per Beam batch
_PY_TYPES = {pa.float64(): float, pa.int64(): int, pa.string(): str, pa.bool_(): bool}

Progress = Callable[[str], None]


@dataclass
class WindowParityReport:
    """Per engine: seconds, result rows, rows with an event in the longest window,
    mismatches against the local reference per feature, and the results themselves."""

    events: int
    queries: int
    features: int
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    nonempty: dict[str, int] = field(default_factory=dict)
    mismatches: dict[str, dict[str, int]] = field(default_factory=dict)  # engine -> feature -> n
    examples: list[str] = field(default_factory=list)
    tables: dict[str, pa.Table] = field(default_factory=dict, repr=False)  # by engine, by qid

    def engine_mismatches(self, engine: str) -> int:
        return sum(self.mismatches.get(engine, {}).values())

    @property
    def total_mismatches(self) -> int:
        return sum(self.engine_mismatches(e) for e in self.mismatches)


def run_window_parity(
    events: pa.Table,
    queries: pa.Table,
    *,
    window_set: WindowSet = PARITY_WINDOWS,
    redis_url: str | None = None,
    spark: Any = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> WindowParityReport:
    """Every engine on ``events`` (in arrival order) and ``queries`` (a ``qid`` column, the
    set's keys and ``at``); the online state lives under a private project in the Redis at
    ``redis_url`` (else REDIS_URL, else a local or private server) and is deleted after."""
    step = progress or (lambda _message: None)
    runner = WindowRunner(window_set)
    report = WindowParityReport(events.num_rows, queries.num_rows, len(runner.features))
    passthrough = ["qid", *runner.keys, QUERY_TIME]
    results = report.tables

    def timed(engine: str, run: Callable[[], pa.Table]) -> None:
        t0 = time.perf_counter()
        results[engine] = run().sort_by("qid")
        report.seconds[engine] = time.perf_counter() - t0

    step("local reference")
    timed("local", lambda: runner.run_local(events, queries, QUERY_TIME, passthrough))
    with tempfile.TemporaryDirectory(prefix="skewless-wparity-", dir=workdir) as tmp:
        work = Path(tmp)
        pq.write_table(events, work / "events.parquet", row_group_size=100_000)
        pq.write_table(queries, work / "queries.parquet", row_group_size=100_000)
        step("spark")
        timed("spark", lambda: _run_spark(runner, work, passthrough, spark))
        step("beam")
        timed("beam", lambda: _run_beam(runner, work, passthrough))
    online = _Online(runner, redis_url, step)
    timed("online", lambda: online.run(events, queries, passthrough))
    report.seconds.update({f"online {k}": v for k, v in online.seconds.items()})
    step("comparing")
    names = [f.name for f in runner.features]
    for engine, table in results.items():
        report.rows[engine] = table.num_rows
        report.nonempty[engine] = _nonempty(runner, table)
        if engine != "local":
            also = online.wrong_types if engine == "online" else {}
            report.mismatches[engine] = compare_tables(
                results["local"], table, names, engine, report.examples, also
            )
    return report


# ---------------------------------------------------------------------- the engines


def _run_spark(runner: WindowRunner, work: Path, passthrough: list[str], spark: Any) -> pa.Table:
    from transforms.engines.spark import apply_windows

    if spark is None:
        from pipelines.spark_session import get_spark

        spark = get_spark()
    events = spark.read.parquet(str(work / "events.parquet"))
    queries = spark.read.parquet(str(work / "queries.parquet"))
    out = apply_windows(runner.ws, events, queries, QUERY_TIME, passthrough)
    out.write.mode("overwrite").parquet(str(work / "spark-out"))
    return pq.read_table(work / "spark-out")


def beam_options() -> Any:
    """Beam's in-process runner (:data:`transforms.engines.beam.LOCAL_RUNNER`)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.engines.beam import LOCAL_RUNNER

    return PipelineOptions(list(LOCAL_RUNNER))


def _run_beam(runner: WindowRunner, work: Path, passthrough: list[str]) -> pa.Table:
    import apache_beam as beam

    from transforms.engines.beam import ComputeWindows

    events_schema = pq.read_schema(work / "events.parquet")
    queries_schema = pq.read_schema(work / "queries.parquet")
    schema = runner.output_schema(queries_schema, QUERY_TIME, passthrough)
    out_prefix = work / "beam-out" / "part"
    windows = ComputeWindows(
        runner.ws, events_schema, QUERY_TIME, passthrough, max_batch_size=BEAM_BATCH
    )
    with beam.Pipeline(options=beam_options()) as p:
        ev = p | "Events" >> beam.io.ReadFromParquet(str(work / "events.parquet"))
        qs = p | "Queries" >> beam.io.ReadFromParquet(str(work / "queries.parquet"))
        _ = (
            {"events": ev, "queries": qs}
            | "Windows" >> windows
            | "Write"
            >> beam.io.WriteToParquet(str(out_prefix), schema, file_name_suffix=".parquet")
        )
    return pq.read_table(out_prefix.parent, schema=schema)


class _Online:
    """The online state under a private project: push the events in arrival order
    (``PUSH_ROWS`` per push), then read every query as of its time, pipelined; the
    project's keys are deleted at the end. Seconds per phase go to ``seconds``; answers of
    another Python type than their column's are nulled, their qids kept in ``wrong_types``."""

    def __init__(self, runner: WindowRunner, redis_url: str | None, step: Progress) -> None:
        self.runner = runner
        self.redis_url = redis_url
        self.step = step
        self.seconds: dict[str, float] = {"push": 0.0, "reads": 0.0, "answers": 0.0}
        self.wrong_types: dict[str, list[int]] = {}

    def run(self, events: pa.Table, queries: pa.Table, passthrough: Sequence[str]) -> pa.Table:
        import redis

        from pipelines.local_redis import redis_for_run
        from store.window_state import WindowState, clear_windows

        context = nullcontext(self.redis_url) if self.redis_url else redis_for_run()
        with context as url:
            client = redis.Redis.from_url(url)
            project = f"skw_wparity_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            state = WindowState(project, self.runner.ws)
            try:
                t0 = time.perf_counter()
                for lo in range(0, events.num_rows, PUSH_ROWS):
                    self.step(f"online: push {lo:,}/{events.num_rows:,} events")
                    state.push(client, events.slice(lo, PUSH_ROWS))
                self.seconds["push"] = time.perf_counter() - t0
                columns = self.read(client, state.layout, queries)
            finally:
                clear_windows(client, project)
                client.close()
        arrays = [queries.column(c) for c in passthrough]
        for f in self.runner.features:
            col, arrow_type = columns[f.name], self.runner.schema.field(f.name).type
            bad = _check_types(col, arrow_type)
            for i in bad:
                col[i] = None
            if bad:
                self.wrong_types[f.name] = queries.column("qid").take(bad).to_pylist()
            arrays.append(pa.array(col, arrow_type))
        names = [*passthrough, *(f.name for f in self.runner.features)]
        return pa.Table.from_arrays(arrays, names=names)

    def read(self, client: Any, layout: WindowLayout, queries: pa.Table) -> dict[str, list[Any]]:
        """Every query's features as of its time: queries in time order, ``READ_QUERIES``
        per pipelined round trip (one ZRANGEBYSCORE per key, those of one time built
        together), each answered by ``layout.answer`` as the lookup server does. A query
        without a key or a time has no place (rule 24): every feature null."""
        from store.window_state import execute

        n = queries.num_rows
        keys = [queries.column(k).to_pylist() for k in layout.join_keys]
        times = queries.column(QUERY_TIME).cast(pa.int64()).to_pylist()
        placed = [
            i for i in range(n) if times[i] is not None and all(k[i] is not None for k in keys)
        ]
        placed.sort(key=times.__getitem__)
        rkeys = layout.keys([[k[i] for i in placed] for k in keys])
        columns: dict[str, list[Any]] = {f.name: [None] * n for f in self.runner.features}
        for lo in range(0, len(placed), READ_QUERIES):
            self.step(f"online: read {lo:,}/{len(placed):,} queries")
            part = range(lo, min(lo + READ_QUERIES, len(placed)))
            t0 = time.perf_counter()
            payload = b"".join(
                layout.read_commands([rkeys[j] for j in group], t)
                for t, group in _by_time(part, placed, times)
            )
            replies = execute(client, payload, len(part))
            t1 = time.perf_counter()
            for j, members in zip(part, replies, strict=True):
                if isinstance(members, Exception):
                    raise StoreError(f"window-state read failed: {members}")
                i = placed[j]
                for name, value in layout.answer(members, times[i]).items():
                    columns[name][i] = value
            self.seconds["reads"] += t1 - t0
            self.seconds["answers"] += time.perf_counter() - t1
        return columns


def _by_time(
    part: range, placed: Sequence[int], times: Sequence[int]
) -> Iterator[tuple[int, list[int]]]:
    """Runs of positions in ``part`` (queries sorted by time) with one query time."""
    run: list[int] = []
    for j in part:
        if run and times[placed[j]] != times[placed[run[0]]]:
            yield times[placed[run[0]]], run
            run = []
        run.append(j)
    if run:
        yield times[placed[run[0]]], run


# ---------------------------------------------------------------------- comparing


def compare_tables(
    want: pa.Table,
    got: pa.Table,
    features: Sequence[str],
    engine: str,
    examples: list[str],
    wrong_types: dict[str, list[int]] | None = None,
) -> dict[str, int]:
    """Per feature, the rows of ``got`` that differ from ``want`` (both sorted by ``qid``):
    a null against a value, another type, any bit of a value or of a list item, or a qid
    in ``wrong_types`` (answers of another Python type, found before conversion)."""
    if got.num_rows != want.num_rows or not got.column("qid").equals(want.column("qid")):
        examples.append(f"{engine}: {got.num_rows:,} rows, expected {want.num_rows:,}")
        return dict.fromkeys(features, max(want.num_rows, got.num_rows))
    out: dict[str, int] = {}
    for name in features:
        if name not in got.schema.names:
            out[name] = want.num_rows
            continue
        bad = differing_rows(want.column(name), got.column(name))
        if wrong_types and name in wrong_types:
            qids = got.column("qid").to_numpy(zero_copy_only=False)
            bad = np.union1d(bad, np.flatnonzero(np.isin(qids, wrong_types[name])))
        out[name] = int(bad.size)
        for i in bad[:2].tolist():
            qid, w, g = (
                t.column(c)[i].as_py() for t, c in ((want, "qid"), (want, name), (got, name))
            )
            examples.append(f"{engine} {name} qid={qid}: local={w!r} {engine}={g!r}"[:300])
    return out


def differing_rows(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Positions where two columns differ; list columns by length, then item by item."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    if not (pa.types.is_list(a.type) and a.type == b.type):
        return compare_columns(a, b)
    na = a.is_null().to_numpy(zero_copy_only=False)
    nb = b.is_null().to_numpy(zero_copy_only=False)
    la = pc.list_value_length(a).fill_null(-1).to_numpy(zero_copy_only=False)
    lb = pc.list_value_length(b).fill_null(-1).to_numpy(zero_copy_only=False)
    bad = (na != nb) | (la != lb)
    same_shape = np.flatnonzero(~bad & ~na)
    if same_shape.size:
        idx = pa.array(same_shape, pa.int64())
        sa, sb = a.take(idx), b.take(idx)
        items = compare_columns(pc.list_flatten(sa), pc.list_flatten(sb))
        if items.size:
            parents = pc.list_parent_indices(sa).to_numpy(zero_copy_only=False)
            bad[same_shape[np.unique(parents[items])]] = True
    return np.flatnonzero(bad)


def _nonempty(runner: WindowRunner, table: pa.Table) -> int:
    """Rows whose longest window holds an event (a count over it above 0)."""
    longest = max(f.window for f in runner.features)
    counts = [f.name for f in runner.features if f.op == "count" and f.window == longest]
    if not counts:
        return 0
    hit = pc.greater(table.column(counts[0]), 0).fill_null(False)
    return int(pc.sum(hit).as_py() or 0)


def _check_types(column: list[Any], arrow_type: pa.DataType) -> list[int]:
    """Positions of values whose Python type is not the column's (None is fine)."""
    if pa.types.is_list(arrow_type):
        inner = arrow_type.value_type
        return [
            i
            for i, v in enumerate(column)
            if v is not None and (type(v) is not list or _check_types(v, inner))
        ]
    want = datetime if pa.types.is_timestamp(arrow_type) else _PY_TYPES[arrow_type]
    return [i for i, v in enumerate(column) if v is not None and type(v) is not want]
