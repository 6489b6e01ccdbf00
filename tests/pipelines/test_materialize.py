"""pipelines.materialize against the real Feast SDK and a real Redis.

Feast's own materialize is the reference: our Redis state must be byte-identical and
``get_online_features`` must return the same values for every entity.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from bench.repos.driver_repo import build_repo, generate, snapshot, window
from cli.commands_materialize import register
from pipelines.materialize import (
    IN_FLIGHT,
    clear_project,
    load_repo,
    materialize,
    project_keys,
    push,
    read_latest,
    redis_client,
    verify,
)
from store import redis_layout as rl
from store.redis_layout import feast_connection_string
from tests.support import free_port, redis_answers
from transforms.errors import SchemaError, SkewlessError, StoreUnavailable

FEATURES = ["conv_rate", "trips", "city", "active"]
REFS = [f"driver_stats:{f}" for f in FEATURES]
N_ROWS, N_ENTITIES = 40_000, 10_500  # the round trip covers >= 10k entities


def _online(store: Any, ids: list[int]) -> dict[str, list[Any]]:
    out = store.get_online_features(
        features=REFS, entity_rows=[{"driver_id": i} for i in ids]
    ).to_dict()
    return dict(out)


def _same(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        for x, y in zip(a[k], b[k], strict=True):
            if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
                continue
            if x != y or type(x) is not type(y):
                return False
    return True


@pytest.fixture(scope="module")
def conn(redis_url: str) -> str:
    return feast_connection_string(redis_url)


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory, conn: str) -> Iterator[dict[str, Any]]:
    """A repo materialized by Feast itself; yields its snapshot, then cleans its keys."""
    table = generate(N_ROWS, N_ENTITIES, seed=1)
    repo = tmp_path_factory.mktemp("feast_repo")
    project = f"skt_{uuid.uuid4().hex[:10]}"
    store = build_repo(repo, table, conn, project=project)
    client = redis_client(conn)
    start, end = window()
    ids = sorted(set(table.column("driver_id").to_pylist()))
    try:
        store.materialize(start_date=start, end_date=end)
        state = {
            "repo": repo,
            "project": project,
            "store": store,
            "client": client,
            "ids": ids,
            "online": _online(store, ids),
            "raw": snapshot(client, project),
        }
        yield state
    finally:
        clear_project(client, project)


def test_matches_feast_byte_for_byte(feast_repo: dict[str, Any]) -> None:
    client, project, store = feast_repo["client"], feast_repo["project"], feast_repo["store"]
    assert len(feast_repo["raw"]) >= 10_000  # every feature of >= 10k entities compared
    assert clear_project(client, project) == len(feast_repo["raw"])
    assert _online(store, feast_repo["ids"][:50])["conv_rate"] == [None] * 50

    start, end = window()
    report = materialize(
        feast_repo["repo"], start, end, verify=True, sample=500, show_progress=False
    )

    (view,) = report.views
    assert view.rows_scanned < N_ROWS  # rows outside the window were filtered out
    assert view.expected == view.written == view.present == len(feast_repo["raw"])
    assert view.verified == 500 and view.lost == 0 and report.ok
    assert snapshot(client, project) == feast_repo["raw"]
    assert _same(_online(store, feast_repo["ids"]), feast_repo["online"])


def test_two_views_of_one_entity_share_keys_like_feast(tmp_path: Path, conn: str) -> None:
    """Views on one entity share its Redis hash: the first view's new keys are created
    by RESTORE, the second view's fields are added to them by HSET (its RESTOREs meet
    BUSYKEY). The result equals Feast's, field for field."""
    from feast import FeatureView, Field
    from feast.types import Float64, Int64

    project = f"skt_{uuid.uuid4().hex[:10]}"
    store = build_repo(tmp_path / "r", generate(20_000, 5_000, seed=8), conn, project=project)
    stats = store.get_feature_view("driver_stats")
    trips = FeatureView(
        name="driver_trips",
        entities=[store.get_entity("driver")],
        ttl=stats.ttl,
        schema=[Field(name="driver_id", dtype=Int64), Field(name="trips", dtype=Int64),
                Field(name="conv_rate", dtype=Float64)],
        source=stats.batch_source,
        online=True,
    )  # fmt: skip
    store.apply([trips])
    client = redis_client(conn)
    start, end = window()
    try:
        store.materialize(start_date=start, end_date=end)
        feast_state = snapshot(client, project)
        assert all(len(fields) == 5 + 3 for fields in feast_state.values())  # both views
        assert clear_project(client, project) == len(feast_state)
        report = materialize(tmp_path / "r", start, end, verify=True, show_progress=False)
        assert [v.view for v in report.views] == ["driver_stats", "driver_trips"]
        assert report.ok and all(v.written == len(feast_state) for v in report.views)
        assert snapshot(client, project) == feast_state
    finally:
        clear_project(client, project)


