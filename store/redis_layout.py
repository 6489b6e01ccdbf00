"""Pure-Python codec for Feast's Redis online-store layout (Feast 0.67, entity key v3).

Feast stores one Redis hash per entity key::

    key    = serialize_entity_key(join keys, values, version 3) + project (utf-8)
    field  = mmh3_32("<view>:<feature>") as 4 little-endian bytes -> feast.types.Value bytes
    field  = b"_ts:<view>"                                     -> google.protobuf.Timestamp bytes

This module rebuilds those bytes without importing feast, protobuf, pandas or numpy, so the
online server starts fast and the materializer can encode values without building protos.
Every function is checked byte-for-byte against Feast in tests/serving/test_redis_layout.py.

Value bytes (encode/decode) and varints live in :mod:`store.feast_values` and are
re-exported here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import mmh3

from store.errors import LayoutError
from store.feast_values import NULL_TIMESTAMP_INT_VALUE as NULL_TIMESTAMP_INT_VALUE
from store.feast_values import (
    VALUE_TYPES,
    _read_varint,
    _signed64,
    decode_column,
    decode_value,
    encode_value,
    encode_varint,
    value_encoder,
)
from store.feast_values import is_nan as is_nan
from transforms.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ENTITY_KEY_VERSION",
    "VALUE_TYPES",
    "EntityKeyEncoder",
    "decode_timestamp",
    "decode_timestamp_datetime",
    "decode_timestamp_nanos",
    "decode_column",
    "decode_value",
    "encode_timestamp",
    "encode_timestamp_datetime",
    "encode_timestamp_micros",
    "encode_value",
    "encode_varint",
    "feast_connection_string",
    "feature_field",
    "glob_escape",
    "key_project",
    "parse_connection_string",
    "redis_key",
    "serialize_entity_key",
    "timestamp_field",
    "value_encoder",
]

ENTITY_KEY_VERSION = 3

# feast.types.ValueType.Enum numbers used inside serialized entity keys.
_VT_BYTES, _VT_STRING, _VT_INT32, _VT_INT64, _VT_UNIX_TIMESTAMP = 1, 2, 3, 4, 8
_ENTITY_TYPES = frozenset({"int64", "string", "int32", "bytes", "unix_timestamp"})

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------- entity keys


def _entity_value_type(value: Any, type_name: str | None) -> str:
    if type_name is not None:
        return type_name
    if isinstance(value, bool):
        raise LayoutError("bool is not a valid entity key value type in Feast")
    if isinstance(value, int):
        return "int64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    raise LayoutError(f"unsupported entity key value {value!r} ({type(value).__name__})")


def _entity_value_bytes(value: Any, type_name: str) -> bytes:
    """Type tag, length and payload of one entity key value, as Feast's _serialize_val."""
    if type_name == "int64":
        return b"\x04\x00\x00\x00\x08\x00\x00\x00" + _I64.pack(value)
    if type_name == "string":
        raw: bytes = value.encode("utf8")
        return b"\x02\x00\x00\x00" + _U32.pack(len(raw)) + raw
    if type_name == "int32":
        return b"\x03\x00\x00\x00\x04\x00\x00\x00" + _I32.pack(value)
    if type_name == "bytes":
        return b"\x01\x00\x00\x00" + _U32.pack(len(value)) + bytes(value)
    if type_name == "unix_timestamp":
        return b"\x08\x00\x00\x00\x08\x00\x00\x00" + _I64.pack(value)
    raise LayoutError(f"entity key value type {type_name!r} is not supported by Feast")


def _key_names_header(names: Sequence[str]) -> bytes:
    parts = [_U32.pack(len(names))]
    for name in names:
        raw = name.encode("utf8")
        parts.append(b"\x02\x00\x00\x00" + _U32.pack(len(raw)) + raw)
    return b"".join(parts)


