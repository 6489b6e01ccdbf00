"""Online window state (store/window_state.py) against the offline reference, on a real
Redis: random events pushed in random splits and orders answer every (key, time) query
with the bits of ``WindowRunner.run_local``; replays change nothing; a backfill followed by
pushes equals pushing everything; the lookup server's ``/push`` and window features give
the same values, and bad input is a 4xx naming the field.

Each test writes under its own project name and deletes exactly that project's keys."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import httpx
import pyarrow as pa
import pytest
import redis

from serving.app import LookupApp
from serving.config import ServeConfig
from store import redis_layout as rl
from store import window_layout as wl
from store import window_state as wst
from store.manifest import Manifest, ServiceSpec
from transforms.errors import ArtifactError, RequestError, TransformError
from transforms.modules import import_definitions
from transforms.window_runtime import WindowRunner

DEFS_MODULE = "skw_window_test_defs"
DEFS = textwrap.dedent(
    """
    from transforms import Bool, Float64, Int64, Nullable, String, Timestamp, WindowSet, aggregate
    from transforms.types import Int64Type, StringType


    @aggregate(ops=("count", "sum", "mean", "min", "max", "last", "last_k"),
               windows=("10m", "1h", "1d"), k=3)
    def amt(amount: Nullable[Float64]) -> Float64:
        return amount


    @aggregate(ops=("count", "sum", "mean", "min", "max", "distinct"), windows=("1h", "1d"))
    def units(qty: Nullable[Int64]) -> Int64:
        return qty


    @aggregate(ops=("distinct", "last", "count", "last_k"), windows=("1d",), k=2)
    def shop(merchant: Nullable[String]) -> String:
        return merchant


    def _big(amount: Nullable[Float64]) -> Bool:
        return amount > 50.0


    @aggregate(ops=("count", "sum"), windows=("1h",), where=_big)
    def big_amt(amount: Nullable[Float64]) -> Float64:
        return amount


    @aggregate(ops=("last", "count"), windows=("1d",))
    def seen(ts: Timestamp) -> Timestamp:
        return ts


    user_windows = WindowSet(
        "user_windows", {"user_id": Int64Type}, [amt, units, shop, big_amt, seen],
        event_timestamp="ts", event_id="txn_id",
    )


    @aggregate(ops=("count", "sum"), windows=("1h",))
    def spent(amount: Nullable[Float64]) -> Float64:
        return amount


    shop_windows = WindowSet("shop_windows", {"merchant": StringType}, [spent],
                             event_timestamp="ts")
    """
)

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
END = 1_750_000_000_000_000  # 2025-06-15
WINDOWS = (10 * MINUTE, HOUR, DAY)
LOOP = asyncio.new_event_loop()


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def defs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("window_repo")
    (root / f"{DEFS_MODULE}.py").write_text(DEFS)
    return root


@pytest.fixture(scope="module")
def defs(defs_dir: Path) -> Any:
    return import_definitions(DEFS_MODULE, defs_dir)


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture()
def project(client: redis.Redis) -> Iterator[str]:
    """A fresh project name; its window state (and only it) is deleted afterwards."""
    name = f"skw-test-{uuid.uuid4().hex[:10]}"
    yield name
    wst.clear_windows(client, name)


# ------------------------------------------------------------------------ events


def _events(rng: random.Random, n: int, users: int = 12) -> list[dict[str, Any]]:
    """Events with late arrivals (any push order), copies of one event id (identical and
    conflicting), events at one instant, nulls (values, ids, keys, times), -0.0 and 0.0."""
    instants = [END - rng.randint(0, 2 * DAY) for _ in range(n // 8)]
    merchants = ["a", "b", "é", "e\u0301", "日本", ""]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        t = rng.choice(instants) if rng.random() < 0.5 else END - rng.randint(0, 3 * DAY)
        r: dict[str, Any] = {
            "user_id": rng.randrange(users) if rng.random() > 0.01 else None,
            "ts": t,
            "txn_id": rng.randrange(n // 2),
            "amount": rng.choice(
                [None, -0.0, 0.0, 1e307, rng.uniform(-100, 100), rng.uniform(-100, 100) * 1e-300]
                + [rng.uniform(-1000, 1000)] * 4
            ),
            "qty": None if rng.random() < 0.1 else rng.randint(-5, 50),
            "merchant": None if rng.random() < 0.1 else rng.choice(merchants),
        }
        if rng.random() < 0.005:
            r["ts"] = None
        if rng.random() < 0.03:  # no id: never a duplicate; a value no other row has
            r["txn_id"] = None
            r["amount"] = rng.uniform(1, 2) + i
        rows.append(r)
    for r in rng.sample(rows, n // 20):  # identical copies: one event
        if r["txn_id"] is not None:
            rows.append(dict(r))
    for r in rng.sample(rows, n // 20):  # conflicting copies: the one placed last counts
        if r["txn_id"] is not None and r["ts"] is not None:
            c = dict(r)
            c["amount"] = rng.choice([None, -0.0, 0.0, rng.uniform(-10, 10)])
            if rng.random() < 0.5:
                c["ts"] = r["ts"] + rng.choice([0, 1, MINUTE, HOUR, -HOUR])
            rows.append(c)
    rng.shuffle(rows)
    return rows


def _dt(micros: int | None) -> datetime | None:
    return (
        None
        if micros is None
        else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    )


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    col = {
        k: [r[k] for r in rows] for k in ("user_id", "ts", "txn_id", "amount", "qty", "merchant")
    }
    return pa.table(
        {
            "user_id": pa.array(col["user_id"], pa.int64()),
            "ts": pa.array(col["ts"], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "txn_id": pa.array(col["txn_id"], pa.int64()),
            "amount": pa.array(col["amount"], pa.float64()),
            "qty": pa.array(col["qty"], pa.int64()),
            "merchant": pa.array(col["merchant"], pa.string()),
        }
    )


def _dict_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "ts": _dt(r["ts"])} for r in rows]


def _splits(rng: random.Random, rows: list[Any]) -> list[list[Any]]:
    out, i = [], 0
    while i < len(rows):
        size = rng.choice([1, 2, 7, 50, 300])
        out.append(rows[i : i + size])
        i += size
    return out


def _push_all(
    client: redis.Redis, project: str, ws: Any, rows: list[dict[str, Any]], rng: random.Random
) -> None:
    """Push in random splits, as Arrow tables or as dict rows (both paths)."""
    for batch in _splits(rng, rows):
        events = _table(batch) if rng.random() < 0.5 else _dict_rows(batch)
        wst.push(client, project, ws, events)


def _queries(
    rng: random.Random, rows: list[dict[str, Any]], n: int, users: int = 12
) -> list[tuple[int, int]]:
    """(user, time) pairs where the state is exact (t >= newest - grace): random times,
    event instants and window edges; plus an entity that has no events."""
    times: dict[int, list[int]] = {}
    for r in rows:
        if r["user_id"] is not None and r["ts"] is not None:
            times.setdefault(r["user_id"], []).append(r["ts"])
    out: list[tuple[int, int]] = []
    while len(out) < n:
        u = rng.randrange(users)
        newest = max(times[u])
        lo, hi = newest - wl.GRACE_MICROS, newest + DAY + HOUR
        pick = rng.random()
        if pick < 0.4:
            t = rng.randint(lo, hi)
        else:
            t = rng.choice(times[u]) + (rng.choice(WINDOWS) if pick < 0.7 else 0)
            t += rng.choice([0, 0, 1, -1])
            if not lo <= t <= hi:
                continue
        out.append((u, t))
    out.append((users + 5, END))
    return out


def _reference(ws: Any, rows: list[dict[str, Any]], queries: list[tuple[int, int]]) -> list[Any]:
    qt = pa.table(
        {
            "user_id": pa.array([q[0] for q in queries], pa.int64()),
            "qt": pa.array([q[1] for q in queries], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    return WindowRunner(ws).run_local(_table(rows), qt, "qt").to_pylist()


def _same(a: Any, b: Any) -> bool:
    """Equal bits: floats by their 64-bit pattern, lists item by item, types equal."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            type(a) is type(b) is float and struct.pack("<d", a) == struct.pack("<d", b)  # type: ignore[arg-type]
        )
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def _mismatches(want: dict[str, Any], got: dict[str, Any], where: Any) -> list[str]:
    assert set(want) == set(got), where
    return [
        f"{where} {k}: want {want[k]!r} got {got[k]!r}" for k in want if not _same(want[k], got[k])
    ]


