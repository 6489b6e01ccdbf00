"""The pieces of :mod:`serving.http` around its connection class: the limits and status
reasons, the parsed-request record, the reply for a bug, and :class:`ServerState`, the
connections of one server process (idle sweep, graceful shutdown, batched completion).

Kept apart only to keep ``serving/http.py`` readable; everything here is used from it
directly (module globals, no wrappers), so the request path is unchanged.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import TYPE_CHECKING, NamedTuple

from serving.app import HTTPError, LookupApp, Pending, Reply, error_body

if TYPE_CHECKING:
    from serving.http import HttpProtocol

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    422: b"Unprocessable Content",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_MAX_BACKLOG = 16  # pipelined requests queued per connection before reading pauses
_MAX_URL = 8192
_MAX_AUTH = 4096
_MAX_CHUNK_LINE = 1024  # a chunk-size line with its extensions
_LINGER_S = 2.0  # after a refusal, the client's input is dropped at most this long
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _internal_error() -> Reply:
    """A bug, not bad input: log the traceback, answer 500 with a JSON body."""
    traceback.print_exc(file=sys.stderr)
    return 500, b"application/json", error_body("internal error (logged by the server)", None)


def _complete_one(pending: Pending) -> Reply:
    try:
        return pending.complete()
    except Exception:
        return _internal_error()


class _Request(NamedTuple):
    method: str
    path: str
    auth: bytes | None
    body: bytes
    keep_alive: bool
    rejected: HTTPError | None  # answered with this error instead of being handled
    content_type: bytes | None = None


# what the parser has seen of the current message (set by its callbacks)
_BETWEEN, _IN_HEAD, _IN_BODY = 0, 1, 2


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
            conn.respond(reply, path, alive, t0)

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
