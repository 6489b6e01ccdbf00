"""``skewless demo`` (the main job end to end) and ``skewless bench`` (all benchmarks)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo


def register(app: typer.Typer) -> None:
    register_demo(app)
    register_bench(app)


def register_demo(app: typer.Typer) -> None:
    @app.command("demo")
    @guarded
    def demo_command(
        repo: Repo = DEFAULT_REPO,
        engine: Annotated[str, typer.Option("--engine", help="spark or beam.")] = "spark",
        rows: Annotated[
            int, typer.Option("--rows", help="Rows to generate (projects with a generator).")
        ] = 200_000,
        days: Annotated[int, typer.Option("--days", help="Days of history to generate.")] = 30,
        requests: Annotated[int, typer.Option("--requests", help="Requests to send.")] = 500,
        fault: Annotated[
            str | None,
            typer.Option(
                "--fault",
                help="Inject a fault for the skew report to catch: drift, missing-keys "
                "or stale-artifact.",
            ),
        ] = None,
    ) -> None:
        """Generate, compute, register, materialize, train, serve and report skew on a project."""
        from pipelines.demo import FAULTS, demo

        if engine not in ("spark", "beam"):
            fail(f"--engine must be spark or beam, got {engine!r}")
        if rows <= 0 or days <= 0 or requests <= 0:
            fail("--rows, --days and --requests must be positive")
        if fault is not None and fault not in FAULTS:
            fail(f"--fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        demo(repo, engine=engine, rows=rows, days=days, requests=requests, fault=fault)


def register_bench(app: typer.Typer) -> None:
    @app.command("bench")
    @guarded
    def bench_command(
        quick: Annotated[
            bool, typer.Option("--quick", help="Smaller sizes, fewer requests.")
        ] = False,
    ) -> None:
        """Every benchmark against Feast in one run; the full run writes bench/RESULTS.md."""
        try:
            from bench.run_all import main
        except ImportError:
            fail("skewless bench runs from a source checkout: bench/ is not installed")

        raise typer.Exit(code=main(quick=quick))
