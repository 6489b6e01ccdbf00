"""Fast, verified materialization of Feast FeatureViews from Parquet into Redis, in the
exact bytes Feast's Redis online store writes; the design is in docs/materialize.md."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.materialize.completeness import _verify_view, verify
from pipelines.materialize.encode import (
    CHUNK_KEYS,
    EncodedRows,
    Segments,
    encode_chunks,
    encode_column,
    encode_keys,
    encode_rows,
    encode_timestamps,
)
from pipelines.materialize.plan import (
    RepoTarget,
    ViewPlan,
    _window,
    arrow_ok,
    load_repo,
    open_source,
)
from pipelines.materialize.redis_io import RedisWriter
from pipelines.materialize.redis_io import _ReplyStream as _ReplyStream
from pipelines.materialize.reduce import PARTS, _Candidates, read_latest, scan_window
from pipelines.materialize.report import MaterializeReport, ViewReport, iter_report_lines
from pipelines.materialize.write import IN_FLIGHT, write_encoded
from pipelines.materialize.write import _exists_payload as _exists_payload
from pipelines.materialize.write import _hset_payload as _hset_payload
from pipelines.materialize.write import _stale as _stale
from pipelines.materialize.write import _timestamp_nanos as _timestamp_nanos
from store import redis_layout as rl
from store.window_state import window_keys
from transforms.errors import ConfigError, SchemaError, StoreUnavailable

__all__ = [
    "CHUNK_KEYS",
    "IN_FLIGHT",
    "PARTS",
    "EncodedRows",
    "MaterializeReport",
    "RedisWriter",
    "RepoTarget",
    "Segments",
    "ViewPlan",
    "ViewReport",
    "arrow_ok",
    "clear_project",
    "encode_chunks",
    "encode_column",
    "encode_keys",
    "encode_rows",
    "encode_timestamps",
    "iter_report_lines",
    "load_repo",
    "materialize",
    "open_source",
    "project_keys",
    "push",
    "read_latest",
    "redis_client",
    "reset_online_project",
    "scan_window",
    "source_row_counts",
    "verify",
    "write_encoded",
]


class _NoProgress:
    """Stand-in for rich's Progress when no bar is shown: importing rich.progress costs
    more than a whole chunk of writes."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int) -> int:
        del description, total  # rich.progress.Progress's signature, nothing shown
        return 0

    def advance(self, task: int, advance: int) -> None:
        del task, advance

    def update(self, task: int, total: int) -> None:
        del task, total


def _progress(show: bool) -> Any:
    if not show:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    )


def materialize(  # noqa: PLR0913 (the materialize command's options, keyword-only past views)
    repo_path: str | Path,
    start: datetime | None,
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    verify: bool = False,
    sample: int = 1000,
    show_progress: bool = True,
    record_interval: bool = True,
    chunk: int = CHUNK_KEYS,
    on_chunk: Callable[[str, int], None] | None = None,
) -> MaterializeReport:
    """Materialize ``views`` (all by default) of a Feast repo for event times in [start, end].

    ``verify`` runs the completeness check right after writing; ``record_interval`` stores
    the window in the registry like ``feast materialize`` (so materialize-incremental
    continues from ``end``). ``chunk`` is the number of keys per pipelined round trip.
    ``on_chunk(view, keys_done)`` is called after each chunk's writes are acknowledged
    (``keys_done`` counts the view's keys handled so far); an exception it raises stops the
    run. It exists for progress reporting and for fault tests (e.g. kill Redis after N
    chunks); the progress bar does not need it.
    """
    t0 = time.perf_counter()
    target = load_repo(repo_path, views)
    writer = RedisWriter(target.redis_type, target.connection_string)
    report = MaterializeReport(start=start or end, end=end)
    try:
        with _progress(show_progress) as bar:
            for plan in target.plans:
                v0 = time.perf_counter()
                lo, hi = _window(plan, start, end)
                report.start = lo
                candidates, scanned = scan_window(plan, lo, hi)
                vr = ViewReport(view=plan.name, rows_scanned=scanned)
                task = bar.add_task(plan.name, total=None)  # known once all parts reduced
                winners: list[pa.Table] = []

                def reduced(
                    candidates: _Candidates = candidates,
                    task: Any = task,
                    vr: ViewReport = vr,
                    winners: list[pa.Table] = winners,
                ) -> Iterator[pa.Table]:
                    for part in candidates.winners(PARTS):
                        winners.append(part)
                        vr.expected += part.num_rows
                        yield part
                    bar.update(task, total=vr.expected)

                done = [0]

                def advance(
                    k: int, task: Any = task, view: str = plan.name, done: list[int] = done
                ) -> None:
                    bar.advance(task, k)
                    if on_chunk is not None:
                        done[0] += k
                        on_chunk(view, done[0])

                vr.written, vr.skipped_not_newer = write_encoded(
                    writer,
                    encode_chunks(reduced(), plan, target.project, chunk),
                    target.key_ttl_seconds,
                    target.skip_dedup,
                    progress=advance,
                )
                if verify:
                    table = pa.concat_tables(winners) if winners else candidates.table.slice(0, 0)
                    _verify_view(writer, plan, target.project, table, sample, vr)
                if record_interval:
                    target.store.registry.apply_materialization(
                        plan.feast_view, target.project, lo, hi
                    )
                vr.seconds = time.perf_counter() - v0
                report.views.append(vr)
        if writer.restore_refused:
            report.notes.append(
                f"Redis refused RESTORE ({writer.restore_refused}); keys were written by HSET"
            )
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report