def _digest(client: redis.Redis, project: str) -> dict[tuple[str, bytes], list[Any]]:
    """Every key of the project's window state (without the project) -> its members and
    scores."""
    out: dict[tuple[str, bytes], list[Any]] = {}
    for key in wst.window_keys(client, project):
        parsed = wl.parse_key(key)
        assert parsed is not None and parsed[0] == project
        out[(parsed[1], parsed[2])] = cast(list[Any], client.zrange(key, 0, -1, withscores=True))
    return out


# ------------------------------------------------------------------------ layout


def test_keys_are_exact_per_project_and_never_feast_keys(client: redis.Redis, defs: Any) -> None:
    ws = defs.user_windows
    names = [f"p{uuid.uuid4().hex[:6]}", "", "a:1:b", "*[x]?", "日本"]
    base = names[0]
    projects = [base, f"my{base}", f"{base}:x", f"1:{base}", *names[1:]]
    try:
        for p in projects:
            wst.push(client, p, ws, [{"user_id": 7, "ts": END, "txn_id": 1, "amount": 1.0,
                                      "qty": 1, "merchant": "a"}])  # fmt: skip
        for p in projects:
            keys = wst.window_keys(client, p)
            assert len(keys) == 1, (p, keys)
            parsed = wl.parse_key(keys[0])
            assert parsed == (p, "user_windows", rl.serialize_entity_key(["user_id"], [7]))
            assert rl.key_project(keys[0]) is None  # Feast's key scan never takes it
            # a quiet entity's key expires one span (longest window + grace) after its
            # last write, when every window as of now is empty
            span_ms = (ws.max_window_micros + wl.GRACE_MICROS) // 1000
            assert span_ms - 60_000 < client.pttl(keys[0]) <= span_ms
    finally:
        for p in projects:
            wst.clear_windows(client, p)
    assert all(not wst.window_keys(client, p) for p in projects)


