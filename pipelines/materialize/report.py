"""What a materialization or verification did, per view, and its plain-text summary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class ViewReport:
    """What happened to one FeatureView: rows read, keys expected/written/verified."""

    view: str
    rows_scanned: int = 0
    expected: int = 0  # distinct entities with a row in the window
    written: int = 0  # keys written by this run (RESTORE of new keys, HSET of newer rows)
    skipped_not_newer: int = 0  # Redis already held an equal or newer event time
    present: int | None = None  # verify: expected keys whose stored event time >= ours
    sampled: int = 0
    verified: int = 0  # verify: sampled entities whose decoded values equal the offline row
    superseded: int = 0  # verify: sampled entities holding a newer row (e.g. a push)
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        """Entities missing or wrong in Redis (0 when unverified)."""
        missing = 0 if self.present is None else self.expected - self.present
        return missing + len(self.mismatches)


@dataclass
class MaterializeReport:
    """Per-view results of one ``materialize`` or ``verify`` call."""

    start: datetime
    end: datetime
    views: list[ViewReport] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. why RESTORE was not used

    @property
    def rows_scanned(self) -> int:
        return sum(v.rows_scanned for v in self.views)

    @property
    def ok(self) -> bool:
        """False when verification found missing or wrong entities."""
        return all(v.lost == 0 for v in self.views)


def iter_report_lines(report: MaterializeReport) -> Iterator[str]:
    """Plain-text summary lines (used by the CLI and the benchmark)."""
    for v in report.views:
        present = "-" if v.present is None else str(v.present)
        yield (
            f"{v.view}: rows={v.rows_scanned} expected={v.expected} written={v.written} "
            f"skipped_not_newer={v.skipped_not_newer} present={present} "
            f"verified={v.verified}/{v.sampled} superseded={v.superseded} lost={v.lost} "
            f"({v.seconds:.2f}s)"
        )
    yield from report.notes
