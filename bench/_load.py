"""HTTP load generators for the benches: wrk (C, when installed) or a Python fallback; and
the port / readiness helpers every bench server start uses.

wrk costs a fraction of the CPU of any Python client, which matters on a 2-core machine
where the load generator, Redis and the servers share the cores. It is driven with a Lua
script that cycles through precomputed POST requests. When ``wrk`` is not on PATH (fresh CI
machines) the minimal keep-alive asyncio client below is used and a note says so; its
numbers are lower for both servers (it competes for CPU), ratios stay comparable.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk_path() -> str | None:
    return shutil.which("wrk")


# --------------------------------------------------------------------------- wrk

_LUA = """
local bodies = {}
%s
local reqs = {}
for i, b in ipairs(bodies) do
  reqs[i] = wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, b)
end
local n = #reqs
local i = 0
local offset = 0
setup = function(thread)
  thread:set("offset", offset)
  offset = offset + 7
end
init = function(args)
  i = offset or 0
end
request = function()
  i = i %% n + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status))
end
"""


def _lua_string(s: str) -> str:
    return "[==[" + s + "]==]"


def run_wrk(
    port: int, path: str, bodies: list[dict[str, Any]], conns: int, seconds: float
) -> LoadResult:
    """``wrk`` at ``conns`` connections for ``seconds``; latency percentiles from wrk's HDR."""
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed")
    lines = "\n".join(
        f"bodies[{i + 1}] = {_lua_string(json.dumps(b))}" for i, b in enumerate(bodies)
    )
    script = _LUA % (lines, path)
    fd, lua = tempfile.mkstemp(suffix=".lua", prefix="skewless-wrk-")
    with os.fdopen(fd, "w") as f:
        f.write(script)
    try:
        threads = 1 if conns < 4 else 2
        out = subprocess.run(
            [
                exe,
                "-t",
                str(threads),
                "-c",
                str(conns),
                "-d",
                f"{seconds:.0f}s",
                "--timeout",
                "10s",
                "-s",
                lua,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(lua)
    m = re.search(r"^JSON (\{.*\})$", out, re.M)
    if m is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    return LoadResult(
        d["requests"],
        secs,
        d["requests"] / secs,
        d["p50_us"] / 1000,
        d["p99_us"] / 1000,
        d["errors"],
    )


# ------------------------------------------------------------------- Python client


def http_request(path: str, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes
) -> tuple[int, bytes]:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, b"".join(parts)
        parts.append(chunk[:-2])


async def _worker(port: int, reqs: list[bytes], until: float, lat: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    bad = 0
    i = 0
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            status, _ = await roundtrip(reader, writer, reqs[i % len(reqs)])
            lat.append(time.perf_counter() - t0)
            bad += status != 200
            i += 1
    finally:
        writer.close()
    return bad


def run_python(
    port: int, path: str, bodies: list[dict[str, Any]], conns: int, seconds: float
) -> LoadResult:
    """The asyncio keep-alive client: ``conns`` connections for ``seconds``."""
    reqs = [http_request(path, b) for b in bodies]

    async def run() -> LoadResult:
        lat: list[float] = []
        t0 = time.perf_counter()
        until = t0 + seconds
        bads = await asyncio.gather(
            *(_worker(port, reqs[k:] + reqs[:k], until, lat) for k in range(conns))
        )
        elapsed = time.perf_counter() - t0
        lat.sort()
        n = len(lat)
        return LoadResult(
            n,
            elapsed,
            n / elapsed,
            lat[n // 2] * 1000,
            lat[min(n - 1, int(n * 0.99))] * 1000,
            sum(bads),
        )

    return asyncio.run(run())


def run_load(
    port: int,
    path: str,
    bodies: list[dict[str, Any]],
    conns: int,
    seconds: float,
    use_wrk: bool,
) -> LoadResult:
    """A short warm-up, then the measured run; raises on any non-200 answer."""
    run = run_wrk if use_wrk else run_python
    run_python(port, path, bodies[:20], 1, 0.3)  # warm-up: plan cache, connections
    res = run(port, path, bodies, conns, seconds)
    if res.errors:
        raise RuntimeError(f"{res.errors} failed or non-200 answers on port {port}")
    return res


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, timeout: float, proc: subprocess.Popen[bytes]) -> float:
    """Seconds until ``GET path`` on ``port`` answers 200; RuntimeError when ``proc``
    exits or ``timeout`` passes first."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not answer {path} within {timeout}s")
