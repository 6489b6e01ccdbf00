"""Batch commands: ``run`` (features with Spark or Beam) and ``apply`` (Feast + manifest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail, guarded


def register(app: typer.Typer) -> None:
    @app.command("run")
    @guarded
    def run_command(
        engine: Annotated[str, typer.Option("--engine", help="spark or beam.")] = "spark",
        input_dir: Annotated[
            Path, typer.Option("--input", help="Raw data (from `skewless generate`).")
        ] = Path("data/raw"),
        output_dir: Annotated[
            Path | None,
            typer.Option("--output", help="Features + artifacts (default: SKEWLESS_DATA)."),
        ] = None,
        master: Annotated[str, typer.Option("--master", help="Spark master URL.")] = "local[*]",
        beam_option: Annotated[
            list[str] | None,
            typer.Option("--beam-option", help="Beam pipeline option, e.g. --runner=DirectRunner."),
        ] = None,
    ) -> None:
        """Compute statistics artifacts and entity features from raw transactions."""
        if engine not in ("spark", "beam"):
            fail(f"--engine must be spark or beam, got {engine!r}")
        from pipelines.batch import run
        from pipelines.feast_objects import data_dir

        out = output_dir or data_dir()
        report = run(engine, input_dir, out, master=master, beam_options=beam_option or [])
        typer.echo(
            f"{engine}: {report.rows_in:,} rows in, {report.rows_quarantined:,} quarantined, "
            + ", ".join(f"{v} {n:,} rows" for v, n in sorted(report.rows_out.items()))
            + f", {report.seconds:.1f}s -> {out}"
        )
        for name, h in report.artifacts.items():
            typer.echo(f"artifact {name}: {h[:16]}")

    @app.command("apply")
    @guarded
    def apply_command(
        repo: Annotated[Path, typer.Option("--repo", help="The Feast repo.")] = Path(
            "feature_repo"
        ),
        redis_url: Annotated[
            str | None, typer.Option("--redis-url", help="Online store (default: REDIS_URL).")
        ] = None,
    ) -> None:
        """Register entities, views, request-time views and services in Feast; write the manifest."""
        from pipelines.apply import apply

        manifest = apply(repo, redis_url or os.environ.get("REDIS_URL"))
        typer.echo(
            f"applied project {manifest.project!r}: {len(manifest.views)} views, "
            f"{len(manifest.request_transforms)} request-time views, "
            f"{len(manifest.services)} feature service(s) -> {repo / 'skewless_manifest.json'}"
        )
