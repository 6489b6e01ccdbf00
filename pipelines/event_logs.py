"""The logs ``skewless stream`` reads raw events from: a Redis stream or a NATS JetStream
stream, behind one small interface (:class:`EventLog`).

Each entry is one raw event, its columns as JSON (timestamps ISO-8601 with a zone, or epoch
microseconds); :meth:`EventLog.append` writes that form. An *offset* is a string naming one
entry: the Redis entry id (``<ms>-<seq>``) or the JetStream stream sequence (decimal). A
micro-batch is the offset range ``(start, end]``; reading a range again gives the same
entries (nothing here trims or acknowledges: the log is the user's), which is what makes the
streaming job exactly-once in effect after a restart.

Redis
    ``XADD <stream> * e <event as JSON>``; ranges are read with ``XRANGE``; the append time
    is the entry id's milliseconds.
NATS JetStream
    a message whose body is the event's JSON, on any subject of the stream, or on the
    subjects matching a filter (``--subject orders.*``: a stream often holds other
    messages too; :meth:`append` creates the stream with one subject of its name when it
    is missing); ranges are read with an ephemeral pull consumer that starts at
    ``start + 1`` and acknowledges nothing;
    the append time is the stream's timestamp of the message. Sequences of deleted
    messages are skipped. The stream must have retention ``limits``: under ``interest``
    or ``workqueue`` a read message may be removed, and a batch re-read after a restart
    would not hold the same events (:meth:`JetStreamLog.last` refuses such a stream).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import urlparse

import orjson

from transforms.errors import ConfigError

__all__ = [
    "EventLog",
    "JetStreamLog",
    "RedisStreamLog",
    "append_events",
    "encode_event",
    "log_kind",
    "nats_answers",
    "open_log",
]

FIELD = b"e"  # the Redis entry's field holding the event
PAGE = 10_000  # entries per XRANGE call / per JetStream fetch
MIN_PART = 5_000  # entries per JetStream range read in parallel
_T = TypeVar("_T")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_event(row: Mapping[str, Any]) -> bytes:
    """One raw event as the JSON a log entry holds."""
    return orjson.dumps(dict(row), default=_json_default)


class EventLog(Protocol):
    """A log of raw events read by offset ranges (see the module doc)."""

    url: str  # where the log is (redis://... or nats://...)
    stream: str  # the stream's name in it

    def initial(self) -> str:
        """The offset before the first entry."""

    def last(self) -> str | None:
        """The offset of the newest entry, None when the log is empty."""

    def end_after(self, start: str, count: int) -> str:
        """The offset ending a batch of at most ``count`` entries after ``start``
        (``start`` itself when none follows)."""

    def read(self, start: str, end: str) -> Iterator[tuple[str, int, bytes]]:
        """(offset, append time in ms since the epoch, event JSON) of the entries in
        ``(start, end]``, in log order."""

    def split(self, start: str, end: str, parts: int) -> list[tuple[str, str]]:
        """``(start, end]`` as at most ``parts`` consecutive ranges, read in parallel."""

    def append(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        """Append raw events, one entry each; returns their offsets."""

    def order(self, offset: str) -> tuple[int, int]:
        """A key that sorts offsets in log order."""

    def close(self) -> None:
        """Release the connection (also on leaving a ``with`` block)."""

    def __enter__(self) -> EventLog: ...

    def __exit__(self, *exc: object) -> None: ...

    def delete(self) -> None:
        """Delete the stream (tests and benchmarks delete the streams they made)."""


def log_kind(url: str) -> str:
    """``nats`` for a ``nats://`` (or ``tls://``) URL, ``redis`` for ``redis://``,
    ``rediss://`` and ``unix://``; ConfigError otherwise."""
    scheme = urlparse(url).scheme
    if scheme in ("nats", "tls"):
        return "nats"
    if scheme in ("redis", "rediss", "unix"):
        return "redis"
    raise ConfigError(f"log URL '{url}': scheme '{scheme}' is neither redis:// nor nats://")


def nats_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to the NATS server at ``url`` opens (tests and benchmarks
    skip the JetStream cases, saying so, when it does not)."""
    import socket

    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout_s):
            return True
    except OSError:
        return False


def open_log(url: str, stream: str, subject: str | None = None) -> EventLog:
    """The log at ``url`` (:func:`log_kind` picks Redis or NATS JetStream), stream ``stream``;
    ``subject`` filters a JetStream stream's messages (NATS subject wildcards)."""
    if not stream:
        raise ConfigError("the stream name is required")
    if log_kind(url) == "nats":
        return JetStreamLog(url, stream, subject)
    if subject:
        raise ConfigError("a subject filter applies to NATS JetStream only (--log-url nats://)")
    return RedisStreamLog(url, stream)