def test_hget_replies_are_consumed_exactly(conn: str) -> None:
    """The HGET replies of a chunk are parsed as one array and exactly their bytes are
    consumed, whatever the value lengths (1- to 4-digit headers, empty, nil), so the
    replies after them stay readable."""
    from pipelines.materialize import RedisWriter, _ReplyStream

    prefix = f"skt_{uuid.uuid4().hex[:10]}:"
    values = [b"", b"x", b"\r\n" * 4 + b"y", b"z" * 10, b"w" * 99, b"v" * 100, b"u" * 1234]
    keys = [f"{prefix}{i}".encode() for i in range(len(values) + 1)]  # the last one: nil
    writer = RedisWriter("redis", conn)
    client = writer.client
    try:
        for k, v in zip(keys, values, strict=False):
            client.hset(k, b"_ts:x", v)
        c = writer.connection()
        hgets = b"".join(b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s\r\n$5\r\n_ts:x\r\n" % (len(k), k)
                         for k in keys)  # fmt: skip
        writer.send(c, hgets + b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(keys[0]), keys[0]))
        replies = _ReplyStream(c)
        got = replies.hget_values(len(keys))
        assert got is not None and got.to_pylist() == [*values, None]
        assert replies.integer() == 1  # the EXISTS after them
        client.connection_pool.release(c)
    finally:
        client.delete(*keys)
        writer.close()


def test_rerun_is_idempotent(feast_repo: dict[str, Any]) -> None:
    start, end = window()
    materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    report = materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    (view,) = report.views
    assert view.written == 0 and view.skipped_not_newer == view.expected
    assert snapshot(feast_repo["client"], feast_repo["project"]) == feast_repo["raw"]


def test_existing_keys_mid_run_switch_to_checked_writes(feast_repo: dict[str, Any]) -> None:
    """Chunks of new keys are created with RESTORE, unprobed; the keys of the first chunk
    that already exist (BUSYKEY) go on to the checked path, and from then on every key's
    _ts is read before its write (still two chunks ahead of the writes): only rows newer
    than what Redis holds are written, under Feast's staleness rule."""
    client, project = feast_repo["client"], feast_repo["project"]
    start, end = window()
    plan = load_repo(feast_repo["repo"]).plans[0]
    table, _ = read_latest(plan, start, end)
    kept = table.column("driver_id").to_pylist()[1_010:1_030]  # in the 6th chunk of 200
    keep = {rl.redis_key(project, ["driver_id"], [i]) for i in kept}
    client.delete(*(k for k in feast_repo["raw"] if k not in keep))
    assert len(project_keys(client, project)) == len(kept)
    acked: list[int] = []
    report = materialize(
        feast_repo["repo"],
        start,
        end,
        show_progress=False,
        record_interval=False,
        chunk=200,
        on_chunk=lambda view, done: acked.append(done),
    )
    (view,) = report.views
    assert view.skipped_not_newer == len(kept) and view.written == view.expected - len(kept)
    assert acked == sorted(acked) and acked[-1] == view.expected
    assert snapshot(client, project) == feast_repo["raw"]


def test_wrong_type_key_is_a_clear_error(feast_repo: dict[str, Any]) -> None:
    """A key holding something other than a hash (WRONGTYPE on the _ts read) stops the run
    with one line naming Redis's reply; the other keys are left as they were."""
    client, project = feast_repo["client"], feast_repo["project"]
    start, end = window()
    key = sorted(feast_repo["raw"])[7]
    client.delete(key)
    client.set(key, b"not a hash")
    try:
        with pytest.raises(SkewlessError, match="rejected a read of the _ts field: WRONGTYPE"):
            materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    finally:
        client.delete(key)
        materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    assert snapshot(client, project) == feast_repo["raw"]


