"""Window-aggregation state over a redis-py client: ``push``, ``backfill``, reads as of a
time, and the project's keys (the layout and its commands are :mod:`store.window_layout`).

The lookup server does not use this module: it sends :class:`WindowLayout`'s commands on
its own connection.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from store import redis_layout as rl
from store.window_events import events_table, rows_to_columns
from store.window_layout import GRACE_MICROS, WindowLayout, project_prefix
from transforms.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:
    import pyarrow as pa

    from transforms.aggregations import WindowSet
    from transforms.window_runtime import WindowRunner

__all__ = [
    "WindowState",
    "backfill",
    "clear_windows",
    "execute",
    "now_micros",
    "push",
    "window_keys",
    "windows_as_of",
]

BACKFILL_ROWS = 65_536  # events per push of a backfill


def execute(client: Any, payload: bytes, count: int) -> list[Any]:
    """Send prebuilt RESP commands on one connection of a redis-py ``Redis`` client and
    read ``count`` replies (error replies are returned as exceptions, not raised);
    StoreUnavailable when the connection fails."""
    import redis

    if count == 0:
        return []
    pool = client.connection_pool
    try:
        conn = pool.get_connection()
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise StoreUnavailable(f"online store unavailable: {exc}") from None
    try:
        conn.send_packed_command([payload], check_health=False)
        out: list[Any] = []
        for _ in range(count):
            try:
                out.append(conn.read_response(disable_decoding=True))
            except redis.ResponseError as exc:
                out.append(exc)
        return out
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        conn.disconnect()
        raise StoreUnavailable(f"online store unavailable: {exc}") from None
    finally:
        pool.release(conn)


class WindowState:
    """One window set's online state in one project: push, backfill and reads over a
    redis-py client (the server uses :class:`WindowLayout` over its own connection)."""

    def __init__(
        self, project: str, window_set: WindowSet, grace_micros: int = GRACE_MICROS
    ) -> None:
        self.layout = WindowLayout(project, window_set, grace_micros)
        self._runner: WindowRunner | None = None

    @property
    def runner(self) -> WindowRunner:
        if self._runner is None:
            from transforms.window_runtime import WindowRunner

            self._runner = WindowRunner(self.layout.window_set)
        return self._runner

    def to_table(self, events: pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
        import pyarrow as pa

        if isinstance(events, pa.Table):
            return events
        if isinstance(events, pa.RecordBatch):
            return pa.Table.from_batches([events])
        return events_table(self.layout.window_set, rows_to_columns(events))

    def push(self, client: Any, events: pa.Table | Sequence[Mapping[str, Any]]) -> int:
        """Write raw events (an Arrow table or dict rows) in one round trip: the set's
        value functions (:meth:`WindowRunner.event_values`), then the pipelined writes.
        Returns how many events were placed (rows without key or time are left out)."""
        log = self.runner.event_values(self.to_table(events))
        payload, count = self.layout.write_log(log)
        self.layout.check_writes(execute(client, payload, count))
        return int(log.num_rows)

    def backfill(self, client: Any, source: Any, chunk_rows: int = BACKFILL_ROWS) -> int:
        """:meth:`push` over an offline source in chunks of ``chunk_rows``: an Arrow table,
        record batches, or a Parquet path (file or directory). Idempotent: the state after
        a backfill and pushes of any events equals that of pushing them all."""
        total = 0
        for batch in _batches(source, chunk_rows):
            if batch.num_rows:
                total += self.push(client, batch)
        return total

    def read(
        self, client: Any, keys: Sequence[Sequence[Any]], t: int | None = None
    ) -> list[dict[str, Any]]:
        """Window features of each entity (join-key values in the set's key order) as of
        ``t`` (epoch micros; now when None), in one pipelined round trip."""
        at = now_micros() if t is None else t
        cols = [list(c) for c in zip(*keys, strict=True)] if keys else []
        rkeys = self.layout.keys(cols) if keys else []
        replies = execute(client, self.layout.read_commands(rkeys, at), len(rkeys))
        for r in replies:
            if isinstance(r, Exception):
                raise StoreError(f"window-state read failed: {r}")
        return [self.layout.answer(r, at) for r in replies]


def now_micros() -> int:
    import time

    return time.time_ns() // 1000


def _batches(source: Any, chunk_rows: int) -> Iterator[pa.Table | pa.RecordBatch]:
    import pyarrow as pa

    if isinstance(source, pa.Table):
        yield from source.to_batches(max_chunksize=chunk_rows)
        return
    if isinstance(source, str) or hasattr(source, "__fspath__"):
        import pyarrow.dataset as ds

        yield from ds.dataset(str(source), format="parquet").to_batches(batch_size=chunk_rows)
        return
    yield from source


# ---------------------------------------------------------------------- module API


def push(
    client: Any,
    project: str,
    window_set: WindowSet,
    events: pa.Table | Sequence[Mapping[str, Any]],
    *,
    grace_micros: int = GRACE_MICROS,
) -> int:
    """Write raw events to the online window state (see :meth:`WindowState.push`)."""
    return WindowState(project, window_set, grace_micros).push(client, events)


def backfill(
    client: Any,
    project: str,
    window_set: WindowSet,
    source: Any,
    *,
    chunk_rows: int = BACKFILL_ROWS,
    grace_micros: int = GRACE_MICROS,
) -> int:
    """Write an offline source to the online window state (see :meth:`WindowState.backfill`)."""
    return WindowState(project, window_set, grace_micros).backfill(client, source, chunk_rows)


def windows_as_of(
    client: Any,
    project: str,
    window_set: WindowSet,
    keys: Sequence[Sequence[Any]],
    t_micros: int | None = None,
) -> list[dict[str, Any]]:
    """Window features per entity as of ``t_micros`` (now when None), one round trip."""
    return WindowState(project, window_set).read(client, keys, t_micros)


def window_keys(client: Any, project: str) -> list[bytes]:
    """Every window-state key of ``project`` (exactly that project: see the key layout)."""
    pattern = rl.glob_escape(project_prefix(project).decode("utf-8")) + b"*"
    return [bytes(k) for k in client.scan_iter(match=pattern, count=10_000)]


def clear_windows(client: Any, project: str) -> int:
    """Delete the window state of ``project`` (nothing else); returns how many keys."""
    keys = window_keys(client, project)
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])
    return len(keys)
