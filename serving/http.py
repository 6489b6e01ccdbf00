"""The HTTP/1.1 front of ``skewless serve``: an asyncio Protocol over httptools' C parser.

Why not uvicorn: under uvicorn the lookup itself was ~40% of a 1-entity request; the rest
was the ASGI layer (scope dicts, header lists, receive/send coroutines, one task per
request). Here a parsed request goes straight to :meth:`serving.app.LookupApp.handle`, which
writes the Redis commands before returning. The requests whose Redis replies arrive
together are then answered together one loop hop later (:meth:`ServerState.drain`), so their
request-time transforms run as one batch. Per request: no task, no ASGI messages, one
``transport.write``.

HTTP behaviour: keep-alive (HTTP/1.1 default, ``Connection: close`` honoured, HTTP/1.0
closes unless keep-alive is asked for); pipelined requests on one connection are answered
in order (reading pauses while a backlog waits); ``Content-Length`` above ``max_body_bytes``
is refused with 413 before the body is read, a request target over 8 KiB with 414; a
malformed request gets a 400 JSON body and the connection is closed; a connection idle (or
with a request that stops arriving) for ``keep_alive_s`` is closed. Responses carry
``content-type`` and ``content-length`` only.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from collections import deque
from functools import partial
from typing import Any

import httptools

from serving.app import (
    HTTPError,
    LookupApp,
    Pending,
    Reply,
    check_content_length,
    endpoint_label,
    error_body,
)

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    422: b"Unprocessable Content",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_MAX_BACKLOG = 16  # pipelined requests queued per connection before reading pauses
_MAX_URL = 8192
_MAX_AUTH = 4096


def _internal_error() -> Reply:
    """A bug, not bad input: log the traceback, answer 500 with a JSON body."""
    traceback.print_exc(file=sys.stderr)
    return 500, b"application/json", error_body("internal error (logged by the server)", None)


def _complete_one(pending: Pending) -> Reply:
    try:
        return pending.complete()
    except Exception:
        return _internal_error()


class ServerState:
    """Connections of one server process (idle sweep, graceful shutdown)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: LookupApp) -> None:
        self.loop = loop
        self.app = app
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self.all_closed = asyncio.Event()
        # requests whose Redis replies came in, answered together at the next loop hop
        self.completed: list[tuple[HttpProtocol, Pending, str, bool, float]] = []

    def complete(
        self, conn: HttpProtocol, pending: Pending, path: str, alive: bool, t0: float, _f: object
    ) -> None:
        """Queue a request whose Redis reply arrived (the done callback of its future
        ``_f``). The replies of one Redis read resolve their futures in one loop iteration,
        so every request they answer is queued before :meth:`drain` runs and their
        transforms run as one batch (:meth:`LookupApp.complete_many`)."""
        completed = self.completed
        completed.append((conn, pending, path, alive, t0))
        if len(completed) == 1:
            self.loop.call_soon(self.drain)

    def drain(self) -> None:
        done, self.completed = self.completed, []
        try:
            replies = self.app.complete_many([d[1] for d in done])
        except Exception:  # a bug: answer each request alone, so only its own gets a 500
            replies = [_complete_one(d[1]) for d in done]
        for (conn, _, path, alive, t0), reply in zip(done, replies, strict=True):
            conn._respond(reply, path, alive, t0)

    async def sweep_idle(self, timeout_s: float) -> None:
        """Close connections with nothing in flight and no complete request for
        ``timeout_s``: idle keep-alive connections and requests that never finish arriving
        (slow or stalled clients), so they cannot pile up and exhaust file descriptors."""
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 2))
            cutoff = self.loop.time() - timeout_s
            for conn in list(self.connections):
                if not conn.busy and conn.last < cutoff and conn.transport is not None:
                    conn.transport.close()

    def discard(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)
        if self.closing and not self.connections:
            self.all_closed.set()


