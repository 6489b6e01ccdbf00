"""Writing encoded chunks under Feast's staleness rule: RESTORE of new keys, checked HSETs,
writes pipelined on a standalone Redis; ClusterPipeline on a cluster."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.materialize.encode import EncodedRows, _buffer_bytes, _lb
from pipelines.materialize.redis_io import RedisWriter, _ReplyStream
from store import redis_dump
from store import redis_layout as rl
from store.resp import bulk, command_head

IN_FLIGHT = 2  # chunks of writes queued in a standalone Redis


def _stale(enc: EncodedRows, prev: Sequence[bytes | None] | pa.Array) -> np.ndarray:
    """Feast's staleness rule (RedisOnlineStore.online_write_batch) for the chunk's rows
    given their stored ``_ts`` values: True where the row must NOT be written, i.e. Redis
    holds a non-zero event time at least as new as the row's. Stored times are decoded
    vectorized (``_timestamp_nanos``); bytes in another layout go to the scalar decoder,
    which raises on garbage."""
    stored = prev if isinstance(prev, pa.Array) else pa.array(prev, type=pa.binary())
    present = pc.binary_length(stored).fill_null(0).to_numpy(zero_copy_only=False) > 0
    if not present.any():
        return np.zeros(len(stored), dtype=bool)  # no key of this chunk has the view yet
    nanos, decoded = _timestamp_nanos(stored)
    latest = np.maximum(nanos, 0)
    stale = present & decoded & (latest != 0) & (enc.ts_nanos <= latest)
    for j in np.flatnonzero(present & ~decoded).tolist():
        scalar = max(rl.decode_timestamp_nanos(stored[j].as_py()), 0)
        stale[j] = scalar != 0 and int(enc.ts_nanos[j]) <= scalar
    return stale


def _timestamp_nanos(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Nanoseconds since the epoch of google.protobuf.Timestamp bytes, as
    ``rl.decode_timestamp_nanos`` (b"" or null: 0), vectorized for the layouts proto3
    writes: [0x08 varint seconds][0x10 varint nanos], each optional. Returns (values,
    decoded); rows in any other layout, or with seconds beyond int64 nanoseconds, are not
    decoded (value 0)."""
    n = len(arr)
    width = 24  # the longest such layout is 1 + 10 + 1 + 10 bytes
    length = pc.binary_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    mat = np.zeros((n, width), dtype=np.uint8)
    used = np.arange(width) < np.minimum(length, width)[:, None]
    if used.any():
        offsets, data = redis_dump.cells(arr)
        mat[used] = data[(offsets[:-1, None] + np.arange(width))[used]]
    rows = np.arange(n)
    pos = np.zeros(n, dtype=np.int64)
    decoded = length <= width - 2
    fields = []
    for tag in (0x08, 0x10):
        has = (pos < length) & (mat[rows, np.minimum(pos, width - 1)] == tag)
        value = np.zeros(n, dtype=np.uint64)
        at, going = pos + 1, has.copy()
        for k in range(10):  # varint: 7 bits per byte, low first, high bit = more follow
            byte = mat[rows, np.minimum(at, width - 1)].astype(np.uint64)
            value |= np.where(going, (byte & np.uint64(0x7F)) << np.uint64(7 * k), 0)
            at = np.where(going, at + 1, at)
            going &= byte >= 0x80
        decoded &= ~going
        pos = np.where(has, at, pos)
        fields.append(np.where(has, value.view(np.int64), 0))
    seconds, nanos = fields
    decoded &= (pos == length) & (np.abs(seconds) < 9 * 10**9) & (np.abs(nanos) < 10**17)
    return np.where(decoded, seconds * 1_000_000_000 + nanos, 0), decoded


