"""store.redis_layout must produce the very bytes Feast's Redis online store writes."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key as feast_serialize
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Int64List, Null
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from store import redis_layout as rl

INT64_EDGES = [0, 1, -1, 127, 128, 255, 300, 16383, 16384, -128, 2**31 - 1, -(2**31), 2**32,
               2**53 + 1, -(2**53) - 1, 2**62, 2**63 - 1, -(2**63)]  # fmt: skip
INT32_EDGES = [0, 1, -1, 127, 128, 2**31 - 1, -(2**31), 65535, -65536]
STRINGS = ["", "a", "hello world", "ünïcødé", "日本語", "emoji 🎉", "x" * 127, "y" * 128,
           "z" * 20000, "nul\x00inside", "tab\tnew\nline"]  # fmt: skip
DOUBLES = [0.0, -0.0, 1.5, -1e300, 1e-310, math.inf, -math.inf, 3.141592653589793, 2.0**63]


def _rng_ints(n: int, lo: int, hi: int) -> list[int]:
    rng = random.Random(7)
    return [rng.randint(lo, hi) for _ in range(n)]


def test_module_imports_no_heavy_packages() -> None:
    code = (
        "import importlib, pkgutil, sys, store\n"
        "for m in pkgutil.iter_modules(store.__path__):\n"
        "    if m.name not in ('redis_dump', '_dump'):\n"
        "        importlib.import_module('store.' + m.name)\n"
        "bad = [m for m in ('feast', 'pandas', 'numpy', 'pyarrow', 'pyspark', 'apache_beam',"
        " 'google.protobuf') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("v", INT64_EDGES + _rng_ints(300, -(2**63), 2**63 - 1))
def test_int64_value_and_entity_key(v: int) -> None:
    assert rl.encode_value(v, "int64") == ValueProto(int64_val=v).SerializeToString()
    assert rl.decode_value(ValueProto(int64_val=v).SerializeToString()) == v
    ek = EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(int64_val=v)])
    assert rl.serialize_entity_key(["driver_id"], [v]) == feast_serialize(ek, 3)
    assert rl.redis_key("proj", ["driver_id"], [v]) == _redis_key("proj", ek, 3)
    enc = rl.EntityKeyEncoder("proj", ["driver_id"], ["int64"])
    assert enc.encode([v]) == _redis_key("proj", ek, 3)


@pytest.mark.parametrize("v", INT32_EDGES + _rng_ints(100, -(2**31), 2**31 - 1))
def test_int32(v: int) -> None:
    raw = ValueProto(int32_val=v).SerializeToString()
    assert rl.encode_value(v, "int32") == raw
    assert rl.decode_value(raw) == v
    ek = EntityKeyProto(join_keys=["k"], entity_values=[ValueProto(int32_val=v)])
    assert rl.serialize_entity_key(["k"], [v], ["int32"]) == feast_serialize(ek, 3)


@pytest.mark.parametrize("v", INT64_EDGES[:-1] + [1_700_000_000])
def test_unix_timestamp(v: int) -> None:
    raw = ValueProto(unix_timestamp_val=v).SerializeToString()
    assert rl.encode_value(v, "unix_timestamp") == raw
    if -(2**35) < v < 2**35:  # datetime range; Feast itself overflows outside it
        assert rl.decode_value(raw) == feast_value_type_to_python_type(ValueProto.FromString(raw))


def test_unix_timestamp_null_sentinel_and_datetime() -> None:
    raw = ValueProto(unix_timestamp_val=rl.NULL_TIMESTAMP_INT_VALUE).SerializeToString()
    assert rl.decode_value(raw) is None
    dt = datetime(2024, 5, 1, 12, 30, 15, 999, tzinfo=UTC)
    assert rl.encode_value(dt, "unix_timestamp") == rl.encode_value(
        int(dt.timestamp()), "unix_timestamp"
    )


@pytest.mark.parametrize("s", STRINGS)
def test_string_value_and_entity_key(s: str) -> None:
    raw = ValueProto(string_val=s).SerializeToString()
    assert rl.encode_value(s, "string") == raw
    assert rl.decode_value(raw) == s
    ek = EntityKeyProto(join_keys=["user"], entity_values=[ValueProto(string_val=s)])
    assert rl.serialize_entity_key(["user"], [s]) == feast_serialize(ek, 3)
    assert rl.EntityKeyEncoder("p", ["user"], ["string"]).encode([s]) == _redis_key("p", ek, 3)


@pytest.mark.parametrize("b", [b"", b"\x00", b"\xff" * 200, bytes(range(256))])
def test_bytes(b: bytes) -> None:
    raw = ValueProto(bytes_val=b).SerializeToString()
    assert rl.encode_value(b, "bytes") == raw
    assert rl.decode_value(raw) == b
    ek = EntityKeyProto(join_keys=["k"], entity_values=[ValueProto(bytes_val=b)])
    assert rl.serialize_entity_key(["k"], [b]) == feast_serialize(ek, 3)


@pytest.mark.parametrize("d", DOUBLES + [random.Random(3).uniform(-1e9, 1e9) for _ in range(50)])
def test_double_and_float(d: float) -> None:
    raw = ValueProto(double_val=d).SerializeToString()
    assert rl.encode_value(d, "double") == raw
    got = rl.decode_value(raw)
    assert got == d and math.copysign(1, got) == math.copysign(1, d)
    if abs(d) < 3e38 or math.isinf(d):
        fraw = ValueProto(float_val=d).SerializeToString()
        assert rl.encode_value(d, "float") == fraw
        assert rl.decode_value(fraw) == ValueProto.FromString(fraw).float_val


def test_nan() -> None:
    # Feast materialization turns NaN into an empty Value (pd.isnull); we do the same.
    assert rl.encode_value(math.nan, "double") == b""
    assert rl.encode_value(math.nan, "float") == b""
    # Without that rule the bytes equal protobuf's own NaN encoding.
    raw = ValueProto(double_val=math.nan).SerializeToString()
    assert rl.encode_value(math.nan, "double", nan_as_null=False) == raw
    assert math.isnan(rl.decode_value(raw))


@pytest.mark.parametrize("b", [True, False])
def test_bool(b: bool) -> None:
    raw = ValueProto(bool_val=b).SerializeToString()
    assert rl.encode_value(b, "bool") == raw
    assert rl.decode_value(raw) is b


@pytest.mark.parametrize("t", rl.VALUE_TYPES)
def test_null(t: str) -> None:
    assert rl.encode_value(None, t) == ValueProto().SerializeToString() == b""
    assert rl.decode_value(b"") is None
    assert rl.decode_value(ValueProto(null_val=Null.NULL).SerializeToString()) is None


def test_out_of_range_rejected() -> None:
    with pytest.raises(ValueError):
        rl.encode_value(2**63, "int64")
    with pytest.raises(ValueError):
        rl.encode_value(2**31, "int32")
    with pytest.raises(ValueError):
        rl.decode_value(ValueProto(int64_list_val=Int64List(val=[1])).SerializeToString())


def test_multi_join_keys_sorted_like_feast() -> None:
    rng = random.Random(11)
    for _ in range(200):
        uid, name, n = rng.randint(-(2**63), 2**63 - 1), rng.choice(STRINGS), rng.randint(-9, 9)
        ek = EntityKeyProto(
            join_keys=["user_id", "merchant", "a_small"],
            entity_values=[ValueProto(int64_val=uid), ValueProto(string_val=name),
                           ValueProto(int32_val=n)],
        )  # fmt: skip
        ours = rl.redis_key("prj", ["user_id", "merchant", "a_small"], [uid, name, n],
                            ["int64", "string", "int32"])  # fmt: skip
        assert ours == _redis_key("prj", ek, 3)
        enc = rl.EntityKeyEncoder("prj", ["user_id", "merchant", "a_small"],
                                  ["int64", "string", "int32"])  # fmt: skip
        assert enc.encode([uid, name, n]) == ours


def test_fixed_int64_prefix() -> None:
    enc = rl.EntityKeyEncoder("demo", ["driver_id"], ["int64"])
    fixed = enc.fixed_int64()
    assert fixed is not None
    prefix, suffix = fixed
    assert prefix + (-5).to_bytes(8, "little", signed=True) + suffix == enc.encode([-5])


@pytest.mark.parametrize(
    "view,feature", [("driver_hourly", "conv_rate"), ("v", ""), ("ünï", "日本"), ("a:b", "c")]
)
def test_feature_field_is_feast_mmh3(view: str, feature: str) -> None:
    assert rl.feature_field(view, feature) == _mmh3(f"{view}:{feature}")
    assert rl.timestamp_field(view) == f"_ts:{view}".encode()


TS_CASES = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC),
    datetime(1960, 6, 1, 0, 0, 0, 500000, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 3, 1, 12, 0, 0),  # naive = UTC, as Feast's make_tzaware
    datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC) + timedelta(hours=0),
]


@pytest.mark.parametrize("dt", TS_CASES)
def test_timestamp_field_value(dt: datetime) -> None:
    ts = Timestamp()
    aware = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    ts.FromDatetime(aware)
    raw = ts.SerializeToString()
    assert rl.encode_timestamp_datetime(dt) == raw
    assert rl.encode_timestamp(ts.seconds, ts.nanos) == raw
    assert rl.decode_timestamp(raw) == (ts.seconds, ts.nanos)
    assert rl.decode_timestamp_nanos(raw) == ts.seconds * 1_000_000_000 + ts.nanos
    assert rl.decode_timestamp_datetime(raw) == aware
    micros = (ts.seconds * 1_000_000) + ts.nanos // 1000
    assert rl.encode_timestamp_micros(micros) == raw


def test_connection_string_like_feast() -> None:
    for cs in ["localhost:6379", "127.0.0.1:6380,db=3", "r1:1,r2:2,ssl=true,password=abc",
               "h:7000,db=2,socket_timeout=0.5"]:  # fmt: skip
        nodes, params = rl.parse_connection_string(cs)
        f_nodes, f_params = RedisOnlineStore._parse_connection_string(cs)
        assert [(n["host"], int(n["port"])) for n in f_nodes] == nodes
        assert f_params == params


def test_key_project_is_exact_where_a_suffix_match_is_not() -> None:
    shop = rl.redis_key("shop", ["store_id", "sku"], ["s1", 5], ["string", "int64"])
    myshop = rl.redis_key("myshop", ["store_id", "sku"], ["s1", 5], ["string", "int64"])
    assert myshop.endswith(b"shop")  # why a suffix match would take another project's key
    assert rl.key_project(shop) == b"shop" and rl.key_project(myshop) == b"myshop"
    for junk in (b"", b"shop", b"\x01\x00\x00\x00", b"\xff" * 12):
        assert rl.key_project(junk) is None
    assert rl.glob_escape("a*b?[c]\\") == b"a\\*b\\?\\[c\\]\\\\"
