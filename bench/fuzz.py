"""Fuzz ``skewless serve`` over loopback: hostile JSON bodies from a small grammar and raw
HTTP mutations, then a 128 MB header while a probe keeps asking ``/health``.

Every case is one connection: its bytes are sent (a byte at a time for slow clients), the
write side is closed, and the answers are read until the server closes. A run fails (exit
1) on any 5xx, on a connection closed or reset before each complete request in it was
answered, on an answer outside what the case allows (e.g. not 431 for a header flood), and
on a case that does not finish within the server's idle timeout plus a margin. The status
histogram counts every answer; ``closed`` counts incomplete input closed without one.

    .venv/bin/python -m bench.fuzz [--quick] [--requests N] [--seed S] [--json PATH]

``tests/serving/test_fuzz.py`` runs a shorter draw of the same cases in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._load import free_port

ROOT = Path(__file__).resolve().parents[1]
SLOW_GAP_S = 0.001  # between the bytes of a slow client
MARGIN_S = 5.0  # past the server's idle timeout before a case counts as a hang
_4XX = frozenset(range(400, 500))


@dataclass(frozen=True)
class Target:
    """What a valid request names on the server under test."""

    features: tuple[str, ...]  # "view:feature" references
    key: str  # the entity key of their view
    service: str  # a feature service with a request-time field
    request_field: str


@dataclass(frozen=True)
class Case:
    label: str
    payload: bytes
    expect: int = 0  # complete requests at the start of payload: each must be answered
    want: frozenset[int] | None = None  # statuses allowed for those (None: any but 5xx)
    slow: bool = False


@dataclass
class Outcome:
    statuses: Counter[int | str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def histogram(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=str))


# --------------------------------------------------------------------------- bodies


class Raw(bytes):
    """JSON text inserted as is (NaN, huge literals, invalid UTF-8, duplicate keys)."""


def dumps(v: object) -> bytes:
    """A tiny JSON encoder that passes :class:`Raw` through."""
    if isinstance(v, Raw):
        return bytes(v)
    if v is None or isinstance(v, bool):
        return {None: b"null", True: b"true", False: b"false"}[v]
    if isinstance(v, int | float):
        return repr(v).encode()
    if isinstance(v, str):
        return b'"' + v.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
    if isinstance(v, list):
        return b"[" + b",".join(dumps(x) for x in v) + b"]"
    if isinstance(v, dict):
        return b"{" + b",".join(dumps(k) + b":" + dumps(x) for k, x in v.items()) + b"}"
    raise TypeError(type(v))


HOSTILE: list[object] = [
    None, True, False, 0, -1, 1.5, -0.0, 2**63, -(2**63) - 1, 2**64, "", "x" * 5000, [], {},
    [[]], [{}], [None], Raw(b"NaN"), Raw(b"Infinity"), Raw(b"-Infinity"), Raw(b"1e400"),
    Raw(b"-1e400"), Raw(b"1" * 500), Raw(b"0x10"), Raw(b"01"), Raw(b"1."), Raw(b".5"),
    Raw(b'"\xff\xfe"'), Raw(b'"\xc3\x28"'), Raw(b'"\\ud800"'), Raw(b'"\\u0000"'),
    Raw(b'"a\x00b"'), Raw(b"[" * 50 + b"]" * 50), Raw(b'{"a":' * 50 + b"1" + b"}" * 50),
    list(range(1500)), ["x"] * 1500, [1.5] * 10, [True], ["1"], [Raw(b"NaN")],
]  # fmt: skip


def nested(t: Target, depth: int) -> bytes:
    """The issue's deep-nesting body: ``depth`` brackets around the entity value."""
    return (
        b'{"features":["' + t.features[0].encode() + b'"],"entities":{"' + t.key.encode() + b'":'
        + b"[" * depth + b"1" + b"]" * depth + b"}}"
    )  # fmt: skip


def _valid(rng: random.Random, t: Target) -> tuple[str, dict[str, object]]:
    ids: list[object] = [rng.randrange(-5, 600) for _ in range(rng.randint(1, 4))]
    kind = rng.randrange(3)
    if kind == 0:
        feats = rng.sample(t.features, rng.randint(1, len(t.features)))
        body = {"features": feats, "entities": {t.key: ids}, "full_feature_names": True}
        return "/get-online-features", body
    amounts: list[object] = [rng.uniform(-10, 1e4) for _ in ids]
    entities = {t.key: ids, t.request_field: amounts}
    if kind == 1:
        return "/get-online-features", {"feature_service": t.service, "entities": entities}
    return f"/v1/features/{t.service}", {"entities": entities}


