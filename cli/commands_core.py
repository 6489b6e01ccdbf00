"""``skewless parity``: the cross-engine gate, on a project's own feature sets and data or
on the built-in contract cases (``--rows``)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo


def register(app: typer.Typer) -> None:
    @app.command("parity")
    @guarded
    def parity_command(
        repo: Repo = DEFAULT_REPO,
        source_sample: Annotated[
            int | None,
            typer.Option("--source-sample", help="Compare a seeded sample of N source rows."),
        ] = None,
        rows: Annotated[
            int | None,
            typer.Option(
                "--rows", help="Instead: N generated rows of the built-in contract cases."
            ),
        ] = None,
    ) -> None:
        """Run the same rows through online, Spark and Beam; exit 1 on any mismatch."""
        from rich.console import Console
        from rich.table import Table

        if rows is not None and rows <= 0:
            fail("--rows must be a positive number of rows")
        if source_sample is not None and source_sample <= 0:
            fail("--source-sample must be a positive number of rows")
        console = Console(stderr=True)
        out = Console()
        table = Table(title="skewless parity")
        table.add_column("feature set")
        table.add_column("transform")
        table.add_column("online vs spark", justify="right")
        table.add_column("online vs beam", justify="right")
        with console.status("parity") as status:
            progress = lambda msg: status.update(f"parity: {msg}")  # noqa: E731
            if rows is not None:
                from pipelines.parity import run_parity

                report = run_parity(rows, progress=progress)
                reports = {"contract cases": report}
                table.title = f"skewless parity: {report.rows:,} generated rows"
            else:
                from pipelines.project import load_project
                from pipelines.project_parity import run_project_parity

                project_report = run_project_parity(
                    load_project(repo), source_sample, progress=progress
                )
                reports = project_report.sets
                table.title = "skewless parity: " + ", ".join(
                    f"{name} {n:,} rows ({project_report.quarantined[name]:,} quarantined)"
                    for name, n in project_report.rows.items()
                )
        for set_name, report in reports.items():
            for name, by_engine in report.mismatches.items():
                table.add_row(
                    set_name,
                    name,
                    str(by_engine.get("spark", "-")),
                    str(by_engine.get("beam", "-")),
                )
        out.print(table)
        total = 0
        for set_name, report in reports.items():
            hashes = report.artifact_hashes
            if hashes:
                same = len(set(hashes.values())) == 1
                out.print(
                    f"{set_name} analyzer artifacts: "
                    + ", ".join(f"{engine}={h[:12]}" for engine, h in hashes.items())
                    + ("  (identical)" if same else "  (DIFFER)")
                )
            for line in report.examples[:10]:
                out.print(f"  mismatch: {line}")
            total += report.total_mismatches
        out.print(f"{total} mismatches across online/spark/beam")
        if total:
            raise typer.Exit(code=1)
