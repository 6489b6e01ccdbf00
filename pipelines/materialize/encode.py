"""Columnar encoding of keys, values and RESP commands in Feast's Redis layout (numpy and
arrow, no Python work per cell)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.materialize.plan import ViewPlan, _numpy, _valid
from store import redis_dump, resp
from store import redis_layout as rl

CHUNK_KEYS = 5000  # keys per pipelined round trip

# Every encoded column is a pyarrow large_binary array built from numpy matrices (no Python
# work per cell): a row's bytes are the concatenation of fixed-width segments, each cut to
# a per-row length. RESP commands are then element-wise concatenations of such arrays, and
# a chunk's payload is one contiguous slice of the result's data buffer.

_LB = pa.large_binary()
_VARINT_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)  # 10 groups of 7 bits


def _lb(value: bytes) -> pa.Scalar:
    return pa.scalar(value, type=_LB)


Segments = list[tuple[np.ndarray, np.ndarray]]  # (n x width byte matrix, bytes used per row)


def _ragged(segments: Segments) -> pa.Array:
    """large_binary array whose row i is ``b"".join(mat[i, :length[i]] for mat, length)``."""
    mats = [m for m, _ in segments]
    n = mats[0].shape[0]
    mat = mats[0] if len(mats) == 1 else np.hstack(mats)
    widths = [m.shape[1] for m in mats]
    # column j of segment s is used where j < that row's length of s
    lengths = np.stack([ln for _, ln in segments], axis=1).astype(np.int32)
    column = np.concatenate([np.arange(w, dtype=np.int32) for w in widths])
    mask = np.repeat(lengths, widths, axis=1) > column
    data = np.ascontiguousarray(mat)[mask]  # row-major: row 0's bytes, then row 1's, ...
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sum(ln.astype(np.int64) for _, ln in segments), out=offsets[1:])
    return pa.Array.from_buffers(_LB, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _const(value: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The same bytes in every row, as a segment."""
    row = np.frombuffer(value, dtype=np.uint8)
    return np.broadcast_to(row, (n, len(row))), np.full(n, len(row))


