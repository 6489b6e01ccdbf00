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


def _run_local(events: Any, queries: Any) -> Any:
    from bench.repos.windows_repo import window_set
    from transforms.window_runtime import WindowRunner

    return WindowRunner(window_set()).run_local(events, queries, QUERY_TIME)


# The engines timed, each giving two rows (wall time, peak memory): name -> (label,
# (events, queries) -> one row of window features per query). The training-set comparison
# of local vs Spark (transforms.engines.spark.apply_windows, built separately) goes here:
# one more entry, and its rows follow run_local's in the same table.
ENGINES: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "local": ("run_local", _run_local),
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
    import pyarrow.parquet as pq

    events = pq.read_table(Path(data) / "events.parquet")
    queries = pq.read_table(Path(data) / "queries.parquet")
    inputs_mb = _vm("VmRSS")
    t0 = time.perf_counter()
    out = ENGINES[engine][1](events, queries)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "rows": out.num_rows, "inputs_mb": inputs_mb}))


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
    rows = []
    for engine, (label, _) in ENGINES.items():
        with console.status(f"offline: {label}, {size} (child process)"):
            got = run_child(run, engine, data)
        if got["rows"] != s.offline_queries:
            raise RuntimeError(f"{label} answered {got['rows']} rows for {s.offline_queries}")
        console.print(
            f"offline: {label}, {size}: {got['seconds']:.1f}s "
            f"({s.offline_queries / got['seconds']:,.0f} queries/s), peak RSS "
            f"{got['peak_mb']:,.0f} MB (inputs read: {got['inputs_mb']:,} MB)"
        )
        rows += [
            Measure(AREA, f"{label}, {size}: wall time", "s", got["seconds"]),
            Measure(AREA, f"{label}, {size}: peak memory (child process)", "MB", got["peak_mb"]),
        ]
    return rows
