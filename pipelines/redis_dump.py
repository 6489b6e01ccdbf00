"""RESTORE commands for new keys: Redis DUMP payloads of small hashes, compiled with numba.

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

Compiled because every payload needs its own CRC-64 (about 60 ms per 100k rows with numpy,
3 ms here) and is written byte by byte; numba caches the machine code next to this file,
so only the first run on a machine compiles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from numba import njit

RDB_TYPE_HASH = 4  # field/value strings, loaded one by one as HSET adds them
RDB_TYPE_HASH_LISTPACK = 16
RDB_VERSION = 10  # Redis 7.0's, the first with listpack hashes; later versions load it
MAX_ELEMENT = 4095  # longest element of the 12-bit string encoding used here
_POLY = 0x95AC9329AC4BC9B5  # CRC-64/Jones, reflected; init 0, no final xor (Redis crc64)


def _crc_tables() -> np.ndarray:
    """Slicing-by-8 tables: row k maps a byte followed by 7 - k more bytes of the word."""
    crc = np.arange(256, dtype=np.uint64)
    for _ in range(8):
        crc = np.where(crc & np.uint64(1), (crc >> np.uint64(1)) ^ np.uint64(_POLY),
                       crc >> np.uint64(1))  # fmt: skip
    tables = [crc]
    for _ in range(7):
        prev = tables[-1]
        tables.append((prev >> np.uint64(8)) ^ crc[(prev & np.uint64(0xFF)).astype(np.intp)])
    return np.ascontiguousarray(np.stack(tables[::-1]))


_CRC = _crc_tables()


@njit(cache=True, nogil=True)
def _crc64(buf: np.ndarray, start: int, end: int, tab: np.ndarray) -> np.uint64:
    # unsigned indices: numba then skips the negative-index wraparound on every access
    crc = np.uint64(0)
    i = np.uint64(start)
    stop = np.uint64(end)
    byte = np.uint64(0xFF)
    while i + np.uint64(8) <= stop:
        x = crc
        for k in range(8):
            x ^= np.uint64(buf[i + np.uint64(k)]) << np.uint64(8 * k)
        crc = np.uint64(0)
        for k in range(8):
            crc ^= tab[np.uint64(k), (x >> np.uint64(8 * k)) & byte]
        i += np.uint64(8)
    while i < stop:
        crc = tab[np.uint64(7), (crc ^ np.uint64(buf[i])) & byte] ^ (crc >> np.uint64(8))
        i += np.uint64(1)
    return crc


@njit(cache=True, nogil=True)
def _digits(v: int) -> int:
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


@njit(cache=True, nogil=True)
def _put_decimal(out: np.ndarray, at: int, v: int) -> int:
    d = _digits(v)
    for k in range(d - 1, -1, -1):
        out[at + k] = 48 + v % 10
        v //= 10
    return at + d


@njit(cache=True, nogil=True)
def _put(out: np.ndarray, at: int, src: np.ndarray, start: int, end: int) -> int:
    shift = np.uint64(at - start)
    for k in range(np.uint64(start), np.uint64(end)):
        out[k + shift] = src[k]
    return at + end - start


@njit(cache=True, nogil=True)
def _intlike(data: np.ndarray, start: int, end: int) -> bool:
    n = end - start
    if n < 1 or n > 20:
        return False
    first = data[start]
    if first == 45:  # '-'
        if n == 1:
            return False
    elif first < 48 or first > 57:
        return False
    for k in range(start + 1, end):
        if data[k] < 48 or data[k] > 57:
            return False
    return True


@njit(cache=True, nogil=True)
def _rdb_len_size(v: int) -> int:
    return 1 if v < 64 else (2 if v < 16384 else 5)


@njit(cache=True, nogil=True)
def _put_rdb_len(out: np.ndarray, at: int, v: int) -> int:
    """RDB length: 6 bits, 14 bits big-endian, or 0x80 and 32 bits big-endian."""
    if v < 64:
        out[at] = v
        return at + 1
    if v < 16384:
        out[at], out[at + 1] = 0x40 | (v >> 8), v & 0xFF
        return at + 2
    out[at] = 0x80
    for k in range(4):
        out[at + 1 + k] = (v >> (24 - 8 * k)) & 0xFF
    return at + 5


@njit(cache=True, nogil=True)
def _put_entry(out: np.ndarray, at: int, src: np.ndarray, start: int, end: int) -> int:
    """A listpack string entry: 6- or 12-bit length encoding, the bytes, the backlen (the
    entry's length, 7 bits per byte, high group first, all but the first byte flagged)."""
    m = end - start
    if m < 64:
        out[at] = 0x80 | m
        at += 1
    else:
        out[at], out[at + 1] = 0xE0 | (m >> 8), m & 0xFF
        at += 2
    at = _put(out, at, src, start, end)
    entry = (1 if m < 64 else 2) + m
    if entry <= 127:
        out[at] = entry
        return at + 1
    out[at], out[at + 1] = entry >> 7, (entry & 127) | 128
    return at + 2


@njit(cache=True, nogil=True)
def _restore_rows(
    key_off: np.ndarray,
    key_data: np.ndarray,
    name_off: np.ndarray,
    name_data: np.ndarray,
    val_off: np.ndarray,
    val_data: np.ndarray,
    head: np.ndarray,
    ttl: np.ndarray,
    names_fit: bool,
    max_value: int,
    tab: np.ndarray,
    out: np.ndarray,
    listpack: np.ndarray,
) -> int:
    """Write the RESTORE command of every row into ``out``, as a listpack payload where HSET
    would build that listpack (``listpack[r]``), else as a plain hash payload. ``val_off``
    is (fields, rows + 1), offsets into ``val_data``, field-major; ``name_data`` holds the
    field names. Returns the bytes written."""
    n = len(key_off) - 1
    nf = len(name_off) - 1
    at = 0
    for r in range(n):
        lp = 6 + 1  # listpack header and end byte
        plain = _rdb_len_size(nf)  # the plain form: pair count, then length-prefixed strings
        fits = names_fit
        for f in range(nf):
            nlen = name_off[f + 1] - name_off[f]
            s, e = val_off[f, r], val_off[f, r + 1]
            vlen = e - s
            plain += _rdb_len_size(nlen) + nlen + _rdb_len_size(vlen) + vlen
            if vlen > max_value or _intlike(val_data, s, e):
                fits = False
            hn, hv = 1 if nlen < 64 else 2, 1 if vlen < 64 else 2
            lp += hn + nlen + (1 if hn + nlen <= 127 else 2) + hv + vlen
            lp += 1 if hv + vlen <= 127 else 2
        listpack[r] = fits
        size = 1 + (_rdb_len_size(lp) + lp if fits else plain) + 2 + 8
        klen = key_off[r + 1] - key_off[r]
        at = _put(out, at, head, 0, len(head))
        out[at] = 36  # '$'
        at = _put_decimal(out, at + 1, klen)
        out[at], out[at + 1] = 13, 10
        at = _put(out, at + 2, key_data, key_off[r], key_off[r + 1])
        out[at], out[at + 1] = 13, 10
        at = _put(out, at + 2, ttl, 0, len(ttl))
        out[at] = 36
        at = _put_decimal(out, at + 1, size)
        out[at], out[at + 1] = 13, 10
        at += 2
        body = at
        if fits:
            out[at] = RDB_TYPE_HASH_LISTPACK
            at = _put_rdb_len(out, at + 1, lp)
            for k in range(4):
                out[at + k] = (lp >> (8 * k)) & 0xFF
            elements = min(2 * nf, 65535)
            out[at + 4], out[at + 5] = elements & 0xFF, elements >> 8
            at += 6
            for f in range(nf):
                at = _put_entry(out, at, name_data, name_off[f], name_off[f + 1])
                at = _put_entry(out, at, val_data, val_off[f, r], val_off[f, r + 1])
            out[at] = 0xFF
            at += 1
        else:
            out[at] = RDB_TYPE_HASH
            at = _put_rdb_len(out, at + 1, nf)
            for f in range(nf):
                at = _put_rdb_len(out, at, name_off[f + 1] - name_off[f])
                at = _put(out, at, name_data, name_off[f], name_off[f + 1])
                s, e = val_off[f, r], val_off[f, r + 1]
                at = _put_rdb_len(out, at, e - s)
                at = _put(out, at, val_data, s, e)
        out[at], out[at + 1] = RDB_VERSION, 0
        at += 2
        crc = _crc64(out, body, at, tab)
        for k in range(8):
            out[at + k] = (crc >> np.uint64(8 * k)) & np.uint64(0xFF)
        out[at + 8], out[at + 9] = 13, 10
        at += 10
    return at


def _offsets(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets rebased to 0, data bytes) of a binary or large_binary array."""
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
        len(b) <= max_value and not _intlike(np.frombuffer(b, np.uint8), 0, len(b)) for b in names
    )
    key_off, key_data = _offsets(keys)
    name_off = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in names], out=name_off[1:])
    name_data = np.frombuffer(b"".join(names), dtype=np.uint8)
    val_off = np.empty((len(values), n + 1), dtype=np.int64)
    datas = []
    base = 0
    for f, arr in enumerate(values):
        off, data = _offsets(arr)
        val_off[f] = off + base
        base += len(data)
        datas.append(data)
    val_data = np.concatenate(datas) if datas else np.zeros(0, np.uint8)
    ttl = str(ttl_ms).encode()
    ttl_bulk = b"$%d\r\n%s\r\n" % (len(ttl), ttl)
    head = b"*4\r\n$7\r\nRESTORE\r\n"
    per_row = len(head) + len(ttl_bulk) + 48 + 12 * (len(names) + 1) + int(name_off[-1])
    out = np.empty(n * per_row + len(key_data) + len(val_data), dtype=np.uint8)
    listpack = np.empty(n, dtype=np.bool_)
    used = _restore_rows(
        key_off, key_data, name_off, name_data, val_off, val_data,
        np.frombuffer(head, np.uint8), np.frombuffer(ttl_bulk, np.uint8),
        names_fit, max_value, _CRC, out, listpack,
    )  # fmt: skip
    return out.data[:used], listpack


def crc64(data: bytes) -> int:
    """Redis's CRC-64 of one byte string (the DUMP payload checksum)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    return int(_crc64(buf, 0, len(buf), _CRC))
