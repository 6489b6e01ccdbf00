"""Commands of the transform core: ``parity`` (the cross-engine gate) and ``analyze``."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import fail, guarded


def register(app: typer.Typer) -> None:
    @app.command("parity")
    @guarded
    def parity_command(
        rows: Annotated[
            int, typer.Option("--rows", help="Rows to generate (edge cases first).")
        ] = 100_000,
    ) -> None:
        """Run the same rows through online, Spark and Beam; exit 1 on any mismatch."""
        if rows <= 0:
            fail("--rows must be a positive number of rows")
        from rich.console import Console
        from rich.table import Table

        from pipelines.parity import run_parity

        console = Console(stderr=True)
        with console.status("parity") as status:
            report = run_parity(rows, progress=lambda msg: status.update(f"parity: {msg}"))
        out = Console()
        table = Table(title=f"skewless parity: {report.rows:,} rows")
        table.add_column("transform")
        table.add_column("online vs spark", justify="right")
        table.add_column("online vs beam", justify="right")
        for name, by_engine in report.mismatches.items():
            table.add_row(name, str(by_engine.get("spark", "-")), str(by_engine.get("beam", "-")))
        out.print(table)
        hashes = report.artifact_hashes
        same = len(set(hashes.values())) == 1
        out.print(
            "analyzer artifacts: "
            + ", ".join(f"{engine}={h[:12]}" for engine, h in hashes.items())
            + ("  (identical)" if same else "  (DIFFER)")
        )
        out.print("wall time: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.seconds.items()))
        for line in report.examples[:10]:
            out.print(f"  mismatch: {line}")
        total = report.total_mismatches
        out.print(f"{total} mismatches across online/spark/beam")
        if total:
            raise typer.Exit(code=1)
