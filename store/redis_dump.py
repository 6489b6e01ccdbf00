"""RESTORE commands for new keys: Redis DUMP payloads of small hashes, written in C.

``RESTORE key ttl payload`` creates a hash from one serialized value. For a new key it
costs Redis markedly less than the equivalent HSET (four arguments to parse instead of two
per field, and a listpack is taken as sent instead of built field by field), and without
REPLACE it never touches an existing key: it replies BUSYKEY, so it is safe to send before
knowing whether a key exists. Payloads are those DUMP produces (Redis >= 7.0; rdb.c,
listpack.c, cluster.c)::

    payload  = [type][value][RDB version, u16 LE][CRC-64/Jones of everything before, u64 LE]
    16, listpack hash: [RDB length of the listpack][listpack]
        listpack = [total bytes, u32 LE][element count, u16 LE][entries][0xFF]
        entry    = [encoding: 6- or 12-bit string length][data][backlen]
    4, plain hash: [RDB length: pairs] then per field and value [RDB length][bytes]

HSET builds a listpack while the hash has at most ``hash-max-listpack-entries`` fields and
every element is at most ``hash-max-listpack-value`` bytes, storing an element that parses
as a 64-bit integer in integer form. A row within those limits and without an element that
might parse (an optional '-' and 1 to 20 digits, a superset of lpStringToInt64) is sent as
the listpack HSET would build, byte for byte (DUMP of either key is equal); any other row
in the plain form, which Redis loads by adding the fields one by one as HSET does.

The payloads are written in C by the extension module ``store._dump`` (``_dump.c``, built
by ``hatch_build.py`` into the wheel or, for an editable install, next to its source):
every payload needs its own CRC-64, which costs about 60 ms per 100k rows in numpy and 3 ms
in C. Without it (no C compiler at install), ``available()`` is False and the materializer
uses HSET only.
"""

from __future__ import annotations

import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow as pa

from store.resp import bulk, command_head
from transforms.errors import ConfigError

MAX_ELEMENT = 4095  # longest element of the 12-bit string encoding used here
_INTLIKE = re.compile(rb"-?[0-9]{1,20}")  # a listpack might store these as integers
_ABI_VERSION = 2  # store._dump.ABI_VERSION of the _dump.c these calls match


def _load() -> ModuleType | None:
    """The compiled writer, or None if it is missing, unloadable or from another version
    of ``_dump.c`` (a stale build: ``make venv`` rebuilds it)."""
    try:
        from store import _dump
    except ImportError:
        return None
    return _dump if getattr(_dump, "ABI_VERSION", None) == _ABI_VERSION else None


_LIB = _load()
# the extension's file: the loaded one, else where the build puts it
LIBRARY = Path(
    getattr(_LIB, "__file__", None)
    or Path(__file__).with_name("_dump" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
)


def available() -> bool:
    """Whether the payload writer was compiled (see the module docstring)."""
    return _LIB is not None


def _library() -> ModuleType:
    if _LIB is None:
        raise ConfigError(
            f"the compiled writer {LIBRARY} is not built: reinstall skewless with a C compiler"
        )
    return _LIB


def cells(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The cells of a binary or large_binary array as (int64 offsets from 0, the bytes they
    index): views of its buffers, no copy."""
    n = len(arr)
    wide = pa.types.is_large_binary(arr.type)
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int64 if wide else np.int32, count=n + 1,
        offset=arr.offset * (8 if wide else 4),
    ).astype(np.int64)  # fmt: skip
    data = arr.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], raw[offsets[0] : offsets[-1]]


def restore_commands(
    keys: pa.Array,
    names: Sequence[bytes],
    values: Sequence[pa.Array],
    ttl_ms: int,
    max_entries: int,
    max_value: int,
) -> tuple[memoryview, np.ndarray]:
    """``RESTORE key ttl payload`` of every row, creating the hash HSET of field ``names[f]``
    = the row's cell of ``values[f]`` would: one buffer of the commands in row order, and
    which rows carry a listpack payload. The others carry the plain hash form, which Redis
    loads field by field as HSET does (longer values, integers, too many fields).
    ``ttl_ms`` 0 means no expiry; ``max_entries`` and ``max_value`` are the server's
    hash-max-listpack-entries and -value."""
    n = len(keys)
    max_value = min(max_value, MAX_ELEMENT)
    names_fit = len(names) <= max_entries and all(
        len(b) <= max_value and not _INTLIKE.fullmatch(b) for b in names
    )
    key_off, key_data = cells(keys)
    name_off = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in names], out=name_off[1:])
    name_data = np.frombuffer(b"".join(names), dtype=np.uint8)
    val_off = np.empty((len(values), n + 1), dtype=np.int64)
    datas = []
    base = 0
    for f, arr in enumerate(values):
        off, data = cells(arr)
        val_off[f] = off + base
        base += len(data)
        datas.append(data)
    val_data = np.concatenate(datas) if datas else np.zeros(0, np.uint8)
    ttl = str(ttl_ms).encode()
    ttl_bulk = bulk(ttl)
    head = command_head(b"RESTORE", 3)
    # Bytes per row beyond its key and values, at most: the RESP framing (head, the key's
    # and payload's bulk headers of up to 20 digits, CR LFs, the ttl argument), the payload's
    # fixed part (type, RDB length, listpack header and end byte, version, CRC) and per
    # field its name and up to 10 bytes of lengths (the plain form's two RDB lengths).
    resp = len(head) + 2 * (1 + 20 + 2) + 2 + len(ttl_bulk) + 2
    per_row = resp + (1 + 5 + 6 + 1 + 2 + 8) + 10 * len(names) + int(name_off[-1])
    out = np.empty(n * per_row + len(key_data) + len(val_data), dtype=np.uint8)
    listpack = np.empty(n, dtype=np.uint8)
    used: int = _library().restore_rows(
        n, len(names), key_off, key_data, name_off, name_data, val_off, val_data, head,
        ttl_bulk, names_fit, max_value, out, listpack,
    )  # fmt: skip
    return out.data[:used], listpack.astype(bool)


def crc64(data: bytes) -> int:
    """Redis's CRC-64 of one byte string (the DUMP payload checksum)."""
    return int(_library().crc64(data))
