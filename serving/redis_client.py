"""A minimal pipelining Redis client for the lookup path: asyncio Protocol + hiredis.

Why not redis.asyncio: profiling ``bench.serving`` showed redis-py's ``pack_command`` (it
re-encodes every argument of every command) at ~40% of a 100 entity x 50 feature request
and its pipeline/pool/timeout machinery at ~100 us of a 1-entity request. Here the HMGET
bytes are prebuilt per plan (:func:`store.resp.hmget_parts`), so a request costs one
``bytes`` join per key, one ``transport.write`` and hiredis parsing in C. It also keeps
redis-py (~200 ms of imports) out of the server's start-up.

One connection per process carries every concurrent request (Redis answers in order, so
replies are matched to waiters first-in first-out): fewer syscalls than a pool, and the
commands of requests parsed in the same event-loop iteration go out in one write. Failure semantics:

* connect refused / reset / EOF: every waiting request fails with StoreUnavailable, the
  connection is dropped and the next request reconnects;
* a reply slower than ``timeout_s``: the oldest waiter's deadline is checked by one timer
  (armed only when idle -> busy, so no per-request timer), and the connection is dropped
  and all waiters fail -- dropping it is what keeps later replies from being matched to
  the wrong request. A deadline found passed is looked at once more after the loop has
  polled the socket (:data:`GRACE_S` later): when the loop itself stalled (a GC pause, a
  long parse), the timer runs before the reader and the reply may be sitting unread --
  that is our stall, not a slow Redis, and must not turn a served request into a 503;
* an error reply (WRONGTYPE, NOAUTH, ...) fails that request only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis

from store.resp import command
from transforms.errors import StoreUnavailable

__all__ = ["RedisPipeline"]

_ReplyError = hiredis.ReplyError
_PING = command("PING")
GRACE_S = 0.001  # one poll of the socket before a passed deadline fails the connection


class _Waiter:
    __slots__ = ("deadline", "future", "count", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, deadline: float) -> None:
        self.future = future
        self.count = count
        self.deadline = deadline
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RedisPipeline, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop  # kept: asyncio.get_running_loop() costs a getpid() syscall
        self.reader = hiredis.Reader()
        self.waiters: deque[_Waiter] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.outbox: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def queue(self, payload: bytes) -> None:
        """Write ``payload`` at the end of this loop iteration, in one write with the
        commands other requests queue meanwhile: under concurrency one syscall carries
        many requests' commands; alone, a request waits one loop hop (microseconds)."""
        outbox = self.outbox
        outbox.append(payload)
        if len(outbox) == 1:
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        outbox = self.outbox
        if outbox and not self.closed and self.transport is not None:
            self.transport.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))
            # the clock runs from the write: a loop stall before it is not Redis's delay
            deadline = self.loop.time() + self.owner.timeout_s
            waiters = self.waiters
            for i in range(1, min(len(outbox), len(waiters)) + 1):
                waiters[-i].deadline = deadline
        outbox.clear()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        while waiters:
            w = waiters[0]
            replies = w.replies
            need = w.count
            while len(replies) < need:
                reply = reader.gets()
                if reply is False:
                    return
                replies.append(reply)
            waiters.popleft()
            if not w.future.done():
                for r in replies:
                    if type(r) is _ReplyError:
                        w.future.set_exception(StoreUnavailable(f"online store error: {r}"))
                        break
                else:
                    w.future.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"connection lost: {exc or 'closed by server'}")

    def fail(self, message: str) -> None:
        self.closed = True
        if self.owner.proto is self:
            self.owner.proto = None
        while self.waiters:
            w = self.waiters.popleft()
            if not w.future.done():
                w.future.set_exception(StoreUnavailable(f"online store unavailable: {message}"))
        if self.transport is not None:
            self.transport.abort()


class RedisPipeline:
    """Sends prebuilt RESP commands over one connection; see the module doc."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout_s: float,
        db: int = 0,
        password: str | None = None,
        username: str | None = None,
        ssl: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self.db, self.password, self.username, self.ssl = db, password, username, ssl
        self.proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired: _Waiter | None = None  # a head waiter seen past its deadline once

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = fut = loop.create_future()
        try:
            async with asyncio.timeout(self.timeout_s):
                _, proto = await loop.create_connection(
                    lambda: _Protocol(self, loop), self.host, self.port, ssl=self.ssl or None
                )
                hello = []
                if self.password:
                    user = [self.username] if self.username else []
                    hello.append(command("AUTH", *user, self.password))
                if self.db:
                    hello.append(command("SELECT", self.db))
                if hello:
                    replies = await self._send(proto, b"".join(hello), len(hello))
                    for r in replies:
                        if isinstance(r, hiredis.ReplyError):
                            proto.fail(f"handshake: {r}")
                            raise StoreUnavailable(f"online store unavailable: {r}")
            self.proto = proto
            fut.set_result(proto)
            return proto
        except StoreUnavailable as exc:
            fut.set_exception(exc)
            raise
        except Exception as exc:  # refused, timeout, DNS, TLS: all mean "unavailable"
            err = StoreUnavailable(f"online store unavailable: {type(exc).__name__}: {exc}")
            fut.set_exception(err)
            raise err from None
        finally:
            self._connecting = None
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark retrieved: no "exception was never retrieved" warnings

    def _send(self, proto: _Protocol, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        loop = proto.loop
        fut: asyncio.Future[list[Any]] = loop.create_future()
        deadline = loop.time() + self.timeout_s
        proto.waiters.append(_Waiter(fut, count, deadline))
        proto.queue(payload)
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        return fut

    def _check_deadline(self) -> None:
        self._timer = None
        proto = self.proto
        if proto is None or not proto.waiters:
            return
        loop = proto.loop
        head = proto.waiters[0]
        now = loop.time()
        if head.deadline > now:
            self._timer = loop.call_at(head.deadline, self._check_deadline)
        elif self._expired is not head:  # let the reader run first: the reply may be here
            self._expired = head
            self._timer = loop.call_at(now + GRACE_S, self._check_deadline)
        else:
            self._expired = None
            proto.fail(f"no reply within {self.timeout_s * 1000:.0f} ms")

    def submit(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        """Send ``count`` pipelined commands (already RESP-encoded); the future resolves to
        their replies, or fails with StoreUnavailable (no connection, timeout, error reply).

        Connected (the usual case), the bytes are written before this returns and the
        future is a plain one completed by the reader: no task per request.
        """
        proto = self.proto
        if proto is None or proto.closed:
            return asyncio.ensure_future(self._connect_and_send(payload, count))
        return self._send(proto, payload, count)

    async def _connect_and_send(self, payload: bytes, count: int) -> list[Any]:
        return await self._send(await self._connect(), payload, count)

    async def execute(self, payload: bytes, count: int) -> list[Any]:
        """:meth:`submit` as a coroutine."""
        return await self.submit(payload, count)

    def submit_ping(self) -> asyncio.Future[bool]:
        """A future resolving to whether Redis answers PING (never fails)."""
        return asyncio.ensure_future(self.ping())

    async def ping(self) -> bool:
        try:
            reply: bytes = (await self.execute(_PING, 1))[0]
            return reply == b"PONG"
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        proto = self.proto
        if proto is not None:
            proto.fail("client closed")
