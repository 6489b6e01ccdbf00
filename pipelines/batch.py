"""``skewless run``: raw transactions -> statistics artifact + entity feature tables.

The same feature sets run on Spark or on Beam (the user's choice) and give identical
output. This module only checks the input, wires reads and writes for each engine and
swaps the output in atomically; the feature logic is in the feature-set module.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipelines.atomic import staged_dir
from transforms.artifact import StatisticsArtifact
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.runtime import FeatureSetRunner

CREATED = "created_timestamp"
QUARANTINE = "quarantine/transactions"


@dataclass
class RunReport:
    engine: str
    rows_in: int = 0
    rows_quarantined: int = 0
    rows_out: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # feature set -> content hash
    seconds: float = 0.0
    output: str = ""


def feature_sets() -> tuple[tuple[FeatureSet, ...], tuple[FeatureSet, ...]]:
    from feature_repo.feature_sets import ENTITY_FEATURE_SETS, REQUEST_FEATURE_SETS

    return ENTITY_FEATURE_SETS, REQUEST_FEATURE_SETS


def key_columns() -> tuple[str, ...]:
    """Columns a raw row must have to be placed: every entity key and ordering column of the
    entity feature sets (a row missing one is quarantined, never silently dropped)."""
    entity_sets, _ = feature_sets()
    return tuple(dict.fromkeys(c for fs in entity_sets for c in (*fs.entities, *fs.order_by)))


def passthrough(fs: FeatureSet) -> list[str]:
    """Columns every feature row keeps: keys, event and created time, the source event id."""
    return [*fs.entities, fs.event_timestamp, CREATED, "txn_id"]


def check_input(transactions: Path) -> pa.Schema:
    """Fail early, naming the column, when raw data is missing or its schema changed."""
    if not transactions.exists():
        raise SchemaError(f"raw transactions not found at {transactions}")
    try:
        schema = ds.dataset(transactions, format="parquet").schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(
            f"raw transactions at {transactions} are not readable Parquet: {exc}"
        ) from None
    entity_sets, request_sets = feature_sets()
    wanted: dict[str, pa.DataType] = {
        "txn_id": pa.int64(),
        "user_id": pa.int64(),
        "merchant_id": pa.int64(),
        "event_timestamp": pa.timestamp("us", tz="UTC"),
        CREATED: pa.timestamp("us", tz="UTC"),
    }
    for fs in (*entity_sets, *request_sets):
        for name, f in fs.inputs.items():
            if name in schema.names or fs in entity_sets:
                wanted.setdefault(name, f.type.arrow)
    for name, dtype in wanted.items():
        if name not in schema.names:
            raise SchemaError(f"raw transactions: column '{name}' is missing")
        got = schema.field(name).type
        if pa.types.is_timestamp(dtype):
            if not pa.types.is_timestamp(got):
                raise SchemaError(
                    f"raw transactions: column '{name}' is {got}, expected a timestamp"
                )
            if got.tz is None:
                raise SchemaError(
                    f"raw transactions: column '{name}' is a timestamp without time zone; "
                    "write it as UTC"
                )
        elif got != dtype and not (pa.types.is_integer(got) and pa.types.is_integer(dtype)):
            raise SchemaError(f"raw transactions: column '{name}' is {got}, expected {dtype}")
    return schema


def run(
    engine: str,
    input_dir: Path,
    output_dir: Path,
    *,
    master: str = "local[*]",
    beam_options: Sequence[str] = (),
) -> RunReport:
    """Compute artifacts and entity features from ``input_dir/transactions`` into ``output_dir``.

    The output directory is replaced only when the whole run succeeded.
    """
    transactions = Path(input_dir) / "transactions"
    schema = check_input(transactions)
    report = RunReport(engine=engine, output=str(output_dir))
    started = time.perf_counter()
    with staged_dir(Path(output_dir)) as tmp:
        if engine == "spark":
            _run_spark(transactions, tmp, master, report)
        elif engine == "beam":
            _run_beam(transactions, schema, tmp, list(beam_options), report)
        else:
            raise SchemaError(f"--engine must be spark or beam, got {engine!r}")
        for view_dir in (tmp / "features").iterdir():
            report.rows_out[view_dir.name] = ds.dataset(view_dir, format="parquet").count_rows()
        report.seconds = time.perf_counter() - started
        (tmp / "_run.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _null_key_filter() -> str:
    return " OR ".join(f"{c} IS NULL" for c in key_columns())


def _run_spark(transactions: Path, out: Path, master: str, report: RunReport) -> None:
    from pipelines.spark_session import get_spark
    from transforms.engines import spark as spark_engine

    session = get_spark(master)
    raw = session.read.parquet(str(transactions))
    bad_filter = _null_key_filter()
    good = raw.filter(f"NOT ({bad_filter})").cache()
    report.rows_in = raw.count()
    report.rows_quarantined = raw.filter(bad_filter).count()
    if report.rows_quarantined:
        raw.filter(bad_filter).write.parquet(str(out / QUARANTINE))
    entity_sets, request_sets = feature_sets()
    for fs in request_sets:
        art = spark_engine.analyze(good, fs)
        art.save(out / "artifacts" / f"{fs.name}.json")
        report.artifacts[fs.name] = art.content_hash
    for fs in entity_sets:
        features = spark_engine.apply_transforms(good, fs, None, passthrough=passthrough(fs))
        features.write.parquet(str(out / "features" / fs.name))
    good.unpersist()


def _run_beam(
    transactions: Path, schema: pa.Schema, out: Path, options: list[str], report: RunReport
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.engines.beam import AnalyzeDataset, ApplyTransforms

    entity_sets, request_sets = feature_sets()
    if not any(o.startswith("--runner") for o in options):
        options = ["--runner=DirectRunner", "--direct_num_workers=1", *options]
    counts = out / "_counts"
    counts.mkdir()

    keys = key_columns()

    def has_null_key(row: dict[str, Any]) -> int:
        return int(any(row.get(c) is None for c in keys))

    with beam.Pipeline(options=PipelineOptions(options)) as p:
        raw = p | "Read" >> beam.io.ReadFromParquet(str(transactions / "*.parquet"))
        split: Any = lambda row, _: has_null_key(row)  # noqa: E731 - Beam's typing wants WithTypeHints
        good, bad = raw | "SplitNullKeys" >> beam.Partition(split, 2)
        _ = (
            raw
            | "CountIn" >> beam.combiners.Count.Globally()
            | "SaveIn" >> beam.Map(lambda n: (counts / "in").write_text(str(n)))
        )
        _ = (
            bad
            | "CountBad" >> beam.combiners.Count.Globally()
            | "SaveBad" >> beam.Map(lambda n: (counts / "bad").write_text(str(n)))
        )
        _ = bad | "Quarantine" >> beam.io.WriteToParquet(
            str(out / QUARANTINE / "part"), schema, file_name_suffix=".parquet"
        )
        for fs in request_sets:
            path = out / "artifacts" / f"{fs.name}.json"
            _ = (
                good
                | f"Analyze[{fs.name}]" >> AnalyzeDataset(fs)
                | f"Save[{fs.name}]" >> beam.Map(lambda a, path=path: a.save(path))
            )
        for fs in entity_sets:
            keep = passthrough(fs)
            out_schema = FeatureSetRunner(fs, None).output_schema(schema, keep)
            _ = (
                good
                | f"Apply[{fs.name}]" >> ApplyTransforms(fs, None, passthrough=keep)
                | f"Write[{fs.name}]"
                >> beam.io.WriteToParquet(
                    str(out / "features" / fs.name / "part"),
                    out_schema,
                    file_name_suffix=".parquet",
                )
            )
    report.rows_in = int((counts / "in").read_text())
    report.rows_quarantined = int((counts / "bad").read_text())
    if not report.rows_quarantined:
        shutil.rmtree(out / "quarantine", ignore_errors=True)
    shutil.rmtree(counts)
    for fs in request_sets:
        report.artifacts[fs.name] = StatisticsArtifact.load(
            out / "artifacts" / f"{fs.name}.json"
        ).content_hash


def read_features(output_dir: Path, view: str) -> pa.Table:
    """One feature table, sorted by its keys and event order (for comparisons and tests)."""
    table = pq.read_table(Path(output_dir) / "features" / view)
    entity_sets, _ = feature_sets()
    fs = next(f for f in entity_sets if f.name == view)
    return table.sort_by([(c, "ascending") for c in (*fs.entities, *fs.order_by)])