def test_members_round_trip_every_float_bit_pattern() -> None:
    rng = random.Random(11)
    values = [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, 0.1, 1 / 3]
    for _ in range(20_000):
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if x == x and abs(x) != float("inf"):
            values.append(x)
    for x in values:
        row = wl.decode_member(wl.encode_member(END, 3, [x, None, "é", True]))
        assert struct.pack("<d", row[2]) == struct.pack("<d", x)
        assert row == [END, 3, row[2], None, "é", True]
    assert wl.decode_member(wl.encode_member(END, None, [1.5], 2)) == [END, None, 1.5, 2]


# ------------------------------------------------------------------------ online == offline


def test_online_equals_offline_bit_for_bit_and_replays_change_nothing(
    client: redis.Redis, project: str, defs: Any
) -> None:
    ws = defs.user_windows
    rng = random.Random(2024)
    rows = _events(rng, 2500)
    _push_all(client, project, ws, rows, rng)
    queries = _queries(rng, rows, 600)
    want = _reference(ws, rows, queries)
    state = wst.WindowState(project, ws)
    bad: list[str] = []
    for (u, t), w in zip(queries, want, strict=True):
        (got,) = state.read(client, [(u,)], t)
        bad += _mismatches(w, got, (u, t))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"

    # The light read path gives the bits of aggregate_entity on the same members.
    runner = WindowRunner(ws)
    layout = state.layout
    for u, t in queries[:80]:
        members = cast(
            list[bytes], client.zrangebyscore(layout.key([u]), t - layout.max_window, "+inf")
        )
        ref = runner.aggregate_entity(layout.log_table(members), [t])
        got = layout.answer(members, t)
        assert not _mismatches({k: v[0] for k, v in ref.items()}, got, (u, t))

    # Retention: each key holds exactly its events since newest - (longest window + grace).
    for key in wst.window_keys(client, project):
        scores = [s for _, s in cast(list[Any], client.zrange(key, 0, -1, withscores=True))]
        assert min(scores) >= max(scores) - layout.span

    before = _digest(client, project)
    assert before
    _push_all(client, project, ws, rows, random.Random(7))  # every event again, new splits
    _push_all(client, project, ws, list(reversed(rows)), random.Random(8))
    assert _digest(client, project) == before
    again = [state.read(client, [(u,)], t)[0] for u, t in queries[:100]]
    assert all(not _mismatches(w, g, q) for w, g, q in zip(want, again, queries, strict=False))


