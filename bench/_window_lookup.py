"""The lookup rows of ``bench.windows``: 1 driver x 8 window features through
``skewless serve``, against the alternatives a team has without window features (pandas
over the raw events in memory; Feast's ``feast serve`` with an on-demand feature view over
the events held as list features), beside the floors (HTTP alone, Redis alone).

Every alternative answers the same (driver, request time) sequence; the server figures are
medians of ``rounds`` runs alternating the servers, pandas is timed per call over as many
requests as a 1-connection run of ours answered. Their answers are compared with ours.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

from bench._load import free_port, run_load, wait_http
from bench._window_run import PY, Http, WindowRun, median, percentiles_ms
from bench.results import Measure

AREA = "window lookup"
BODIES = 500  # distinct requests the load generator cycles through
BUSY = (1_000, 4_000, 16_000)  # events of the busy entities
Query = tuple[str, int]  # (driver, request time in epoch micros)


class Load(NamedTuple):
    rps: float  # @16 connections
    p50_ms: float  # @1 connection
    p99_ms: float
    requests: int  # answered by a 1-connection run


def queries(run: WindowRun, n: int, seed: int) -> list[Query]:
    """``n`` random drivers of the state, each asked as of the state's end."""
    from bench.repos.windows_repo import driver_ids

    rng = random.Random(seed)
    drivers = driver_ids(run.sizes.drivers)
    return [(rng.choice(drivers), run.end_us) for _ in range(n)]


def ours_body(run: WindowRun) -> Callable[[Query], dict[str, Any]]:
    refs = run.refs
    return lambda q: {"features": refs, "entities": {"driver_id": [q[0]]}, "request_time": q[1]}


def feast_body(q: Query) -> dict[str, Any]:
    from bench.repos.windows_feast import NAMES, ODFV, REQUEST_TIME

    return {
        "features": [f"{ODFV}:{n}" for n in NAMES],
        "entities": {"driver_id": [q[0]], REQUEST_TIME: [q[1]]},
    }


def loads(run: WindowRun, targets: list[tuple[int, str, list[Any]]], use_wrk: bool) -> list[Load]:
    """Each target (port, path, bodies) at 16 and at 1 connection(s), ``rounds`` times,
    the targets alternating within a round (drift in machine load hits all); medians."""
    many: list[list[Any]] = [[] for _ in targets]
    one: list[list[Any]] = [[] for _ in targets]
    for _ in range(run.sizes.rounds):
        for i, (port, path, bodies) in enumerate(targets):
            many[i].append(run_load(port, path, bodies, 16, run.sizes.seconds, use_wrk))
            one[i].append(run_load(port, path, bodies, 1, run.sizes.seconds, use_wrk))
    return [
        Load(
            median([r.rps for r in m]),
            median([r.p50_ms for r in o]),
            median([r.p99_ms for r in o]),
            int(median([r.requests for r in o])),
        )
        for m, o in zip(many, one, strict=True)
    ]


