"""The request hot path's fast pieces give exactly what the simple versions give:
columnar decode vs decode_value, the shared-list JSON vs a per-column build, the pipelining
Redis client's failure modes (timeout, error reply, reconnect)."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time

import pytest

from serving.app import _all_finite, native_column
from serving.redis_client import RedisPipeline
from store import redis_layout as rl
from store.resp import command, hmget_parts
from transforms.errors import StoreUnavailable

_NULL_VAL = b"\x98\x01\x00"


def _value(rng: random.Random, type_name: str) -> object:
    if type_name == "double":
        return rng.choice([rng.uniform(-1e12, 1e12), math.inf, -math.inf, math.nan, 0.0, -0.0])
    if type_name == "float":
        return rng.random()
    if type_name == "int64":
        return rng.choice([rng.randint(-(2**63), 2**63 - 1), rng.randint(-3, 300), 0, -1])
    if type_name == "int32":
        return rng.randint(-(2**31), 2**31 - 1)
    if type_name == "string":
        return rng.choice(["", "a", "café", "日本", "x" * 200])
    return rng.random() < 0.5


def _same(a: list[object], b: list[object]) -> bool:
    return len(a) == len(b) and all(
        type(x) is type(y)
        and (x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)))  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("type_name", ["double", "float", "int64", "int32", "string", "bool"])
@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 100, 333])
def test_decode_column_equals_decode_value(type_name: str, n: int) -> None:
    rng = random.Random(n * 31 + len(type_name))
    for _ in range(30):
        raws: list[bytes | None] = []
        for _ in range(n):
            x = rng.random()
            if x < 0.08:
                raws.append(None)  # field never written
            elif x < 0.16:
                raws.append(b"")  # null written by Feast
            elif x < 0.18:
                raws.append(_NULL_VAL)
            else:
                raws.append(rl.encode_value(_value(rng, type_name), type_name, nan_as_null=False))
        assert _same(rl.decode_column(raws, type_name), [rl.decode_value(r) for r in raws])


def test_decode_column_all_regular_and_mismatched_types() -> None:
    doubles = [rl.encode_value(float(i) / 3, "double") for i in range(50)]
    assert rl.decode_column(doubles, "double") == [i / 3 for i in range(50)]
    ints = [rl.encode_value(v, "int64") for v in rl_edges()]
    assert rl.decode_column(ints, "int64") == rl_edges()
    # a column holding another type than declared still decodes value by value
    mixed = doubles[:20] + [rl.encode_value("s", "string")]
    assert rl.decode_column(mixed, "double") == [rl.decode_value(r) for r in mixed]
    assert rl.decode_column(mixed + ints, "int64") == [rl.decode_value(r) for r in mixed + ints]


def rl_edges() -> list[int]:
    return [0, 1, -1, 127, 128, 2**31, -(2**31), 2**62, 2**63 - 1, -(2**63)] * 3


def test_native_column_non_finite_and_huge() -> None:
    assert native_column([1.0, None, 2.5], "double", False) == [1.0, None, 2.5]
    assert native_column([1.0, math.nan, math.inf, -math.inf, None], "double", False) == [
        1.0,
        "NaN",
        "Infinity",
        "-Infinity",
        None,
    ]
    huge = [1e308, 1e308, None]  # the sum overflows although every value is finite
    assert not math.isfinite(sum(filter(None, huge))) and _all_finite(huge)
    assert native_column(huge, "double", False) == huge
    assert native_column([math.inf, -math.inf], "float", False) == ["Infinity", "-Infinity"]


# ------------------------------------------------------------------ Redis client


def test_hmget_parts_is_resp() -> None:
    head, tail = hmget_parts([b"ab", b"\x00\xff\r\n"])
    assert head + b"$3\r\nkey\r\n" + tail == command("HMGET", b"key", b"ab", b"\x00\xff\r\n")
    assert command("SELECT", 3) == b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"


def _fake_redis(behaviour: str) -> tuple[socket.socket, int]:
    """A listening socket standing in for a ``behaviour`` Redis (see _serve)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    return srv, srv.getsockname()[1]


async def _serve(srv: socket.socket, reply: bytes | None, delay: float) -> None:
    loop = asyncio.get_running_loop()
    srv.setblocking(False)
    conn, _ = await loop.sock_accept(srv)
    try:
        await loop.sock_recv(conn, 65536)
        await asyncio.sleep(delay)
        if reply is not None:
            await loop.sock_sendall(conn, reply)
        await asyncio.sleep(0.5)
    finally:
        conn.close()


def test_a_stalled_event_loop_is_not_a_redis_timeout(redis_url: str) -> None:
    """A loop blocked past the deadline (a GC pause, a long parse) runs the deadline timer
    before the reader: the reply already in the socket must still be delivered, not turned
    into StoreUnavailable (a 503 the fuzz suite caught on a loaded CI machine)."""
    from urllib.parse import urlparse

    import uvloop

    u = urlparse(redis_url)
    db = int((u.path or "/0").lstrip("/") or 0)

    async def scenario() -> int:
        client = RedisPipeline(u.hostname or "127.0.0.1", u.port or 6379, 0.05, db=db)
        assert await client.ping()
        served = 0
        for _ in range(10):
            fut = client.submit(command("PING"), 1)
            time.sleep(0.12)  # the loop stalls for more than twice the timeout
            served += (await fut) == [b"PONG"]
        await client.close()
        return served

    assert uvloop.run(scenario()) == 10
    assert asyncio.run(scenario()) == 10


def test_client_timeout_error_reply_and_reconnect(redis_url: str) -> None:
    async def scenario() -> None:
        # a server that never answers: StoreUnavailable after the timeout, not a hang
        srv, port = _fake_redis("silent")
        client = RedisPipeline("127.0.0.1", port, 0.3)
        task = asyncio.create_task(_serve(srv, None, 0))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(StoreUnavailable, match="unavailable"):
            await client.execute(b"*1\r\n$4\r\nPING\r\n", 1)
        assert loop.time() - t0 < 2.0
        assert client.proto is None  # dropped: later replies can never be mismatched
        await task
        srv.close()
        # an error reply fails that request only
        srv, port = _fake_redis("error")
        client = RedisPipeline("127.0.0.1", port, 1.0)
        task = asyncio.create_task(_serve(srv, b"-WRONGTYPE nope\r\n", 0))
        with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
            await client.execute(b"*1\r\n$4\r\nPING\r\n", 1)
        await task
        srv.close()
        # nothing listening: unavailable; then a real Redis on a fresh client works
        client = RedisPipeline("127.0.0.1", port, 0.2)
        with pytest.raises(StoreUnavailable):
            await client.execute(b"*1\r\n$4\r\nPING\r\n", 1)
        from urllib.parse import urlparse

        u = urlparse(redis_url)
        db = int((u.path or "/0").lstrip("/") or 0)
        real = RedisPipeline(u.hostname or "127.0.0.1", u.port or 6379, 1.0, db=db)
        assert await real.ping()
        # many concurrent requests share the connection, replies matched in order
        replies = await asyncio.gather(
            *(real.execute(command("ECHO", str(i)), 1) for i in range(200))
        )
        assert [r[0] for r in replies] == [str(i).encode() for i in range(200)]
        await real.close()
        assert real.proto is None
        assert await real.ping()  # reconnects after close
        await real.close()

    asyncio.run(scenario())
