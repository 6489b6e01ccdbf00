"""Find a Redis to use, or start a private one: for ``make demo``, benchmarks and tests.

``REDIS_URL`` wins when it answers; otherwise ``redis://127.0.0.1:6379/0`` when it
answers; otherwise a private ``redis-server`` on a free loopback port that the caller
stops. A missing server gives an error naming ``REDIS_URL``, not a traceback.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from transforms.errors import StoreUnavailable

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def answers(url: str, timeout: float = 0.5) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout).ping())
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (no persistence), stopped on exit."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise StoreUnavailable(
            "no Redis answers and redis-server is not on PATH; set REDIS_URL to a running server"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="skewless-redis-")
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*args, "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise StoreUnavailable(f"private redis-server on port {port} did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def redis_for_run(prefer_default: bool = True) -> Iterator[str]:
    """REDIS_URL if it answers, else the default local server, else a private one."""
    url = os.environ.get("REDIS_URL")
    if url and answers(url):
        yield url
        return
    if prefer_default and answers(DEFAULT_URL):
        yield DEFAULT_URL
        return
    with private_redis() as private:
        yield private
