"""``skewless demo`` (the main job end to end) and ``skewless bench`` (all benchmarks)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import fail, guarded


def register(app: typer.Typer) -> None:
    register_demo(app)
    register_bench(app)


def register_demo(app: typer.Typer) -> None:
    @app.command("demo")
    @guarded
    def demo_command(
        engine: Annotated[str, typer.Option("--engine", help="spark or beam.")] = "spark",
        rows: Annotated[int, typer.Option("--rows", help="Transactions to generate.")] = 200_000,
        days: Annotated[int, typer.Option("--days", help="Days of history.")] = 30,
        requests: Annotated[int, typer.Option("--requests", help="Requests to score.")] = 500,
    ) -> None:
        """Generate, compute, register, materialize, train, serve, score and report skew."""
        if engine not in ("spark", "beam"):
            fail(f"--engine must be spark or beam, got {engine!r}")
        if rows <= 0 or days <= 0 or requests <= 0:
            fail("--rows, --days and --requests must be positive")
        from pipelines.demo import demo

        demo(engine=engine, rows=rows, days=days, requests=requests)


def register_bench(app: typer.Typer) -> None:
    @app.command("bench")
    @guarded
    def bench_command(
        quick: Annotated[
            bool, typer.Option("--quick", help="Smaller sizes, fewer requests.")
        ] = False,
    ) -> None:
        """Every benchmark against Feast in one run; the full run writes bench/RESULTS.md."""
        from bench.run_all import main

        raise typer.Exit(code=main(quick=quick))