def serialize_entity_key(
    join_keys: Sequence[str], values: Sequence[Any], types: Sequence[str | None] | None = None
) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3): keys sorted by name, then values.

    ``types`` gives each value's Feast type ("int64", "string", "int32", "bytes",
    "unix_timestamp"); when omitted, Python ints are int64 and strs are strings.
    """
    if len(join_keys) != len(values):
        raise LayoutError("join_keys and values differ in length")
    type_list = list(types) if types is not None else [None] * len(values)
    triples = sorted(zip(join_keys, values, type_list, strict=True), key=lambda t: t[0])
    head = _key_names_header([t[0] for t in triples])
    body = b"".join(_entity_value_bytes(v, _entity_value_type(v, t)) for _, v, t in triples)
    return head + body


def redis_key(
    project: str,
    join_keys: Sequence[str],
    values: Sequence[Any],
    types: Sequence[str | None] | None = None,
) -> bytes:
    """The Redis key of one entity: serialized entity key followed by the project name."""
    return serialize_entity_key(join_keys, values, types) + project.encode("utf-8")


def key_project(key: bytes) -> bytes | None:
    """The project a Redis key of Feast's layout belongs to (the bytes after its entity
    key), or None when ``key`` is not such a key. Matching keys by the project name as a
    suffix is not enough: project ``shop`` is a suffix of project ``myshop``'s keys."""
    try:
        (n,) = _U32.unpack_from(key, 0)
        pos = 4
        for _ in range(2 * n):  # n (type, length, name) then n (type, length, value)
            (length,) = _U32.unpack_from(key, pos + 4)
            pos += 8 + length
    except struct.error:
        return None
    return key[pos:] if 0 < n <= 64 and pos <= len(key) else None


def glob_escape(text: str) -> bytes:
    """``text`` as a literal inside a Redis MATCH pattern."""
    out = bytearray()
    for ch in text.encode("utf-8"):
        if ch in b"*?[]\\":
            out.append(0x5C)
        out.append(ch)
    return bytes(out)


class EntityKeyEncoder:
    """Builds Redis keys for many entities of one join-key set, reusing the fixed parts.

    ``join_keys`` and ``types`` are in the caller's column order; values passed to
    ``encode`` follow that order (sorting by name happens once here).
    """

    def __init__(self, project: str, join_keys: Sequence[str], types: Sequence[str]) -> None:
        if len(join_keys) != len(types) or not join_keys:
            raise LayoutError("need one type per join key, and at least one join key")
        for t in types:
            if t not in _ENTITY_TYPES:
                raise LayoutError(f"entity key value type {t!r} is not supported by Feast")
        order = sorted(range(len(join_keys)), key=lambda i: join_keys[i])
        self.join_keys = list(join_keys)
        self.types = list(types)
        self.order = order
        self.header = _key_names_header([join_keys[i] for i in order])
        self.suffix = project.encode("utf-8")
        self._fixed: tuple[bytes, bytes] | None = None
        if len(types) == 1 and types[0] in ("int64", "unix_timestamp"):
            tag = _VT_INT64 if types[0] == "int64" else _VT_UNIX_TIMESTAMP
            self._fixed = self.header + _U32.pack(tag) + _U32.pack(8), self.suffix

    def encode(self, values: Sequence[Any]) -> bytes:
        """Redis key for one entity given its join-key values in constructor order."""
        body = b"".join(_entity_value_bytes(values[i], self.types[i]) for i in self.order)
        return self.header + body + self.suffix

    def fixed_int64(self) -> tuple[bytes, bytes] | None:
        """For a single int64 key: (bytes before the 8 value bytes, bytes after).

        Lets a vectorized caller build keys as ``prefix + int64_le + suffix``.
        """
        return self._fixed

    def encode_columns(self, columns: Sequence[Sequence[Any]]) -> list[bytes]:
        """Redis keys of many entities, from one column of values per join key (constructor
        order): the lookup path's keys. A single int64 key costs one pack and one join per
        entity; the values must already be of the key types."""
        if self._fixed is not None:
            prefix, suffix = self._fixed
            pack = _I64.pack
            return [prefix + pack(v) + suffix for v in columns[0]]
        enc = self.encode
        if len(columns) == 1:
            return [enc((v,)) for v in columns[0]]
        return [enc(vals) for vals in zip(*columns, strict=True)]

    def encode_array(self, columns: Sequence[Any]) -> pa.Array:
        """Redis keys of many entities as a pyarrow ``large_binary`` array, from one arrow
        array (or chunked array) per join key in constructor order: the materializer's keys.
        A single int64 key is laid out in numpy (no Python work per key), other keys go
        through :meth:`encode_columns`. numpy and pyarrow are imported here only, so the
        lookup path never loads them."""
        import numpy as np
        import pyarrow as pa

        if self._fixed is None:
            rows = [c.to_pylist() for c in columns]
            return pa.array(self.encode_columns(rows), type=pa.large_binary())
        prefix, suffix = self._fixed
        col = columns[0]
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        vals = col.cast(pa.int64()).to_numpy()
        n = len(vals)
        width = len(prefix) + 8 + len(suffix)
        mat = np.empty((n, width), dtype=np.uint8)
        mat[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        mat[:, len(prefix) : len(prefix) + 8] = vals.astype("<i8").view(np.uint8).reshape(n, 8)
        mat[:, len(prefix) + 8 :] = np.frombuffer(suffix, dtype=np.uint8)
        offsets = np.arange(n + 1, dtype=np.int64) * width
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(mat.reshape(-1))]
        return pa.Array.from_buffers(pa.large_binary(), n, buffers)