def _bulk_header(length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RESP bulk string header ``$<length>\r\n`` of every row, as a segment. Built once per
    distinct length (a column has few: 0 and 9 for doubles, 1 to 11 for varints)."""
    distinct, row = np.unique(length, return_inverse=True)
    heads = [resp.bulk_header(v) for v in distinct.tolist()]
    width = max((len(h) for h in heads), default=0)
    table = np.zeros((len(heads), width), dtype=np.uint8)
    for i, h in enumerate(heads):
        table[i, : len(h)] = np.frombuffer(h, dtype=np.uint8)
    sizes = np.array([len(h) for h in heads])
    return table[row], sizes[row]


def _varint(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 values: an (n, width) byte matrix and each value's length,
    width being the longest varint's (1 to 10 bytes; e.g. 5 for epoch seconds)."""
    u = u.astype(np.uint64, copy=False)
    width = max(1, (int(u.max(initial=0)).bit_length() + 6) // 7)
    shifts = _VARINT_SHIFTS[:width]
    groups = ((u[:, None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    length = 1 + (u[:, None] >= (np.uint64(1) << shifts[1:])).sum(axis=1)
    groups |= np.where(np.arange(width) < (length - 1)[:, None], 0x80, 0).astype(np.uint8)
    return groups, length


def _tagged(tag: int, body: np.ndarray, length: np.ndarray, valid: np.ndarray) -> Segments:
    """tag byte + the first ``length`` bytes of each body row; b"" where not ``valid``."""
    n = body.shape[0]
    mat = np.empty((n, body.shape[1] + 1), dtype=np.uint8)
    mat[:, 0] = tag
    mat[:, 1:] = body
    return [(mat, np.where(valid, length + 1, 0))]


def _value_segments(
    col: pa.ChunkedArray | pa.Array, codec: str
) -> tuple[Segments, pa.Array | None]:
    """Value bytes of every cell of one column, exactly as Feast's materialization: byte
    segments, then (strings and bytes) the raw payloads as an arrow array to append after
    them. Nulls (and NaN for floating types, as Feast's pd.isnull) give b""."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    n = len(col)
    valid = _valid(col)
    if codec in ("double", "float"):
        np_type = np.dtype("<f8") if codec == "double" else np.dtype("<f4")
        arr = col.cast(pa.float64() if codec == "double" else pa.float32())
        raw = _numpy(arr, 0).astype(np_type, copy=False)
        valid &= ~np.isnan(raw)
        body = np.ascontiguousarray(raw).view(np.uint8).reshape(n, np_type.itemsize)
        width = np.full(n, np_type.itemsize)
        return _tagged(0x29 if codec == "double" else 0x35, body, width, valid), None
    if codec in ("int64", "int32"):
        ints = _numpy(col.cast(pa.int64()), 0)
        groups, length = _varint(ints.astype(np.int64, copy=False).view(np.uint64))
        return _tagged(0x20 if codec == "int64" else 0x18, groups, length, valid), None
    if codec == "bool":
        bits = _numpy(col, False).astype(np.uint8)
        return _tagged(0x38, bits.reshape(n, 1), np.ones(n, dtype=np.int64), valid), None
    if codec in ("string", "bytes"):
        raw = col.cast(_LB).fill_null(b"")
        groups, length = _varint(pc.binary_length(raw).to_numpy(zero_copy_only=False))
        return _tagged(0x12 if codec == "string" else 0x0A, groups, length, valid), raw
    enc = rl.value_encoder(codec)  # unix_timestamp: rare, row by row
    return [], pa.array([enc(v) for v in col.to_pylist()], type=_LB)


def encode_column(col: pa.ChunkedArray | pa.Array, codec: str) -> pa.Array:
    """Value bytes of every cell of one column (see ``_value_segments``), as a
    large_binary array."""
    segments, tail = _value_segments(col, codec)
    if not segments:
        return tail
    head = _ragged(segments)
    return head if tail is None else pc.binary_join_element_wise(head, tail, _lb(b""))


def _timestamp_segments(micros: np.ndarray) -> Segments:
    """google.protobuf.Timestamp bytes of microseconds since the epoch, like
    ``rl.encode_timestamp_micros`` (zero seconds or nanos omitted)."""
    seconds, rem = np.divmod(micros.astype(np.int64, copy=False), 1_000_000)
    nanos = rem * 1000
    n = len(micros)
    sec_groups, sec_len = _varint(seconds.view(np.uint64))
    ns_groups, ns_len = _varint(nanos.view(np.uint64))
    sec = np.empty((n, 1 + sec_groups.shape[1]), dtype=np.uint8)
    sec[:, 0], sec[:, 1:] = 0x08, sec_groups
    ns = np.empty((n, 1 + ns_groups.shape[1]), dtype=np.uint8)
    ns[:, 0], ns[:, 1:] = 0x10, ns_groups
    return [
        (sec, np.where(seconds != 0, sec_len + 1, 0)),
        (ns, np.where(nanos != 0, ns_len + 1, 0)),
    ]


def encode_timestamps(micros: np.ndarray) -> pa.Array:
    """Timestamp bytes of microseconds since the epoch (see ``_timestamp_segments``)."""
    return _ragged(_timestamp_segments(micros))


def _commands(
    head: bytes, keys: pa.Array, fields: Sequence[tuple[bytes, Segments, pa.Array | None]]
) -> pa.Array:
    """One RESP command per row: the constant ``head``, the row's key (bulk strings), then
    per field its name and value as bulk strings. Built from byte segments in one pass
    per run of fixed-width values; raw string/bytes payloads are spliced in by arrow."""
    n = len(keys)
    pieces: list[Any] = [_lb(head), keys]
    run: Segments = []
    glue = b""  # constant bytes due before the next value: CR LF of the last one, a name
    for name, segments, tail in fields:
        length = sum((ln for _, ln in segments), np.zeros(n, dtype=np.int64))
        if tail is not None:
            length = length + pc.binary_length(tail).to_numpy(zero_copy_only=False)
        run += [_const(glue + resp.bulk(name), n), _bulk_header(length), *segments]
        glue = b"\r\n"
        if tail is not None:
            pieces += [_ragged(run), tail]
            run = []
    pieces.append(_ragged([*run, _const(glue, n)]))
    return pc.binary_join_element_wise(*pieces, _lb(b""))


def _micros(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Microseconds since the epoch of a timestamp column (ns truncated like Feast)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    ints = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    unit = col.type.unit
    if unit == "ns":
        return ints // 1000
    if unit == "us":
        return ints
    return ints * (1000 if unit == "ms" else 1_000_000)


def encode_keys(table: pa.Table, plan: ViewPlan, project: str) -> pa.Array:
    """Redis key of every row (:meth:`EntityKeyEncoder.encode_array`)."""
    enc = rl.EntityKeyEncoder(project, plan.join_keys, plan.join_types)
    return enc.encode_array([table.column(k) for k in plan.join_keys])


def _bulk_strings(arr: pa.Array) -> pa.Array:
    """RESP bulk string of every cell: ``$<len>\r\n<bytes>\r\n`` (``_bulk_header``)."""
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
    head = _ragged([_bulk_header(lengths)])
    return pc.binary_join_element_wise(head, arr, _lb(b"\r\n"), _lb(b""))


@dataclass
class EncodedRows:
    """Ready-to-send bytes of one chunk of a view's rows, one row per entity (arrow
    large_binary arrays).

    Keys are encoded up front (the chunk's staleness read needs them before its values);
    event times and feature values on demand (``ts_values``, ``bodies``), so the writer can
    encode chunk i+1 while Redis applies chunk i.
    """

    keys: pa.Array  # Redis keys
    ts_micros: np.ndarray  # event time of each row, µs since the epoch (int64)
    ts_nanos: np.ndarray  # the same in ns, as Feast's staleness rule compares them
    fields: list[bytes]  # hashed feature field names, in ``plan.features`` order
    columns: list[tuple[pa.ChunkedArray, str]]  # (feature column, codec), ``fields`` order
    ts_field: bytes  # b"_ts:<view>"
    key_bulks: pa.Array  # ``$<len>\r\n<key>\r\n`` per key

    def __len__(self) -> int:
        return len(self.keys)

    def key_list(self) -> list[bytes]:
        return list(self.keys.to_pylist())

    def ts_values(self) -> pa.Array:
        """Timestamp bytes of the event time of every row."""
        return encode_timestamps(self.ts_micros)

    def values(self) -> list[pa.Array]:
        """Value bytes of every feature of every row, one array per feature."""
        return [encode_column(col, codec) for col, codec in self.columns]

    def commands(self) -> pa.Array:
        """The HSET command of every row: key, ``_ts`` and its event time, then each
        feature's field and value."""
        fields = [(self.ts_field, _timestamp_segments(self.ts_micros), None)]
        for fld, (col, codec) in zip(self.fields, self.columns, strict=True):
            fields.append((fld, *_value_segments(col, codec)))
        head = resp.command_head(b"HSET", 1 + 2 * len(fields))
        return _commands(head, self.key_bulks, fields)

    def restores(self, ttl_ms: int, max_entries: int, max_value: int) -> memoryview:
        """The RESTORE command of every row, creating the very hash its HSET would
        (``redis_dump``), as one buffer in row order."""
        commands, _ = redis_dump.restore_commands(
            self.keys,
            [self.ts_field, *self.fields],
            [self.ts_values(), *self.values()],
            ttl_ms,
            max_entries,
            max_value,
        )
        return commands

    def take(self, rows: np.ndarray) -> EncodedRows:
        """The chunk's ``rows`` (indices) only."""
        idx = pa.array(rows, type=pa.int64())
        return EncodedRows(
            keys=self.keys.take(idx),
            ts_micros=self.ts_micros[rows],
            ts_nanos=self.ts_nanos[rows],
            fields=self.fields,
            columns=[(col.take(idx), codec) for col, codec in self.columns],
            ts_field=self.ts_field,
            key_bulks=self.key_bulks.take(idx),
        )


def encode_rows(table: pa.Table, plan: ViewPlan, project: str) -> EncodedRows:
    """Encode the keys of a table of latest rows (event times and values on demand)."""
    micros = _micros(table.column(plan.timestamp_field))
    keys = encode_keys(table, plan, project)
    return EncodedRows(
        keys=keys,
        ts_micros=micros,
        ts_nanos=micros.astype(np.int64) * 1000,
        fields=[rl.feature_field(plan.online_name, f) for f in plan.features],
        columns=[
            (table.column(f), t) for f, t in zip(plan.features, plan.feature_types, strict=True)
        ],
        ts_field=rl.timestamp_field(plan.online_name),
        key_bulks=_bulk_strings(keys),
    )


def encode_chunks(
    tables: pa.Table | Iterable[pa.Table], plan: ViewPlan, project: str, chunk: int = CHUNK_KEYS
) -> Iterator[EncodedRows]:
    """``encode_rows`` of the rows of ``tables`` (one table, or several pulled one at a
    time, e.g. ``_Candidates.winners``), ``chunk`` rows at a time, each encoded when
    reached: the writer pulls chunk i+1 while Redis applies chunk i, so only the first
    chunk's keys delay the first write."""
    for rows in _rechunk([tables] if isinstance(tables, pa.Table) else tables, chunk):
        yield encode_rows(rows, plan, project)


def _rechunk(tables: Iterable[pa.Table], size: int) -> Iterator[pa.Table]:
    """The rows of ``tables`` in order, as tables of ``size`` rows (the last may be short)."""
    parts: list[pa.Table] = []
    have = 0
    for table in tables:
        at = 0
        while at < table.num_rows:
            part = table.slice(at, size - have)
            parts.append(part)
            have += part.num_rows
            at += part.num_rows
            if have == size:
                yield parts[0] if len(parts) == 1 else pa.concat_tables(parts)
                parts, have = [], 0
    if have:
        yield parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _buffer_bytes(arr: pa.Array) -> memoryview:
    """The concatenated cell bytes of a binary array (a view of its data buffer)."""
    return redis_dump.cells(arr)[1].data
