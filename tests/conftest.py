"""Session-wide fixtures: one real Redis (REDIS_URL or a private server), one Spark session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support import free_port, redis_answers


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: REDIS_URL when it answers, else a private redis-server on a free port."""
    url = os.environ.get("REDIS_URL")
    if url and redis_answers(url):
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("no Redis: set REDIS_URL to a running server or put redis-server on PATH")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="skewless-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"private redis-server on port {port} did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture()
def redis_prefix() -> str:
    """A key prefix unique to one test, so tests never touch data they did not write."""
    return f"skewless-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole run (start-up costs seconds)."""
    from pipelines.spark_session import get_spark

    session = get_spark("local[2]")
    yield session
    session.stop()
