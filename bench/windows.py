"""Benchmark: window features served, fed and computed offline (``skewless bench``'s window rows).

One run, one Redis, the window set of ``bench.repos.window_features`` (count, sum, mean and
max of a trip's fare over 1h and 24h: 8 features, the shape ``skewless init`` declares), in
a throwaway project whose keys (and only those) are deleted at the end:

window lookup
    10,000 drivers with 100-200 events each in the online state (``backfill``), served by
    ``skewless serve`` (1 worker) through HTTP: req/s at 16 connections and p50/p99 at 1
    connection of 1 driver x 8 window features as of a request time, driven by wrk (or
    bench._load's Python client without it), medians of ``rounds`` runs. Feast has no
    window features; in its column, two alternatives answering the same requests: Feast
    itself (``feast serve``, 1 worker, an on-demand feature view in pandas mode over each
    driver's events held as list features, ``bench.repos.windows_feast``), and pandas at
    request time over the raw events held in memory (per request the driver's rows of an
    indexed DataFrame, a filter per window, count/sum/mean/max; timed per call in this
    process, no HTTP). Both are checked against our answers. The floors beside ours: HTTP
    alone (POST /health on the same server and load generator) and Redis alone (the
    lookup's ZRANGEBYSCORE of one driver over a raw socket, hiredis parsing).
window ingest
    ``store.window_state.push`` from Python (Arrow batches of 10,000 events; events/s of
    wall time and per second of this process's CPU); ``POST /push`` with 1,000 events per
    body, each body sent once over 16 connections; ``skewless stream --available-now``
    over a Redis stream of N events, events/s from the first micro-batch's offsets to the
    last one's commit in Spark's checkpoint (JVM and Spark start-up reported apart).
window freshness
    From the append to the first lookup that shows the event (its driver's 1h count
    becomes 1): through ``/push`` (the push sent, another connection polling lookups back
    to back) and through ``skewless stream`` running continuously (XADD at 10 events/s,
    every pending driver polled in one lookup every 2 ms).
offline windows
    ``WindowRunner.run_local`` over 1M queries x 10M events (``--quick``: 100k x 1M) in a
    child process: wall time and peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

    .venv/bin/python -m bench.windows --redis-url redis://127.0.0.1:6379 [--quick] [--scale F]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._load import wrk_path
from bench._window_run import FULL, QUICK, Sizes, WindowRun, scaled
from bench.results import Measure, markdown, write_json

AREAS = ("window lookup", "window ingest", "window freshness", "offline windows")


def load_state(run: WindowRun, console: Any) -> Any:
    """The lookup state: ``sizes.drivers`` drivers' events written by ``backfill``;
    returns the events (the alternatives' raw data)."""
    from bench.repos.windows_repo import driver_ids, events
    from store.window_state import backfill

    table = events(driver_ids(run.sizes.drivers), run.sizes.per_driver, run.end_us, seed=1)
    t0 = time.perf_counter()
    n = backfill(run.client, run.project, run.window_set, table)
    secs = time.perf_counter() - t0
    console.print(
        f"state: {n:,} events of {run.sizes.drivers:,} drivers written by backfill in "
        f"{secs:.1f}s ({n / secs:,.0f} events/s)"
    )
    return table


# --------------------------------------------------------------------------- main


def _print_table(measures: list[Measure], console: Any) -> None:
    from rich.table import Table

    table = Table(title="window features: skewless (Feast column: the alternative named)")
    for col in ("area", "measure", "unit", "skewless", "alternative", "ratio"):
        table.add_column(col, justify="left" if col in ("area", "measure", "unit") else "right")
    for line in markdown(measures).splitlines()[2:]:
        table.add_row(*[c.strip() for c in line.strip("|").split("|")])
    console.print(table)


def _ordered(measures: list[Measure]) -> list[Measure]:
    return sorted(measures, key=lambda m: AREAS.index(m.area) if m.area in AREAS else len(AREAS))


PARTS = ("offline", "lookup", "ingest")


def measure_all(
    run: WindowRun, use_wrk: bool, console: Any, parts: Sequence[str] = PARTS
) -> list[Measure]:
    """Every part asked for; offline first, before Redis and the servers fill memory."""
    from bench import _window_feeds as feeds
    from bench._window_lookup import busy_rows, lookup_rows
    from bench._window_offline import offline_rows

    measures = offline_rows(run, console) if "offline" in parts else []
    if set(parts) == {"offline"}:
        return _ordered(measures)
    events = load_state(run, console)
    up = run.start_server()
    console.print(
        f"skewless serve up in {up:.2f}s; load generator: "
        + ("wrk" if use_wrk else "Python asyncio client (wrk not found: apt-get install wrk)")
        + f", {run.sizes.seconds:.0f} s per run, {run.sizes.rounds} run(s) per figure (medians)"
    )
    if "lookup" in parts:
        measures += lookup_rows(run, events, use_wrk, console)
        measures += busy_rows(run, use_wrk, console)
    del events
    if "ingest" not in parts:
        return _ordered(measures)
    measures += feeds.ingest_rows(run, console)
    measures += feeds.push_freshness_rows(run, console)
    measures += feeds.stream_rows(run, console)
    if run.nats_url is not None:
        measures += feeds.stream_rows(run, console, run.nats_url)
    return _ordered(measures)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--quick", action="store_true", help="a tenth of every size")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink every count (dev runs)")
    ap.add_argument("--seconds", type=float, default=0, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=0, help="load runs per figure (medians)")
    ap.add_argument("--python-client", action="store_true", help="do not use wrk")
    ap.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="measure only these"
    )
    ap.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="also stream from NATS JetStream here (skipped, saying so, when it does not answer)",
    )
    ap.add_argument("--json", help="also write the measurements here (for skewless bench)")
    ap.add_argument("--offline-child", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.offline_child:
        from bench._window_offline import child_main

        child_main(*args.offline_child)
        return
    import redis
    from rich.console import Console

    from bench.repos.windows_repo import build
    from pipelines.event_logs import nats_answers
    from store.window_state import clear_windows

    console = Console()
    sizes: Sizes = scaled(QUICK if args.quick else FULL, args.scale)
    if args.seconds or args.rounds:
        from dataclasses import replace

        sizes = replace(
            sizes, seconds=args.seconds or sizes.seconds, rounds=args.rounds or sizes.rounds
        )
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-windows-"))
    run = WindowRun(
        root=tmp / "project",
        tmp=tmp,
        project=f"skewless_bench_windows_{uuid.uuid4().hex[:8]}",
        redis_url=args.redis_url,
        sizes=sizes,
        end_us=time.time_ns() // 1000,
        client=redis.Redis.from_url(args.redis_url),
        nats_url=args.nats_url if nats_answers(args.nats_url) else None,
    )
    if run.nats_url is None and "ingest" in args.parts:
        console.print(f"[yellow]NATS does not answer at {args.nats_url}: no JetStream rows[/]")
    build(run.root, run.project, run.redis_host)
    use_wrk = wrk_path() is not None and not args.python_client
    try:
        measures = measure_all(run, use_wrk, console, args.parts)
    except Exception:
        console.print(run.server_logs())
        raise
    finally:
        run.stop_servers()
        removed = clear_windows(run.client, run.project)
        feast_keys = list(run.client.scan_iter(match=b"*" + run.feast_project.encode(), count=5000))
        for lo in range(0, len(feast_keys), 5000):
            run.client.delete(*feast_keys[lo : lo + 5000])
        for log in run.streams:
            log.delete()
            log.close()
        console.print(
            f"[dim]removed {removed:,} window-state keys of {run.project}, "
            f"{len(feast_keys):,} Feast keys of {run.feast_project}[/]"
        )
        shutil.rmtree(tmp, ignore_errors=True)
    _print_table(measures, console)
    write_json(measures, args.json)
    print(markdown(measures))


if __name__ == "__main__":
    main()
