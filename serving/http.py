"""The HTTP/1.1 front of ``skewless serve``: an asyncio Protocol over httptools' C parser.

Why not uvicorn: under uvicorn the lookup itself was ~40% of a 1-entity request; the rest
was the ASGI layer (scope dicts, header lists, receive/send coroutines, one task per
request). Here a parsed request goes straight to :meth:`serving.app.LookupApp.handle`, which
writes the Redis commands before returning. The requests whose Redis replies arrive
together are then answered together one loop hop later (:meth:`ServerState.drain`), so their
request-time transforms run as one batch. Per request: no task, no ASGI messages, one
``transport.write``.

HTTP behaviour: keep-alive (HTTP/1.1 default, ``Connection: close`` honoured, HTTP/1.0
closes unless asked); pipelined requests are answered in order. Input is fed to the parser
in pieces ending where a head, a body or a chunk ends, so each limit is enforced when
crossed: 431 (head over ``max_header_bytes`` or over ``max_headers`` fields), 414 (target
over 8 KiB), 413 (``Content-Length`` or chunk size over ``max_body_bytes``, body unread),
400 (anything malformed). A refusal is answered after the requests before it; then input is
dropped until the client closes (at most ``keep_alive_s``, 2 s at most), so it reads the
answer instead of a reset. Idle connections close after ``keep_alive_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from functools import partial

import httptools

from serving.app import HTTPError, LookupApp, Pending, Reply, check_content_length, endpoint_label
from serving.framing import (
    _BETWEEN,
    _HEX,
    _IN_BODY,
    _IN_HEAD,
    _LINGER_S,
    _MAX_AUTH,
    _MAX_BACKLOG,
    _MAX_CHUNK_LINE,
    _MAX_URL,
    _REASONS,
    ServerState,
    _internal_error,
    _Request,
)
from serving.server import serve as serve  # re-exported: ``from serving.http import serve``


class HttpProtocol(asyncio.Protocol):
    """One client connection; see the module doc.

    Input waits in ``pending`` (from ``pos``) until the current step (``_head``, ``_body``,
    ``_chunk_size``, ``_chunk_data``) can feed the parser a piece that ends no later than
    the thing it frames, so the parser never holds more than one unfinished head and the
    limits are counted exactly; the parser still checks every byte."""

    __slots__ = (
        "app",
        "state",
        "limit",
        "max_head",
        "max_headers",
        "transport",
        "parser",
        "phase",
        "url",
        "url_len",
        "auth",
        "content_type",
        "headers",
        "content_length",
        "body",
        "size",
        "rejected",
        "pending",
        "pos",
        "scanned",
        "step",
        "head_bytes",
        "head_tail",
        "line_fed",
        "left",
        "processing",
        "halted",
        "eof",
        "busy",
        "backlog",
        "paused",
        "last",
    )

    def __init__(self, app: LookupApp, state: ServerState) -> None:
        config = app.config
        self.app = app
        self.state = state
        self.limit = config.max_body_bytes
        self.max_head = config.max_header_bytes
        self.max_headers = config.max_headers
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.phase = _BETWEEN
        self.url: list[bytes] = []
        self.url_len = 0
        self.auth: bytes | None = None
        self.content_type: bytes | None = None
        self.headers = 0
        self.content_length: int | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.rejected: HTTPError | None = None
        self.pending: bytes | bytearray = b""  # received, not yet fed to the parser from pos
        self.pos = 0
        self.scanned = 0  # pending[:scanned] was searched for the current step's delimiter
        self.step: Callable[[], bool] = self._head
        self.head_bytes = 0  # of the current head (or trailers) fed to the parser
        self.head_tail = b""  # its last 3 bytes: the blank line ending it may start there
        self.line_fed = False  # a whole line of it was fed (past the request line)
        self.left = 0  # bytes of the body (Content-Length) or of the chunk (+ CRLF) to feed
        self.processing = False
        self.halted = False  # no more requests read: refused, closing or closed
        self.eof = False  # the client half-closed: close after the answers in flight
        self.busy = False
        self.backlog: deque[_Request] = deque()
        self.paused = False
        self.last = 0.0  # loop time of the connection or its last response (idle sweep)

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last = self.state.loop.time()
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        del exc  # a reset or EOF ends the connection the same way
        self.transport = None
        self.halted = True
        self.pending = b""
        self.backlog.clear()
        self.state.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.halted:  # refused: dropped until the client closes or the linger ends
            return
        if not self.pending and self.phase == _BETWEEN and not self.head_bytes:
            if self._whole_request(data):
                return
        pending = self.pending
        if not pending:
            self.pending = data
        elif isinstance(pending, bytearray):
            pending += data  # amortised linear, unlike bytes +=
        else:
            self.pending = bytearray(pending) + data
        self._process()

    def eof_received(self) -> bool:
        """The client will send nothing more: answer what is in flight, then close."""
        if self.busy:
            self.eof = True
            return True
        return False

    # ------------------------------------------------------------ framing

    def _whole_request(self, data: bytes) -> bool:
        """The common case, one read holding exactly one request with a Content-Length
        body (or none), fed as head and body without the step machinery. False (nothing
        fed) for any other read; after the head, anything but its exact body goes on
        through the steps (True)."""
        end = data.find(b"\r\n\r\n") + 4
        if end < 5 or end > self.max_head or self.processing or self.backlog:
            return False
        self.pending = data
        self.head_bytes = self.scanned = end
        self.processing = True
        try:
            self._feed(end)
            if (
                self.phase == _IN_BODY
                and not self.halted
                and self.content_length == len(data) - end
                and end < len(data)
            ):
                self._feed(len(data))
                if self.phase == _BETWEEN:
                    self._begin_head()
                    self.pending, self.pos, self.scanned = b"", 0, 0
                    return True
                if not self.halted:  # never seen: our framing and the parser's disagree
                    self._refuse(HTTPError(400, "malformed HTTP request: body framing", None))
            elif not self.halted:
                self.head_tail = data[end - 3 : end]
                self.line_fed = True
                self._head_ended()
        finally:
            self.processing = False
        self._process()
        return True

    def _process(self) -> None:
        """Run steps while they make progress (not re-entered from a reply written while
        the parser runs; stops while the backlog is full)."""
        if self.processing:
            return
        self.processing = True
        try:
            while not self.halted and len(self.backlog) < _MAX_BACKLOG and self.step():
                pass
        finally:
            self.processing = False
        pos = self.pos
        if self.halted:
            self.pending, self.pos = b"", 0
        elif pos:
            pending = self.pending
            self.pending = pending[pos:] if pos < len(pending) else b""
            self.scanned = max(0, self.scanned - pos)
            self.pos = 0

    def _feed(self, end: int) -> None:
        start, self.pos = self.pos, end
        try:
            self.parser.feed_data(memoryview(self.pending)[start:end])
        except httptools.HttpParserUpgrade:
            self._refuse(HTTPError(400, "protocol upgrades are not supported", None))
        except httptools.HttpParserError as exc:
            self._refuse(HTTPError(400, f"malformed HTTP request: {exc}", None))

    def _begin_head(self, tail: bytes = b"", line_fed: bool = False) -> None:
        self.step = self._head
        self.head_bytes = 0
        self.head_tail = tail
        self.line_fed = line_fed
        self.scanned = self.pos

    def _head(self) -> bool:
        """A request head, or a chunked body's trailers: fed up to the blank line that ends
        it, and before that line by line (the request line as it comes) so garbage is
        refused early; refused once more than ``max_header_bytes`` arrived."""
        buf, pos, n = self.pending, self.pos, len(self.pending)
        if pos >= n:
            return False
        fresh = max(pos, self.scanned)  # bytes before it hold no line end (fed otherwise)
        end = -1
        if self.head_tail:
            probe = self.head_tail + bytes(buf[pos : pos + 3])
            i = probe.find(b"\r\n\r\n")
            if i >= 0:
                end = pos + i + 4 - len(self.head_tail)
        if end < 0:
            i = buf.find(b"\r\n\r\n", max(pos, fresh - 3), n)
            end = i + 4 if i >= 0 else -1
        if end >= 0:
            cut = self.scanned = end
        else:
            nl = buf.rfind(b"\n", fresh, n)
            cut = nl + 1 if nl >= 0 else (pos if self.line_fed else n)
            self.scanned = n
        if self.head_bytes + (cut if end >= 0 else n) - pos > self.max_head:
            too_long = self.rejected if self.rejected and self.rejected.status == 414 else None
            self._refuse(too_long or HTTPError(431, f"request head over {self.max_head} bytes"))
            return False
        if cut == pos:
            return False
        self.head_bytes += cut - pos
        self.head_tail = (self.head_tail + bytes(buf[max(pos, cut - 3) : cut]))[-3:]
        self.line_fed = self.line_fed or buf[cut - 1] == 10  # b"\n"
        self._feed(cut)
        if self.halted or end < 0:
            return not self.halted
        return self._head_ended()

    def _head_ended(self) -> bool:
        """The step after a head fed up to its blank line."""
        if self.phase == _BETWEEN:  # the message ended with its head (no body)
            self._begin_head()
        elif self.phase == _IN_BODY:
            self.scanned = self.pos
            if self.content_length is not None:
                self.left = self.content_length
                self.step = self._body
            else:  # llhttp reads a request body by Content-Length or chunked only
                self.step = self._chunk_size
        return True  # else blank lines before a request line: still a head

    def _feed_left(self) -> bool:
        """Feed what has arrived of the ``left`` bytes of a body or a chunk (False: none
        arrived, or the request was refused)."""
        take = min(self.left, len(self.pending) - self.pos)
        if take <= 0:
            return False
        self.left -= take
        self._feed(self.pos + take)
        return not self.halted

    def _body(self) -> bool:
        if not self._feed_left():
            return False
        if self.left == 0:
            if self.phase != _BETWEEN:  # never seen: our framing and the parser's disagree
                self._refuse(HTTPError(400, "malformed HTTP request: body framing", None))
                return False
            self._begin_head()
        return True

    def _chunk_size(self) -> bool:
        """A chunk-size line: refused (413) when the chunk would take the body over
        ``max_body_bytes``, before any of its data is read."""
        buf, pos, n = self.pending, self.pos, len(self.pending)
        nl = buf.find(b"\n", max(pos, self.scanned), n)
        if nl < 0:
            self.scanned = n
            if n - pos > _MAX_CHUNK_LINE:
                self._refuse(HTTPError(400, f"chunk-size line over {_MAX_CHUNK_LINE} bytes"))
            return False
        token = bytes(buf[pos:nl]).split(b";", 1)[0].rstrip(b"\r")
        if not token or len(token) > 16 or not _HEX.issuperset(token):
            self._feed(nl + 1)  # the parser names the fault
            self._refuse(HTTPError(400, "malformed HTTP request: bad chunk size", None))
            return False
        size = int(token, 16)
        if self.size + size > self.limit:
            self._refuse(HTTPError(413, f"body exceeds {self.limit} bytes", None))
            return False
        tail = bytes(buf[max(pos, nl - 2) : nl + 1])
        self._feed(nl + 1)
        if self.halted:
            return False
        if size == 0:  # trailers (usually none) end with a blank line, like a head
            self._begin_head(tail, line_fed=True)
        else:
            self.left = size + 2  # the data and its CRLF
            self.step = self._chunk_data
        return True

    def _chunk_data(self) -> bool:
        if not self._feed_left():
            return False
        if self.left == 0:
            self.step = self._chunk_size
            self.scanned = self.pos
        return True

    def _refuse(self, error: HTTPError) -> None:
        """Answer ``error`` after the requests before it, then close; nothing after it is
        read as a request."""
        if self.halted:
            return
        self.halted = True
        self._enqueue(_Request("", self._path(), None, b"", False, error))

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.phase = _IN_HEAD
        self.url = []
        self.url_len = 0
        self.auth = None
        self.content_type = None
        self.headers = 0
        self.content_length = None
        self.body = []
        self.size = 0
        self.rejected = None

    def on_url(self, url: bytes) -> None:
        self.url_len += len(url)
        if self.url_len <= _MAX_URL:
            self.url.append(url)
        elif self.rejected is None:
            self.rejected = HTTPError(414, f"request target over {_MAX_URL} bytes", None)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        if self.headers > self.max_headers:
            self._refuse(HTTPError(431, f"more than {self.max_headers} header fields", None))
            return
        name = name.lower()
        if name == b"authorization":
            self.auth = value[:_MAX_AUTH]
        elif name == b"content-type":
            self.content_type = value[:_MAX_AUTH]
        elif name == b"content-length" and self.rejected is None:
            try:
                check_content_length(value, self.limit)
                self.content_length = int(value)
            except HTTPError as exc:
                self.rejected = exc
            except ValueError:
                self.rejected = HTTPError(400, "bad Content-Length", "content-length")

    def on_headers_complete(self) -> None:
        self.phase = _IN_BODY
        if self.rejected is not None and not self.halted:  # answered now, body unread
            self._refuse(self.rejected)

    def on_body(self, body: bytes) -> None:
        if self.halted:
            return
        self.size += len(body)
        if self.size > self.limit:
            self._refuse(HTTPError(413, f"body exceeds {self.limit} bytes", None))
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.phase = _BETWEEN
        if self.halted:
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        self.halted = not keep_alive  # nothing after a closing request is read
        method = self.parser.get_method().decode("latin-1")
        self._enqueue(
            _Request(method, self._path(), self.auth, body, keep_alive, None, self.content_type)
        )

    def _path(self) -> str:
        url = b"".join(self.url)
        q = url.find(b"?")
        return (url if q < 0 else url[:q]).decode("latin-1")

    def _enqueue(self, request: _Request) -> None:
        if self.busy:
            self.backlog.append(request)
            if len(self.backlog) >= _MAX_BACKLOG and not self.paused and self.transport:
                self.transport.pause_reading()
                self.paused = True
        else:
            self._start(request)

    # ------------------------------------------------------------ requests

    def _start(self, request: _Request) -> None:
        method, path, auth, body, keep_alive, rejected, content_type = request
        t0 = time.perf_counter()
        self.busy = True
        try:
            if rejected is not None:
                reply: Reply | Pending = self.app.error_reply(rejected)
            else:
                reply = self.app.handle(method, path, auth, body, content_type)
        except Exception:
            reply = _internal_error()
        if isinstance(reply, Pending):
            done = partial(self.state.complete, self, reply, path, keep_alive, t0)
            reply.future.add_done_callback(done)
        else:
            self.respond(reply, path, keep_alive, t0)

    def respond(self, reply: Reply, path: str, keep_alive: bool, t0: float) -> None:
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
                self._close(transport)
        self.last = self.state.loop.time()
        self.app.metrics.observe(endpoint_label(path), status, time.perf_counter() - t0)
        self.busy = False
        if self.backlog:
            self._start(self.backlog.popleft())
        transport = self.transport
        if self.paused and len(self.backlog) <= _MAX_BACKLOG // 2 and transport is not None:
            self.paused = False
            transport.resume_reading()
            self._process()
        if self.eof and not self.busy and transport is not None:
            transport.close()

    def _close(self, transport: asyncio.Transport) -> None:
        """Close after the response. When the client may still be sending (a refusal, a
        request after ``Connection: close``), close our side for writing and drop its input
        for a while first: closing with unread input would reset the connection and could
        discard the response before the client reads it."""
        self.halted = True
        if self.eof or self.state.closing or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        linger_s = min(_LINGER_S, self.app.config.keep_alive_s)
        self.state.loop.call_later(linger_s, transport.close)

    def close_when_idle(self) -> None:
        """Shutdown: close now if idle, else after the response in flight."""
        if not self.busy and self.transport is not None:
            self.transport.close()