# ------------------------------------------------------------------- hash field names


def feature_field(view: str, feature: str) -> bytes:
    """Feast's hashed field name: murmur3_32 of "view:feature", 4 bytes little-endian."""
    return _U32.pack(mmh3.hash(f"{view}:{feature}", signed=False))


def timestamp_field(view: str) -> bytes:
    """The field holding the event timestamp of the view's row: b"_ts:<view>"."""
    return f"_ts:{view}".encode()


# ------------------------------------------------------------------------ timestamps


def encode_timestamp(seconds: int, nanos: int = 0) -> bytes:
    """google.protobuf.Timestamp wire bytes (zero fields are omitted, as proto3 does)."""
    out = b""
    if seconds:
        out = b"\x08" + encode_varint(seconds)
    if nanos:
        out += b"\x10" + encode_varint(nanos)
    return out


def encode_timestamp_micros(micros: int) -> bytes:
    """Timestamp bytes for microseconds since the epoch (Feast keeps microseconds only)."""
    seconds, rem = divmod(micros, 1_000_000)
    return encode_timestamp(seconds, rem * 1000)


def encode_timestamp_datetime(dt: datetime) -> bytes:
    """Timestamp bytes of a datetime as Feast writes it (naive means UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return encode_timestamp_micros(
        (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    )


def decode_timestamp(buf: bytes) -> tuple[int, int]:
    """(seconds, nanos) of google.protobuf.Timestamp bytes; b"" is the epoch."""
    seconds = nanos = 0
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        value, pos = _read_varint(buf, pos)
        if tag == 0x08:
            seconds = _signed64(value)
        elif tag == 0x10:
            nanos = _signed64(value)
        else:
            raise LayoutError(f"unexpected field tag {tag} in Timestamp")
    return seconds, nanos


def decode_timestamp_nanos(buf: bytes) -> int:
    """Nanoseconds since the epoch of Timestamp bytes (what Feast compares on write)."""
    seconds, nanos = decode_timestamp(buf)
    return seconds * 1_000_000_000 + nanos


def decode_timestamp_datetime(buf: bytes) -> datetime:
    """UTC datetime of Timestamp bytes (microsecond precision)."""
    seconds, nanos = decode_timestamp(buf)
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


# ------------------------------------------------------------------ connection string


def parse_connection_string(connection_string: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Feast's Redis ``connection_string`` -> ([(host, port)...], redis-py keyword params).

    Same rules as RedisOnlineStore._parse_connection_string: items without "=" are
    host:port nodes, the others are parameters whose values are JSON-decoded if possible.
    """
    import json

    nodes: list[tuple[str, int]] = []
    params: dict[str, Any] = {}
    for item in connection_string.split(","):
        if "=" in item:
            key, raw = item.split("=", 1)
            try:
                params[key] = json.loads(raw)
            except json.JSONDecodeError:
                params[key] = raw
        else:
            host, _, port = item.partition(":")
            try:
                nodes.append((host, int(port) if port else 6379))
            except ValueError:
                raise ConfigError(
                    f"Redis connection string {connection_string!r}: port {port!r} is not a number"
                ) from None
    return nodes, params


def feast_connection_string(redis_url: str) -> str:
    """``redis[s]://[user:password@]host:port[/db]`` -> Feast's connection string
    (``host:port[,db=N][,password=..][,username=..][,ssl=true]``); ConfigError naming
    REDIS_URL when the URL is not a Redis URL."""
    from urllib.parse import urlparse

    u = urlparse(redis_url)
    if u.scheme not in ("redis", "rediss", "") or not u.hostname:
        raise ConfigError(f"REDIS_URL {redis_url!r} is not a redis://host:port[/db] URL")
    parts = [f"{u.hostname}:{u.port or 6379}"]
    db = (u.path or "/0").strip("/") or "0"
    if db != "0":
        parts.append(f"db={db}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.username:
        parts.append(f"username={u.username}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)
