"""The materializer's columnar RESP encoder against a row-by-row reference (no Redis).

Every HSET command must equal the one built from ``serving.redis_layout``'s scalar
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
from serving import redis_layout as rl

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
    plan = mat.ViewPlan(
        name="v",
        online_name="v",
        join_keys=["id"],
        join_types=[key_type],
        features=list(CODECS),
        feature_types=[c for c, _ in CODECS.values()],
        source_path="-",
        timestamp_field="ts",
        created_field=None,
        field_mapping={},
        ttl=None,
    )
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