def test_the_light_path_equals_aggregate_entity_on_ties_in_any_order(defs: Any) -> None:
    """Rows at one instant with one id and values equal but for the sign of zero: the
    order of rule 29 (not the input's) decides which copy counts and what ``last`` is."""
    ws = defs.user_windows
    layout = wl.WindowLayout("p", ws)
    runner = WindowRunner(ws)
    rng = random.Random(3)
    bad: list[str] = []
    for trial in range(300):
        members = []
        for _ in range(rng.randint(1, 12)):
            t = END - rng.choice([1, 2, MINUTE, HOUR])
            amount = rng.choice([None, -0.0, 0.0, 1.5, -1.5])
            big = rng.choice([None, -0.0, 0.0, 60.0])
            row = [amount, rng.choice([None, 1, 2]), rng.choice([None, "a", "é"]), big, t]
            ident = rng.choice([None, 1, 2, 3])
            members.append(wl.encode_member(t, ident, row, rng.randint(0, 1)))
        members = list(dict.fromkeys(members))  # a sorted set holds each member once
        for t in (END, END - MINUTE, END + HOUR):
            ref = runner.aggregate_entity(layout.log_table(members), [t])
            want = {k: v[0] for k, v in ref.items()}
            shuffled = members[:]
            rng.shuffle(shuffled)
            bad += _mismatches(want, layout.answer(shuffled, t), (trial, t))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"