def _paths(v: object, prefix: tuple[object, ...] = ()) -> Iterable[tuple[object, ...]]:
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _paths(x, (*prefix, k))
    elif isinstance(v, list) and v:
        yield from _paths(v[0], (*prefix, 0))


def _replace(v: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        return {k: (_replace(x, rest, new) if k == head else x) for k, x in v.items()}
    assert isinstance(v, list)
    return [_replace(x, rest, new) if i == head else x for i, x in enumerate(v)]


def hostile_body(rng: random.Random, t: Target) -> tuple[str, bytes]:
    """One grammar mutation of a valid body: a hostile value in some field, a duplicate
    key, a truncation, raw byte damage, or a huge array."""
    path, body = _valid(rng, t)
    roll = rng.random()
    if roll < 0.55:
        where = rng.choice(list(_paths(body)))
        return path, dumps(_replace(body, where, rng.choice(HOSTILE)))
    text = dumps(body)
    if roll < 0.65:  # a duplicate key, first or last wins are both plausible: either way 4xx/200
        k = rng.choice(list(body))
        return path, text[:-1] + b',"' + k.encode() + b'":' + dumps(rng.choice(HOSTILE)) + b"}"
    if roll < 0.8:
        return path, text[: rng.randrange(len(text))]
    if roll < 0.97:
        raw = bytearray(text)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return path, bytes(raw)
    n = rng.choice([1001, 50_000, 140_000])
    return path, dumps({"features": list(t.features[:1]), "entities": {t.key: list(range(n))}})


def post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (path.encode(), len(body), extra, body)
    )


HEALTH = b"GET /health HTTP/1.1\r\nHost: fuzz\r\n\r\n"


def body_cases(rng: random.Random, t: Target, n: int, per_conn: int = 20) -> list[Case]:
    """``n`` hostile bodies, pipelined ``per_conn`` to a connection: each must be answered."""
    out = []
    for i in range(0, n, per_conn):
        reqs = [post(*hostile_body(rng, t)) for _ in range(min(per_conn, n - i))]
        out.append(Case("body", b"".join(reqs), expect=len(reqs)))
    return out


def nesting_cases(t: Target, depths: Iterable[int], per_conn: int = 50) -> list[Case]:
    """The deep-nesting body at each depth: 200 at depth 1 (a valid request), 4xx deeper."""
    out = [Case("nesting 1", post("/get-online-features", nested(t, 1)), 1, frozenset({200}))]
    deep = [d for d in depths if d > 1]
    for i in range(0, len(deep), per_conn):
        part = deep[i : i + per_conn]
        payload = b"".join(post("/get-online-features", nested(t, d)) for d in part)
        out.append(Case(f"nesting {part[0]}..{part[-1]}", payload, len(part), _4XX))
    return out


def _chunked(body: bytes, sizes: Iterable[int]) -> bytes:
    out, pos = [], 0
    for size in sizes:
        out.append(b"%x\r\n%s\r\n" % (size, body[pos : pos + size]))
        pos += size
    return b"".join(out) + b"0\r\n\r\n"