class HttpProtocol(asyncio.Protocol):
    """One client connection; see the module doc."""

    __slots__ = (
        "app",
        "state",
        "limit",
        "transport",
        "parser",
        "url",
        "auth",
        "body",
        "size",
        "rejected",
        "dispatched",
        "busy",
        "backlog",
        "paused",
        "last",
    )

    def __init__(self, app: LookupApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.limit = app.config.max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.auth: bytes | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.rejected: HTTPError | None = None
        self.dispatched = False  # answered at headers-complete (too large), body ignored
        self.busy = False
        self.backlog: deque[tuple[str, str, bytes | None, bytes, bool, Any]] = deque()
        self.paused = False
        self.last = 0.0  # loop time of the connection or its last response (idle sweep)

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last = self.state.loop.time()
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.backlog.clear()
        self.state.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fatal(HTTPError(400, "protocol upgrades are not supported", None))
        except httptools.HttpParserError as exc:
            self._fatal(HTTPError(400, f"malformed HTTP request: {exc}", None))

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.auth = None
        self.body = []
        self.size = 0
        self.rejected = None
        self.dispatched = False

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > _MAX_URL:
            if self.rejected is None:
                self.rejected = HTTPError(414, f"request target over {_MAX_URL} bytes", None)
            return
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"authorization":
            self.auth = value[:_MAX_AUTH]
        elif name == b"content-length" and self.rejected is None:
            try:
                check_content_length(value, self.limit)
            except HTTPError as exc:
                self.rejected = exc

    def on_body(self, body: bytes) -> None:
        if self.rejected is not None:
            return
        self.size += len(body)
        if self.size > self.limit:
            self.rejected = HTTPError(413, f"body exceeds {self.limit} bytes", None)
            self.body = []
        else:
            self.body.append(body)

    def on_headers_complete(self) -> None:
        if self.rejected is not None:  # refused by its Content-Length: answer now, then close
            self._enqueue(self._path(), None, b"", False, self.rejected)
            self.dispatched = True
            if self.transport is not None:
                self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.dispatched:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        self._enqueue(self._path(), self.auth, body, keep_alive, self.rejected)

    def _path(self) -> str:
        url = self.url
        q = url.find(b"?")
        return (url if q < 0 else url[:q]).decode("latin-1")

    def _enqueue(
        self, path: str, auth: bytes | None, body: bytes, keep_alive: bool, rejected: Any
    ) -> None:
        method = self.parser.get_method().decode("latin-1")
        request = (method, path, auth, body, keep_alive, rejected)
        if self.busy:
            self.backlog.append(request)
            if len(self.backlog) >= _MAX_BACKLOG and not self.paused and self.transport:
                self.transport.pause_reading()
                self.paused = True
        else:
            self._start(request)

    # ------------------------------------------------------------ requests

    def _start(self, request: tuple[str, str, bytes | None, bytes, bool, Any]) -> None:
        method, path, auth, body, keep_alive, rejected = request
        t0 = time.perf_counter()
        self.busy = True
        try:
            if rejected is not None:
                reply: Reply | Pending = self.app.error_reply(rejected)
                keep_alive = False  # the unread body may still be arriving: close after
            else:
                reply = self.app.handle(method, path, auth, body)
        except Exception:
            reply = _internal_error()
        if isinstance(reply, Pending):
            done = partial(self.state.complete, self, reply, path, keep_alive, t0)
            reply.future.add_done_callback(done)
        else:
            self._respond(reply, path, keep_alive, t0)

    def _respond(self, reply: Reply, path: str, keep_alive: bool, t0: float) -> None:
        status, content_type, payload = reply
        transport = self.transport
        if transport is not None and not transport.is_closing():
            closing = not keep_alive or self.state.closing
            transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s"
                % (
                    status,
                    _REASONS.get(status, b""),
                    content_type,
                    len(payload),
                    b"connection: close\r\n" if closing else b"",
                    payload,
                )
            )
            if closing:
                transport.close()
        self.last = self.state.loop.time()
        self.app.metrics.observe(endpoint_label(path), status, time.perf_counter() - t0)
        self.busy = False
        if self.backlog:
            if self.paused and len(self.backlog) <= _MAX_BACKLOG // 2 and self.transport:
                self.transport.resume_reading()
                self.paused = False
            self._start(self.backlog.popleft())

    def _fatal(self, error: HTTPError) -> None:
        """A request that cannot be parsed: answer 400 (if nothing is in flight) and close."""
        transport = self.transport
        if transport is None:
            return
        if not self.busy:
            payload = error_body(str(error), error.field)
            transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s"
                % (error.status, _REASONS[error.status], len(payload), payload)
            )
            self.app.metrics.observe("other", error.status, 0.0)
        transport.close()

    def close_when_idle(self) -> None:
        """Shutdown: close now if idle, else after the response in flight."""
        if not self.busy and self.transport is not None:
            self.transport.close()


async def serve(
    app: LookupApp,
    host: str,
    port: int,
    sock: Any = None,
    ready: asyncio.Future[None] | None = None,
    stop: asyncio.Event | None = None,
    grace_s: float = 10.0,
) -> None:
    """Serve until ``stop`` is set, then stop accepting, let requests in flight finish
    (up to ``grace_s``), close connections, flush the feature log and close Redis.
    Connections idle for ``app.config.keep_alive_s`` are closed meanwhile."""
    loop = asyncio.get_running_loop()
    state = ServerState(loop, app)
    if sock is not None:
        server = await loop.create_server(lambda: HttpProtocol(app, state), sock=sock, backlog=2048)
    else:
        server = await loop.create_server(
            lambda: HttpProtocol(app, state), host, port, backlog=2048, reuse_address=True
        )
    if ready is not None and not ready.done():
        ready.set_result(None)
    sweeper = asyncio.ensure_future(state.sweep_idle(app.config.keep_alive_s))
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        sweeper.cancel()
        server.close()
        state.closing = True
        for conn in list(state.connections):
            conn.close_when_idle()
        if state.connections:
            try:
                await asyncio.wait_for(state.all_closed.wait(), grace_s)
            except TimeoutError:
                for conn in list(state.connections):
                    if conn.transport is not None:
                        conn.transport.abort()
        await app.shutdown()