def redis_floor(run: WindowRun, seconds: float) -> tuple[float, float]:
    """(p50, p99) ms of the lookup's Redis read alone: one driver's ZRANGEBYSCORE (the
    command the server sends) over a raw socket, the reply parsed by hiredis."""
    import hiredis

    from store.window_layout import WindowLayout

    layout = WindowLayout(run.project, run.window_set)
    commands = [
        layout.read_commands([layout.key((d,))], t) for d, t in queries(run, BODIES, seed=3)
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


def server_time(run: WindowRun, bodies: list[dict[str, Any]], use_wrk: bool) -> tuple[float, float]:
    """One 1-connection run of ours between two reads of the server's latency histogram
    (``/metrics``, from the request read to the answer written): the share of its lookups
    within 1 ms, and the smallest bucket bound holding 99% of them (ms). The client's
    figures add the loopback, the load generator and the machine's scheduling."""
    before = _histogram(run.port)
    run_load(run.port, "/get-online-features", bodies, 1, run.sizes.seconds, use_wrk)
    after = _histogram(run.port)
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta.pop("+Inf")
    bounds = sorted(delta)
    p99 = next((le for le in bounds if delta[le] >= 0.99 * total), float("inf"))
    return 100.0 * delta[0.001] / total, p99 * 1000


def _histogram(port: int) -> dict[Any, float]:
    """Cumulative bucket counts of ``skewless_request_seconds`` for /get-online-features."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:  # noqa: S310 - loopback
        text = answer.read().decode()
    out: dict[Any, float] = {}
    prefix = 'skewless_request_seconds_bucket{endpoint="/get-online-features",le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, _, count = line[len(prefix) :].partition('"} ')
            out["+Inf" if le == "+Inf" else float(le)] = float(count)
    return out


# ------------------------------------------------------------------ the alternatives


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

    def features(self, q: Query) -> dict[str, Any]:
        pd = self.pd
        at = pd.Timestamp(q[1], unit="us", tz="UTC")
        mine = self.events.loc[q[0] : q[0]]
        out: dict[str, Any] = {}
        for name, seconds in self.WINDOWS:
            start = at - pd.Timedelta(seconds=seconds)
            fare = mine.loc[(mine["pickup_at"] >= start) & (mine["pickup_at"] < at), "fare"]
            agg = fare.agg(["count", "sum", "mean", "max"])
            for op in ("count", "sum", "mean", "max"):
                out[f"trip_fare_{op}_{name}"] = agg[op]
        return out


def time_pandas(alt: PandasWindows, qs: list[Query], n: int) -> list[float]:
    """Seconds per request of ``n`` requests cycling through ``qs``."""
    lat = []
    for i in range(n):
        q = qs[i % len(qs)]
        t0 = time.perf_counter()
        alt.features(q)
        lat.append(time.perf_counter() - t0)
    return lat


def start_feast(run: WindowRun, events: Any) -> float:
    """Feast's repo (its own project) written, applied and materialized with the Feast
    SDK, then ``feast serve`` (1 worker) on a free port; seconds to build it."""
    from bench.repos.windows_feast import build

    t0 = time.perf_counter()
    root = run.tmp / "feast"
    build(root, run.feast_project, events, run.end_us, run.redis_host)
    built = time.perf_counter() - t0
    run.feast_port = free_port()
    feast = str(Path(PY).parent / "feast")
    argv = [feast, "-c", str(root), "serve", "-h", "127.0.0.1", "-p", str(run.feast_port)]
    argv += ["--no-access-log", "--max-requests", "1000000000", "--workers", "1"]
    wait_http(run.feast_port, "/health", 180, run.launch(argv, root, "feast_serve.log"))
    return built


def _null(v: Any) -> bool:
    return v is None or v != v  # NaN: pandas' and Feast's empty mean and max


def _same(got: Any, want: Any) -> bool:
    if _null(want) or _null(got):
        return _null(want) and _null(got)
    if isinstance(got, int) and not isinstance(got, bool):
        return got == want
    # our sums are exact (rounded once), pandas' and numpy's are not: allow their rounding
    return isinstance(got, float) and abs(got - want) <= 1e-9 * max(1.0, abs(want))


def mismatches(
    port: int, bodies: list[dict[str, Any]], wants: list[dict[str, Any]]
) -> tuple[int, int]:
    """(values compared, mismatches): a server's answers against ``wants``."""
    http = Http(port)
    compared = bad = 0
    try:
        for body, want in zip(bodies, wants, strict=True):
            out = http.post("/get-online-features", body)
            names = out["metadata"]["feature_names"][1:]
            for name, res in zip(names, out["results"][1:], strict=True):
                compared += 1
                bad += not _same(res["values"][0], want[name])
    finally:
        http.close()
    return compared, bad


# --------------------------------------------------------------------------- rows


def lookup_rows(run: WindowRun, events: Any, use_wrk: bool, console: Any) -> list[Measure]:
    s = run.sizes
    with console.status("Feast: apply, materialize the events as list features, feast serve"):
        built = start_feast(run, events)
    console.print(f"Feast repo applied and materialized in {built:.1f}s; feast serve up")
    qs = queries(run, BODIES, seed=7)
    ours = [ours_body(run)(q) for q in qs]
    targets: list[tuple[int, str, list[Any]]] = [
        (run.port, "/get-online-features", ours),
        (run.feast_port, "/get-online-features", [feast_body(q) for q in qs]),
        (run.port, "/health", [{}]),
    ]
    with console.status("lookups through HTTP: skewless serve, feast serve, /health"):
        mine, feast, health = loads(run, targets, use_wrk)
    with console.status("the server's own time per lookup: one more run @1 conn"):
        within_1ms, p99_bound = server_time(run, ours, use_wrk)
    with console.status("Redis floor: ZRANGEBYSCORE alone"):
        r_p50, r_p99 = redis_floor(run, s.seconds)
    with console.status(f"pandas at request time: {mine.requests:,} requests"):
        alt = PandasWindows(events)
        time_pandas(alt, qs, 200)  # warm-up
        lat = time_pandas(alt, qs, mine.requests)
        a_p50, a_p99 = percentiles_ms(lat)
        a_rps = len(lat) / sum(lat)
    with console.status(f"parity: {s.parity:,} requests to each server against pandas"):
        check = queries(run, s.parity, seed=8)
        wants = [alt.features(q) for q in check]
        compared, bad = mismatches(run.port, [ours_body(run)(q) for q in check], wants)
        _, feast_bad = mismatches(run.feast_port, [feast_body(q) for q in check], wants)
    console.print(
        f"p50/p99 ms @1 conn: skewless {mine.p50_ms:.2f}/{mine.p99_ms:.2f} ({mine.requests:,} "
        f"requests), feast serve {feast.p50_ms:.2f}/{feast.p99_ms:.2f}, pandas "
        f"{a_p50:.2f}/{a_p99:.2f}; req/s: {mine.rps:,.0f} / {feast.rps:,.0f} / {a_rps:,.0f}"
    )
    what = "1 entity x 8 window features"
    state = f"{s.drivers:,} entities x {s.per_driver[0]}-{s.per_driver[1]} events"
    fc = "Feast column: feast serve, pandas ODFV over the events as list features"
    pc = "Feast column: pandas per request, in-process"
    http, redis = "floor, HTTP alone (POST /health)", "floor, Redis alone (the ZRANGEBYSCORE)"
    server = "the server's own time (request read to answer written, Redis included)"
    parity = f"mismatching values vs pandas, of {compared:,} (Feast column: feast serve's)"
    return [
        _rps(f"{what}, {state}: req/s @16 conns ({fc})", mine.rps, feast.rps),
        Measure(AREA, f"{what}: p50 ms @1 conn ({fc})", "ms", mine.p50_ms, feast.p50_ms),
        Measure(AREA, f"{what}: p99 ms @1 conn ({fc})", "ms", mine.p99_ms, feast.p99_ms),
        _rps(f"{what}: req/s @16 conns ({pc}, 1 core)", mine.rps, a_rps),
        Measure(AREA, f"{what}: p50 ms @1 conn ({pc})", "ms", mine.p50_ms, a_p50),
        Measure(AREA, f"{what}: p99 ms @1 conn ({pc})", "ms", mine.p99_ms, a_p99),
        Measure(AREA, f"{what}, @1 conn: {server}: share within 1 ms", "%", within_1ms),
        Measure(AREA, f"{what}, @1 conn: {server}: p99 at most (bucket bound)", "ms", p99_bound),
        _rps(f"{http}: req/s @16 conns", health.rps, None),
        Measure(AREA, f"{http}: p50 ms @1 conn", "ms", health.p50_ms),
        Measure(AREA, f"{http}: p99 ms @1 conn", "ms", health.p99_ms),
        Measure(AREA, f"{redis}: p50 ms @1 conn", "ms", r_p50),
        Measure(AREA, f"{redis}: p99 ms @1 conn", "ms", r_p99),
        Measure(AREA, parity, "count", bad, feast_bad),
    ]


def busy_rows(run: WindowRun, use_wrk: bool, console: Any) -> list[Measure]:
    """p50/p99 at 1 connection of one entity with :data:`BUSY` events in its windows: a
    lookup reads and aggregates every event of the longest window, so its cost grows with
    the entity's traffic (the rows show by how much)."""
    from bench.repos.windows_repo import events
    from store.window_state import push

    out: list[Measure] = []
    for i, n in enumerate(BUSY):
        driver = f"busy{n}"
        table = events([driver], (n, n), run.end_us, seed=20 + i, first_trip=(30 + i) * 10**9)
        push(run.client, run.project, run.window_set, table)
        body: dict[str, Any] = {"features": run.refs, "entities": {"driver_id": [driver]}}
        body["request_time"] = run.end_us
        with console.status(f"a busy entity: {n:,} events in its windows"):
            r = run_load(run.port, "/get-online-features", [body], 1, run.sizes.seconds, use_wrk)
        what = f"1 entity x 8 window features, a busy entity ({n:,} events in the last day)"
        out += [
            Measure(AREA, f"{what}: p50 ms @1 conn", "ms", r.p50_ms),
            Measure(AREA, f"{what}: p99 ms @1 conn", "ms", r.p99_ms),
        ]
    return out


def _rps(measure: str, ours: float, alternative: float | None) -> Measure:
    return Measure(AREA, measure, "req/s", ours, alternative, True)
