"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pipelines.local_redis import answers as redis_answers
from pipelines.local_redis import free_port

__all__ = [
    "EXAMPLE_DIR",
    "example_project",
    "free_port",
    "redis_answers",
    "skewless_cli",
    "start_redis_server",
]

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "feature_repo"  # the card-fraud project
EXAMPLE_FILES = ("feature_store.yaml", "skewless.yaml", "definitions.py", ".feastignore")


def skewless_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``skewless ARGS`` as a user runs it, in ``cwd``, output captured."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def example_project():  # -> pipelines.project.Project
    from pipelines.project import load_project

    return load_project(EXAMPLE_DIR)


def start_redis_server(port: int, workdir: str) -> subprocess.Popen[bytes]:
    """A private redis-server on ``port`` (nothing persisted), answering when this returns;
    tests that stop and restart Redis use it on a port of their own."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not redis_answers(f"redis://127.0.0.1:{port}/0"):
        assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    return proc
