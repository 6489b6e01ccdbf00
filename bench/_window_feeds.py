"""The ingest and freshness rows of ``bench.windows``: events into the online window state
by ``push()``, ``POST /push`` and ``skewless stream``, and the time from an event's append
to the first lookup that shows it.

Each part writes drivers of its own prefix into the run's project (never the lookup
state's drivers); ``bench.windows`` deletes the project's keys and streams at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._load import http_request, roundtrip
from bench._window_run import PY, ROOT, WINDOW_SET, Http, WindowRun, percentiles_ms
from bench.results import Measure
from pipelines.event_logs import EventLog

INGEST = "window ingest"
FRESH = "window freshness"
PUSH_BATCH = 10_000  # events per push() call
BODY_EVENTS = 1_000  # events per POST /push body
HTTP_CONNS = 16
STREAM_BATCH = 50_000  # --max-events of the catch-up (the command's default)
STREAM_RATE = 10  # events/s appended while measuring the streaming job's freshness
POLL_S = 0.002  # between lookups polling the streaming job's writes
COUNT_1H = f"{WINDOW_SET}:trip_fare_count_1h"


def _events(run: WindowRun, n: int, prefix: str, seed: int) -> Any:
    """``n`` events of their own drivers (100 each), over the day before the run's end."""
    from bench.repos.windows_repo import driver_ids, events

    drivers = driver_ids(max(1, n // 100), prefix)
    table = events(drivers, (100, 100), run.end_us, seed=seed, first_trip=seed * 10**9)
    return table.slice(0, n)


# --------------------------------------------------------------------------- ingest


def python_push(run: WindowRun) -> tuple[float, float]:
    """(events/s of wall time, events per second of this process's CPU): ``push()`` of
    Arrow batches of :data:`PUSH_BATCH` events."""
    from store.window_state import push

    n = run.sizes.push_events
    batches = _events(run, n, "p", seed=2).to_batches(max_chunksize=PUSH_BATCH)
    push(run.client, run.project, run.window_set, batches[0].slice(0, 10))  # warm-up
    t0, cpu0 = time.perf_counter(), time.process_time()
    placed = sum(push(run.client, run.project, run.window_set, b) for b in batches)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if placed != n:
        raise RuntimeError(f"push placed {placed} of {n} events")
    return n / wall, n / cpu


def _push_bodies(run: WindowRun) -> list[bytes]:
    """Feast push bodies of :data:`BODY_EVENTS` events each (times as epoch micros)."""
    import pyarrow as pa

    table = _events(run, run.sizes.http_push_events, "h", seed=3)
    table = table.set_column(1, "pickup_at", table.column("pickup_at").cast(pa.int64()))
    out = []
    for lo in range(0, table.num_rows, BODY_EVENTS):
        df = table.slice(lo, BODY_EVENTS).to_pydict()
        body = {"push_source_name": WINDOW_SET, "df": df, "to": "online"}
        out.append(http_request("/push", body))
    return out


def http_push(run: WindowRun) -> tuple[float, float]:
    """(events/s, events per second of server CPU): every body sent once, over
    :data:`HTTP_CONNS` keep-alive connections."""
    bodies = _push_bodies(run)
    warm = Http(run.port)  # the server's first push imports and builds the value functions
    warm.post("/push", _push_one(_fresh_event("hw", 1)))
    warm.close()

    async def send_all() -> int:
        events = 0

        async def conn(offset: int) -> None:
            nonlocal events
            reader, writer = await asyncio.open_connection("127.0.0.1", run.port)
            for i in range(offset, len(bodies), HTTP_CONNS):
                status, payload = await roundtrip(reader, writer, bodies[i])
                if status != 200:
                    raise RuntimeError(f"/push answered {status}: {payload[:300]!r}")
                events += json.loads(payload)["events"]
            writer.close()

        await asyncio.gather(*(conn(k) for k in range(HTTP_CONNS)))
        return events

    cpu0, t0 = run.server_cpu(), time.perf_counter()
    events = asyncio.run(send_all())
    wall, cpu = time.perf_counter() - t0, run.server_cpu() - cpu0
    if events != run.sizes.http_push_events:
        raise RuntimeError(f"/push placed {events} of {run.sizes.http_push_events} events")
    return events / wall, events / cpu if cpu else 0.0


def ingest_rows(run: WindowRun, console: Any) -> list[Measure]:
    s = run.sizes
    with console.status(f"push(): {s.push_events:,} events"):
        wall, per_cpu = python_push(run)
    with console.status(f"POST /push: {s.http_push_events:,} events"):
        http_rate, per_server_cpu = http_push(run)
    console.print(
        f"push(): {wall:,.0f} events/s, {per_cpu:,.0f} per client CPU second; POST /push: "
        f"{http_rate:,.0f} events/s, {per_server_cpu:,.0f} per server CPU second"
    )
    what = f"push() from Python, {s.push_events:,} events in Arrow batches of {PUSH_BATCH:,}"
    via = f"POST /push, {s.http_push_events:,} events, {BODY_EVENTS:,} per body"
    via += f" @{HTTP_CONNS} conns"
    return [
        _rate(f"{what}: events/s", wall),
        _rate(f"{what}: events/s per core of client CPU", per_cpu),
        _rate(f"{via}: events/s", http_rate),
        _rate(f"{via}: events/s per core of server CPU", per_server_cpu),
    ]


def _rate(measure: str, events_per_s: float) -> Measure:
    return Measure(INGEST, measure, "events/s", events_per_s, None, True)


# ------------------------------------------------------------------------ freshness


def _fresh_event(driver: str, trip: int) -> dict[str, Any]:
    """An event just before now of a driver with no other event (its 1h count: 0 -> 1)."""
    now_us = time.time_ns() // 1000
    return {"driver_id": driver, "pickup_at": now_us - 1000, "trip_id": trip, "fare": 10.0}


def _push_one(event: dict[str, Any]) -> dict[str, Any]:
    return {"push_source_name": WINDOW_SET, "df": {k: [v] for k, v in event.items()}}


def push_freshness(run: WindowRun) -> list[float]:
    """Seconds from sending a one-event push to the first lookup (on another connection,
    back to back) that counts it."""
    pusher, poller = Http(run.port), Http(run.port)
    lat: list[float] = []
    try:
        for i in range(run.sizes.fresh_pushes):
            driver = f"fp{i:07d}"
            body = _push_one(_fresh_event(driver, 3 * 10**9 + i))
            look = {"features": [COUNT_1H], "entities": {"driver_id": [driver]}}
            t0 = time.perf_counter()
            pusher.send("/push", body)
            while poller.post("/get-online-features", look)["results"][1]["values"][0] < 1:
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"a pushed event of {driver} not visible after 30 s")
            lat.append(time.perf_counter() - t0)
            pusher.answer()
    finally:
        pusher.close()
        poller.close()
    return lat


def push_freshness_rows(run: WindowRun, console: Any) -> list[Measure]:
    with console.status(f"freshness through /push: {run.sizes.fresh_pushes:,} events"):
        p50, p99 = percentiles_ms(push_freshness(run))
    what = f"POST /push append -> visible in a lookup ({run.sizes.fresh_pushes:,} events)"
    return [
        Measure(FRESH, f"{what}: p50", "ms", p50),
        Measure(FRESH, f"{what}: p99", "ms", p99),
    ]


# ------------------------------------------------------------------- the streaming job


def _log(run: WindowRun, log_url: str | None, part: str) -> EventLog:
    """A new stream of the run (a Redis stream in the run's Redis, or NATS JetStream at
    ``log_url``), deleted at the end of the run."""
    from pipelines.event_logs import open_log

    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{run.project}_{part}")
    log = open_log(log_url or run.redis_url, name)
    run.streams.append(log)
    return log


def _stream_job(run: WindowRun, log: EventLog, checkpoint: Path, *extra: str) -> Any:
    """``skewless stream`` on the run's project, in its own process group (Spark's JVM)."""
    cmd = [PY, "-m", "cli.main", "stream", "--repo", str(run.root), "--stream", log.stream]
    cmd += ["--checkpoint", str(checkpoint), "--redis-url", run.redis_url, *extra]
    cmd += ["--log-url", log.url]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=run.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _append(run: WindowRun, log: EventLog, n: int) -> float:
    """Append ``n`` events (times as epoch micros) in chunks; returns seconds taken."""
    import pyarrow as pa

    table = _events(run, n, "s", seed=4)
    table = table.set_column(1, "pickup_at", table.column("pickup_at").cast(pa.int64()))
    t0 = time.perf_counter()
    for lo in range(0, n, 50_000):
        log.append(table.slice(lo, 50_000).to_pylist())
    return time.perf_counter() - t0


@dataclass
class CatchUp:
    """``skewless stream --available-now`` over ``events``, timed from Spark's checkpoint:
    a batch starts when its offsets file is written and ends with its commit file."""

    events: int
    batches: int
    wall: float  # the whole command
    span: float  # the first batch's offsets to the last batch's commit
    first_batch: float  # the first batch alone (Python workers start, first imports)
    steady_events: int  # events of the batches after the first
    steady_span: float  # the first batch's commit to the last commit

    @classmethod
    def read(cls, checkpoint: Path, events: int, wall: float) -> CatchUp:
        def times(kind: str) -> dict[int, float]:
            d = checkpoint / "spark" / kind
            return {int(p.name): p.stat().st_mtime for p in d.iterdir() if p.name.isdigit()}

        offsets, commits = times("offsets"), times("commits")
        first, last = min(offsets), max(commits)
        return cls(
            events=events,
            batches=len(commits),
            wall=wall,
            span=commits[last] - offsets[first],
            first_batch=commits[first] - offsets[first],
            # every event was appended before the start: the first batch read the first
            # STREAM_BATCH of them
            steady_events=max(0, events - STREAM_BATCH),
            steady_span=commits[last] - commits[first],
        )


def catch_up(run: WindowRun, console: Any, log_url: str | None) -> CatchUp:
    """``skewless stream --available-now`` over a stream of ``stream_events``."""
    n = run.sizes.stream_events
    log = _log(run, log_url, "catch-up")
    with console.status(f"appending {n:,} events"):
        secs = _append(run, log, n)
    console.print(f"stream: {n:,} events appended in {secs:.1f}s")
    ckpt = run.tmp / f"ckpt-catch-up-{len(run.streams)}"
    with console.status(f"skewless stream --available-now over {n:,} events"):
        t0 = time.perf_counter()
        job = _stream_job(run, log, ckpt, "--available-now", "--max-events", str(STREAM_BATCH))
        out, _ = job.communicate(timeout=3600)
        wall = time.perf_counter() - t0
    text = out.decode(errors="replace")
    if job.returncode != 0:
        raise RuntimeError(f"skewless stream exited {job.returncode}:\n{text[-3000:]}")
    m = re.search(r"([\d,]+) events in (\d+) micro-batches", text)
    if m is None or int(m.group(1).replace(",", "")) != n:
        raise RuntimeError(f"skewless stream did not write {n} events:\n{text[-3000:]}")
    got = CatchUp.read(ckpt, n, wall)
    console.print(
        f"stream catch-up: {n:,} events in {got.batches} micro-batches of up to "
        f"{STREAM_BATCH:,}: {got.span:.1f}s from the first batch's offsets to the last commit "
        f"(first batch {got.first_batch:.1f}s), command {wall:.1f}s"
    )
    return got


def stream_freshness(run: WindowRun, console: Any, log_url: str | None) -> list[float]:
    """Seconds from append to the first lookup counting the event, the job running
    continuously (default trigger), events appended at :data:`STREAM_RATE` per second."""
    log = _log(run, log_url, "fresh")
    job = _stream_job(run, log, run.tmp / f"ckpt-fresh-{len(run.streams)}")
    http = Http(run.port)

    def visible(drivers: list[str]) -> list[bool]:
        look = {"features": [COUNT_1H], "entities": {"driver_id": drivers}}
        return [c >= 1 for c in http.post("/get-online-features", look)["results"][1]["values"]]

    try:
        with console.status("skewless stream: waiting for its first write"):
            log.append([_fresh_event(f"fs-warm{len(run.streams)}", 4 * 10**9)])
            deadline = time.monotonic() + 300
            while not visible([f"fs-warm{len(run.streams)}"])[0]:
                if job.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the streaming job wrote nothing within 300 s")
                time.sleep(0.05)
        total = int(run.sizes.fresh_stream_seconds * STREAM_RATE)
        with console.status(f"freshness through skewless stream: {total} events"):
            return _trickle(log, total, visible, f"fs{len(run.streams)}-")
    finally:
        http.close()
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()


def _trickle(log: EventLog, total: int, visible: Any, prefix: str) -> list[float]:
    """Append ``total`` events at :data:`STREAM_RATE`/s (drivers ``<prefix><n>``),
    polling every pending one."""
    pending: dict[str, float] = {}
    lat: list[float] = []
    appended = 0
    start = time.perf_counter()
    deadline = start + total / STREAM_RATE + 120
    while appended < total or pending:
        now = time.perf_counter()
        if now > deadline:
            raise RuntimeError(f"{len(pending)} streamed events not visible after 120 s")
        if appended < total and now >= start + appended / STREAM_RATE:
            driver = f"{prefix}{appended:07d}"
            ev = _fresh_event(driver, 4 * 10**9 + 1 + appended)
            pending[driver] = time.perf_counter()
            log.append([ev])
            appended += 1
        if pending:
            drivers = list(pending)
            for d, seen in zip(drivers, visible(drivers), strict=True):
                if seen:
                    lat.append(time.perf_counter() - pending.pop(d))
        time.sleep(POLL_S)
    return lat


def stream_rows(run: WindowRun, console: Any, log_url: str | None = None) -> list[Measure]:
    """The streaming job's rows, over a Redis stream (``log_url`` None) or over NATS
    JetStream at ``log_url``."""
    got = catch_up(run, console, log_url)
    p50, p99 = percentiles_ms(stream_freshness(run, console, log_url))
    total = int(run.sizes.fresh_stream_seconds * STREAM_RATE)
    via = "" if log_url is None else " from NATS JetStream"
    what = f"skewless stream{via} --available-now, {got.events:,} events"
    fresh = f"skewless stream{via} (continuous) append -> visible in a lookup"
    fresh += f" ({total} events at {STREAM_RATE}/s)"
    rows = [_rate(f"{what}: events/s, first batch's start to last commit", got.events / got.span)]
    if got.steady_events:
        steady = got.steady_events / got.steady_span
        rows.append(_rate(f"{what}: events/s after the first batch", steady))
    return rows + [
        Measure(INGEST, f"{what}: first micro-batch (Python workers start)", "s", got.first_batch),
        Measure(
            INGEST, f"{what}: start-up and stop (JVM, Spark session)", "s", got.wall - got.span
        ),
        Measure(FRESH, f"{fresh}: p50", "ms", p50),
        Measure(FRESH, f"{fresh}: p99", "ms", p99),
    ]