def test_verify_reports_loss(feast_repo: dict[str, Any]) -> None:
    client, project = feast_repo["client"], feast_repo["project"]
    start, end = window()
    materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    keys = sorted(feast_repo["raw"])
    client.delete(*keys[:3])
    field = rl.feature_field("driver_stats", "city")
    client.hset(keys[3], field, rl.encode_value("tampered", "string"))
    report = verify(feast_repo["repo"], start, end, sample=N_ENTITIES)
    (view,) = report.views
    assert view.present == view.expected - 3
    assert len(view.mismatches) == 1 and "tampered" in view.mismatches[0]
    assert not report.ok and view.lost == 4
    # restore for the other tests: a forced rewrite of the whole window
    client.delete(*keys[:4])
    materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    assert snapshot(client, project) == feast_repo["raw"]


def test_push_newer_rows_and_skip_older(feast_repo: dict[str, Any]) -> None:
    store, ids = feast_repo["store"], feast_repo["ids"]
    row = {"driver_id": ids[0], "conv_rate": 0.5, "trips": -7, "city": "Ünïcode", "active": True}
    assert push(feast_repo["repo"], "driver_stats", [row]) == 1
    got = _online(store, [ids[0]])
    assert got["conv_rate"] == [0.5] and got["trips"] == [-7] and got["city"] == ["Ünïcode"]
    old = dict(row, trips=99, event_timestamp=window()[0])
    assert push(feast_repo["repo"], "driver_stats", [old]) == 0  # older than what Redis holds
    assert _online(store, [ids[0]])["trips"] == [-7]
    start, end = window()
    report = verify(feast_repo["repo"], start, end, sample=N_ENTITIES)
    assert report.ok and report.views[0].superseded == 1
    # restore the materialized row
    key = rl.redis_key(feast_repo["project"], ["driver_id"], [ids[0]])
    feast_repo["client"].delete(key)
    materialize(feast_repo["repo"], start, end, show_progress=False, record_interval=False)
    assert snapshot(feast_repo["client"], feast_repo["project"]) == feast_repo["raw"]


def test_key_ttl_seconds_like_feast(tmp_path: Path, conn: str) -> None:
    table = generate(400, 100, seed=2)
    project = f"skt_{uuid.uuid4().hex[:10]}"
    store = build_repo(tmp_path / "r", table, conn, project=project, key_ttl_seconds=3600)
    client = redis_client(conn)
    start, end = window()
    try:
        store.materialize(start_date=start, end_date=end)
        feast_raw = snapshot(client, project)
        feast_ttls = {k: client.ttl(k) for k in feast_raw}
        clear_project(client, project)
        materialize(tmp_path / "r", start, end, show_progress=False)
        assert snapshot(client, project) == feast_raw
        ttls = {k: client.ttl(k) for k in feast_raw}
        assert all(3500 < t <= 3600 for t in ttls.values())
        assert all(3500 < t <= 3600 for t in feast_ttls.values())
    finally:
        clear_project(client, project)


def test_redis_unreachable(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()},db=0"
    build_repo(tmp_path / "r", generate(50, 10), dead)
    start, end = window()
    with pytest.raises(StoreUnavailable, match="REDIS"):
        materialize(tmp_path / "r", start, end, show_progress=False)


def test_type_mismatch_names_column(tmp_path: Path, conn: str) -> None:
    table = generate(50, 10)
    i = table.schema.get_field_index("trips")
    bad = table.set_column(
        i, "trips", pa.array([str(v) for v in table.column("trips").to_pylist()])
    )
    build_repo(tmp_path / "r", bad, conn)
    start, end = window()
    with pytest.raises(SchemaError, match="'trips'"):
        materialize(tmp_path / "r", start, end, show_progress=False)


