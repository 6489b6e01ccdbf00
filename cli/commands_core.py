"""``skewless parity``: the cross-engine gate, on a project's own feature sets and data, on
the built-in contract cases (``--rows``), or on window features at scale (``--windows``)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo

DEFAULT_EVENTS = 1_000_000
DEFAULT_QUERIES = 100_000


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
        windows: Annotated[
            bool,
            typer.Option(
                "--windows",
                help="Instead: the built-in window set on generated events and queries, "
                "local reference vs Spark vs Beam vs the online state in Redis.",
            ),
        ] = False,
        events: Annotated[
            int | None, typer.Option("--events", help="With --windows: events (1,000,000).")
        ] = None,
        queries: Annotated[
            int | None, typer.Option("--queries", help="With --windows: query rows (100,000).")
        ] = None,
        seed: Annotated[
            int | None, typer.Option("--seed", help="With --windows: the generator's seed (0).")
        ] = None,
    ) -> None:
        """Run the same rows through online, Spark and Beam; exit 1 on any mismatch."""
        from rich.console import Console
        from rich.table import Table

        if windows:
            if rows is not None or source_sample is not None:
                fail("--windows generates its own events: leave out --rows and --source-sample")
            _window_parity(
                DEFAULT_EVENTS if events is None else events,
                DEFAULT_QUERIES if queries is None else queries,
                0 if seed is None else seed,
            )
            return
        if events is not None or queries is not None or seed is not None:
            fail("--events, --queries and --seed go with --windows")
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


def _window_parity(events: int, queries: int, seed: int) -> None:
    """``parity --windows``: generate, run every engine, print engine x mismatches and
    seconds; exit 1 on any mismatch."""
    from rich.console import Console
    from rich.table import Table

    for option, value in (("--events", events), ("--queries", queries)):
        if value <= 0:
            fail(f"{option} must be a positive number of rows, got {value}")
    if seed < 0:
        fail(f"--seed must be 0 or more, got {seed}")
    from pipelines.window_parity import ENGINES, run_window_parity
    from pipelines.window_parity_cases import window_parity_data

    console = Console(stderr=True)
    out = Console()
    with console.status("parity --windows") as status:
        progress = lambda msg: status.update(f"parity --windows: {msg}")  # noqa: E731
        progress(f"generating {events:,} events and {queries:,} queries")
        data = window_parity_data(events, queries, seed)
        report = run_window_parity(data.events, data.queries, progress=progress)
    table = Table(
        title=f"skewless parity --windows: {report.events:,} events, {report.queries:,} "
        f"queries, {report.features} features, seed {seed}"
    )
    for name in ("engine", "mismatches", "rows", "with events", "seconds"):
        table.add_column(name, justify="left" if name == "engine" else "right")
    for engine in ENGINES:
        table.add_row(
            "local (reference)" if engine == "local" else engine,
            "-" if engine == "local" else f"{report.engine_mismatches(engine):,}",
            f"{report.rows[engine]:,}",
            f"{report.nonempty[engine]:,}",
            f"{report.seconds[engine]:.1f}",
        )
    out.print(table)
    phases = ", ".join(
        f"{p} {report.seconds[f'online {p}']:.1f} s" for p in ("push", "reads", "answers")
    )
    out.print(f"online: {phases}; with events: rows whose longest window holds one")
    out.print("events: " + ", ".join(f"{k} {v:,}" for k, v in data.cases.items()))
    for engine, by_feature in report.mismatches.items():
        bad = {k: v for k, v in by_feature.items() if v}
        if bad:
            out.print(f"{engine} mismatches by feature: {bad}")
    for line in report.examples[:10]:
        out.print(f"  mismatch: {line}")
    out.print(f"{report.total_mismatches} mismatches across local/spark/beam/online")
    if report.total_mismatches:
        raise typer.Exit(code=1)
