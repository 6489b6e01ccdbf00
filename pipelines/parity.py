"""The parity gate: the same rows through the online path, Spark and Beam, compared bit
for bit (floats by their IEEE bits, nulls by position), and the same for analyzers."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from transforms.artifact import StatisticsArtifact
from transforms.feature_set import FeatureSet

ENGINES = ("online", "spark", "beam")
_ONE_ROW_CALLS = 5_000  # rows sent one by one online; the rest go in small batches


@dataclass
class ParityReport:
    rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    artifact_hashes: dict[str, str] = field(default_factory=dict)
    mismatches: dict[str, dict[str, int]] = field(default_factory=dict)  # transform -> engine -> n
    examples: list[str] = field(default_factory=list)

    @property
    def total_mismatches(self) -> int:
        artifacts = len(set(self.artifact_hashes.values())) > 1
        return sum(sum(m.values()) for m in self.mismatches.values()) + int(artifacts)


def compare_columns(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Positions where two columns differ: null vs value, or any bit of the value."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
    if a.type != b.type:
        return np.arange(len(a))
    na = a.is_null().to_numpy(zero_copy_only=False)
    nb = b.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(a.type):
        va = a.fill_null(0.0).to_numpy().view(np.int64)
        vb = b.fill_null(0.0).to_numpy().view(np.int64)
        differ = va != vb
    else:
        differ = pc.not_equal(a, b).fill_null(False).to_numpy(zero_copy_only=False)
    return np.flatnonzero((na != nb) | (~na & ~nb & differ))


def compare_engines(
    fs: FeatureSet, results: dict[str, pa.Table], report: ParityReport, key: str
) -> None:
    """Count, per transform, the rows where Spark and Beam differ from the online
    reference (tables aligned on ``key``); keep a few examples."""
    reference = results["online"]
    for t in fs.order:
        report.mismatches[t.name] = {}
        for engine in ("spark", "beam"):
            other = results[engine]
            if other.num_rows != reference.num_rows:
                report.mismatches[t.name][engine] = abs(other.num_rows - reference.num_rows)
                continue
            bad = compare_columns(reference.column(t.name), other.column(t.name))
            report.mismatches[t.name][engine] = int(bad.size)
            for i in bad[:3].tolist():
                report.examples.append(
                    f"{fs.name}:{t.name} {key}={reference.column(key)[i].as_py()}: online="
                    f"{reference.column(t.name)[i].as_py()!r} "
                    f"{engine}={other.column(t.name)[i].as_py()!r}"[:300]
                )


def _sorted(table: pa.Table, key: str) -> pa.Table:
    return table.sort_by(key)


def run_online(
    fs: FeatureSet, art: StatisticsArtifact | None, table: pa.Table, key: str
) -> pa.Table:
    """The online engine over ``table``: the first rows one by one, the rest in small
    batches; an entity set's rows go entity by entity (``EntityHistoryEngine``)."""
    if fs.order_by:
        return _run_online_histories(fs, art, table, key)
    from transforms.engines.online import OnlineEngine

    engine = OnlineEngine(fs, art)
    rows = table.to_pylist()
    out: list[dict[str, Any]] = [engine.transform_row(r) for r in rows[:_ONE_ROW_CALLS]]
    for start in range(_ONE_ROW_CALLS, len(rows), 256):
        out.extend(engine.transform_rows(rows[start : start + 256]))
    columns = {key: table.column(key)}
    for f in engine.runner.outputs:
        columns[f.name] = pa.array([r[f.name] for r in out], f.type.arrow, from_pandas=False)
    return pa.table(columns)


def _run_online_histories(
    fs: FeatureSet, art: StatisticsArtifact | None, table: pa.Table, key: str
) -> pa.Table:
    from transforms.engines.online import EntityHistoryEngine

    engine = EntityHistoryEngine(fs, art)
    histories: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        histories.setdefault(tuple(row[k] for k in fs.entities), []).append(row)
    out: list[dict[str, Any]] = []
    for rows in histories.values():
        out.extend(engine.transform_history(rows, [key]))
    columns = {key: pa.array([r[key] for r in out], table.schema.field(key).type)}
    for f in engine.runner.outputs:
        columns[f.name] = pa.array([r[f.name] for r in out], f.type.arrow, from_pandas=False)
    return _sorted(pa.table(columns), key)