# ---------------------------------------------------------------------- Redis streams


def append_events(client: Any, stream: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Append raw events to the Redis stream ``stream`` over a redis-py client (one entry
    each, pipelined); returns their entry ids."""
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.xadd(stream, {FIELD: encode_event(row)})
    return [i.decode() if isinstance(i, bytes) else str(i) for i in pipe.execute()]


def _after(entry_id: str) -> str:
    """The exclusive XRANGE bound just after ``entry_id``."""
    return "(" + entry_id


class _Closing:
    """``with open_log(...) as log:`` closes the log at the end of the block."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisStreamLog(_Closing):
    """A Redis stream of raw events (``XADD <stream> * e <json>``)."""

    def __init__(self, url: str, stream: str) -> None:
        import redis

        self.url = url
        self.stream = stream
        self.client: Any = redis.Redis.from_url(url)

    def initial(self) -> str:
        return "0-0"

    def last(self) -> str | None:
        got = self.client.xrevrange(self.stream, "+", "-", count=1)
        return got[0][0].decode() if got else None

    def end_after(self, start: str, count: int) -> str:
        got = self.client.xrange(self.stream, _after(start), "+", count=count)
        return got[-1][0].decode() if got else start

    def read(self, start: str, end: str) -> Iterator[tuple[str, int, bytes]]:
        lower = _after(start)
        while True:
            page = self.client.xrange(self.stream, lower, end, count=PAGE)
            for entry_id, fields in page:
                eid = entry_id.decode()
                yield eid, int(eid.split("-", 1)[0]), bytes(fields[FIELD])
            if len(page) < PAGE:
                return
            lower = _after(page[-1][0].decode())

    def split(self, start: str, end: str, parts: int) -> list[tuple[str, str]]:
        """One range: entry ids cannot be cut without reading (and XRANGE is fast)."""
        del parts
        return [(start, end)]

    def append(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return append_events(self.client, self.stream, rows)

    def order(self, offset: str) -> tuple[int, int]:
        ms, _, seq = offset.partition("-")
        return int(ms), int(seq or 0)

    def close(self) -> None:
        self.client.close()

    def delete(self) -> None:
        self.client.delete(self.stream)


# ---------------------------------------------------------------------- NATS JetStream


class _Connection:
    """A private event loop and the NATS connection opened on it (nats-py is asynchronous)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.nc: Any = None

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        if self.loop is None:
            return
        if self.nc is not None:
            self.loop.run_until_complete(self.nc.close())
            self.nc = None
        self.loop.close()
        self.loop = None


class JetStreamLog(_Closing):
    """A NATS JetStream stream of raw events (message body = the event's JSON).

    nats-py is asynchronous: the log runs its calls on a private event loop over one
    connection, opened on first use."""

    def __init__(
        self, url: str, stream: str, subject: str | None = None, timeout_s: float = 5.0
    ) -> None:
        self.url = url
        self.stream = stream
        self.subject = subject or None
        self.timeout = timeout_s
        self._conn = _Connection()
        # closed when the log is garbage-collected or the interpreter exits, if not before
        self._finalizer = weakref.finalize(self, self._conn.close)

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._conn.run(coro)

    async def _js(self) -> Any:
        if self._conn.nc is not None and self._conn.nc.is_closed:
            self._conn.nc = None  # lost (a NATS restart): connect again
        if self._conn.nc is None:
            import nats

            async def quiet(exc: Exception) -> None:  # errors are raised, not logged
                del exc

            if not nats_answers(self.url, self.timeout):
                raise ConfigError(f"NATS at {self.url} cannot be reached")
            try:
                self._conn.nc = await asyncio.wait_for(
                    nats.connect(
                        self.url,
                        connect_timeout=self.timeout,
                        allow_reconnect=False,
                        max_reconnect_attempts=0,
                        error_cb=quiet,
                    ),
                    self.timeout,
                )
            except Exception as exc:  # nats-py raises several unrelated types here
                raise ConfigError(f"NATS at {self.url} cannot be reached: {exc!r}") from None
        return self._conn.nc.jetstream()

    async def _last_seq(self) -> int:
        from nats.js.errors import NotFoundError

        js = await self._js()
        try:
            info = await js.stream_info(self.stream)
        except NotFoundError:
            raise ConfigError(f"NATS JetStream has no stream '{self.stream}'") from None
        retention = getattr(info.config.retention, "value", info.config.retention)
        if retention not in (None, "limits"):
            raise ConfigError(
                f"NATS JetStream stream '{self.stream}' has retention '{retention}': the "
                "streaming job re-reads a micro-batch after a restart, so the stream must "
                "keep what was read (retention 'limits')"
            )
        return int(info.state.last_seq)

    def initial(self) -> str:
        return "0"

    def last(self) -> str | None:
        seq = self._run(self._last_seq())
        return str(seq) if seq else None

    def end_after(self, start: str, count: int) -> str:
        return str(min(self._run(self._last_seq()), int(start) + count))

    def read(self, start: str, end: str) -> Iterator[tuple[str, int, bytes]]:
        lo, hi = int(start), int(end)
        while lo < hi:
            page = self._run(self._fetch(lo, hi))
            if not page:
                return
            yield from page
            lo = int(page[-1][0])

    def split(self, start: str, end: str, parts: int) -> list[tuple[str, str]]:
        """Sequence ranges of at least :data:`MIN_PART` entries each (nats-py spends about
        60 µs of Python per message, so a long range is read by several workers)."""
        lo, hi = int(start), int(end)
        k = max(1, min(parts, (hi - lo) // MIN_PART))
        cuts = [lo + (hi - lo) * i // k for i in range(k + 1)]
        return [(str(a), str(b)) for a, b in zip(cuts, cuts[1:], strict=False)]

    async def _fetch(self, start: int, end: int) -> list[tuple[str, int, bytes]]:
        """Entries ``(start, end]``, at most :data:`PAGE` of them, by one ephemeral pull
        consumer (no acknowledgements: the log is left as it is)."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = await self._js()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
            filter_subject=self.subject,
        )
        info = await js.add_consumer(self.stream, config=config)  # ephemeral
        if not info.num_pending:  # nothing (matching) from start + 1 on
            await js.delete_consumer(self.stream, info.name)
            return []
        sub = await js.pull_subscribe_bind(stream=self.stream, name=info.name)
        out: list[tuple[str, int, bytes]] = []
        try:
            while len(out) < PAGE:
                want = min(PAGE - len(out), end - start - len(out))
                if want <= 0:
                    break
                try:
                    msgs = await sub.fetch(want, timeout=min(1.0, self.timeout))
                except NatsTimeout:
                    break  # the rest of the range was deleted
                for m in msgs:
                    meta = m.metadata
                    seq = int(meta.sequence.stream)
                    if seq > end:
                        return out
                    ms = int(meta.timestamp.timestamp() * 1000)
                    out.append((str(seq), ms, bytes(m.data)))
                    if not meta.num_pending:  # the last (matching) message of the stream
                        return out
                if out and int(out[-1][0]) >= end:
                    break
        finally:
            await sub.unsubscribe()
            await js.delete_consumer(self.stream, info.name)
        return out

    def append(self, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        return self._run(self._append([encode_event(r) for r in rows]))

    async def _append(self, payloads: Sequence[bytes]) -> list[str]:
        from nats.js.errors import NotFoundError

        js = await self._js()
        try:
            info = await js.stream_info(self.stream)
            subject = self.subject or (info.config.subjects or [self.stream])[0]
        except NotFoundError:
            subject = self.subject or self.stream
            await js.add_stream(name=self.stream, subjects=[subject])
        out: list[str] = []
        for lo in range(0, len(payloads), 1000):  # acknowledgements awaited per 1,000
            futures = [
                await js.publish_async(subject, p, stream=self.stream)
                for p in payloads[lo : lo + 1000]
            ]
            acks = await asyncio.gather(*futures)
            out += [str(a.seq) for a in acks]
        return out

    def order(self, offset: str) -> tuple[int, int]:
        return int(offset), 0

    def close(self) -> None:
        self._finalizer()

    def delete(self) -> None:
        """Delete the stream (tests and benchmarks delete the streams they made)."""
        from nats.js.errors import NotFoundError

        async def go() -> None:
            js = await self._js()
            try:
                await js.delete_stream(self.stream)
            except NotFoundError:
                pass

        self._run(go())
