"""Batch commands: ``run`` (features with Spark or Beam) and ``apply`` (Feast + manifest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo


def register(app: typer.Typer) -> None:
    register_init(app)
    register_batch(app)
    register_training(app)


def register_init(app: typer.Typer) -> None:
    @app.command("init")
    @guarded
    def init_command(
        directory: Annotated[Path, typer.Argument(help="New project directory.")],
    ) -> None:
        """Create a working project: definitions, a small source, skewless.yaml, Feast config."""
        from pipelines.scaffold import init_project
        from store.redis_layout import feast_connection_string

        redis_url = os.environ.get("REDIS_URL")
        connection = feast_connection_string(redis_url) if redis_url else "127.0.0.1:6379"
        files = init_project(directory, connection)
        typer.echo(f"created project {directory} ({len(files)} files)")
        typer.echo(
            f"next: cd {directory} && skewless run && skewless apply && "
            "skewless materialize && skewless serve"
        )


def register_batch(app: typer.Typer) -> None:
    @app.command("run")
    @guarded
    def run_command(
        repo: Repo = DEFAULT_REPO,
        engine: Annotated[str, typer.Option("--engine", help="spark or beam.")] = "spark",
        input_dir: Annotated[
            Path | None,
            typer.Option(
                "--input", help="Read each source from INPUT/<source> instead of its path."
            ),
        ] = None,
        output_dir: Annotated[
            Path | None,
            typer.Option("--output", help="Features + artifacts (default: the data directory)."),
        ] = None,
        master: Annotated[str, typer.Option("--master", help="Spark master URL.")] = "local[*]",
        beam_option: Annotated[
            list[str] | None,
            typer.Option("--beam-option", help="Beam pipeline option, e.g. --runner=DirectRunner."),
        ] = None,
    ) -> None:
        """Compute statistics artifacts and entity features from the project's raw sources."""
        if engine not in ("spark", "beam"):
            fail(f"--engine must be spark or beam, got {engine!r}")
        from pipelines.batch import run
        from pipelines.project import load_project

        project = load_project(repo)
        out = output_dir or project.data_dir
        report = run(
            engine,
            project,
            out,
            input_dir=input_dir,
            master=master,
            beam_options=beam_option or [],
        )
        typer.echo(
            f"{engine}: {report.rows_in:,} rows in, {report.rows_quarantined:,} quarantined, "
            + ", ".join(f"{v} {n:,} rows" for v, n in sorted(report.rows_out.items()))
            + f", {report.seconds:.1f}s -> {out}"
        )
        for name, h in report.artifacts.items():
            typer.echo(f"artifact {name}: {h[:16]}")
        if report.stale_staging_removed:
            typer.echo(
                f"removed {len(report.stale_staging_removed)} staging entries left by "
                f"interrupted runs: {', '.join(report.stale_staging_removed)}"
            )

    @app.command("apply")
    @guarded
    def apply_command(
        repo: Repo = DEFAULT_REPO,
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


def register_training(app: typer.Typer) -> None:
    @app.command("training-set")
    @guarded
    def training_set_command(
        entities: Annotated[
            Path, typer.Option("--entities", help="Parquet: keys, event_timestamp, request data.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Training set Parquet to write.")],
        repo: Repo = DEFAULT_REPO,
        service: Annotated[
            str | None,
            typer.Option("--service", help="Feature service (default: the only one)."),
        ] = None,
        timestamp_column: Annotated[
            str, typer.Option("--timestamp-column", help="The entity file's request-time column.")
        ] = "event_timestamp",
        inclusive: Annotated[
            bool,
            typer.Option(
                "--inclusive",
                help="Also join a feature row at the request instant (default: strictly "
                "before, what the online store can hold then).",
            ),
        ] = False,
        engine: Annotated[
            str, typer.Option("--engine", help="Where the joins run: local or spark.")
        ] = "local",
        master: Annotated[
            str | None,
            typer.Option("--master", help="Spark master URL, with --engine spark (local[*])."),
        ] = None,
    ) -> None:
        """Point-in-time correct training set (every entity row kept) + request-time features.

        View features join strictly before each request time; --inclusive also at it.
        --engine spark runs the joins on Spark (--master URL) with the same result."""
        import pyarrow.parquet as pq

        from pipelines.training_data import build_training_set
        from pipelines.training_set import ENGINES, Engine
        from store.manifest import Manifest
        from transforms.errors import SchemaError

        if engine not in ENGINES:
            fail(f"--engine must be {' or '.join(ENGINES)}, got {engine!r}")
        if master is not None:
            if engine != "spark":
                fail(f"--master is only for --engine spark, got --engine {engine}")
            from pipelines.training_spark import check_master

            check_master(master)
        if not entities.exists():
            fail(f"--entities {entities} does not exist")
        try:
            table = pq.read_table(entities)
        except Exception as exc:  # pyarrow raises several types for a non-Parquet file
            raise SchemaError(f"--entities {entities} is not readable Parquet: {exc}") from None
        if service is None:
            services = sorted(Manifest.load(repo).services)
            if len(services) != 1:
                fail(f"--service is needed: the project serves {', '.join(services) or 'none'}")
            service = services[0]
        result = build_training_set(
            repo,
            table,
            out,
            service,
            timestamp_column=timestamp_column,
            strict_before=not inclusive,
            engine=Engine(engine, master),
        )
        typer.echo(f"{table.num_rows:,} entity rows in, {result.num_rows:,} rows out -> {out}")
