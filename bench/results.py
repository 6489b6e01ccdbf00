"""Benchmark rows shared by every ``bench/`` script and by ``skewless bench``.

Each script can write its measurements as JSON (``--json PATH``); ``skewless bench``
runs them one after another (never two at once on 2 cores) and prints one table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

ROUNDS = 5  # alternating Feast/skewless rounds per comparison; medians are reported


@dataclass(frozen=True)
class Measure:
    """One measured figure, with Feast's on the same data in the same run when it has one."""

    area: str
    measure: str
    unit: str
    skewless: float
    feast: float | None = None
    higher_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        """How many times better skewless is than Feast (>1 means better)."""
        if self.feast is None or not self.skewless or not self.feast:
            return None
        return self.skewless / self.feast if self.higher_is_better else self.feast / self.skewless


def write_json(measures: list[Measure], path: str | Path | None) -> None:
    if path is not None:
        Path(path).write_text(json.dumps([asdict(m) for m in measures], indent=2) + "\n")


def read_json(path: str | Path) -> list[Measure]:
    return [Measure(**m) for m in json.loads(Path(path).read_text())]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("rows/s", "req/s"):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def markdown(measures: list[Measure]) -> str:
    lines = [
        "| area | measure | unit | skewless | Feast | skewless vs Feast |",
        "|---|---|---|---:|---:|---:|",
    ]
    for m in measures:
        ratio = m.ratio
        lines.append(
            f"| {m.area} | {m.measure} | {m.unit} | {_fmt(m.skewless, m.unit)} | "
            f"{_fmt(m.feast, m.unit)} | {'-' if ratio is None else f'{ratio:.1f}x'} |"
        )
    return "\n".join(lines)
