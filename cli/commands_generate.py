"""Command ``skewless generate``: run the project's declared source generator.

The generator is the project's own code (``generator: module:function`` in skewless.yaml),
called as ``fn(rows, out_dir, seed=, days=)``; it writes ``out_dir/<source>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import fail, guarded
from cli.options import DEFAULT_REPO, Repo


def register(app: typer.Typer) -> None:
    """Add the ``generate`` command to ``app``; the generator is imported only when run."""

    @app.command("generate")
    @guarded
    def generate_command(
        rows: Annotated[int, typer.Option("--rows", help="Number of rows to generate.")],
        out: Annotated[
            Path | None,
            typer.Option(
                "--out",
                help="Output directory (one subdirectory per source); default: the directory "
                "holding the project's first source.",
            ),
        ] = None,
        seed: Annotated[
            int, typer.Option("--seed", help="Random seed; same seed, same bytes.")
        ] = 7,
        days: Annotated[int, typer.Option("--days", help="Days of event time to span.")] = 30,
        repo: Repo = DEFAULT_REPO,
    ) -> None:
        """Write seeded synthetic source data with the project's generator."""
        if rows <= 0:
            fail(f"--rows must be positive, got {rows}")
        if days <= 0:
            fail(f"--days must be positive, got {days}")

        from pipelines.project import load_project

        project = load_project(repo)
        fn = project.generator()
        if out is None:
            first = next(iter(project.config.sources))
            where = project.source_path(first)
            if "://" in where:
                fail(f"source '{first}' is at {where}; pass --out DIR")
            out = Path(where).parent
        if out.exists() and not out.is_dir():
            fail(f"--out {out} exists and is not a directory")
        try:
            result = fn(rows, out, seed=seed, days=days)
        except OSError as exc:
            fail(f"cannot write {out}: {exc.strerror or exc}")
        written = getattr(result, "rows", None)
        out_dir = getattr(result, "out_dir", None)
        if isinstance(written, int) and out_dir is not None:
            typer.echo(f"generated {written:,} rows -> {out_dir}")
        else:
            typer.echo(f"generated -> {out}")
