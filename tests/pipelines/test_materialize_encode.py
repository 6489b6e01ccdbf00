"""The materializer's columnar RESP encoder against a row-by-row reference (no Redis).

Every HSET command must equal the one built from ``store.redis_layout``'s scalar
encoders, for every value type, nulls, NaN, empty and long strings, and value lengths
with one to six decimal digits.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from pipelines import materialize as mat
from store import redis_layout as rl

CODECS = {
    "d": ("double", pa.float64()),
    "f": ("float", pa.float32()),
    "i64": ("int64", pa.int64()),
    "i32": ("int32", pa.int32()),
    "b": ("bool", pa.bool_()),
    "s": ("string", pa.string()),
    "y": ("bytes", pa.binary()),
    "u": ("unix_timestamp", pa.int64()),
}


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _plan(key_type: str, features: dict[str, str]) -> mat.ViewPlan:
    """A view ``v`` keyed by ``id`` with event time ``ts`` and ``features`` (name: codec)."""
    return mat.ViewPlan(
        name="v",
        online_name="v",
        join_keys=["id"],
        join_types=[key_type],
        features=list(features),
        feature_types=list(features.values()),
        source_path="-",
        timestamp_field="ts",
        created_field=None,
        field_mapping={},
        ttl=None,
    )


def _rows(n: int, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    lengths = [0, 1, 9, 10, 99, 100, 1_000, 123_456]

    def maybe(values: list) -> list:
        return [None if rng.random() < 0.1 else v for v in values]

    return {
        "d": maybe([float(x) if rng.random() > 0.1 else math.nan for x in rng.normal(size=n)]),
        "f": maybe([float(np.float32(x)) for x in rng.normal(size=n)]),
        "i64": maybe([int(x) for x in rng.integers(-(2**63), 2**63 - 1, n)]),
        "i32": maybe([int(x) for x in rng.integers(-(2**31), 2**31 - 1, n)]),
        "b": maybe([bool(x) for x in rng.random(n) < 0.5]),
        "s": maybe(["é" * int(rng.choice(lengths[:-1])) for _ in range(n)]),
        "y": maybe([b"\x00\r\n" * int(rng.choice(lengths)) for _ in range(n)]),
        "u": maybe([int(x) for x in rng.integers(0, 2**40, n)]),
    }


@pytest.mark.parametrize("key_type", ["int64", "string"])
def test_commands_equal_row_by_row_encoding(key_type: str) -> None:
    n = 300
    cols = _rows(n, seed=4)
    ids = list(range(-150, 150)) if key_type == "int64" else [f"k{i}" for i in range(n)]
    micros = np.random.default_rng(1).integers(0, 2**52, n)
    micros[:3] = [0, 1_000_000, 7]  # zero seconds and/or zero nanos are omitted
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64() if key_type == "int64" else pa.string()),
            "ts": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            **{name: pa.array(cols[name], CODECS[name][1]) for name in CODECS},
        }
    )
    plan = _plan(key_type, {name: codec for name, (codec, _) in CODECS.items()})
    (enc,) = list(mat.encode_chunks(table, plan, "proj", chunk=n))
    got = enc.commands().to_pylist()

    for i in range(n):
        key = rl.redis_key("proj", ["id"], [ids[i]])
        args = [b"HSET", key, rl.timestamp_field("v"), rl.encode_timestamp_micros(int(micros[i]))]
        for name, (codec, _) in CODECS.items():
            args += [rl.feature_field("v", name), rl.encode_value(cols[name][i], codec)]
        assert got[i] == b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args), i

    keep = np.arange(n) % 3 == 0
    payload, replies = mat._hset_payload(enc, enc.commands(), keep, _bulk(b"60"))
    expire = [b"*3\r\n$6\r\nEXPIRE\r\n" + _bulk(rl.redis_key("proj", ["id"], [ids[i]])) + _bulk(b"60")
              for i in range(n) if keep[i]]  # fmt: skip
    kept = [g for g, k in zip(got, keep, strict=True) if k]
    assert bytes(payload) == b"".join(c + e for c, e in zip(kept, expire, strict=True))
    assert replies == 2 * int(keep.sum())


def test_timestamp_bytes_match_the_scalar_encoder() -> None:
    now = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    micros = np.array([0, 1, 999_999, 1_000_000, int(now.timestamp() * 1e6), 2**62 // 1000])
    got = mat.encode_timestamps(micros).to_pylist()
    assert got == [rl.encode_timestamp_micros(int(m)) for m in micros]


def test_stored_timestamps_decode_like_the_scalar_decoder() -> None:
    """The staleness check decodes stored ``_ts`` bytes vectorized; every layout proto3
    writes must give rl.decode_timestamp_nanos's value, anything else must be flagged."""
    rng = np.random.default_rng(7)
    seconds = [0, 1, -1, 127, 128, 2**31, -(2**40), 8_999_999_999, 9 * 10**9, 2**62]
    seconds += [int(x) for x in rng.integers(-(2**34), 2**34, 300)]
    nanos = [0, 1, 999_999_999] + [int(x) for x in rng.integers(0, 10**9, 300)]
    good = [rl.encode_timestamp(s, n) for s in seconds for n in nanos[:3]]
    good += [rl.encode_timestamp(s, n) for s, n in zip(seconds, nanos, strict=False)]
    odd = [
        b"\x10\x05\x08\x01",  # fields in the other order: scalar decoder only
        b"\x08\x01\x08\x02",  # a repeated field (last wins)
        b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 10-byte varint: -1
        b"\x18\x01",  # an unknown field
        b"\x08\x80",  # truncated varint
        b"\x08" + b"\x80" * 11 + b"\x01",  # varint over 10 bytes
    ]
    arr = pa.array([*good, *odd, None, b""], type=pa.binary())
    got, decoded = mat._timestamp_nanos(arr)
    for i, raw in enumerate(arr.to_pylist()):
        if not raw:
            assert decoded[i] and got[i] == 0
        elif decoded[i]:
            assert int(got[i]) == rl.decode_timestamp_nanos(raw), raw
    assert decoded[: len(good)].sum() == sum(
        abs(rl.decode_timestamp(b)[0]) < 9 * 10**9 for b in good
    )
    assert not decoded[len(good) : len(good) + len(odd)][[0, 1, 3, 4, 5]].any()


def test_stale_follows_feasts_rule() -> None:
    """A row is skipped when Redis holds a non-zero event time at least as new (Feast's
    online_write_batch); missing, empty, zero or older stored times let it through."""
    rng = np.random.default_rng(3)
    n = 400
    micros = rng.integers(-(10**15), 2 * 10**15, n)
    micros[:4] = [0, -5, 10**15, 10**15]
    plan = _plan("int64", {})
    table = pa.table(
        {
            "id": pa.array(np.arange(n)),
            "ts": pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    (enc,) = list(mat.encode_chunks(table, plan, "p", chunk=n))
    shift = rng.integers(-3, 4, n) * 1_000_000
    prev: list[bytes | None] = [
        rl.encode_timestamp_micros(int(m + d)) for m, d in zip(micros, shift, strict=True)
    ]
    prev[0], prev[1], prev[2], prev[3] = None, b"", rl.encode_timestamp(0, 0), b"\x10\x05\x08\x01"
    got = mat._stale(enc, prev)
    for j, (p, new) in enumerate(zip(prev, enc.ts_nanos.tolist(), strict=True)):
        latest = max(rl.decode_timestamp_nanos(p), 0) if p else 0
        assert got[j] == (latest != 0 and new <= latest), j
