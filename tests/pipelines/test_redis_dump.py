"""store.redis_dump against a real Redis: a RESTOREd key must be the very hash HSET
builds (DUMP of both equal, same encoding), whatever its values; the materializer falls
back to HSET where RESTORE is refused, with the same end state."""

from __future__ import annotations

import importlib.machinery
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from bench.repos.driver_repo import build_repo, generate, snapshot, window
from pipelines.local_redis import private_redis
from pipelines.materialize import RedisWriter, clear_project, iter_report_lines, materialize
from store import redis_dump as rd

# values around every boundary of the encodings: 6/12-bit string lengths, 1/2-byte
# backlens, the listpack value limit, and strings a listpack would store as integers
VALUES = [
    b"", b"a", b"x" * 63, b"x" * 64, b"x" * 65, b"y" * 125, b"y" * 126, b"z" * 200,
    b"z" * 1000, b"z" * 1001, b"123", b"-7", b"0", b"-", b"007", b"5\x001",
    b"12345678901234567890", b"123456789012345678901", b"\xff" * 5, b"\x08\x96\x01",
]  # fmt: skip
CLEAN = [b"", b"a", b"x" * 63, b"x" * 64, b"\xff" * 5, b"\x08\x96\x01"]  # listpack-able
NAMES = {
    "feast": [b"_ts:driver_stats", b"\xfas\x10\x14", b"Bj\xa44", b"\xd8\x9d\x01k"],
    "odd names": [b"_ts:v", b"123", b"n" * 70, b""],
}


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        client.config_set("rdbcompression", "no")  # DUMP bytes as stored
        yield client


def _limits(client: redis.Redis) -> tuple[int, int]:
    config = client.config_get("hash-max-listpack-*")
    return int(config["hash-max-listpack-entries"]), int(config["hash-max-listpack-value"])


def _restore(
    client: redis.Redis, keys: list[bytes], names: list[bytes], rows: list[list[bytes]],
    ttl_ms: int = 0,
) -> tuple[list[object], list[bool]]:  # fmt: skip
    columns = [pa.array([r[f] for r in rows], type=pa.large_binary()) for f in range(len(names))]
    payload, listpack = rd.restore_commands(
        pa.array(keys, type=pa.large_binary()), names, columns, ttl_ms, *_limits(client)
    )
    kwargs = client.connection_pool.connection_kwargs
    writer = RedisWriter("redis", f"{kwargs['host']}:{kwargs['port']},db=0")
    try:
        return writer.raw(bytes(payload), len(keys)), listpack.tolist()
    finally:
        writer.close()


def test_payload_writer_is_built() -> None:
    """``make venv`` compiles it (hatch_build.py); without it every key goes by HSET."""
    assert rd.available(), f"{rd.LIBRARY} missing: run make venv (needs a C compiler)"


def test_ci_loads_the_extension_module() -> None:
    """CI (``CI=true``) must run the compiled writer: the extension module ``store._dump``
    built by the install, imported and used by ``store.redis_dump``."""
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("CI=true only: elsewhere a missing C compiler means HSET only")
    import store._dump as ext

    assert rd._LIB is ext and rd.available()
    assert Path(ext.__file__ or "").name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_no_rows_no_commands() -> None:
    empty = pa.array([], type=pa.large_binary())
    payload, listpack = rd.restore_commands(empty, [b"f"], [empty], 0, 128, 64)
    assert bytes(payload) == b"" and len(listpack) == 0


def test_crc64_is_redis_crc() -> None:
    assert rd.crc64(b"123456789") == 0xE9C6D914C4B8D9CA  # CRC-64/Jones check value
    assert rd.crc64(b"") == 0


def test_crc64_matches_dump_footer(server: redis.Redis) -> None:
    server.hset("dump:crc", mapping={"a": "1", "b": "x" * 300})
    dump = server.dump("dump:crc")
    assert dump is not None
    assert rd.crc64(dump[:-8]) == int.from_bytes(dump[-8:], "little")
    server.delete("dump:crc")


