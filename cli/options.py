"""Options every project command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Repo = Annotated[
    Path,
    typer.Option(
        "--repo",
        "-c",
        help="The project directory (skewless.yaml, feature_store.yaml); default: here.",
    ),
]
DEFAULT_REPO = Path(".")