def _hset_payload(
    enc: EncodedRows, commands: pa.Array, keep: np.ndarray | None, expire: bytes | None
) -> tuple[bytes | memoryview, int]:
    """RESP HSET (+ EXPIRE) commands of the chunk, given its ``enc.commands()`` (only
    ``keep`` rows if given), as one contiguous buffer; returns (payload, number of
    replies)."""
    key_bulks = enc.key_bulks
    if keep is not None:
        key_bulks, commands = key_bulks.filter(pa.array(keep)), commands.filter(pa.array(keep))
    n = len(commands)
    if n == 0:
        return b"", 0
    if expire:
        parts = [commands, _lb(command_head(b"EXPIRE", 2)), key_bulks, _lb(expire), _lb(b"")]
        commands = pc.binary_join_element_wise(*parts)
    return _buffer_bytes(commands), n * (2 if expire else 1)


def _exists_payload(enc: EncodedRows) -> bytes:
    """One ``EXISTS key...`` of the chunk: a single reply, and ~4x less Redis time than
    the HGETs when (as in a first materialization) no key exists yet."""
    head = command_head(b"EXISTS", len(enc))
    return b"".join([head, _buffer_bytes(enc.key_bulks)])


def _hget_payload(enc: EncodedRows) -> bytes | memoryview:
    parts = [_lb(command_head(b"HGET", 2)), enc.key_bulks, _lb(bulk(enc.ts_field))]
    return _buffer_bytes(pc.binary_join_element_wise(*parts, _lb(b"")))