def test_backfill_then_push_equals_push_all(
    client: redis.Redis, project: str, defs: Any, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    ws = defs.user_windows
    rng = random.Random(99)
    rows = _events(rng, 1500)
    _push_all(client, project, ws, rows, rng)
    everything = _digest(client, project)

    cut = int(len(rows) * 0.7)
    other = f"{project}-backfill"
    try:
        pq.write_table(_table(rows[:cut]), tmp_path / "events.parquet")
        n = wst.backfill(client, other, ws, tmp_path / "events.parquet", chunk_rows=257)
        assert n == sum(1 for r in rows[:cut] if r["user_id"] is not None and r["ts"] is not None)
        _push_all(client, other, ws, rows[cut:], rng)
        assert _digest(client, other) == everything
        third = f"{project}-table"
        try:  # a table source, and the backfill replayed on top: still the same state
            wst.backfill(client, third, ws, _table(rows), chunk_rows=1000)
            wst.backfill(client, third, ws, _table(rows[:cut]), chunk_rows=64)
            assert _digest(client, third) == everything
        finally:
            wst.clear_windows(client, third)
    finally:
        wst.clear_windows(client, other)


def test_a_set_without_event_ids_counts_equal_rows_of_one_write(
    client: redis.Redis, project: str, defs: Any
) -> None:
    ws = defs.shop_windows
    row = {"merchant": "é", "ts": END - MINUTE, "amount": 2.5}
    other = {"merchant": "e\u0301", "ts": END - 2 * MINUTE, "amount": -0.0}  # NFC: é
    batch = [row, dict(row), other, {"merchant": "b", "ts": END - MINUTE, "amount": None}]
    wst.push(client, project, ws, batch)
    wst.push(client, project, ws, batch)  # a replay of the same write: no change
    qt = pa.table({"merchant": ["é", "b", "zz"],
                   "qt": pa.array([END] * 3, pa.int64()).cast(pa.timestamp("us", tz="UTC"))})  # fmt: skip
    ev = pa.table({"merchant": [r["merchant"] for r in batch],
                   "ts": pa.array([r["ts"] for r in batch]).cast(pa.timestamp("us", tz="UTC")),
                   "amount": pa.array([r["amount"] for r in batch], pa.float64())})  # fmt: skip
    want = WindowRunner(ws).run_local(ev, qt, "qt").to_pylist()
    got = wst.windows_as_of(client, project, ws, [("é",), ("b",), ("zz",)], END)
    assert want[0] == {"spent_count_1h": 2, "spent_sum_1h": 5.0}
    assert want[0]["spent_count_1h"] == 2
    for w, g, q in zip(want, got, ["é", "b", "zz"], strict=True):
        assert not _mismatches(w, g, q)


def test_clear_project_takes_the_window_state_of_that_project_only(
    client: redis.Redis, project: str, defs: Any
) -> None:
    from pipelines.materialize import clear_project

    event = [{"user_id": 1, "ts": END, "txn_id": 1, "amount": 1.0, "qty": 1, "merchant": "a"}]
    wst.push(client, project, defs.user_windows, event)
    wst.push(client, f"x{project}", defs.user_windows, event)
    try:
        assert clear_project(client, project) == 1
        assert not wst.window_keys(client, project)
        assert len(wst.window_keys(client, f"x{project}")) == 1
    finally:
        wst.clear_windows(client, f"x{project}")


# ------------------------------------------------------------------------ the server


def _app(defs_dir: Path, project: str, redis_url: str, defs: Any) -> LookupApp:
    repo = defs_dir / project
    repo.mkdir()
    (repo / f"{DEFS_MODULE}.py").write_text(DEFS)
    specs = {
        name: wl.window_set_spec(getattr(defs, attr), f"{DEFS_MODULE}:{attr}")
        for name, attr in (("user_windows", "user_windows"), ("shop_windows", "shop_windows"))
    }
    refs = ["user_windows:amt_sum_1h", "user_windows:seen_last_1d", "user_windows:shop_last2_1d"]
    Manifest(
        project=project,
        entity_key_serialization_version=3,
        views={},
        request_transforms={},
        services={"windows_v1": ServiceSpec("windows_v1", refs)},
        window_sets=specs,
    ).save(repo)
    return LookupApp(ServeConfig(repo=str(repo), redis_url=redis_url, redis_timeout_ms=5000))


def _post(app: LookupApp, path: str, body: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await c.post(path, content=content)

    return LOOP.run_until_complete(go())


def _df(rows: list[dict[str, Any]], rng: random.Random) -> dict[str, list[Any]]:
    """Feast's push ``df``: columns; times as epoch micros or ISO-8601 with a zone."""
    cols: dict[str, list[Any]] = {k: [r[k] for r in rows] for k in rows[0]}
    zone = rng.choice([None, UTC, timezone(timedelta(hours=5, minutes=30))])
    if zone is not None:
        cols["ts"] = [None if t is None else _iso(t, zone) for t in cols["ts"]]
    return cols


def _iso(micros: int, zone: Any = UTC) -> str:
    return (
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros))
        .astimezone(zone)
        .isoformat()
    )


