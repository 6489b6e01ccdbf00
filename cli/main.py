"""The ``skewless`` command line. Each subcommand imports its engine lazily so that
``skewless serve`` never pays for Spark, Beam or Feast imports."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="skewless",
    help="Write feature transforms once; run them in Spark, Beam and online without skew.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each module adds its own commands; importing them is cheap (engines load lazily).
    from cli import (
        commands_core,
        commands_demo,
        commands_generate,
        commands_materialize,
        commands_pipeline,
        commands_serve,
        commands_skew,
        commands_stream,
    )

    for module in (
        commands_core,
        commands_generate,
        commands_pipeline,
        commands_materialize,
        commands_serve,
        commands_skew,
        commands_stream,
        commands_demo,
    ):
        module.register(app)


_register()


def main() -> None:
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
