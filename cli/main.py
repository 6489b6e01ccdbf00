"""The ``skewless`` command line. Each subcommand imports its engine lazily so that
``skewless serve`` never pays for Spark, Beam or Feast imports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from transforms.errors import SkewlessError

app = typer.Typer(
    name="skewless",
    help="Write feature transforms once; run them in Spark, Beam and online without skew.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """Print one line on stderr and exit with status 2 (bad input / unavailable service)."""
    typer.echo(f"skewless: error: {message}", err=True)
    raise typer.Exit(code=2)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a SkewlessError raised by a command into one line and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SkewlessError as exc:
            fail(str(exc))

    return wrapper


def _register() -> None:
    # Each module adds its own commands to ``app``; importing them is cheap (no engines).
    from cli import commands_core  # noqa: F401


_register()


def main() -> None:
    app(sys.argv[1:])
