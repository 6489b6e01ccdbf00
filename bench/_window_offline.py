"""The offline rows of ``bench.windows``: window features for a query file computed by an
engine in a child process, its wall time and peak memory.

The parent writes the events (``offline_events`` trips of ``offline_events / 100``
drivers over 10 days) and the queries (``offline_queries`` rows: a driver and a time in the
same span) as Parquet, then runs ``python -m bench.windows --offline-child ENGINE DIR``,
which reads them, times the engine alone and prints one JSON line. Peak RSS is that
child's ``ru_maxrss`` (``getrusage(RUSAGE_CHILDREN)``) read by a small process that only
starts it and waits, so each engine's peak is its own whatever ran before.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._window_run import PY, ROOT, WindowRun
from bench.results import Measure

AREA = "offline windows"
SPAN_DAYS = 10
EVENTS_PER_DRIVER = 100
QUERY_TIME = "request_time"


SPARK_MASTER = "local[2]"
SPARK_MAX_QUERIES = 100_000  # Spark's rows are measured at the --quick size at most


def _prepare_local(data: Path) -> Callable[[], int]:
    import pyarrow.parquet as pq

    from bench.repos.windows_repo import window_set
    from transforms.window_runtime import WindowRunner

    events = pq.read_table(data / "events.parquet")
    queries = pq.read_table(data / "queries.parquet")
    return lambda: WindowRunner(window_set()).run_local(events, queries, QUERY_TIME).num_rows


def _prepare_spark(data: Path) -> Callable[[], int]:
    """What ``skewless training-set --engine spark`` runs for a window set
    (:func:`transforms.engines.spark.apply_windows` over the events, query rows numbered
    and the answer collected in their order); the session is started, and warmed on 1,000
    queries, before the clock (a cold first job costs ~10 s more)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.repos.windows_repo import window_set
    from pipelines.spark_session import get_spark
    from transforms.engines.spark import apply_windows

    session = get_spark(SPARK_MASTER, "skewless-bench-windows")
    queries = pq.read_table(data / "queries.parquet")
    numbered = queries.append_column("row", pa.array(range(queries.num_rows), pa.int64()))
    events = session.read.parquet(str(data / "events.parquet"))
    query_df = session.createDataFrame(numbered)

    def run(queries: Any = query_df) -> int:
        answer = apply_windows(window_set(), events, queries, QUERY_TIME, ["row"])
        return int(answer.toArrow().sort_by("row").num_rows)

    run(session.createDataFrame(numbered.slice(0, 1_000)))  # JVM and Python workers warm
    return run


# The engines timed: name -> (label, data dir -> a call answering every query, timed).
ENGINES: dict[str, tuple[str, Callable[[Path], Callable[[], int]]]] = {
    "local": ("run_local", _prepare_local),
    "spark": (
        f"Spark {SPARK_MASTER} (apply_windows, as training-set --engine spark)",
        _prepare_spark,
    ),
}
# starts the child, waits, prints the child's peak RSS (kilobytes on Linux)
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)"
)


def _vm(field: str) -> int:
    """A /proc/self/status memory line, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return 0


def child_main(engine: str, data: str) -> None:
    """In the child: read the inputs, time ``engine`` on them, print one JSON line."""
    run = ENGINES[engine][1](Path(data))
    inputs_mb = _vm("VmRSS")
    t0 = time.perf_counter()
    rows = run()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rows": rows, "inputs_mb": inputs_mb}))


def write_inputs(data: Path, n_events: int, n_queries: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.repos.windows_repo import DAY_US, driver_ids, uniform_events

    data.mkdir(parents=True, exist_ok=True)
    end_us = 1_750_000_000_000_000  # 2025-06-15
    span = SPAN_DAYS * DAY_US
    drivers = driver_ids(max(1, n_events // EVENTS_PER_DRIVER))
    events = uniform_events(n_events, drivers, end_us, span, seed=21)
    pq.write_table(events, data / "events.parquet")
    del events
    rng = np.random.default_rng(22)
    owner = pa.array(rng.integers(0, len(drivers), n_queries).astype(np.int32))
    times = end_us - rng.integers(0, span, n_queries)
    queries = pa.table(
        {
            "driver_id": pa.DictionaryArray.from_arrays(owner, pa.array(drivers)).cast(pa.string()),
            QUERY_TIME: pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(queries, data / "queries.parquet")


def run_child(run: WindowRun, engine: str, data: Path) -> dict[str, Any]:
    """The engine's JSON line, plus ``peak_mb``."""
    child = [PY, "-m", "bench.windows", "--offline-child", engine, str(data)]
    done = subprocess.run(
        [PY, "-c", _MEASURE, *child], cwd=ROOT, env=run.env(), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"offline {engine} child failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    got: dict[str, Any] = json.loads(lines[-2])
    got["peak_mb"] = int(lines[-1].split()[1]) / 1024
    return got


def offline_rows(run: WindowRun, console: Any) -> list[Measure]:
    s = run.sizes
    data = run.tmp / "offline"
    size = f"{s.offline_queries:,} queries x {s.offline_events:,} events"
    with console.status(f"offline inputs: {size}"):
        write_inputs(data, s.offline_events, s.offline_queries)
    rows = _engine_rows(run, "local", data, s.offline_events, s.offline_queries, console)
    # Spark beside run_local on the same inputs, at the --quick size at most (local[2] on
    # 2 cores: 1M x 10M would take a quarter of an hour)
    n_q = min(s.offline_queries, SPARK_MAX_QUERIES)
    n_e = s.offline_events * n_q // s.offline_queries
    if n_q != s.offline_queries:
        data = run.tmp / "offline-spark"
        with console.status(f"offline inputs: {n_q:,} queries x {n_e:,} events"):
            write_inputs(data, n_e, n_q)
        rows += _engine_rows(run, "local", data, n_e, n_q, console, memory=False)
    rows += _engine_rows(run, "spark", data, n_e, n_q, console, memory=False)
    return rows


def _engine_rows(
    run: WindowRun,
    engine: str,
    data: Path,
    n_events: int,
    n_queries: int,
    console: Any,
    memory: bool = True,
) -> list[Measure]:
    label = ENGINES[engine][0]
    size = f"{n_queries:,} queries x {n_events:,} events"
    with console.status(f"offline: {label}, {size} (child process)"):
        got = run_child(run, engine, data)
    if got["rows"] != n_queries:
        raise RuntimeError(f"{label} answered {got['rows']} rows for {n_queries}")
    console.print(
        f"offline: {label}, {size}: {got['seconds']:.1f}s "
        f"({n_queries / got['seconds']:,.0f} queries/s), peak RSS "
        f"{got['peak_mb']:,.0f} MB (inputs read: {got['inputs_mb']:,} MB)"
    )
    rows = [Measure(AREA, f"{label}, {size}: wall time", "s", got["seconds"])]
    if memory:
        rows.append(
            Measure(AREA, f"{label}, {size}: peak memory (child process)", "MB", got["peak_mb"])
        )
    return rows