def test_cli_exit_codes(tmp_path: Path, conn: str) -> None:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command so typer keeps subcommand names
        pass

    runner = CliRunner()
    table = generate(300, 60, seed=3)
    project = f"skt_{uuid.uuid4().hex[:10]}"
    build_repo(tmp_path / "ok", table, conn, project=project)
    start, end = (t.isoformat() for t in window())
    client = redis_client(conn)
    try:
        res = runner.invoke(
            app,
            ["materialize", "--repo", str(tmp_path / "ok"), "--start", start, "--end", end,
             "--views", "driver_stats", "--no-progress"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "lost=0" in res.output
    finally:
        clear_project(client, project)
    build_repo(tmp_path / "dead", table, f"127.0.0.1:{free_port()}")
    res = runner.invoke(app, ["materialize", "--repo", str(tmp_path / "dead"), "--end", end])
    assert res.exit_code == 2
    assert "skewless: error: REDIS connection" in res.output


# ------------------------------------------------------------------ Redis dying mid-run


class _Server:
    """A redis-server on a fixed port with an append-only file (fsync always), so a restart
    reloads exactly what had been acknowledged before it was killed."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not redis_answers(f"redis://127.0.0.1:{self.port}/0"):
            assert self.proc.poll() is None and time.monotonic() < deadline, "no redis-server"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no shutdown, no final save
            self.proc.wait(timeout=10)


@pytest.fixture()
def dying_redis(tmp_path: Path) -> Iterator[_Server]:
    server = _Server(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_redis_killed_mid_run_then_rerun_completes(tmp_path: Path, dying_redis: _Server) -> None:
    conn = f"127.0.0.1:{dying_redis.port},db=0"
    table = generate(N_ROWS, N_ENTITIES, seed=6)
    project = f"skt_{uuid.uuid4().hex[:10]}"
    build_repo(tmp_path / "r", table, conn, project=project)
    start, end = window()
    chunks: list[int] = []

    def kill_after_three(view: str, done: int) -> None:
        chunks.append(done)
        if len(chunks) == 3:
            dying_redis.kill()

    with pytest.raises(StoreUnavailable, match=r"REDIS connection to 127\.0\.0\.1:\d+ failed"):
        materialize(
            tmp_path / "r", start, end, show_progress=False, chunk=200, on_chunk=kill_after_three
        )
    # killed after the 3rd acknowledgement (of RESTOREs of a chunk's new keys, or of HSETs
    # of the rows RESTORE could not carry); replies of the IN_FLIGHT write batches sent
    # after it may already sit in the socket, so up to that many more can be acknowledged
    assert chunks == sorted(chunks) and len(chunks) <= 3 + IN_FLIGHT

    dying_redis.start()  # same port, reloads the append-only file
    client = redis_client(conn)
    survived = len(project_keys(client, project))
    # the acknowledged writes, plus what Redis applied of the IN_FLIGHT batches (of at most
    # a chunk each) sent after them; each RESTORE or HSET is atomic: a key is whole or
    # absent (the rerun below checks values)
    assert chunks[-1] <= survived <= chunks[2] + IN_FLIGHT * 200
    report = materialize(
        tmp_path / "r", start, end, verify=True, sample=N_ENTITIES, show_progress=False
    )
    (view,) = report.views
    assert view.skipped_not_newer == survived and view.written == view.expected - survived
    assert report.ok and view.present == view.expected and view.verified == view.expected
    resumed = snapshot(client, project)

    assert clear_project(client, project) == view.expected
    clean = materialize(tmp_path / "r", start, end, show_progress=False, record_interval=False)
    assert clean.views[0].written == view.expected
    assert snapshot(client, project) == resumed  # nothing lost, nothing duplicated


def test_cli_redis_killed_mid_run_exits_2(tmp_path: Path, dying_redis: _Server) -> None:
    conn = f"127.0.0.1:{dying_redis.port},db=0"
    build_repo(tmp_path / "r", generate(60_000, 20_000, seed=7), conn)
    watcher = redis_client(conn)
    stop = threading.Event()

    def kill_once_writing() -> None:  # kill as soon as the first HSETs landed
        while not stop.is_set():
            try:
                if watcher.dbsize() > 0:
                    dying_redis.kill()
                    return
            except Exception:
                return
            time.sleep(0.001)

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:
        pass

    start, end = (t.isoformat() for t in window())
    thread = threading.Thread(target=kill_once_writing, daemon=True)
    thread.start()
    try:
        res = CliRunner().invoke(
            app,
            ["materialize", "--repo", str(tmp_path / "r"), "--start", start, "--end", end,
             "--no-progress", "--chunk", "20"],
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(timeout=10)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skewless: error: REDIS connection to"), lines


def test_clearing_a_project_never_takes_a_project_whose_name_ends_with_it(redis_url):
    import redis

    from store.redis_layout import redis_key

    ours = f"p{uuid.uuid4().hex[:8]}*"  # a glob character in the name, too
    other = f"my{ours}"
    client = redis.Redis.from_url(redis_url)
    mine = [redis_key(ours, ["k"], [i]) for i in range(3)]
    theirs = [redis_key(other, ["k"], [i]) for i in range(3)]
    try:
        for key in mine + theirs:
            client.hset(key, "f", "v")
        assert sorted(project_keys(client, ours)) == sorted(mine)
        assert clear_project(client, ours) == 3
        assert all(client.exists(k) for k in theirs)
    finally:
        client.delete(*mine, *theirs)
