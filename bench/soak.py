"""Soak ``skewless serve`` over loopback: a fixed request rate for a fixed time over a few
keep-alive connections, the server process's RSS sampled every second.

The requests are valid lookups (1-8 entities, some missing or expired; a feature list, the
request-time transform service on the Feast endpoint and on the native one) and a small
share of hostile bodies from ``bench.fuzz``'s grammar. Requests are sent on a fixed
schedule (open loop: a late answer does not slow the schedule, the next request goes out
as soon as the connection is free). A warm-up at the same rate comes first; the RSS at its
end is the baseline and latencies are counted after it.

A run fails (exit 1) on any 5xx, reset (a connection closed or broken before an answer)
or timeout (no answer in ``TIMEOUT_S``), on a dead server or a traceback in its log, and
when the server's RSS grows over the run by more than ``max(RSS_BOUND_MIB, RSS_BOUND_SHARE
x start)``, growth being the rise of the least-squares line through the samples after the
warm-up (one late spike does not fail a run, a steady leak does).

    .venv/bin/python -m bench.soak [--quick] [--seconds S] [--rate R] [--connections C]

``tests/serving/test_soak.py`` runs a few seconds of it at a low rate in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from bench.fuzz import Target, dumps, hostile_body, post, wait_up

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 5.0  # no answer within this counts as a timeout
RSS_BOUND_MIB = 20.0  # growth over the run after the warm-up: the larger of the two bounds
RSS_BOUND_SHARE = 0.10
_SERVE = (
    "import typer\nfrom cli.commands_serve import register\napp = typer.Typer()\n"
    "app.callback()(lambda: None)\nregister(app)\napp()\n"
)


@dataclass(frozen=True)
class RssSample:
    t_s: float  # since the first request was due
    mib: float


@dataclass
class SoakResult:
    rate: float  # asked for, req/s
    warmup_s: float
    seconds: float  # after the warm-up: as asked, then as it took
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # reset, timeout
    latencies_s: list[float] = field(default_factory=list)  # answers after the warm-up
    rss: list[RssSample] = field(default_factory=list)

    @property
    def fives(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    @property
    def achieved_rate(self) -> float:
        return len(self.latencies_s) / self.seconds

    def latency_ms(self, q: float) -> float:
        lat = sorted(self.latencies_s)
        return lat[min(len(lat) - 1, int(len(lat) * q))] * 1000 if lat else float("nan")

    @property
    def rss_after_warmup(self) -> list[RssSample]:
        return [s for s in self.rss if s.t_s >= self.warmup_s - 0.01]

    @property
    def slope_mib_per_min(self) -> float:
        xs = self.rss_after_warmup
        if len(xs) < 2:
            return float("nan")
        fit = statistics.linear_regression([s.t_s for s in xs], [s.mib for s in xs])
        return fit.slope * 60

    @property
    def growth_mib(self) -> float:
        """The rise of the least-squares line over the samples after the warm-up."""
        xs = self.rss_after_warmup
        return self.slope_mib_per_min / 60 * (xs[-1].t_s - xs[0].t_s) if len(xs) >= 2 else 0.0

    @property
    def rss_bound_mib(self) -> float:
        xs = self.rss_after_warmup
        return max(RSS_BOUND_MIB, RSS_BOUND_SHARE * xs[0].mib) if xs else RSS_BOUND_MIB

    def histogram(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))

    def failures(self) -> list[str]:
        out = []
        if self.fives:
            out.append(f"{self.fives} x 5xx ({self.histogram()})")
        for kind, n in sorted(self.errors.items()):
            out.append(f"{n} x {kind}")
        if len(self.rss_after_warmup) < 2:
            out.append(f"only {len(self.rss_after_warmup)} RSS samples after the warm-up")
        elif self.growth_mib > self.rss_bound_mib:
            out.append(
                f"RSS grew {self.growth_mib:.1f} MiB over {self.seconds:.0f}s "
                f"(bound {self.rss_bound_mib:.1f} MiB)"
            )
        return out


# --------------------------------------------------------------------------- requests


def valid_request(rng: random.Random, t: Target, users: int) -> bytes:
    """A lookup of 1-8 entities (a few ids past ``users``: missing): a feature list, or the
    request-time service on the Feast endpoint or the native one."""
    ids = [rng.randrange(users + users // 10) for _ in range(rng.randint(1, 8))]
    kind = rng.randrange(3)
    if kind == 0:
        feats = rng.sample(t.features, rng.randint(1, len(t.features)))
        body = {"features": feats, "entities": {t.key: ids}, "full_feature_names": True}
        return post("/get-online-features", dumps(body))
    entities = {t.key: ids, t.request_field: [round(rng.uniform(0, 5000), 2) for _ in ids]}
    if kind == 1:
        return post(
            "/get-online-features", dumps({"feature_service": t.service, "entities": entities})
        )
    return post(f"/v1/features/{t.service}", dumps({"entities": entities}))


def next_request(rng: random.Random, t: Target, users: int, hostile_share: float) -> bytes:
    if rng.random() < hostile_share:
        return post(*hostile_body(rng, t))
    return valid_request(rng, t, users)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """One answer's status and whether the server closes after it (body skipped)."""
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("closed without an answer")
    if not line.startswith(b"HTTP/1.1 ") or len(line) < 12:
        raise ConnectionResetError(f"not an HTTP/1.1 status line: {line[:80]!r}")
    length, close = 0, False
    while (h := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = h.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    await reader.readexactly(length)
    return int(line[9:12]), close


# --------------------------------------------------------------------------- the run


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` from /proc (MiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _sample_rss(pid: int, t0: float, end: float, out: list[RssSample]) -> None:
    loop = asyncio.get_running_loop()
    i = 0
    while (due := t0 + i) <= end:
        await asyncio.sleep(max(0.0, due - loop.time()))
        try:
            out.append(RssSample(loop.time() - t0, rss_mib(pid)))
        except OSError:  # the server is gone: its requests fail and say so
            return
        i += 1


async def _connection(
    port: int, due_s: list[float], n_warmup: int, res: SoakResult, make: Iterator[bytes]
) -> None:
    """Send a request at each of ``due_s`` (loop time; the first ``n_warmup`` are the
    warm-up) over one keep-alive connection, reopened after a close, reset or timeout."""
    loop = asyncio.get_running_loop()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    for i, due in enumerate(due_s):
        await asyncio.sleep(max(0.0, due - loop.time()))
        request = next(make)
        res.sent += 1
        close = True
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            sent_at = time.perf_counter()
            writer.write(request)
            status, close = await asyncio.wait_for(read_answer(reader), TIMEOUT_S)
        except TimeoutError:
            res.errors["timeout"] += 1
        except (OSError, asyncio.IncompleteReadError):
            res.errors["reset"] += 1
        else:
            res.statuses[status] += 1
            if i >= n_warmup:
                res.latencies_s.append(time.perf_counter() - sent_at)
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def soak(
    port: int, pid: int, target: Target, users: int, *, rate: float = 500.0,
    seconds: float = 60.0, warmup_s: float = 5.0, connections: int = 4,
    hostile_share: float = 0.05, seed: int = 16,
) -> SoakResult:  # fmt: skip
    """``rate`` x (``warmup_s`` + ``seconds``) requests to the server on ``port``, request
    ``i`` due at ``i / rate`` s, dealt round-robin to ``connections`` keep-alive
    connections; ``pid``'s RSS sampled every second."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    n_total, n_warmup = round(rate * (warmup_s + seconds)), round(rate * warmup_s)
    res = SoakResult(rate, warmup_s, seconds)

    def requests(slot: int) -> Iterator[bytes]:
        rng = random.Random(seed * 1000 + slot)
        while True:
            yield next_request(rng, target, users, hostile_share)

    def conn(slot: int) -> Awaitable[None]:
        dues = [t0 + i / rate for i in range(slot, n_total, connections)]
        warm = len(range(slot, n_warmup, connections))
        return _connection(port, dues, warm, res, requests(slot))

    sampler = asyncio.ensure_future(_sample_rss(pid, t0, t0 + warmup_s + seconds, res.rss))
    await asyncio.gather(*(conn(c) for c in range(connections)))
    res.seconds = loop.time() - (t0 + warmup_s)  # longer than asked when the schedule slipped
    await sampler
    return res


# --------------------------------------------------------------------------- the server


@contextmanager
def serving_process(
    repo: Path, redis_url: str, log: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``skewless serve --repo repo`` (one process) on a free loopback port until the block
    ends; its stderr goes to ``log``."""
    from pipelines.local_redis import free_port

    port = free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, "serve", "--repo", str(repo), "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_up(port, proc, 60.0)
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- main


def report(res: SoakResult, connections: int) -> None:
    from rich.console import Console
    from rich.table import Table

    after = res.rss_after_warmup
    table = Table(
        title=f"skewless serve soak: {res.rate:,.0f} req/s asked, {res.warmup_s:.0f}s warm-up "
        f"+ {res.seconds:.0f}s, {connections} keep-alive connections (loopback)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    answered = sum(res.statuses.values())
    rows = [
        ("requests sent (incl. warm-up)", f"{res.sent:,}"),
        ("answered", f"{answered:,}"),
        ("status histogram", res.histogram()),
        ("5xx", str(res.fives)),
        ("resets", str(res.errors["reset"])),
        ("timeouts", str(res.errors["timeout"])),
        ("achieved rate after warm-up", f"{res.achieved_rate:,.1f} req/s"),
        ("latency p50", f"{res.latency_ms(0.50):.2f} ms"),
        ("latency p99", f"{res.latency_ms(0.99):.2f} ms"),
        ("RSS samples after warm-up", str(len(after))),
    ]
    if after:
        rows += [
            ("RSS at start (after warm-up)", f"{after[0].mib:.1f} MiB"),
            ("RSS max", f"{max(s.mib for s in after):.1f} MiB"),
            ("RSS at end", f"{after[-1].mib:.1f} MiB"),
            ("RSS slope (least squares)", f"{res.slope_mib_per_min:+.2f} MiB/min"),
            ("RSS growth of the fit / bound", f"{res.growth_mib:+.2f} / {res.rss_bound_mib:.1f} MiB"),
        ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0, help="measured run (default 60, quick 10)")
    ap.add_argument("--warmup", type=float, default=0, help="warm-up first (default 5, quick 2)")
    ap.add_argument("--rate", type=float, default=500.0, help="requests per second")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--hostile-share", type=float, default=0.05)
    ap.add_argument("--quick", action="store_true", help="10 s after a 2 s warm-up")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    ap.add_argument("--json", help="also write the measurements here (for skewless bench)")
    args = ap.parse_args(argv)
    from bench.repos.serving_repo import STATS_FEATURES, build
    from bench.results import Measure, write_json
    from pipelines.local_redis import redis_for_run

    seconds = args.seconds or (10.0 if args.quick else 60.0)
    warmup = args.warmup or (2.0 if args.quick else 5.0)
    target = Target(tuple(f"user_stats:{f}" for f in STATS_FEATURES), "user_id",
                    "payments_v1", "request_amount")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="skewless-soak-"))
    log = tmp / "serve.log"
    given = nullcontext(args.redis_url) if args.redis_url else None
    with given or redis_for_run() as redis_url:
        repo = build(tmp / "repo", redis_url, users=500)
        try:
            with serving_process(repo.path, redis_url, log) as (port, proc):
                res = asyncio.run(
                    soak(port, proc.pid, target, repo.users, rate=args.rate, seconds=seconds,
                         warmup_s=warmup, connections=args.connections,
                         hostile_share=args.hostile_share, seed=args.seed)
                )  # fmt: skip
                alive = proc.poll() is None
        finally:
            import redis

            from pipelines.materialize import clear_project

            clear_project(redis.Redis.from_url(redis_url), repo.project)
    server_log = log.read_text(errors="replace")
    shutil.rmtree(tmp, ignore_errors=True)
    report(res, args.connections)
    failures = res.failures()
    if not alive:
        failures.append("the server died")
    if "Traceback" in server_log:
        failures.append("server log has a traceback:\n" + server_log[-3000:])
    for f in failures:
        print("FAIL", f)
    after = res.rss_after_warmup
    write_json(
        [
            Measure("soak", f"requests in {warmup + seconds:.0f}s ({res.histogram()})", "count",
                    res.sent),
            Measure("soak", "5xx, resets and timeouts", "count",
                    res.fives + sum(res.errors.values())),
            Measure("soak", f"achieved rate ({args.rate:,.0f} asked)", "req/s",
                    res.achieved_rate, higher_is_better=True),
            Measure("soak", "latency p50", "ms", res.latency_ms(0.5)),
            Measure("soak", "latency p99", "ms", res.latency_ms(0.99)),
            Measure("soak", "RSS at start (after warm-up)", "MiB", after[0].mib if after else 0),
            Measure("soak", "RSS at end", "MiB", after[-1].mib if after else 0),
            Measure("soak", "RSS slope (least squares)", "MiB/min", res.slope_mib_per_min),
        ],
        args.json,
    )  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
