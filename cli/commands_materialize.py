"""``skewless materialize``: Parquet -> Redis in Feast's layout, then a completeness check.

Exit codes: 0 all written (and verified), 1 verification found missing or wrong entities,
2 bad input or unavailable store (one ``skewless: error:`` line on stderr).
"""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from transforms.errors import ConfigError, SkewlessError


def _parse_time(text: str | None, option: str) -> datetime | None:
    """ISO 8601 -> aware datetime (naive means UTC); None stays None."""
    if text is None:
        return None
    if text == "now":
        return datetime.now(tz=UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _refuse_an_empty_window(
    repo: str, views: list[str] | None, start: datetime, end: datetime
) -> None:
    """0 rows materialized although the sources hold rows is an error, not success: the
    window missed them (or the sources are not the ones that were run)."""
    from pipelines.materialize import source_row_counts

    counts = {v: n for v, n in source_row_counts(repo, views).items() if n}
    if counts:
        held = ", ".join(f"{v} {n:,}" for v, n in sorted(counts.items()))
        raise ConfigError(
            f"no row has an event time in [{start.isoformat()}, {end.isoformat()}], but the "
            f"sources hold rows ({held}): give --start (and --end) around their event times"
        )


def materialize_command(
    repo: str = typer.Option(".", "--repo", "-c", help="The project / Feast repo; default: here"),
    start: str | None = typer.Option(
        None, "--start", help="ISO 8601 start (inclusive); default end minus the view's ttl"
    ),
    end: str = typer.Option("now", "--end", help="ISO 8601 end (inclusive), or 'now'"),
    views: str | None = typer.Option(None, "--views", help="comma-separated views; default all"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check completeness"),
    sample: int = typer.Option(1000, "--sample", help="entities per view compared value by value"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="rich progress bar"),
    chunk: int = typer.Option(5000, "--chunk", min=1, help="keys per pipelined Redis round trip"),
) -> None:
    """Materialize FeatureViews from their Parquet sources into Redis, then verify."""
    try:
        from pipelines.materialize import iter_report_lines, materialize
        from store import redis_dump

        writer = (
            "writer: new keys by RESTORE of payloads from the compiled writer "
            f"(extension module store._dump, {redis_dump.LIBRARY.name}), existing keys by HSET"
            if redis_dump.available()
            else f"writer: HSET for every key (the compiled writer {redis_dump.LIBRARY} is "
            "not built: reinstall skewless where a C compiler is present)"
        )
        # said before anything runs, beside the progress bars (stderr); the summary opens
        # with it too. Without progress bars only the summary does, so that a failed run's
        # output stays its one error line.
        if progress:
            typer.echo(writer, err=True)
        end_t = _parse_time(end, "--end")
        assert end_t is not None
        selected = [v.strip() for v in views.split(",") if v.strip()] if views else None
        report = materialize(
            repo,
            _parse_time(start, "--start"),
            end_t,
            selected,
            verify=verify,
            sample=sample,
            show_progress=progress,
            chunk=chunk,
        )
        if report.rows_scanned == 0:
            _refuse_an_empty_window(repo, selected, report.start, report.end)
        from pipelines.window_backfill import backfill_windows

        events = backfill_windows(repo, end_t, selected)
    except SkewlessError as exc:
        typer.echo(f"skewless: error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(writer)
    for line in iter_report_lines(report):
        typer.echo(line)
    typer.echo(f"materialized {report.rows_scanned} rows in {report.seconds:.2f}s")
    for name, n in events.items():
        typer.echo(f"window set {name}: {n} events of the last window span written")
    if not report.ok:
        for v in report.views:
            for m in v.mismatches[:10]:
                typer.echo(f"skewless: mismatch in {v.view}: {m}", err=True)
        lost = sum(v.lost for v in report.views)
        typer.echo(f"skewless: error: verification found {lost} lost entities", err=True)
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``materialize`` command to the skewless CLI app."""
    app.command("materialize")(materialize_command)
