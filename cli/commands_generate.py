"""Command ``skewless generate``: write the reference domain's synthetic raw data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail
from transforms.errors import SkewlessError


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to ``app``; the generator is imported only when run."""

    @app.command("generate")
    def generate_command(
        rows: Annotated[int, typer.Option("--rows", help="Number of transactions to write.")],
        out: Annotated[Path, typer.Option("--out", help="Output directory (replaced when done).")],
        seed: Annotated[
            int, typer.Option("--seed", help="Random seed; same seed, same bytes.")
        ] = 7,
        days: Annotated[int, typer.Option("--days", help="Days of event time to span.")] = 30,
    ) -> None:
        """Write seeded synthetic users, merchants and card transactions as Parquet."""
        if rows <= 0:
            fail(f"--rows must be positive, got {rows}")
        if days <= 0:
            fail(f"--days must be positive, got {days}")
        if out.exists() and not out.is_dir():
            fail(f"--out {out} exists and is not a directory")

        from pipelines.generate import generate

        try:
            report = generate(rows, out, seed=seed, days=days)
        except SkewlessError as exc:
            fail(str(exc))
            return
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
            return
        typer.echo(
            f"generated {report.rows:,} transactions, {report.users:,} users, "
            f"{report.merchants:,} merchants into {report.out_dir}"
        )
        typer.echo(f"fraud rate {report.fraud_rate:.2%}, {report.seconds:.1f} s")
