"""The streaming job (`skewless stream`) on a real log (a Redis stream, and NATS JetStream
at ``NATS_URL``, default nats://127.0.0.1:4222) and real Spark: killed with SIGKILL mid-run
and restarted, it leaves the online window state equal to pushing every event once;
replaying the whole log again changes nothing."""

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
from pipelines.event_logs import nats_answers, open_log
from pipelines.project import load_project
from pipelines.scaffold import init_project
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


NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture(params=["redis", "nats"])
def log_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    if request.param == "nats" and not nats_answers(NATS_URL):
        pytest.skip(f"NATS JetStream does not answer at {NATS_URL} (set NATS_URL)")
    return redis_url if request.param == "redis" else NATS_URL


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
def test_kill_9_and_restart_equals_pushing_every_event_once(
    tmp_path: Path, redis_url: str, log_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    repo = tmp_path / "proj"
    init_project(repo)
    streamed = f"skewless_stream_{uuid.uuid4().hex[:10]}"
    clean = f"skewless_clean_{uuid.uuid4().hex[:10]}"
    stream = f"skewless_test_events_{uuid.uuid4().hex[:10]}"
    log = open_log(log_url, stream)
    via = ("--log-url", log_url)
    configure_repo(repo, redis_url, streamed)
    ws = load_project(repo).window_sets[0]
    rows = pq.read_table(repo / "sources" / "trips").to_pylist()
    try:
        log.append(rows)
        ckpt = tmp_path / "ckpt"
        job = _stream(
            repo, stream, ckpt, redis_url, *via, "--max-events", "150", "--trigger-ms", "50"
        )
        deadline = time.monotonic() + 180
        while _batches_done(ckpt) < 3:  # a few micro-batches written, more to come
            assert job.poll() is None, job.stdout.read().decode()[-3000:] if job.stdout else ""
            assert time.monotonic() < deadline, "the streaming job wrote no batch in 180 s"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        partial = _digest(client, streamed)
        assert 0 < sum(len(v) for v in partial.values()) < len(rows)

        restart = _stream(repo, stream, ckpt, redis_url, *via, "--available-now")
        out, _ = restart.communicate(timeout=300)
        assert restart.returncode == 0, out.decode()[-3000:]
        assert b" in all), append -> written p50 " in out  # progress, batch by batch

        WindowState(clean, ws).push(client, rows)
        want = _digest(client, clean)
        got = _digest(client, streamed)
        # the state keeps each driver's events since its newest minus (7d + grace)
        assert 1000 < sum(len(v) for v in want.values()) <= len(rows)
        assert got == want

        again = _stream(repo, stream, tmp_path / "ckpt-replay", redis_url, *via, "--available-now")
        out, _ = again.communicate(timeout=300)
        assert again.returncode == 0, out.decode()[-3000:]
        assert _digest(client, streamed) == want  # the whole log replayed: no change
    finally:
        log.delete()
        log.close()
        clear_windows(client, streamed)
        clear_windows(client, clean)


def test_a_range_of_the_log_holds_the_same_entries_every_time(
    log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's contract on both logs: offsets in order, ``(start, end]`` ranges
    re-read identically, batches bounded by ``end_after``, an empty log has no last."""
    stream = f"skewless_test_range_{uuid.uuid4().hex[:10]}"
    log = open_log(log_url, stream)
    rows = [{"driver_id": f"d{i % 3}", "pickup_at": 1_700_000_000_000_000 + i} for i in range(25)]
    try:
        if log_url.startswith("redis"):
            assert log.last() is None
        offsets = log.append(rows)
        assert len(set(offsets)) == 25
        assert [log.order(o) for o in offsets] == sorted(log.order(o) for o in offsets)
        assert log.last() == offsets[-1]
        assert log.end_after(log.initial(), 10) == offsets[9]
        assert log.end_after(offsets[20], 10) == offsets[-1]
        assert log.end_after(offsets[-1], 10) == offsets[-1]
        first = list(log.read(log.initial(), offsets[9]))
        assert [o for o, _, _ in first] == offsets[:10]
        assert list(log.read(log.initial(), offsets[9])) == first  # re-read: the same
        rest = list(log.read(offsets[9], offsets[-1]))
        assert [json.loads(e) for _, _, e in first + rest] == rows
        now_ms = time.time() * 1000
        assert all(now_ms - 600_000 < ms <= now_ms + 1000 for _, ms, _ in first + rest)
        assert list(log.read(offsets[-1], offsets[-1])) == []
        monkeypatch.setattr("pipelines.event_logs.MIN_PART", 4)
        for parts in (1, 2, 3):  # ranges read in parallel hold the whole range, in order
            ranges = log.split(log.initial(), offsets[-1], parts)
            assert len(ranges) == (1 if log_url.startswith("redis") else parts)
            assert ranges[0][0] == log.initial() and ranges[-1][1] == offsets[-1]
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            assert [x for a, b in ranges for x in log.read(a, b)] == first + rest
    finally:
        log.delete()
        log.close()


def test_a_jetstream_range_skips_deleted_messages() -> None:
    if not nats_answers(NATS_URL):
        pytest.skip(f"NATS JetStream does not answer at {NATS_URL} (set NATS_URL)")
    import asyncio

    import nats

    stream = f"skewless_test_deleted_{uuid.uuid4().hex[:10]}"
    log = open_log(NATS_URL, stream)
    try:
        offsets = log.append([{"n": i} for i in range(6)])

        async def delete(seqs: list[int]) -> None:
            nc = await nats.connect(NATS_URL)
            for seq in seqs:
                await nc.jetstream().delete_msg(stream, seq)
            await nc.close()

        asyncio.run(delete([2, 5, 6]))  # the last ones too: the range ends early
        got = [json.loads(e)["n"] for _, _, e in log.read(log.initial(), offsets[-1])]
        assert got == [0, 2, 3]
    finally:
        log.delete()
        log.close()


def test_a_jetstream_stream_that_removes_what_was_read_is_refused() -> None:
    """Under interest retention a message read without an acknowledgement is gone: a
    batch re-read after a restart would miss events, so the log refuses the stream."""
    if not nats_answers(NATS_URL):
        pytest.skip(f"NATS JetStream does not answer at {NATS_URL} (set NATS_URL)")
    import asyncio

    import nats
    from nats.js.api import RetentionPolicy

    from transforms.errors import ConfigError

    stream = f"skewless_test_interest_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().add_stream(
            name=stream, subjects=[stream], retention=RetentionPolicy.INTEREST
        )
        await nc.close()

    asyncio.run(create())
    log = open_log(NATS_URL, stream)
    try:
        with pytest.raises(ConfigError, match="has retention 'interest'"):
            log.last()
    finally:
        log.delete()
        log.close()


def test_a_jetstream_subject_filter_reads_only_its_messages() -> None:
    """A stream holding other messages too: with a subject filter the ranges hold only the
    matching ones, and a range whose tail matches nothing ends at once."""
    if not nats_answers(NATS_URL):
        pytest.skip(f"NATS JetStream does not answer at {NATS_URL} (set NATS_URL)")
    import asyncio

    import nats

    stream = f"skewless_test_subjects_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().add_stream(name=stream, subjects=[f"{stream}.*"])
        await nc.close()

    asyncio.run(create())
    trips = open_log(NATS_URL, stream, f"{stream}.trips")
    other = open_log(NATS_URL, stream, f"{stream}.other")
    try:
        for i in range(4):
            trips.append([{"n": i}])
            other.append([{"other": i}, {"other": i}])
        assert trips.last() == "12"  # the stream's last sequence, whatever its subject
        t0 = time.monotonic()
        got = [json.loads(e) for _, _, e in trips.read(trips.initial(), "12")]
        assert got == [{"n": i} for i in range(4)]
        assert [o for o, _, _ in trips.read("3", "12")] == ["4", "7", "10"]
        assert list(trips.read("10", "12")) == []  # only other messages after 10
        assert time.monotonic() - t0 < 1.0  # no fetch waited for messages that never come
    finally:
        trips.delete()
        trips.close()
        other.close()


def test_a_lost_nats_connection_is_opened_again() -> None:
    """The streaming job's driver keeps one log for days: after NATS drops the connection
    (a restart), the next call connects again instead of failing."""
    if not nats_answers(NATS_URL):
        pytest.skip(f"NATS JetStream does not answer at {NATS_URL} (set NATS_URL)")
    stream = f"skewless_test_reconnect_{uuid.uuid4().hex[:10]}"
    with open_log(NATS_URL, stream) as log:
        try:
            log.append([{"n": 1}])
            conn = log._conn  # type: ignore[attr-defined]
            conn.run(conn.nc.close())
            assert log.last() == "1"
        finally:
            log.delete()
