"""The HTTP front (serving/http.py) over real sockets, and ``skewless serve`` as a process:
keep-alive, pipelining, malformed requests, body limits, graceful shutdown, workers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow.parquet as pq
import pytest

from bench.repos.serving_repo import STATS_FEATURES, DemoRepo, malformed_bodies
from serving.app import LookupApp
from serving.config import ServeConfig
from tests.support import free_port, start_redis_server

ROOT = Path(__file__).resolve().parents[2]
STATS_REFS = [f"user_stats:{f}" for f in STATS_FEATURES]


@dataclass
class Running:
    port: int
    app: LookupApp
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread
    done: list[BaseException | None] = field(default_factory=list)

    def shutdown(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop.set)
            self.thread.join(15)


@contextmanager
def running(config: ServeConfig) -> Iterator[Running]:
    """The HTTP front on uvloop in a thread, on a free port, until the block ends."""
    import uvloop

    from serving.http import serve

    port = free_port()
    started = threading.Event()
    box: dict[str, Any] = {}

    def target() -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            app = LookupApp(config)
            ready: asyncio.Future[None] = loop.create_future()
            task = asyncio.ensure_future(serve(app, "127.0.0.1", port, ready=ready, stop=stop))
            await ready
            box.update(app=app, loop=loop, stop=stop)
            started.set()
            await task

        try:
            uvloop.run(main())
            box.setdefault("error", None)
        except BaseException as exc:  # reported by the test, not lost in the thread
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(20), "server did not start"
    if box.get("error"):
        raise box["error"]
    srv = Running(port, box["app"], box["loop"], box["stop"], thread)
    try:
        yield srv
    finally:
        srv.shutdown()
    assert box.get("error") is None, box.get("error")


def _request(path: str, body: Any, extra: str = "", version: str = "1.1") -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (
        f"POST {path} HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n{extra}\r\n"
    ).encode() + raw


def _read_response(f: Any) -> tuple[int, dict[str, str], bytes]:
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers["content-length"]))
    return int(status_line[9:12]), headers, body


@contextmanager
def _conn(port: int) -> Iterator[tuple[socket.socket, Any]]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield s, s.makefile("rb")
    finally:
        s.close()


def _closed(s: socket.socket) -> bool:
    s.settimeout(5)
    return s.recv(1) == b""


def _config(demo: DemoRepo, redis_url: str, **kw: Any) -> ServeConfig:
    return ServeConfig(repo=str(demo.path), redis_url=redis_url, **kw)


def test_keep_alive_and_pipelined_requests_in_order(demo: DemoRepo, redis_url: str) -> None:
    with running(_config(demo, redis_url)) as srv, _conn(srv.port) as (s, f):
        ids = [3, 1, 4, 1, 5, 9, 2, 6]
        reqs = [
            _request(
                "/get-online-features",
                {"features": ["user_stats:txn_count"], "entities": {"user_id": [u]}},
            )
            for u in ids
        ]
        s.sendall(reqs[0])  # one at a time on a kept-alive connection ...
        status, headers, body = _read_response(f)
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body)["results"][0]["values"] == [3]
        s.sendall(b"".join(reqs[1:]))  # ... then the rest pipelined in one write
        got = [json.loads(_read_response(f)[2])["results"][0]["values"][0] for _ in ids[1:]]
        assert got == ids[1:]


def test_same_answers_as_the_asgi_entry(demo: DemoRepo, redis_url: str) -> None:
    """The HTTP front and the ASGI app are two transports over one handler."""
    import httpx

    cases = [
        ("/get-online-features", {"features": STATS_REFS, "entities": {"user_id": [1, 2, 999]}}),
        ("/v1/features/payments_v1", {"entities": {"user_id": [7], "request_amount": [3.5]}}),
        ("/get-online-features", {"features": ["nope:x"], "entities": {"user_id": [1]}}),
        ("/v1/features/missing", {"entities": {"user_id": [1]}}),
        ("/get-online-features", b"{not json"),
    ]
    config = _config(demo, redis_url)
    with running(config) as srv, _conn(srv.port) as (s, f):
        ours = []
        for path, body in cases:
            s.sendall(_request(path, body))
            status, _, payload = _read_response(f)
            ours.append((status, json.loads(payload)))

    async def via_asgi() -> list[tuple[int, Any]]:
        app = LookupApp(config)
        out = []
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for path, body in cases:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                r = await c.post(path, content=raw)
                out.append((r.status_code, r.json()))
        await app.shutdown()
        return out

    assert ours == asyncio.run(via_asgi())
    codes = [c for c, _ in ours]  # the exact 4xx of each error is tests/serving/test_server's
    assert codes[:2] == [200, 200] and all(400 <= c < 500 for c in codes[2:]), codes


def test_malformed_http_is_400_json_and_closes(demo: DemoRepo, redis_url: str) -> None:
    with running(_config(demo, redis_url)) as srv:
        for garbage in (
            b"NOT HTTP AT ALL\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        ):
            with _conn(srv.port) as (s, f):
                s.sendall(garbage)
                status, _, body = _read_response(f)
                assert status == 400 and "error" in json.loads(body)
                assert _closed(s)


def test_body_limits_are_413_without_reading_the_body(demo: DemoRepo, redis_url: str) -> None:
    with running(_config(demo, redis_url, max_body_bytes=4096)) as srv:
        with _conn(srv.port) as (s, f):  # declared too large: refused before any body byte
            s.sendall(
                b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
            )
            status, _, body = _read_response(f)
            assert status == 413 and json.loads(body)["field"] == "content-length"
            assert _closed(s)
        with _conn(srv.port) as (s, f):  # chunked, no length: counted while it arrives
            chunk = b"x" * 3000
            s.sendall(
                b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (b"%x\r\n%b\r\n" % (len(chunk), chunk)) * 2
                + b"0\r\n\r\n"
            )
            status, _, body = _read_response(f)
            assert status == 413 and "exceeds 4096" in json.loads(body)["error"]


def test_connection_close_and_http10(demo: DemoRepo, redis_url: str) -> None:
    body = {"features": ["user_stats:txn_count"], "entities": {"user_id": [1]}}
    with running(_config(demo, redis_url)) as srv:
        with _conn(srv.port) as (s, f):
            s.sendall(_request("/get-online-features", body, "Connection: close\r\n"))
            status, headers, _ = _read_response(f)
            assert status == 200 and headers["connection"] == "close" and _closed(s)
        with _conn(srv.port) as (s, f):
            s.sendall(_request("/get-online-features", body, version="1.0"))
            assert _read_response(f)[0] == 200 and _closed(s)


def test_idle_and_stalled_connections_are_closed(demo: DemoRepo, redis_url: str) -> None:
    body = {"features": ["user_stats:txn_count"], "entities": {"user_id": [1]}}
    with running(_config(demo, redis_url, keep_alive_s=0.5)) as srv:
        with _conn(srv.port) as (s, f), _conn(srv.port) as (stalled, _):
            s.sendall(_request("/get-online-features", body))
            assert _read_response(f)[0] == 200
            stalled.sendall(b"POST /get-online-features HTTP/1.1\r\nHost: t\r\n")  # never ends
            t0 = time.monotonic()
            assert _closed(s) and _closed(stalled)
            assert 0.4 < time.monotonic() - t0 < 3.0
        assert not srv.app.metrics.render().count(b'code="5')


def test_overlong_request_target_is_414(demo: DemoRepo, redis_url: str) -> None:
    with running(_config(demo, redis_url)) as srv, _conn(srv.port) as (s, f):
        s.sendall(_request("/get-online-features?" + "x" * 10_000, {}))
        status, _, body = _read_response(f)
        assert status == 414 and "request target" in json.loads(body)["error"]


def test_thousand_malformed_bodies_give_4xx_never_5xx(demo: DemoRepo, redis_url: str) -> None:
    bodies = malformed_bodies(random.Random(11), 1000)
    statuses: dict[int, int] = {}
    with running(_config(demo, redis_url)) as srv, _conn(srv.port) as (s, f):
        for path in ("/get-online-features", "/v1/features/payments_v1"):
            for i in range(0, len(bodies), 50):  # pipelined in batches of 50
                s.sendall(b"".join(_request(path, b) for b in bodies[i : i + 50]))
                for _ in bodies[i : i + 50]:
                    status, _, payload = _read_response(f)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status != 200:
                        assert set(json.loads(payload)) == {"error", "field"}
    assert sum(statuses.values()) == 2000
    assert not any(code >= 500 for code in statuses), statuses
    assert sum(c for code, c in statuses.items() if 400 <= code < 500) > 1500, statuses


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_graceful_shutdown_answers_requests_in_flight(demo: DemoRepo) -> None:
    """Redis paused (CLIENT PAUSE) holds a request in flight while the server is told to
    stop: the request is still answered, then the connection closes and the server exits."""
    import redis

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="skewless-redis-")
    proc = start_redis_server(port, workdir)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        config = ServeConfig(repo=str(demo.path), redis_url=url, redis_timeout_ms=5000)
        body = {"features": ["user_stats:txn_count"], "entities": {"user_id": [1]}}
        with running(config) as srv, _conn(srv.port) as (s, f):
            s.sendall(_request("/get-online-features", body))  # connects to Redis
            assert _read_response(f)[0] == 200
            redis.Redis.from_url(url).execute_command("CLIENT", "PAUSE", "800", "ALL")
            s.sendall(_request("/get-online-features", body))
            time.sleep(0.2)  # the HMGET is now waiting on the paused Redis
            t0 = time.monotonic()
            srv.loop.call_soon_threadsafe(srv.stop.set)
            status, headers, payload = _read_response(f)
            assert status == 200 and headers["connection"] == "close"
            assert json.loads(payload)["results"][1]["statuses"] == ["NOT_FOUND"]
            assert time.monotonic() - t0 > 0.3  # it did wait for Redis
            assert _closed(s)
            srv.thread.join(10)
            assert not srv.thread.is_alive()
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", srv.port), timeout=1)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


_SERVE = (
    "import typer\n"
    "from cli.commands_serve import register\n"
    "app = typer.Typer()\n"
    "app.callback()(lambda: None)\n"
    "register(app)\n"
    "app()\n"
)


def _wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0].decode()
        try:
            with _conn(port) as (s, f):
                s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                if _read_response(f)[0] == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not come up")


def test_workers_serve_and_stop_on_sigterm_flushing_logs(
    demo: DemoRepo, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    logs = tmp_path / "logs"
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    args = ["serve", "--repo", str(demo.path), "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, *args, "--log-dir", str(logs)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_up(port, proc)
        body = {
            "feature_service": "payments_v1",
            "entities": {"user_id": [1], "request_amount": [2.0]},
        }
        for _ in range(4):  # 4 connections x 10 requests, spread over the workers
            with _conn(port) as (s, f):
                s.sendall(b"".join(_request("/v1/features/payments_v1", body) for _ in range(10)))
                assert [_read_response(f)[0] for _ in range(10)] == [200] * 10
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and time.monotonic() - t0 < 15, out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert b"Traceback" not in out, out.decode()
    assert b"2 workers" in out
    rows = sum(pq.read_table(p).num_rows for p in logs.rglob("*.parquet"))
    assert rows == 40  # every sampled request reached a log file before the workers exited


def test_port_in_use_is_one_line_and_exit_2(demo: DemoRepo, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-c", _SERVE, "serve", "--repo", str(demo.path), "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen on 127.0.0.1" in lines[0], out.stderr


def test_header_limits_are_431_and_configurable(demo: DemoRepo, redis_url: str) -> None:
    config = _config(demo, redis_url, max_header_bytes=2048, max_headers=10)
    fits = b"GET /health HTTP/1.1\r\nX: " + b"a" * 1900 + b"\r\n\r\n"
    many = b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(11)) + b"\r\n"
    with running(config) as srv:
        with _conn(srv.port) as (s, f):
            s.sendall(fits + b"GET /health HTTP/1.1\r\n" + b"X: 1\r\n" * 10 + b"\r\n")
            assert [_read_response(f)[0] for _ in range(2)] == [200, 200]
        for head, error in (
            (many, "more than 10 header fields"),
            (fits.replace(b"a" * 1900, b"a" * 2100), "request head over 2048 bytes"),
            (fits[:-4].replace(b"a" * 1900, b"a" * 100_000), "request head over 2048 bytes"),
        ):
            with _conn(srv.port) as (s, f):
                s.sendall(head)  # the unterminated one is refused without its end
                status, headers, body = _read_response(f)
                assert (status, json.loads(body)["error"]) == (431, error)
                assert headers["connection"] == "close" and _closed(s)


def test_chunk_sizes_over_the_body_limit_are_refused_at_once(
    demo: DemoRepo, redis_url: str
) -> None:
    head = b"POST /get-online-features HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with running(_config(demo, redis_url, max_body_bytes=4096)) as srv:
        for chunks, status in (
            (b"ffffffffffffffff\r\n", 413),  # nothing more is sent: no wait for the idle close
            (b"800\r\n" + b"x" * 2048 + b"\r\n801\r\n", 413),  # 2048 + 2049 > 4096
            (b"1ffffffffffffffff\r\n", 400),
            (b"zz\r\n", 400),
            (b"0" * 2000, 400),  # a chunk-size line that never ends
        ):
            with _conn(srv.port) as (s, f):
                s.sendall(head + chunks)
                assert _read_response(f)[0] == status, chunks[:20]
                assert _closed(s)


def test_complete_requests_are_answered_before_garbage_after_them(
    demo: DemoRepo, redis_url: str
) -> None:
    reqs = [
        _request(
            "/get-online-features",
            {"features": ["user_stats:txn_count"], "entities": {"user_id": [u]}},
        )
        for u in (5, 6, 7)
    ]
    with running(_config(demo, redis_url)) as srv, _conn(srv.port) as (s, f):
        s.sendall(b"".join(reqs) + b"\x00\x01 not http\r\n\r\n")  # lookups wait on Redis
        answers = [_read_response(f) for _ in range(4)]
        assert [json.loads(a[2])["results"][0]["values"][0] for a in answers[:3]] == [5, 6, 7]
        assert (
            answers[3][0] == 400 and "malformed HTTP request" in json.loads(answers[3][2])["error"]
        )
        assert _closed(s)


def test_byte_at_a_time_and_half_closed_clients_are_answered(
    demo: DemoRepo, redis_url: str
) -> None:
    req = _request(
        "/get-online-features",
        {"features": ["user_stats:txn_count"], "entities": {"user_id": [9]}},
    )
    with running(_config(demo, redis_url)) as srv:
        with _conn(srv.port) as (s, f):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(req)):
                s.sendall(req[i : i + 1])
            assert json.loads(_read_response(f)[2])["results"][0]["values"] == [9]
        with _conn(srv.port) as (s, f):  # sent, then no more: still answered, then closed
            s.sendall(req + req)
            s.shutdown(socket.SHUT_WR)
            assert [_read_response(f)[0] for _ in range(2)] == [200, 200]
            assert _closed(s)


def test_a_128_mib_header_is_431_while_other_connections_are_served(
    demo: DemoRepo, redis_url: str
) -> None:
    """Refused once 64 KiB arrived, not parsed to its end; /health on another connection
    keeps answering meanwhile (generous bounds: this asserts no stall, not a latency)."""
    from bench.fuzz import header_flood

    with running(_config(demo, redis_url)) as srv:
        flood = header_flood(srv.port, mib=128)
    assert flood.status == 431 and flood.answer_s < 2.0
    assert flood.probe_statuses and set(flood.probe_statuses) == {200}
    assert max(flood.probes) < 2.0


def test_the_content_type_reaches_the_app_as_feast_reads_it(demo: DemoRepo, redis_url: str) -> None:
    """A lookup sent as text/plain is refused 422 (Feast's answer); JSON with a charset is
    served; no Content-Type at all is read as JSON."""
    body = json.dumps({"features": ["user_stats:txn_count"], "entities": {"user_id": [3]}})
    heads = {
        "text/plain": "Content-Type: text/plain\r\n",
        "json; charset": "Content-Type: application/json; charset=utf-8\r\n",
        "none": "",
    }
    with running(_config(demo, redis_url)) as srv, _conn(srv.port) as (s, f):
        got = {}
        for name, head in heads.items():
            s.sendall(
                (
                    f"POST /get-online-features HTTP/1.1\r\nHost: t\r\n{head}"
                    f"Content-Length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
            got[name] = _read_response(f)[0]
    assert got == {"text/plain": 422, "json; charset": 200, "none": 200}
