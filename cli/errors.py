"""How every skewless command reports expected failures: one line, exit status 2."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from transforms.errors import SkewlessError


def fail(message: str) -> NoReturn:
    """Print ``skewless: error: <message>`` on stderr and exit with status 2."""
    typer.echo(f"skewless: error: {message}", err=True)
    raise typer.Exit(code=2)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a SkewlessError raised by a command into one line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SkewlessError as exc:
            fail(str(exc))

    return wrapper
