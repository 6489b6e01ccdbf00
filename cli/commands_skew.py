"""``skewless skew-report``: online/offline consistency, drift and their causes, as a CI gate.

Exit status: 0 when every threshold holds, 1 when one is breached, 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo


def register(app: typer.Typer) -> None:
    @app.command("skew-report")
    @guarded
    def skew_report_command(
        log: Annotated[Path, typer.Option("--log", help="Feature-log directory of the server.")],
        out: Annotated[Path, typer.Option("--out", help="HTML report to write.")] = Path(
            "report.html"
        ),
        training_set: Annotated[
            Path | None,
            typer.Option(
                "--training-set",
                help="Training set Parquet; its .stats.json is computed when missing.",
            ),
        ] = None,
        repo: Repo = DEFAULT_REPO,
        service: Annotated[
            str | None, typer.Option("--service", help="Service, if the logs hold several.")
        ] = None,
        json_out: Annotated[
            Path | None,
            typer.Option("--json", help="JSON summary (default: the --out path with .json)."),
        ] = None,
    ) -> None:
        """Recompute logged feature vectors offline, compare, attribute and check drift."""
        if not log.is_dir():
            fail(f"--log {log} is not a directory")
        if training_set is not None and not training_set.is_file():
            fail(f"--training-set {training_set} does not exist")
        if not (repo / "skewless_manifest.json").is_file():
            fail(f"--repo {repo} has no skewless_manifest.json; run `skewless apply` first")
        from pipelines.skew.report import build_report

        summary = build_report(repo, log, out, training_set, json_out=json_out, service=service)
        causes = ", ".join(f"{c} {n}" for c, n in summary.causes.items() if n) or "none"
        typer.echo(
            f"{summary.service}: {summary.rows:,} logged rows, exact match "
            f"{summary.exact_match_rate:.4%}; mismatch causes: {causes}"
        )
        for b in summary.breaches:
            typer.echo(
                f"BREACH {b['feature']} {b['check']} = {b['value']:.4g} "
                f"(threshold {b['threshold']}): {b['detail']}"
            )
        typer.echo(f"-> {summary.html_path}, {summary.json_path}")
        if summary.breaches:
            raise typer.Exit(code=1)