def run_spark(
    fs: FeatureSet, parquet: Path, workdir: Path, key: str, art: StatisticsArtifact | None = None
) -> tuple[StatisticsArtifact, pa.Table]:
    """Spark reads ``parquet``, analyzes it (unless ``art`` is given), applies, writes Parquet."""
    from pipelines.spark_session import get_spark
    from transforms.engines import spark as spark_engine

    session = get_spark()
    df = session.read.parquet(str(parquet))
    if art is None:
        art = spark_engine.analyze(df, fs)
    out_dir = workdir / "spark-out"
    spark_engine.apply_transforms(df, fs, art, passthrough=[key]).write.mode("overwrite").parquet(
        str(out_dir)
    )
    return art, _sorted(pq.read_table(out_dir), key)


def run_beam(
    fs: FeatureSet, parquet: Path, workdir: Path, key: str, art: StatisticsArtifact | None
) -> tuple[StatisticsArtifact, pa.Table]:
    """Beam reads ``parquet`` as dict rows, analyzes and applies (with ``art``), writes Parquet."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.engines.beam import LOCAL_RUNNER, AnalyzeDataset, ApplyTransforms
    from transforms.runtime import FeatureSetRunner

    runner = FeatureSetRunner(fs, art)
    schema = runner.output_schema(pq.read_schema(parquet), [key])
    beam_art = workdir / "beam-artifact.json"
    out_prefix = workdir / "beam-out" / "part"
    options = PipelineOptions(list(LOCAL_RUNNER))
    with beam.Pipeline(options=options) as p:
        rows = p | "Read" >> beam.io.ReadFromParquet(str(parquet))
        (rows | "Analyze" >> AnalyzeDataset(fs) | "Save" >> beam.Map(lambda a: a.save(beam_art)))
        (
            rows
            | "Apply" >> ApplyTransforms(fs, art, passthrough=[key])
            | "Write"
            >> beam.io.WriteToParquet(str(out_prefix), schema, file_name_suffix=".parquet")
        )
    table = pq.read_table(out_prefix.parent)
    return StatisticsArtifact.load(beam_art), _sorted(table, key)


def run_parity(
    rows: int,
    feature_set: FeatureSet | None = None,
    table: pa.Table | None = None,
    key: str = "row_id",
    workdir: Path | None = None,
    progress: Any = None,
) -> ParityReport:
    """Run ``rows`` generated rows (or ``table``) through every engine and compare."""
    from pipelines.parity_cases import PARITY_FEATURES, parity_rows
    from transforms.statistics import analyze_table

    fs = feature_set or PARITY_FEATURES
    data = table if table is not None else parity_rows(rows)
    report = ParityReport(rows=data.num_rows)
    step = progress or (lambda _message: None)
    with tempfile.TemporaryDirectory(prefix="skewless-parity-", dir=workdir) as tmp:
        work = Path(tmp)
        parquet = work / "input.parquet"
        pq.write_table(data, parquet, row_group_size=200_000)

        step("analyzers: python")
        t0 = time.perf_counter()
        art_py = analyze_table(fs, data)
        report.seconds["python analyzers"] = time.perf_counter() - t0
        report.artifact_hashes["python"] = art_py.content_hash

        step("transforms: online")
        t0 = time.perf_counter()
        results = {"online": run_online(fs, art_py, data, key)}
        report.seconds["online"] = time.perf_counter() - t0

        step("analyzers + transforms: spark")
        t0 = time.perf_counter()
        art_spark, results["spark"] = run_spark(fs, parquet, work, key)
        report.seconds["spark"] = time.perf_counter() - t0
        report.artifact_hashes["spark"] = art_spark.content_hash

        step("analyzers + transforms: beam")
        t0 = time.perf_counter()
        art_beam, results["beam"] = run_beam(fs, parquet, work, key, art_py)
        report.seconds["beam"] = time.perf_counter() - t0
        report.artifact_hashes["beam"] = art_beam.content_hash

    compare_engines(fs, results, report, key)
    return report