def write_encoded(
    writer: RedisWriter,
    chunks: Iterable[EncodedRows],
    ttl_seconds: int | None,
    skip_dedup: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write chunks of encoded rows with Feast's staleness rule; returns (written, skipped).

    Standalone Redis: ``_write_pipelined`` on one connection, creating new keys with
    RESTORE where the server allows it (``RedisWriter.restore_limits``). A Redis Cluster
    goes through redis-py's ClusterPipeline. ``progress(keys)`` is called as chunks' writes
    are acknowledged.
    """
    if writer.cluster:
        return _write_cluster(writer, chunks, ttl_seconds, skip_dedup, progress)
    restore = None
    if writer.restore_limits is not None:
        restore = _Restore((ttl_seconds or 0) * 1000, *writer.restore_limits)
    expire = bulk(str(ttl_seconds).encode()) if ttl_seconds else None
    conn = writer.connection()
    try:
        return _write_pipelined(
            writer,
            conn,
            _ReplyStream(conn),
            iter(chunks),
            expire,
            skip_dedup,
            progress,
            restore,
        )
    except writer.errors as exc:
        conn.disconnect()
        raise writer.unavailable(exc) from exc
    except BaseException:
        conn.disconnect()  # unread replies may be left on the socket
        raise
    finally:
        writer.client.connection_pool.release(conn)


@dataclass
class _Restore:
    """How new keys are created with RESTORE: the expiry argument (ms, 0 for none) and the
    server's hash-max-listpack-entries and -value."""

    ttl_ms: int
    max_entries: int
    max_value: int


class How(Enum):
    """How a lined-up chunk is written."""

    RESTORE = "restore"  # RESTORE every key unprobed (new keys expected)
    UNCHECKED = "unchecked"  # HSET every row unprobed (--skip-dedup)
    EXISTS = "exists"  # probed by one EXISTS of its keys
    HGET = "hget"  # probed by the HGETs of every key's stored _ts


def _write_pipelined(
    writer: RedisWriter,
    conn: Any,
    replies: _ReplyStream,
    pull: Iterator[EncodedRows],
    expire: bytes | None,
    skip_dedup: bool,
    progress: Callable[[int], None] | None,
    restore: _Restore | None,
) -> tuple[int, int]:
    """Chunks written with at most ``IN_FLIGHT`` chunks of writes queued in Redis; returns
    (written, skipped). See :class:`_Pipelined` and docs/materialize.md."""
    run = _Pipelined(writer, conn, replies, expire, skip_dedup, progress, restore)
    return run.run(pull)


class _Pipelined:
    """One standalone-Redis write of a stream of chunks.

    Once a chunk's keys turn out to be all new (its EXISTS finds none), chunks are written
    without any read: RESTORE (``redis_dump``) creates each key that is new and answers
    BUSYKEY for one that exists, whose row then takes the checked path below. Once more
    than a tenth of a chunk exists, or the server refuses RESTORE, later chunks are
    checked first again. (The first chunks are always checked: a rerun, or a view whose
    entity another view already wrote, then sends no RESTORE in vain.)

    A checked chunk's staleness read (its probe) goes out two chunks ahead: the wire
    carries the probes of chunks 0 and 1, then per chunk i its writes and the probe of
    chunk i + 2 (pulled, so key-encoded, only after chunk i's writes are sent). Chunk i's
    writes go out once its probe is answered, which follows chunk i - 2's write replies:
    so the writes of chunk i - 1 are still queued in Redis while Python encodes and sends
    chunk i. (A probe cannot see writes of this run: one row per entity, so the chunks'
    keys are distinct.) The probe is one EXISTS of the chunk's keys while chunks come back
    without any stored ``_ts``, else the HGETs of ``_ts`` (keys come in runs). An EXISTS that
    finds no key lets the chunk be restored; one that finds keys is followed by the
    HGETs, and only rows newer than what Redis holds are written, with HSET.
    """

    def __init__(
        self,
        writer: RedisWriter,
        conn: Any,
        replies: _ReplyStream,
        expire: bytes | None,
        skip_dedup: bool,
        progress: Callable[[int], None] | None,
        restore: _Restore | None,
    ) -> None:
        self.writer, self.conn, self.replies = writer, conn, replies
        self.expire, self.skip_dedup, self.progress = expire, skip_dedup, progress
        self.restore = restore
        self.wire: deque[tuple[str, Any]] = deque()  # replies due: (kind, what), in order
        self.ahead: deque[tuple[EncodedRows, How]] = deque()  # chunks lined up to write
        self.answers: dict[int, tuple[str, Any]] = {}  # id(chunk) -> its probe's answer
        self.written = self.skipped = self.unacked = 0
        self.optimistic = False  # restore chunks unprobed (the last checked one was all new)
        self.hget_next = False  # probe the next chunk with HGETs (the last one held stored keys)

    def run(self, pull: Iterator[EncodedRows]) -> tuple[int, int]:
        for enc in itertools.islice(pull, IN_FLIGHT):
            self.line_up(enc)
        while self.ahead or self.wire:
            if not self.ahead:  # replies may still line up rows RESTORE did not create
                self.consume()
                continue
            enc, how = self.ahead.popleft()
            if how is How.RESTORE:
                if self.restore is None:  # refused meanwhile
                    self.line_up(enc, hget=False)
                else:
                    self.write_restore(enc)
            elif how is How.UNCHECKED:
                self.write_hset(enc, None)
            else:
                self.write_checked(enc, how)
            following = next(pull, None)  # keys encoded (its part reduced) while Redis writes
            if following is not None:
                self.line_up(following)
        return self.written, self.skipped

    def write_checked(self, enc: EncodedRows, how: How) -> None:
        """A probed chunk: restored if none of its keys exists, else only its rows newer
        than what Redis holds, with HSET."""
        # HSETs encoded while Redis applies the chunks in flight (unless to be restored)
        commands = enc.commands() if how is How.HGET or self.restore is None else None
        kind, found = self.answer(enc)
        if kind == "exists" and found:  # some key exists: read every key's _ts
            self.probe(enc, True)
            kind, found = self.answer(enc)
        stored = found if kind == "hget" else None  # None: no key holds the view
        self.hget_next = stored is not None
        if kind == "exists" and self.restore is not None:
            self.optimistic = True
            self.write_restore(enc)
            return
        stale = None if stored is None else _stale(enc, stored)
        keep = None if stale is None or not stale.any() else ~stale
        self.write_hset(enc, keep, commands)

    def consume(self) -> None:
        kind, what = self.wire.popleft()
        if kind == "ack":
            self.unacked -= 1
            _acknowledge(self.replies, what, self.progress)
        elif kind == "restored":
            self.unacked -= 1
            self.restored(what)
        elif kind == "exists":
            self.answers[id(what)] = (kind, self.replies.integer())
        else:
            self.answers[id(what)] = (kind, self.replies.hget_values(len(what)))

    def restored(self, enc: EncodedRows) -> None:
        """RESTORE replies of a chunk: rows it did not create go on as a new, checked
        chunk."""
        failed, texts = self.replies.statuses(len(enc))
        self.written += len(enc) - len(failed)
        if self.progress and len(enc) > len(failed):
            self.progress(len(enc) - len(failed))
        if not len(failed):
            return
        refused = [t for t in texts if not t.startswith("BUSYKEY")]
        if refused:  # e.g. NOPERM, or a server that does not load this payload version
            self.writer.restore_refused, self.restore = refused[0], None
        if (len(failed) - len(refused)) * 10 > len(enc) or refused:
            self.optimistic = False
        self.line_up(enc.take(failed), hget=len(refused) < len(failed))

    def probe(self, enc: EncodedRows, hget: bool) -> None:
        if hget:
            self.writer.send(self.conn, _hget_payload(enc))
            self.wire.append(("hget", enc))
        else:
            self.writer.send(self.conn, _exists_payload(enc))
            self.wire.append(("exists", enc))

    def answer(self, enc: EncodedRows) -> tuple[str, Any]:
        while id(enc) not in self.answers:
            self.consume()
        return self.answers.pop(id(enc))

    def line_up(self, enc: EncodedRows, hget: bool | None = None) -> None:
        """Queue a chunk to write: unprobed while optimistic (``hget`` None), else probed
        (by HGETs if ``hget``, by EXISTS if False, as the last chunk suggests if None)."""
        if self.skip_dedup:
            unprobed = hget is None and self.restore
            self.ahead.append((enc, How.RESTORE if unprobed else How.UNCHECKED))
        elif hget is None and self.optimistic:
            self.ahead.append((enc, How.RESTORE))
        else:
            hget = self.hget_next if hget is None else hget
            self.probe(enc, hget)
            self.ahead.append((enc, How.HGET if hget else How.EXISTS))

    def send_writes(self, payload: bytes | memoryview, due: tuple[str, Any]) -> None:
        while self.unacked >= IN_FLIGHT:
            self.consume()
        self.writer.send(self.conn, payload)
        self.wire.append(due)
        self.unacked += 1

    def write_hset(
        self, enc: EncodedRows, keep: np.ndarray | None, commands: pa.Array | None = None
    ) -> None:
        commands = enc.commands() if commands is None else commands
        payload, n_replies = _hset_payload(enc, commands, keep, self.expire)
        if n_replies:
            self.send_writes(payload, ("ack", (len(enc), n_replies)))
        elif self.progress:
            self.progress(len(enc))
        kept = len(enc) if keep is None else int(keep.sum())
        self.written += kept
        self.skipped += len(enc) - kept

    def write_restore(self, enc: EncodedRows) -> None:
        assert self.restore is not None
        payload = enc.restores(
            self.restore.ttl_ms, self.restore.max_entries, self.restore.max_value
        )
        self.send_writes(payload, ("restored", enc))


def _acknowledge(
    replies: _ReplyStream, unacked: tuple[int, int], progress: Callable[[int], None] | None
) -> None:
    """Read the replies of the chunk in flight (``(keys, replies)``), then report it."""
    keys, n_replies = unacked
    replies.lines(n_replies)
    if keys and progress:
        progress(keys)


def _write_cluster(
    writer: RedisWriter,
    chunks: Iterable[EncodedRows],
    ttl_seconds: int | None,
    skip_dedup: bool,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """Redis Cluster: redis-py's ClusterPipeline routes every key to its slot's node."""
    written = skipped = 0
    for enc in chunks:
        names = [enc.ts_field, *enc.fields]
        keys = enc.key_list()
        keep = np.ones(len(enc), dtype=bool)
        if not skip_dedup:
            keep = ~_stale(enc, writer.hget_many(keys, enc.ts_field))
        columns = [a.to_pylist() for a in [enc.ts_values(), *enc.values()]]
        rows = np.flatnonzero(keep).tolist()
        writer.hset_many(
            [keys[j] for j in rows],
            [dict(zip(names, [c[j] for c in columns], strict=True)) for j in rows],
            ttl_seconds,
        )
        written += len(rows)
        skipped += len(enc) - len(rows)
        if progress:
            progress(len(enc))
    return written, skipped
