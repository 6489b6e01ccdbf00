"""Benchmark: window features served, fed and computed offline (``skewless bench``'s window rows).

One run, one Redis, the window set of ``bench.repos.window_features`` (count, sum, mean and
max of a trip's fare over 1h and 24h: 8 features, the shape ``skewless init`` declares), in
a throwaway project whose keys (and only those) are deleted at the end:

window lookup
    10,000 drivers with 100-200 events each in the online state (``backfill``), served by
    ``skewless serve`` (1 worker) through HTTP: req/s at 16 connections and p50/p99 at 1
    connection of 1 driver x 8 window features as of a request time, driven by wrk (or
    bench._load's Python client without it), median of ``rounds`` runs. In the Feast column
    (Feast has no window features): the same requests answered by pandas at request time
    from the raw events held in memory (an indexed DataFrame; per request the driver's
    rows, a filter per window and count/sum/mean/max), timed per call in this process, no
    HTTP; its answers are compared with the server's. The floors beside ours: HTTP alone
    (POST /health on the same server and client) and Redis alone (the lookup's
    ZRANGEBYSCORE of one driver over a raw socket, hiredis parsing).
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
import random
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench._load import LoadResult, run_load, wrk_path
from bench._window_run import (
    FULL,
    QUICK,
    Http,
    Sizes,
    WindowRun,
    median,
    percentiles_ms,
    scaled,
)
from bench.results import Measure, markdown, write_json

LOOKUP = "window lookup"
BODIES = 500  # distinct lookup bodies wrk cycles through
AREAS = ("window lookup", "window ingest", "window freshness", "offline windows")


# --------------------------------------------------------------------------- setup


def load_state(run: WindowRun, console: Any) -> Any:
    """The lookup state: ``sizes.drivers`` drivers' events written by ``backfill``;
    returns the events (the pandas alternative's raw data)."""
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


def lookup_bodies(run: WindowRun, n: int, seed: int) -> list[dict[str, Any]]:
    from bench.repos.windows_repo import driver_ids

    rng = random.Random(seed)
    drivers = driver_ids(run.sizes.drivers)
    return [
        {
            "features": run.refs,
            "entities": {"driver_id": [rng.choice(drivers)]},
            "request_time": run.end_us,
        }
        for _ in range(n)
    ]


# ------------------------------------------------------------------- load figures


def _loads(
    run: WindowRun, path: str, bodies: list[dict[str, Any]], use_wrk: bool
) -> tuple[float, float, float, int]:
    """(req/s @16 conns, p50 ms @1 conn, p99 ms @1 conn, requests of a 1-conn run), medians
    over ``rounds``."""
    many: list[LoadResult] = []
    one: list[LoadResult] = []
    for _ in range(run.sizes.rounds):
        many.append(run_load(run.port, path, bodies, 16, run.sizes.seconds, use_wrk))
        one.append(run_load(run.port, path, bodies, 1, run.sizes.seconds, use_wrk))
    return (
        median([r.rps for r in many]),
        median([r.p50_ms for r in one]),
        median([r.p99_ms for r in one]),
        int(median([r.requests for r in one])),
    )


def redis_floor(run: WindowRun, seconds: float) -> tuple[float, float]:
    """(p50, p99) ms of the lookup's Redis read alone: one driver's ZRANGEBYSCORE (the
    command the server sends) over a raw socket, the reply parsed by hiredis."""
    import hiredis

    from bench.repos.windows_repo import driver_ids
    from store.window_layout import WindowLayout

    layout = WindowLayout(run.project, run.window_set)
    rng = random.Random(3)
    drivers = driver_ids(run.sizes.drivers)
    commands = [
        layout.read_commands([layout.key((rng.choice(drivers),))], run.end_us)
        for _ in range(BODIES)
    ]
    u = urlparse(run.redis_url)
    lat: list[float] = []
    with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = hiredis.Reader()
        until = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            sock.sendall(commands[i % BODIES])
            reply = reader.gets()
            while reply is False:
                reader.feed(sock.recv(1 << 16))
                reply = reader.gets()
            lat.append(time.perf_counter() - t0)
            if not reply:
                raise RuntimeError("the lookup state is empty: ZRANGEBYSCORE answered []")
            i += 1
    return percentiles_ms(lat)


# -------------------------------------------------------------- pandas alternative


class PandasWindows:
    """What a team without a feature store would run per request: the raw events in a
    DataFrame indexed by driver, and per request the driver's rows, one filter per window
    and count/sum/mean/max of the fare."""

    WINDOWS = (("1h", 3_600), ("24h", 86_400))

    def __init__(self, events: Any) -> None:
        import pandas as pd

        frame = events.to_pandas()
        self.events = frame.set_index("driver_id").sort_index()
        self.pd = pd

    def features(self, driver: str, request_time_us: int) -> dict[str, Any]:
        pd = self.pd
        at = pd.Timestamp(request_time_us, unit="us", tz="UTC")
        mine = self.events.loc[driver:driver]
        out: dict[str, Any] = {}
        for name, seconds in self.WINDOWS:
            start = at - pd.Timedelta(seconds=seconds)
            fare = mine.loc[(mine["pickup_at"] >= start) & (mine["pickup_at"] < at), "fare"]
            agg = fare.agg(["count", "sum", "mean", "max"])
            for op in ("count", "sum", "mean", "max"):
                out[f"trip_fare_{op}_{name}"] = agg[op]
        return out


def time_pandas(alt: PandasWindows, bodies: list[dict[str, Any]], n: int) -> list[float]:
    """Seconds per request of ``n`` requests cycling through ``bodies``."""
    lat = []
    for i in range(n):
        b = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        alt.features(b["entities"]["driver_id"][0], b["request_time"])
        lat.append(time.perf_counter() - t0)
    return lat


def _same(served: Any, computed: Any) -> bool:
    if computed is None or computed != computed:  # pandas' NaN for an empty mean/max
        return served is None
    if isinstance(served, int) and not isinstance(served, bool):
        return served == computed
    # our sums are exact (rounded once), pandas' are not: allow its rounding
    return isinstance(served, float) and abs(served - computed) <= 1e-9 * max(1.0, abs(served))


def parity(run: WindowRun, alt: PandasWindows, bodies: list[dict[str, Any]]) -> tuple[int, int]:
    """(values compared, mismatches): the server's answers against the pandas ones."""
    http = Http(run.port)
    compared = bad = 0
    try:
        for b in bodies:
            out = http.post("/get-online-features", b)
            want = alt.features(b["entities"]["driver_id"][0], b["request_time"])
            names = out["metadata"]["feature_names"][1:]
            for name, res in zip(names, out["results"][1:], strict=True):
                compared += 1
                bad += not _same(res["values"][0], want[name])
    finally:
        http.close()
    return compared, bad


# ------------------------------------------------------------------- the lookup rows


def lookup_rows(run: WindowRun, events: Any, use_wrk: bool, console: Any) -> list[Measure]:
    """Ours through HTTP, the floors, and pandas over as many requests as a 1-conn run of
    ours answered (the same bodies, in the same order)."""
    s = run.sizes
    bodies = lookup_bodies(run, BODIES, seed=7)
    with console.status("window lookups through HTTP"):
        rps, p50, p99, n = _loads(run, "/get-online-features", bodies, use_wrk)
    with console.status("HTTP floor: POST /health"):
        h_rps, h_p50, h_p99, _ = _loads(run, "/health", [{}], use_wrk)
    with console.status("Redis floor: ZRANGEBYSCORE alone"):
        r_p50, r_p99 = redis_floor(run, s.seconds)
    with console.status(f"pandas at request time: {n:,} requests"):
        alt = PandasWindows(events)
        time_pandas(alt, bodies, 200)  # warm-up
        lat = time_pandas(alt, bodies, n)
        a_p50, a_p99 = percentiles_ms(lat)
        a_rps = len(lat) / sum(lat)
    with console.status(f"parity: {s.parity:,} requests, served vs pandas"):
        compared, bad = parity(run, alt, lookup_bodies(run, s.parity, seed=8))
    console.print(
        f"window lookups: ours {p50:.2f}/{p99:.2f} ms p50/p99 @1 conn ({n:,} requests), "
        f"{rps:,.0f} req/s @16; pandas {a_p50:.2f}/{a_p99:.2f} ms, {a_rps:,.0f} req/s"
    )
    what = "1 entity x 8 window features"
    state = f"{s.drivers:,} entities x {s.per_driver[0]}-{s.per_driver[1]} events"
    alt_note = "Feast column: pandas per request, in-process"
    http, redis = "floor, HTTP alone (POST /health)", "floor, Redis alone (the ZRANGEBYSCORE)"
    return [
        Measure(
            LOOKUP,
            f"{what}, {state}: req/s @16 conns ({alt_note}, 1 core)",
            "req/s",
            rps,
            a_rps,
            True,
        ),  # fmt: skip
        Measure(LOOKUP, f"{what}: p50 ms @1 conn ({alt_note})", "ms", p50, a_p50),
        Measure(LOOKUP, f"{what}: p99 ms @1 conn ({alt_note})", "ms", p99, a_p99),
        Measure(LOOKUP, f"{http}: req/s @16 conns", "req/s", h_rps, None, True),
        Measure(LOOKUP, f"{http}: p50 ms @1 conn", "ms", h_p50),
        Measure(LOOKUP, f"{http}: p99 ms @1 conn", "ms", h_p99),
        Measure(LOOKUP, f"{redis}: p50 ms @1 conn", "ms", r_p50),
        Measure(LOOKUP, f"{redis}: p99 ms @1 conn", "ms", r_p99),
        Measure(LOOKUP, f"served vs pandas: mismatching values of {compared:,}", "count", bad),
    ]


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


def measure_all(run: WindowRun, use_wrk: bool, console: Any) -> list[Measure]:
    """Every part, offline first (so ``RUSAGE_CHILDREN`` sees no other child yet)."""
    from bench import _window_feeds as feeds
    from bench._window_offline import offline_rows

    measures = offline_rows(run, console)
    events = load_state(run, console)
    up = run.start_server()
    console.print(
        f"skewless serve up in {up:.2f}s; load generator: "
        + ("wrk" if use_wrk else "Python asyncio client (wrk not found: apt-get install wrk)")
        + f", {run.sizes.seconds:.0f} s per run, {run.sizes.rounds} run(s) per figure (medians)"
    )
    measures += lookup_rows(run, events, use_wrk, console)
    del events
    measures += feeds.ingest_rows(run, console)
    measures += feeds.push_freshness_rows(run, console)
    measures += feeds.stream_rows(run, console)
    return _ordered(measures)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--quick", action="store_true", help="a tenth of every size")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink every count (dev runs)")
    ap.add_argument("--seconds", type=float, default=0, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=0, help="load runs per figure (medians)")
    ap.add_argument("--python-client", action="store_true", help="do not use wrk")
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
    from store.window_state import clear_windows

    console = Console()
    sizes: Sizes = scaled(QUICK if args.quick else FULL, args.scale)
    if args.seconds or args.rounds:
        from dataclasses import replace

        sizes = replace(
            sizes, seconds=args.seconds or sizes.seconds, rounds=args.rounds or sizes.rounds
        )
    u = urlparse(args.redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-windows-"))
    run = WindowRun(
        root=tmp / "project",
        tmp=tmp,
        project=f"skewless_bench_windows_{uuid.uuid4().hex[:8]}",
        redis_url=args.redis_url,
        sizes=sizes,
        end_us=time.time_ns() // 1000,
        client=redis.Redis.from_url(args.redis_url),
    )
    build(run.root, run.project, f"{u.hostname or '127.0.0.1'}:{u.port or 6379}")
    use_wrk = wrk_path() is not None and not args.python_client
    try:
        measures = measure_all(run, use_wrk, console)
    except Exception:
        console.print(f"--- skewless serve log\n{run.server_log()}")
        raise
    finally:
        run.stop_server()
        removed = clear_windows(run.client, run.project)
        if run.streams:
            run.client.delete(*run.streams)
        console.print(f"[dim]removed {removed:,} window-state keys of {run.project}[/]")
        shutil.rmtree(tmp, ignore_errors=True)
    _print_table(measures, console)
    write_json(measures, args.json)
    print(markdown(measures))


if __name__ == "__main__":
    main()
