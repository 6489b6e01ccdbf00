"""The streaming job (`skewless stream`) on a real Redis stream and real Spark: killed with
SIGKILL mid-run and restarted, it leaves the online window state equal to pushing every
event once; replaying the whole log again changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pyarrow.parquet as pq
import pytest
import redis

from pipelines.apply import configure_repo
from pipelines.project import load_project
from pipelines.scaffold import init_project
from pipelines.streaming import append_events
from store.window_layout import parse_key
from store.window_state import WindowState, clear_windows, window_keys

ROOT = Path(__file__).resolve().parents[2]


def _digest(client: redis.Redis, project: str) -> dict[tuple[str, bytes], list[Any]]:
    """Every window-state key of the project (by window set and entity) with its members
    and scores: equal digests, equal state."""
    out: dict[tuple[str, bytes], list[Any]] = {}
    for key in window_keys(client, project):
        parsed = parse_key(key)
        assert parsed is not None
        _, ws, entity = parsed
        out[(ws, entity)] = list(cast(list[Any], client.zrange(key, 0, -1, withscores=True)))
    return out


def _stream(repo: Path, stream: str, checkpoint: Path, redis_url: str, *extra: str) -> Any:
    cmd = [sys.executable, "-m", "cli.main", "stream", "--repo", str(repo), "--stream", stream,
           "--checkpoint", str(checkpoint), "--redis-url", redis_url, *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the driver and Spark's JVM
    )  # fmt: skip


def _batches_done(checkpoint: Path) -> int:
    f = checkpoint / "freshness.json"
    if not f.is_file():
        return -1
    try:
        return int(json.loads(f.read_text())["batch"])
    except (ValueError, KeyError):
        return -1


@pytest.mark.timeout(600)
def test_kill_9_and_restart_equals_pushing_every_event_once(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    repo = tmp_path / "proj"
    init_project(repo)
    streamed = f"skewless_stream_{uuid.uuid4().hex[:10]}"
    clean = f"skewless_clean_{uuid.uuid4().hex[:10]}"
    stream = f"skewless-test-events-{uuid.uuid4().hex[:10]}"
    configure_repo(repo, redis_url, streamed)
    ws = load_project(repo).window_sets[0]
    rows = pq.read_table(repo / "sources" / "trips").to_pylist()
    try:
        append_events(client, stream, rows)
        ckpt = tmp_path / "ckpt"
        job = _stream(repo, stream, ckpt, redis_url, "--max-events", "150", "--trigger-ms", "50")
        deadline = time.monotonic() + 180
        while _batches_done(ckpt) < 3:  # a few micro-batches written, more to come
            assert job.poll() is None, job.stdout.read().decode()[-3000:] if job.stdout else ""
            assert time.monotonic() < deadline, "the streaming job wrote no batch in 180 s"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        partial = _digest(client, streamed)
        assert 0 < sum(len(v) for v in partial.values()) < len(rows)

        restart = _stream(repo, stream, ckpt, redis_url, "--available-now")
        out, _ = restart.communicate(timeout=300)
        assert restart.returncode == 0, out.decode()[-3000:]

        WindowState(clean, ws).push(client, rows)
        want = _digest(client, clean)
        got = _digest(client, streamed)
        # the state keeps each driver's events since its newest minus (7d + grace)
        assert 1000 < sum(len(v) for v in want.values()) <= len(rows)
        assert got == want

        again = _stream(repo, stream, tmp_path / "ckpt-replay", redis_url, "--available-now")
        out, _ = again.communicate(timeout=300)
        assert again.returncode == 0, out.decode()[-3000:]
        assert _digest(client, streamed) == want  # the whole log replayed: no change
    finally:
        client.delete(stream)
        clear_windows(client, streamed)
        clear_windows(client, clean)
