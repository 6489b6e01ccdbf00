"""Command ``skewless stream``: the Spark Structured Streaming job that keeps the online
window state fresh from a Redis stream or a NATS JetStream stream (pipelines/streaming.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo

PROGRESS_S = 5.0  # seconds between progress lines


def register(app: typer.Typer) -> None:
    @app.command("stream")
    @guarded
    def stream_command(
        stream: Annotated[
            str,
            typer.Option(
                "--stream",
                help="The stream of raw events: a Redis stream key, or a NATS JetStream "
                "stream name with a nats:// --log-url.",
            ),
        ],
        checkpoint: Annotated[
            Path | None,
            typer.Option(
                "--checkpoint",
                help="Checkpoint directory (offsets; keep it to resume exactly once); "
                "default: <data>/checkpoints/<stream>.",
            ),
        ] = None,
        window_set: Annotated[
            list[str] | None,
            typer.Option("--window-set", help="Only these window sets (repeatable)."),
        ] = None,
        available_now: Annotated[
            bool,
            typer.Option(
                "--available-now",
                help="Write the events appended before the start, then stop (a catch-up run).",
            ),
        ] = False,
        trigger_ms: Annotated[
            int, typer.Option("--trigger-ms", help="Micro-batch interval in milliseconds.")
        ] = 100,
        max_events: Annotated[
            int, typer.Option("--max-events", help="At most this many events per micro-batch.")
        ] = 50_000,
        redis_url: Annotated[
            str | None,
            typer.Option(
                "--redis-url", help="The online store. Default: REDIS_URL, else localhost."
            ),
        ] = None,
        log_url: Annotated[
            str | None,
            typer.Option(
                "--log-url",
                help="Where the stream is: redis://... (a Redis stream) or nats://host:4222 "
                "(NATS JetStream). Default: the online store's Redis.",
            ),
        ] = None,
        subject: Annotated[
            str | None,
            typer.Option(
                "--subject",
                help="NATS JetStream only: read the messages on these subjects (wildcards "
                "allowed, e.g. 'orders.*'); default: every message of the stream.",
            ),
        ] = None,
        repo: Repo = DEFAULT_REPO,
    ) -> None:
        """Consume raw events from a Redis stream or a NATS JetStream stream into the online
        window state, exactly once in effect (restart it with the same checkpoint after any
        stop or crash)."""
        if trigger_ms <= 0 or max_events <= 0:
            fail("--trigger-ms and --max-events must be positive")
        from pipelines.event_logs import log_kind
        from pipelines.project import load_project
        from pipelines.streaming import StreamReport, run_stream

        if log_url is not None:
            log_kind(log_url)  # an unknown scheme fails before Spark starts

        project = load_project(repo)
        url = redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        where = checkpoint or project.data_dir / "checkpoints" / stream
        source = f"{log_url or url} stream {stream}" + (f" subject {subject}" if subject else "")
        typer.echo(f"streaming {source} -> window state of {repo} (checkpoint {where})")
        shown = [0.0]

        def progress(batch: int, events: int, so_far: StreamReport, lag: dict[str, float]) -> None:
            """One line per micro-batch, at most every 5 s (a long run shows it is alive)."""
            now = time.monotonic()
            if now - shown[0] >= PROGRESS_S:
                shown[0] = now
                typer.echo(
                    f"batch {batch}: {events:,} events ({so_far.events:,} in all), "
                    f"append -> written p50 {lag['p50']:,.0f} ms, max {lag['max']:,.0f} ms"
                )

        report = run_stream(
            repo,
            stream,
            where,
            redis_url=url,
            log_url=log_url,
            subject=subject,
            window_sets=window_set or None,
            available_now=available_now,
            trigger_ms=trigger_ms,
            max_events=max_events,
            on_batch=progress,
        )
        typer.echo(
            f"{report.events:,} events in {report.batches} micro-batches, "
            f"{report.placed:,} placed in the window state"
        )