def test_http_push_and_window_lookups_equal_the_offline_path(
    defs_dir: Path, project: str, redis_url: str, defs: Any
) -> None:
    app = _app(defs_dir, project, redis_url, defs)
    try:
        rng = random.Random(5)
        rows = _events(rng, 800, users=6)
        for batch in _splits(rng, rows):
            r = _post(app, "/push", {"push_source_name": "user_windows", "df": _df(batch, rng),
                                     "to": "online"})  # fmt: skip
            assert r.status_code == 200, r.text
        ws = defs.user_windows
        feats = [f.name for f in ws.features]
        queries = _queries(rng, rows, 60, users=6)
        want = _reference(ws, rows, queries)
        bad: list[str] = []
        for (u, t), w in zip(queries, want, strict=True):
            at: Any = t if rng.random() < 0.5 else _iso(t)
            body = {"features": [f"user_windows:{f}" for f in feats],
                    "entities": {"user_id": [u]}, "request_time": at}  # fmt: skip
            r = _post(app, "/get-online-features", body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["metadata"]["feature_names"] == ["user_id", *feats]
            got = {f: res["values"][0] for f, res in zip(feats, out["results"][1:], strict=True)}
            for f in feats:
                wv = w[f]
                if isinstance(wv, datetime):  # Feast's JSON: unix timestamps as epoch seconds
                    wv = int(wv.timestamp())
                elif isinstance(wv, list) and wv and isinstance(wv[0], datetime):
                    wv = [x.isoformat() for x in wv]
                if not (_same(wv, got[f]) or (isinstance(wv, float) and got[f] == wv)):
                    bad.append(f"{(u, t)} {f}: want {wv!r} got {got[f]!r}")
                if isinstance(wv, float):  # JSON text parses back to the same bits
                    assert struct.pack("<d", float(got[f])) == struct.pack("<d", wv)
        assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"

        # several entities in one request, the native endpoint (a service), the default time
        users = [0, 1, 2, 77]
        t = queries[0][1]
        r = _post(app, "/get-online-features", {"feature_service": "windows_v1",
                                                 "entities": {"user_id": users},
                                                 "request_time": t})  # fmt: skip
        assert r.status_code == 200, r.text
        multi = r.json()["results"]
        ref = _reference(ws, rows, [(u, t) for u in users])
        assert multi[1]["values"] == [w["amt_sum_1h"] for w in ref]
        assert multi[1]["statuses"][-1] == "PRESENT"  # 0.0 for an entity without events
        r = _post(app, "/v1/features/windows_v1", {"entities": {"user_id": users},
                                                   "request_time": t})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["features"]["amt_sum_1h"] == [w["amt_sum_1h"] for w in ref]
        r = _post(app, "/get-online-features", {"features": ["user_windows:amt_count_1d"],
                                                 "entities": {"user_id": [0]}})  # fmt: skip
        assert r.status_code == 200 and r.json()["results"][1]["values"] == [0]  # now: empty
    finally:
        LOOP.run_until_complete(app.shutdown())


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"push_source_name": "nope", "df": {}}, 404, "push_source_name"),
        ({"push_source_name": 3, "df": {}}, 422, "push_source_name"),
        ({"df": {}}, 422, "push_source_name"),
        ({"push_source_name": "user_windows", "df": [1]}, 422, "df"),
        ({"push_source_name": "user_windows", "df": {"user_id": [1]}}, 400, "ts"),
        ({"push_source_name": "user_windows", "to": "offline", "df": {}}, 400, "to"),
        ({"push_source_name": "user_windows",
          "df": {"user_id": ["x"], "ts": [END], "txn_id": [1], "amount": [1.0], "qty": [1],
                 "merchant": ["a"]}}, 400, "user_id"),
        ({"push_source_name": "user_windows",
          "df": {"user_id": [1], "ts": ["2025-01-01T00:00:00"], "txn_id": [1], "amount": [1.0],
                 "qty": [1], "merchant": ["a"]}}, 400, "ts"),
        ({"push_source_name": "user_windows",
          "df": {"user_id": [1], "ts": [END], "txn_id": [1.5], "amount": [1.0], "qty": [1],
                 "merchant": ["a"]}}, 400, "txn_id"),
        ({"push_source_name": "user_windows",
          "df": {"user_id": [1], "ts": [END], "txn_id": [1], "amount": ["1"], "qty": [1],
                 "merchant": ["a"]}}, 400, "amount"),
        ({"push_source_name": "user_windows",
          "df": {"user_id": [1, 2], "ts": [END], "txn_id": [1], "amount": [1.0], "qty": [1],
                 "merchant": ["a"]}}, 400, "ts"),
        ({"push_source_name": "user_windows",
          "df": {"user_id": [1], "ts": [1 << 62], "txn_id": [1], "amount": [1.0], "qty": [1],
                 "merchant": ["a"]}}, 400, "df"),
        (b"[1", 422, None),
        ({"features": ["user_windows:nope"], "entities": {"user_id": [1]}}, 400,
         "user_windows:nope"),
        ({"features": ["user_windows:amt_sum_1h"], "entities": {"user_id": ["x"]}}, 400,
         "user_id"),
        ({"features": ["user_windows:amt_sum_1h"], "entities": {"user_id": [1]},
          "request_time": "yesterday"}, 400, "request_time"),
        ({"features": ["user_windows:amt_sum_1h"], "entities": {"user_id": [1]},
          "request_time": 1.5}, 400, "request_time"),
        ({"features": ["user_windows:amt_sum_1h"], "entities": {"user_id": [1]},
          "request_time": "2025-01-01T00:00:00"}, 400, "request_time"),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_field(
    defs_dir: Path,
    project: str,
    redis_url: str,
    defs: Any,
    body: Any,
    status: int,
    field: str | None,
) -> None:
    app = _app(defs_dir, project, redis_url, defs)
    try:
        path = "/push" if isinstance(body, bytes) or "features" not in body else None
        r = _post(app, path or "/get-online-features", body)
        assert r.status_code == status, r.text
        assert r.json()["field"] == field, r.text
    finally:
        LOOP.run_until_complete(app.shutdown())