@pytest.mark.parametrize("names", list(NAMES.values()), ids=list(NAMES))
@pytest.mark.parametrize(("max_entries", "max_value"), [(128, 64), (128, 1000), (3, 64)])
def test_restored_key_equals_hset_key(
    server: redis.Redis, names: list[bytes], max_entries: int, max_value: int
) -> None:
    """Every combination of value lengths and integer-like strings, under several listpack
    limits: DUMP (listpack bytes, or hash table) of the restored key equals the HSET one."""
    server.config_set("hash-max-listpack-entries", max_entries)
    server.config_set("hash-max-listpack-value", max_value)
    try:
        rows = [
            [VALUES[(i + 7 * f) % len(VALUES)] for f in range(len(names))]
            for i in range(len(VALUES) * 3)
        ] + [[CLEAN[(i + f) % len(CLEAN)] for f in range(len(names))] for i in range(6)]
        keys = [b"dump:%d" % i for i in range(len(rows))]
        replies, listpack = _restore(server, keys, names, rows)
        assert replies == [b"OK"] * len(rows)
        restored = {k: (server.dump(k), server.object("encoding", k)) for k in keys}
        server.delete(*keys)
        for k, row in zip(keys, rows, strict=True):
            server.hset(k, mapping=dict(zip(names, row, strict=True)))
        for k, lp in zip(keys, listpack, strict=True):
            assert restored[k] == (server.dump(k), server.object("encoding", k)), k
            # a listpack payload only where HSET builds one (the plain form also where a
            # listpack of integers results)
            assert restored[k][1] == b"listpack" or not lp
        assert any(listpack) == (max_entries >= len(names) and names == NAMES["feast"])
        server.delete(*keys)
    finally:
        server.config_set("hash-max-listpack-entries", 128)
        server.config_set("hash-max-listpack-value", 64)


def test_restore_sets_expiry_and_never_overwrites(server: redis.Redis) -> None:
    names = NAMES["feast"]
    rows = [[b"\x08\x01", b"a", b"b", b"c"], [b"\x08\x02", b"d", b"e", b"f"]]
    server.hset(b"dump:old", mapping={b"kept": b"1"})
    replies, _ = _restore(server, [b"dump:new", b"dump:old"], names, rows, ttl_ms=60_000)
    assert replies[0] == b"OK" and "BUSYKEY" in str(replies[1])
    assert 0 < server.pttl(b"dump:new") <= 60_000
    assert server.hgetall(b"dump:old") == {b"kept": b"1"} and server.ttl(b"dump:old") == -1
    server.delete(b"dump:new", b"dump:old")


def test_materialize_without_the_payload_writer_uses_hset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        conn = url.removeprefix("redis://").replace("/0", ",db=0")
        build_repo(tmp_path / "r", generate(3_000, 1_000, seed=4), conn, project="nolib")
        start, end = window()
        monkeypatch.setattr(rd, "_LIB", None)
        report = materialize(tmp_path / "r", start, end, show_progress=False, verify=True)
        assert report.ok and report.views[0].written == report.views[0].expected
        stats = client.info("commandstats")
        assert "cmdstat_restore" not in stats and stats["cmdstat_hset"]["calls"] > 0


def test_materialize_falls_back_to_hset_where_restore_is_refused(tmp_path: Path) -> None:
    """A server refusing RESTORE (here an ACL) gets every row by HSET instead: the same
    end state, and the run reports nothing lost."""
    with private_redis() as url:
        client = redis.Redis.from_url(url)
        conn = url.removeprefix("redis://").replace("/0", ",db=0")
        build_repo(tmp_path / "r", generate(6_000, 2_500, seed=3), conn, project="refused")
        start, end = window()
        first = materialize(tmp_path / "r", start, end, show_progress=False, verify=True)
        restored = snapshot(client, "refused")
        assert first.ok and len(restored) == first.views[0].expected
        assert client.info("commandstats")["cmdstat_restore"]["calls"] >= len(restored)
        assert clear_project(client, "refused") == len(restored)

        client.execute_command("ACL", "SETUSER", "default", "-restore")
        report = materialize(tmp_path / "r", start, end, show_progress=False, verify=True)
        assert report.ok and report.views[0].written == len(restored)
        assert snapshot(client, "refused") == restored
        assert client.info("errorstats")["errorstat_NOPERM"]["count"] >= 1
        assert "Redis refused RESTORE (NOPERM" in list(iter_report_lines(report))[-1]