def push(
    repo_path: str | Path,
    view: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    force: bool = False,
) -> int:
    """Write freshly computed rows (dicts with join keys, features and optionally the event
    timestamp; default now) for a few entities, with the materializer's encoder.

    Follows Feast's staleness rule unless ``force``: a row older than, or as old as, what
    Redis holds is skipped. Returns how many entities were written.
    """
    target = load_repo(repo_path, [view])
    plan = target.plans[0]
    rows = list(rows)
    if not rows:
        return 0
    now = datetime.now(tz=UTC)
    columns: dict[str, list[Any]] = {}
    for name in plan.join_keys + plan.features:
        missing = [r for r in rows if name not in r]
        if missing:
            raise SchemaError(f"push to {view}: row without column {name!r}: {missing[0]}")
        columns[name] = [r[name] for r in rows]
    columns[plan.timestamp_field] = [r.get(plan.timestamp_field) or now for r in rows]
    arrow_types = {"int64": pa.int64(), "int32": pa.int32(), "double": pa.float64(),
                   "float": pa.float32(), "string": pa.string(), "bool": pa.bool_(),
                   "bytes": pa.binary(), "unix_timestamp": pa.int64()}  # fmt: skip
    schema_fields = [
        pa.field(n, arrow_types[t])
        for n, t in zip(
            plan.join_keys + plan.features, plan.join_types + plan.feature_types, strict=True
        )
    ]
    schema_fields.append(pa.field(plan.timestamp_field, pa.timestamp("us", tz="UTC")))
    if plan.created_field:
        columns[plan.created_field] = [r.get(plan.created_field) or now for r in rows]
        schema_fields.append(pa.field(plan.created_field, pa.timestamp("us", tz="UTC")))
    try:
        table = pa.Table.from_pydict(columns, schema=pa.schema(schema_fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise SchemaError(
            f"push to {view}: rows do not match the FeatureView schema: {exc}"
        ) from exc
    table = table.take(_Candidates(table, np.ones(table.num_rows, dtype=bool), plan).latest())
    writer = RedisWriter(target.redis_type, target.connection_string)
    try:
        written, _ = write_encoded(
            writer,
            encode_chunks(table, plan, target.project),
            target.key_ttl_seconds,
            skip_dedup=force or target.skip_dedup,
        )
    finally:
        writer.close()
    return written


def redis_client(connection_string: str) -> Any:
    """redis-py client for a Feast connection string (standalone Redis)."""
    import redis

    nodes, params = rl.parse_connection_string(connection_string)
    return redis.Redis(host=nodes[0][0], port=nodes[0][1], **params)


def project_keys(client: Any, project: str) -> list[bytes]:
    """All keys of one Feast project: those ending with its name whose entity key is
    followed by exactly that name (not a project whose name merely ends with it)."""
    name = project.encode()
    pattern = b"*" + rl.glob_escape(project)
    return [k for k in client.scan_iter(match=pattern, count=10_000) if rl.key_project(k) == name]


def clear_project(client: Any, project: str) -> int:
    """Delete only the keys of ``project``, its Feast rows and its online window state
    (:func:`store.window_state.window_keys`); returns how many."""
    keys = project_keys(client, project) + window_keys(client, project)
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])
    return len(keys)


def source_row_counts(repo_path: str | Path, views: Sequence[str] | None = None) -> dict[str, int]:
    """Rows in each view's offline source, whatever their event time (to tell an empty
    window from an empty source)."""
    return {
        plan.name: open_source(plan)[0].count_rows() for plan in load_repo(repo_path, views).plans
    }


def reset_online_project(repo_path: str | Path) -> int:
    """Delete the online rows of this repo's project (and nothing else), e.g. before
    loading regenerated data: the newer-only write rule would otherwise keep rows of an
    earlier dataset whose event times happen to be later."""
    target = load_repo(repo_path)
    if target.redis_type != "redis":
        raise ConfigError("reset_online_project supports a single Redis server only")
    try:
        return clear_project(redis_client(target.connection_string), target.project)
    except Exception as exc:  # redis-py raises several connection error types
        raise StoreUnavailable(f"REDIS connection failed: {exc}") from None
