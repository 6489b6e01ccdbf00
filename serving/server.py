"""Run the lookup server: verify the repo, bind, then serve on uvloop in one process or in
``workers`` forked processes sharing the listening socket.

The catalog (manifest, request-time feature sets, artifacts) is loaded and verified once,
before binding, so a drifted artifact or fingerprint stops ``skewless serve`` with one line
and exit code 2 instead of a crash loop in the workers. Workers are forked after that load
(start-up stays well under a second) and each builds its own app: Redis connection,
metrics, feature logger thread. The parent supervises: SIGTERM/SIGINT are passed on to the
workers, which stop accepting, finish the requests in flight, flush their feature logs and
exit; a worker that dies unexpectedly is replaced.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from serving.config import ServeConfig
from transforms.errors import ConfigError, SkewlessError

if TYPE_CHECKING:
    from serving.app import LookupApp
    from serving.catalog import Catalog

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (SkewlessError naming the address if it cannot be bound)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def run(config: ServeConfig) -> None:
    """``skewless serve``: returns after a graceful shutdown (SIGTERM or Ctrl-C)."""
    from serving.catalog import Catalog

    config = replace(config, repo=os.path.abspath(config.repo))
    if config.log_dir:
        config = replace(config, log_dir=os.path.abspath(config.log_dir))
    catalog = Catalog.load(config.repo)
    sock = bind(config.host, config.port)
    print(
        f"skewless serve: http://{config.host}:{sock.getsockname()[1]} "
        f"({config.workers} worker{'s' if config.workers > 1 else ''}, "
        f"project {catalog.manifest.project})",
        file=sys.stderr,
        flush=True,
    )
    if config.workers == 1:
        serve_forever(config, catalog, sock)
    else:
        _supervise(config, catalog, sock)
    sock.close()


def serve_forever(config: ServeConfig, catalog: Catalog, sock: socket.socket) -> None:
    """One worker: uvloop, the app, the HTTP front, until SIGTERM/SIGINT."""
    import uvloop

    from serving.app import LookupApp

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        app = LookupApp(config, catalog)
        settle_heap()
        await serve(app, config.host, config.port, sock=sock, stop=stop)

    uvloop.run(main())


def settle_heap() -> None:
    """Move everything start-up allocated (modules, the catalog, pyarrow, the plans) out
    of the garbage collector's reach (:func:`gc.freeze`): a full collection then walks
    only what requests allocate, instead of pausing a lookup for the whole heap."""
    gc.collect()
    gc.freeze()


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
    from serving.framing import ServerState
    from serving.http import HttpProtocol

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


def _supervise(config: ServeConfig, catalog: Catalog, sock: socket.socket) -> None:
    """Fork ``config.workers`` workers, pass stop signals on, replace crashed workers
    (giving up when workers keep dying within a second of starting)."""
    children: dict[int, float] = {}  # pid -> start time
    stopping = False
    quick_deaths = 0
    gave_up = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                for sig in _STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                serve_forever(config, catalog, sock)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    for _ in range(config.workers):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if stopping or started is None:
            continue
        quick_deaths = quick_deaths + 1 if time.monotonic() - started < 1.0 else 0
        code = os.waitstatus_to_exitcode(status)
        print(f"skewless serve: worker {pid} exited ({code}), replacing it", file=sys.stderr)
        if quick_deaths >= 3:
            gave_up = True
            stop(signal.SIGTERM, None)
        else:
            spawn()
    if gave_up:
        raise SkewlessError("workers keep exiting right after start; see the log above")