def test_the_manifest_records_window_sets_and_the_server_refuses_drift(
    defs_dir: Path, project: str, redis_url: str, defs: Any
) -> None:
    from pipelines.apply import with_window_sets
    from pipelines.project import load_project

    repo = defs_dir / f"{project}-apply"
    repo.mkdir()
    (repo / f"{DEFS_MODULE}.py").write_text(DEFS)
    (repo / "skewless.yaml").write_text(
        f"definitions: [{DEFS_MODULE}]\n"
        "sources:\n  events:\n    path: data/events\n    event_timestamp: ts\n"
        "    entities: {user_id: int64}\n"
    )
    empty = Manifest(project, 3, {}, {}, {})
    manifest = with_window_sets(empty, load_project(repo))
    assert set(manifest.window_sets) == {"user_windows", "shop_windows"}
    spec = manifest.window_sets["user_windows"]
    assert spec.window_set == f"{DEFS_MODULE}:user_windows"
    assert spec.entities == {"user_id": "int64"} and spec.event_id == "txn_id"
    assert spec.features["amt_last3_10m"] == "list<float64>"
    assert spec.features["seen_last_1d"] == "timestamp"
    manifest.save(repo)
    assert Manifest.load(repo).window_sets == manifest.window_sets
    app = LookupApp(ServeConfig(repo=str(repo), redis_url=redis_url))
    LOOP.run_until_complete(app.shutdown())

    from dataclasses import replace

    drifted = {**manifest.window_sets, "user_windows": replace(spec, max_window_micros=1)}
    replace(manifest, window_sets=drifted).save(repo)
    with pytest.raises(ArtifactError, match="max_window_micros"):
        LookupApp(ServeConfig(repo=str(repo), redis_url=redis_url))


def test_python_api_errors_name_the_column(client: redis.Redis, project: str, defs: Any) -> None:
    with pytest.raises(RequestError) as err:
        wst.push(client, project, defs.user_windows, [{"user_id": 1, "ts": END}])
    assert err.value.field == "txn_id"
    with pytest.raises(RequestError) as err:
        wst.push(client, project, defs.user_windows,
                 [{"user_id": 1, "ts": "2025-01-01", "txn_id": 1, "amount": 1.0, "qty": 1,
                   "merchant": "a"}])  # fmt: skip
    assert err.value.field == "ts"
    assert not wst.window_keys(client, project)
    # a nullable Int64 travels as float64: beyond 2**53 it is refused, naming the input
    with pytest.raises(TransformError, match=r"'qty' is a nullable int64 .*2\*\*53") as big:
        wst.push(client, project, defs.user_windows,
                 [{"user_id": 1, "ts": END, "txn_id": 1, "amount": 1.0, "qty": 2**53 + 1,
                   "merchant": "a"}])  # fmt: skip
    assert big.value.field == "qty"
    assert not wst.window_keys(client, project)


def test_a_window_set_that_drifted_from_the_manifest_is_refused(tmp_path: Path) -> None:
    """The server, training sets, backfills and skew reports share one check: the
    definition imported now must be the one `skewless apply` recorded."""
    import dataclasses

    from pipelines.scaffold import init_project
    from transforms.errors import ArtifactError
    from transforms.modules import resolve_window_set

    init_project(tmp_path / "p")
    ref = "features:DRIVER_WINDOWS"
    spec = wl.window_set_spec(resolve_window_set(ref, tmp_path / "p"), ref)
    assert wl.checked_window_set(tmp_path / "p", spec).name == "driver_windows"
    old = dataclasses.replace(spec, max_window_micros=spec.max_window_micros // 7)
    with pytest.raises(ArtifactError, match="differs from the manifest in max_window_micros"):
        wl.checked_window_set(tmp_path / "p", old)
    with pytest.raises(ArtifactError, match="window set 'driver_windows'"):
        wl.checked_window_set(tmp_path / "p", dataclasses.replace(spec, window_set="features:NO"))
