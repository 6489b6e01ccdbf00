"""``skewless parity --repo DIR``: a project's own feature sets on its own data through the
online path, Spark and Beam, compared bit for bit.

Entity sets run online entity by entity (``EntityHistoryEngine``, rule 20 of the
contract); request-time sets run on the source rows, their inputs that entity sets
produce taken from the online reference of the same rows. Rows whose key or ordering
column is null are quarantined first, as ``skewless run`` does.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines.batch import SourcePlan, check_input, plan_sources, ship_definitions
from pipelines.parity import ParityReport, compare_engines, run_beam, run_online, run_spark
from pipelines.project import Project
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.statistics import analyze_table

ROW = "zz_parity_row"  # sorts after the source's columns, so rule 20 places rows as in a run


@dataclass
class ProjectParity:
    """Per feature set, the mismatches of Spark and Beam against the online reference."""

    rows: dict[str, int] = field(default_factory=dict)  # source -> rows compared
    quarantined: dict[str, int] = field(default_factory=dict)  # source -> rows set aside
    sets: dict[str, ParityReport] = field(default_factory=dict)

    @property
    def total_mismatches(self) -> int:
        return sum(r.total_mismatches for r in self.sets.values())


def source_rows(src: SourcePlan, sample: int | None, seed: int = 0) -> tuple[pa.Table, int]:
    """The source's rows (a seeded sample of ``sample`` rows, in file order) without the
    rows a run quarantines, numbered in ``ROW``; and how many were quarantined."""
    table = ds.dataset(src.path, format="parquet").to_table()
    if sample is not None and sample < table.num_rows:
        rng = np.random.default_rng(seed)
        table = table.take(np.sort(rng.choice(table.num_rows, sample, replace=False)))
    bad = np.zeros(table.num_rows, dtype=bool)
    for c in src.key_columns:
        bad |= table.column(c).is_null().to_numpy(zero_copy_only=False)
    good = table.filter(pa.array(~bad))
    return good.append_column(ROW, pa.array(np.arange(good.num_rows), pa.int64())), int(bad.sum())


def _run_set(
    fs: FeatureSet, table: pa.Table, work: Path, step: Callable[[str], None]
) -> tuple[ParityReport, pa.Table]:
    report = ParityReport(rows=table.num_rows)
    work.mkdir(parents=True)
    parquet = work / "input.parquet"
    pq.write_table(table, parquet, row_group_size=100_000)
    art = analyze_table(fs, table) if fs.analyzers else None
    if art is not None:
        report.artifact_hashes["python"] = art.content_hash
    step(f"{fs.name}: online")
    t0 = time.perf_counter()
    results = {"online": run_online(fs, art, table, ROW)}
    report.seconds["online"] = time.perf_counter() - t0
    step(f"{fs.name}: spark")
    t0 = time.perf_counter()
    art_spark, results["spark"] = run_spark(fs, parquet, work, ROW)  # analyzes on its own
    report.seconds["spark"] = time.perf_counter() - t0
    step(f"{fs.name}: beam")
    t0 = time.perf_counter()
    art_beam, results["beam"] = run_beam(fs, parquet, work, ROW, art)
    report.seconds["beam"] = time.perf_counter() - t0
    if art is not None:
        report.artifact_hashes["spark"] = art_spark.content_hash
        report.artifact_hashes["beam"] = art_beam.content_hash
    compare_engines(fs, results, report, ROW)
    return report, results["online"]


def run_project_parity(
    project: Project,
    sample: int | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ProjectParity:
    """Every feature set of ``project`` through online, Spark and Beam on its sources."""
    step = progress or (lambda _message: None)
    out = ProjectParity()
    ship_definitions(project)
    with tempfile.TemporaryDirectory(prefix="skewless-parity-", dir=workdir) as tmp:
        for src in plan_sources(project):
            check_input(src)
            step(f"{src.name}: reading")
            table, quarantined = source_rows(src, sample)
            out.rows[src.name], out.quarantined[src.name] = table.num_rows, quarantined
            produced = table
            for fs in src.entity_sets:
                report, online = _run_set(fs, table, Path(tmp) / fs.name, step)
                out.sets[fs.name] = report
                produced = _with_outputs(produced, online, fs)
            for fs in src.request_sets:
                produced = _with_windows(project, src.name, produced, table, fs)
                missing = [c for c in fs.inputs if c not in produced.schema.names]
                if missing:
                    raise SchemaError(
                        f"feature set '{fs.name}': input '{missing[0]}' is neither a column "
                        f"of source '{src.name}', an output of its entity feature sets nor "
                        "a feature of a window set over it"
                    )
                out.sets[fs.name], _ = _run_set(fs, produced, Path(tmp) / fs.name, step)
    return out


def _with_windows(
    project: Project, source: str, produced: pa.Table, events: pa.Table, fs: FeatureSet
) -> pa.Table:
    """``produced`` plus the window features request-time set ``fs`` reads, each row's
    windows as of its event time over the sampled ``events`` of the same source (the
    transforms' inputs; the windows' own parity is ``skewless parity --windows``)."""
    from transforms.window_runtime import WindowRunner

    for ws in project.window_sets:
        names = [f.name for f in ws.features if f.name in fs.inputs]
        names = [n for n in names if n not in produced.schema.names]
        if not names or project.source_of(ws) != source:
            continue
        queries = produced.select([*ws.entities, ws.event_timestamp])
        got = WindowRunner(ws).run_local(events, queries, ws.event_timestamp)
        for n in names:
            produced = produced.append_column(n, got.column(n))
    return produced


def _with_outputs(table: pa.Table, online: pa.Table, fs: FeatureSet) -> pa.Table:
    """``table`` plus the entity set's outputs of the same rows (aligned on ``ROW``)."""
    position = pc.index_in(table.column(ROW), value_set=online.column(ROW))
    for t in fs.order:
        if t.name not in table.schema.names:
            table = table.append_column(t.name, online.column(t.name).take(position))
    return table