def raw_cases(rng: random.Random, t: Target) -> list[Case]:
    """One draw of the HTTP-level mutations (fixed list; random damage varies with rng)."""
    path, valid = _valid(rng, t)
    good = post(path, dumps(valid))
    te = b"POST /get-online-features HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n"
    big = b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(2000))
    flood = b"GET /health HTTP/1.1\r\n" + headers[: headers.index(b"X-101:")]
    _431 = frozenset({431})
    cases = [
        Case("valid", good, 1, frozenset({200})),
        Case("slow valid", good, 1, frozenset({200}), slow=True),
        Case("slow health", HEALTH, 1, frozenset({200}), slow=True),
        Case("101 headers", flood + b"\r\n", 1, _431),
        Case("2000 headers", b"GET /health HTTP/1.1\r\n" + headers + b"\r\n", 1, _431),
        Case("1 MiB header", big, 1, _431),
        Case("70 KiB header name", b"GET / HTTP/1.1\r\n" + b"X" * 70_000 + b": 1\r\n\r\n", 1, _431),
        Case("60 KiB header", b"GET /health HTTP/1.1\r\nX: " + b"a" * 60_000 + b"\r\n\r\n", 1),
        Case("unterminated 1 MiB header", big[:-4], 1, _431),
        Case("9 KiB target", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 1, frozenset({414})),
        Case("200 KiB target", b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n", 1),
        Case("chunk ffffffffffffffff", te + b"ffffffffffffffff\r\n", 1, frozenset({413})),
        Case("chunk overflow", te + b"1ffffffffffffffff\r\n", 1, frozenset({400})),
        Case("chunk-size line 4 KiB", te + b"0" * 4096 + b"1\r\nx\r\n0\r\n\r\n", 1, _4XX),
        Case("chunk bad hex", te + b"zz\r\n", 1, frozenset({400})),
        Case("chunk 0x", te + b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", 1, _4XX),
        Case("chunk over body limit", te + b"%x\r\n" % (2 << 20), 1, frozenset({413})),
        Case("chunked 1-byte chunks", te + _chunked(dumps(valid), [1] * 400), 1),
        Case("chunked with ext+trailer", te + b"2;a=b\r\n{}\r\n0\r\nX-T: 1\r\n\r\n", 1),
        Case("chunk data too long", te + b"2\r\n{}}\r\n0\r\n\r\n", 1, _4XX),
        Case("chunked no end", te + b"2\r\n{}\r\n", 0),
        Case("chunked then valid", te + b"2\r\n{}\r\n0\r\n\r\n" + HEALTH, 2),
        Case("TE chunked twice", te.replace(b"chunked", b"chunked, chunked") + b"0\r\n\r\n", 1),
        Case("TE gzip", te.replace(b"chunked", b"gzip") + b"0\r\n\r\n", 1, _4XX),
        Case("TE + CL", te[:-2] + b"Content-Length: 5\r\n\r\n0\r\n\r\n", 1, _4XX),
        Case("CL negative", b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 1, _4XX),
        Case("CL huge", b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 1),
        Case("CL over limit", b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 1, _4XX),
        Case("CL twice", b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 1),
        Case(
            "CL short",
            b"POST /get-online-features HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(dumps(valid)) // 2, dumps(valid)),
            1,
            _4XX,
        ),
        Case("CL truncated body", good[: len(good) - 5], 0),
        Case("valid then garbage", HEALTH * 3 + b"\x00\x01garbage\r\n\r\n", 3),
        Case("valid then half", HEALTH * 2 + HEALTH[:20], 2),
        Case("LF only", b"GET /health HTTP/1.1\nHost: f\n\n", 1, _4XX),
        Case("HTTP/0.9", b"GET /health\r\n\r\n", 1),
        Case("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1, _4XX),
        Case("TLS hello", bytes.fromhex("16030100a5010000a10303") + bytes(160), 0),
        Case("upgrade", b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", 1),
        Case("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 1, _4XX),
        Case("empty lines first", b"\r\n\r\n" + HEALTH, 1),
        Case("HTTP/1.0", HEALTH.replace(b"1.1", b"1.0"), 1, frozenset({200})),
        Case("connection close then more", HEALTH[:-2] + b"Connection: close\r\n\r\n" + HEALTH, 1),
        Case("expect 100", good.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n", 1), 1),
        Case("bad method", b"G\x00T / HTTP/1.1\r\n\r\n", 1, _4XX),
        Case("NUL in header", b"GET /health HTTP/1.1\r\nX: a\x00b\r\n\r\n", 1, _4XX),
        Case("obs-fold", b"GET /health HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 1, _4XX),
        Case("only CR", b"GET /health HTTP/1.1\rHost: f\r\r", 0),
        Case("17 pipelined", HEALTH * 17, 17, frozenset({200})),
        Case("200 pipelined posts", good * 200, 200, frozenset({200})),
    ]
    for _ in range(20):  # random damage of a valid request
        raw = bytearray(rng.choice([good, HEALTH, te + _chunked(dumps(valid), [3, 5, 100])]))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(raw))
            op = rng.randrange(3)
            if op == 0:
                raw[i] = rng.randrange(256)
            elif op == 1:
                del raw[i]
            else:
                raw[i:i] = bytes([rng.choice(b"\r\n :;\t\x00\xff")])
        cases.append(Case("damaged", bytes(raw), 0))
    return cases


def all_cases(rng: random.Random, t: Target, n_bodies: int, depths: Iterable[int]) -> list[Case]:
    cases = nesting_cases(t, depths) + raw_cases(rng, t) + body_cases(rng, t, n_bodies)
    rng.shuffle(cases)
    return cases


# --------------------------------------------------------------------------- client


async def _read_answers(reader: asyncio.StreamReader, statuses: list[int]) -> None:
    """Answers until the server closes, their statuses appended as they come."""
    while True:
        line = await reader.readline()
        if not line:
            return
        if not line.startswith(b"HTTP/1.1 ") or len(line) < 12:
            raise ValueError(f"not an HTTP/1.1 status line: {line[:80]!r}")
        length = None
        while (h := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise ValueError("answer without content-length")
        await reader.readexactly(length)
        statuses.append(int(line[9:12]))


async def _send(writer: asyncio.StreamWriter, case: Case) -> None:
    try:
        if case.slow:
            for i in range(len(case.payload)):
                writer.write(case.payload[i : i + 1])
                await writer.drain()
                await asyncio.sleep(SLOW_GAP_S)
        else:
            writer.write(case.payload)
            await writer.drain()
        writer.write_eof()
    except OSError:  # the server refused and closed while we were still sending: fine
        pass


async def run_case(port: int, case: Case, timeout_s: float) -> tuple[list[int], str | None]:
    """The statuses answered to ``case`` and what went wrong, if anything."""
    statuses: list[int] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    sender = asyncio.ensure_future(_send(writer, case))
    error = None
    try:
        await asyncio.wait_for(_read_answers(reader, statuses), timeout_s)
    except TimeoutError:
        error = f"hang: nothing for {timeout_s:.0f}s"
    except (ConnectionResetError, asyncio.IncompleteReadError):
        error = "reset"
    except ValueError as exc:
        error = str(exc)
    finally:
        sender.cancel()
        writer.close()
    if error == "reset" and len(statuses) >= case.expect:
        error = None  # nothing complete was left unanswered
    if error is None and len(statuses) < case.expect:
        error = f"closed after {len(statuses)} of {case.expect} answers"
    if error is None and any(s >= 500 for s in statuses):
        error = f"5xx: {statuses}"
    if error is None and case.want is not None:
        if not all(s in case.want for s in statuses[: case.expect]):
            error = f"answered {statuses[: case.expect]}, allowed {sorted(case.want)[:5]}"
    return statuses, error


async def run_cases(
    port: int, cases: list[Case], idle_timeout_s: float, connections: int = 8
) -> Outcome:
    """Every case on its own connection, ``connections`` at a time."""
    outcome = Outcome()
    queue = list(reversed(cases))

    async def worker() -> None:
        while queue:
            case = queue.pop()
            timeout = idle_timeout_s + MARGIN_S
            if case.slow:
                timeout += len(case.payload) * SLOW_GAP_S * 4
            statuses, error = await run_case(port, case, timeout)
            outcome.statuses.update(statuses)
            if not statuses:
                outcome.statuses["closed"] += 1
            if error:
                outcome.failures.append(f"{case.label}: {error} (payload {case.payload[:120]!r})")

    await asyncio.gather(*(worker() for _ in range(connections)))
    return outcome


# --------------------------------------------------------------------------- flood


def read_answer(f: Any) -> int:
    """The status of one answer read from a blocking socket file (body skipped)."""
    line = f.readline()
    length = 0
    while (h := f.readline()) not in (b"\r\n", b""):
        name, _, value = h.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    f.read(length)
    return int(line[9:12])


@dataclass(frozen=True)
class FloodResult:
    status: int | None
    answer_s: float  # from the first header byte to the answer
    probes: list[float]  # /health round trips on another connection meanwhile (s)
    probe_statuses: list[int]


def header_flood(port: int, mib: int = 128, timeout_s: float = 10.0) -> FloodResult:
    """Send a ``mib`` MiB header on one connection while probing ``/health`` on another,
    until the server has answered it and stopped taking its bytes (or all were sent)."""
    big = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    answer: dict[str, float | int] = {}

    def flood() -> None:
        chunk = b"a" * (1 << 20)
        try:
            big.sendall(b"GET /health HTTP/1.1\r\nHost: f\r\nX-Big: ")
            for _ in range(mib):
                big.sendall(chunk)
        except OSError:
            pass

    def read() -> None:
        t0 = time.perf_counter()
        try:
            line = big.makefile("rb").readline()
            answer["status"] = int(line[9:12])
        except (OSError, ValueError):
            pass
        answer["s"] = time.perf_counter() - t0

    threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=read)]
    probes: list[float] = []
    statuses: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as probe:
        f = probe.makefile("rb")
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads) or len(probes) < 5:  # until it is dropped
            t0 = time.perf_counter()
            probe.sendall(HEALTH)
            status = read_answer(f)
            probes.append(time.perf_counter() - t0)
            statuses.append(status)
    threads[1].join(timeout_s)
    big.close()
    threads[0].join(timeout_s)
    code = answer.get("status")
    return FloodResult(
        None if code is None else int(code), float(answer.get("s", -1)), probes, statuses
    )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000, help="hostile requests at least")
    ap.add_argument("--quick", action="store_true", help="about 3,000 requests")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--keep-alive", type=float, default=5.0, help="the server's idle timeout")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    ap.add_argument("--json", help="also write the measurements here (for skewless bench)")
    args = ap.parse_args(argv)
    from bench.repos.serving_repo import STATS_FEATURES, build
    from bench.results import Measure, write_json
    from pipelines.local_redis import redis_for_run

    target = Target(tuple(f"user_stats:{f}" for f in STATS_FEATURES), "user_id",
                    "payments_v1", "request_amount")  # fmt: skip
    n_total = 3000 if args.quick else args.requests
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="skewless-fuzz-"))
    given = nullcontext(args.redis_url) if args.redis_url else None
    with given or redis_for_run() as redis_url:
        repo = build(tmp / "repo", redis_url, users=500)
        port, log = free_port(), tmp / "serve.log"
        serve = (
            "import typer\nfrom cli.commands_serve import register\napp = typer.Typer()\n"
            "app.callback()(lambda: None)\nregister(app)\napp()\n"
        )
        argv_ = ["serve", "--repo", str(repo.path), "--port", str(port)]
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", serve, *argv_, "--keep-alive", str(args.keep_alive)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            wait_up(port, proc)
            t0 = time.monotonic()
            cases = all_cases(rng, target, 0, range(1, 2001))
            fixed = sum(max(c.expect, 1) for c in cases)
            cases += body_cases(rng, target, max(0, n_total - fixed))
            outcome = asyncio.run(run_cases(port, cases, args.keep_alive))
            seconds = time.monotonic() - t0
            flood = header_flood(port)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(15)
            import redis

            from pipelines.materialize import clear_project

            clear_project(redis.Redis.from_url(redis_url), repo.project)
    server_log = log.read_text(errors="replace")
    shutil.rmtree(tmp, ignore_errors=True)
    p99 = sorted(flood.probes)[int(len(flood.probes) * 0.99)] if flood.probes else -1.0
    print(f"{outcome.requests:,} requests in {len(cases):,} connections, {seconds:.1f}s")
    print(f"status histogram: {outcome.histogram()}")
    print(
        f"128 MiB header: {flood.status} after {flood.answer_s * 1000:.1f} ms; "
        f"{len(flood.probes)} /health probes meanwhile, p99 {p99 * 1000:.2f} ms, "
        f"max {max(flood.probes, default=0) * 1000:.2f} ms"
    )
    failures = list(outcome.failures)
    if flood.status != 431 or any(s != 200 for s in flood.probe_statuses):
        failures.append(f"header flood: {flood.status}, probes {Counter(flood.probe_statuses)}")
    if not alive:
        failures.append("the server died")
    if "Traceback" in server_log:
        failures.append("server log has a traceback:\n" + server_log[-3000:])
    for f in failures[:30]:
        print("FAIL", f)
    fives = sum(v for k, v in outcome.statuses.items() if isinstance(k, int) and k >= 500)
    write_json(
        [
            Measure("fuzz", f"hostile requests ({outcome.histogram()})", "count",
                    outcome.requests),
            Measure("fuzz", "5xx, resets and hangs", "count", fives + len(failures)),
            Measure("fuzz", "128 MiB header answered 431", "ms", flood.answer_s * 1000),
            Measure("fuzz", "p99 of a /health probe during it", "ms", p99 * 1000),
        ],
        args.json,
    )  # fmt: skip
    return 1 if failures else 0


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Return once ``skewless serve`` (``proc``) answers /health on ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"skewless serve exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(HEALTH)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("skewless serve did not come up")


if __name__ == "__main__":
    sys.exit(main())
