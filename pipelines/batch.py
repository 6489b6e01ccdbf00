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

from pipelines.atomic import OWNED_BY_RUN, clean_stale_staging, staged_entries
from pipelines.project import KEY_TYPES, Project, SourceConfig
from transforms.artifact import StatisticsArtifact
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.runtime import FeatureSetRunner

QUARANTINE = "quarantine"


@dataclass
class RunReport:
    engine: str
    rows_in: int = 0
    rows_quarantined: int = 0
    rows_out: dict[str, int] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # feature set -> content hash
    seconds: float = 0.0
    output: str = ""
    stale_staging_removed: list[str] = field(default_factory=list)  # left by killed runs
    sources: dict[str, str] = field(default_factory=dict)  # source -> the path it read


@dataclass(frozen=True)
class SourcePlan:
    """One raw source and the feature sets that read it."""

    name: str
    path: str
    config: SourceConfig
    entity_sets: tuple[FeatureSet, ...]
    request_sets: tuple[FeatureSet, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Columns a raw row must have to be placed: every entity key and ordering column
        of its entity feature sets (a row missing one is quarantined, never dropped)."""
        return tuple(dict.fromkeys(c for fs in self.entity_sets for c in fs.key_columns))

    def passthrough(self, fs: FeatureSet) -> list[str]:
        """Columns every feature row keeps: keys, event and created time, the row id."""
        extra = (self.config.created_timestamp, self.config.row_id)
        return list(dict.fromkeys([*fs.entities, fs.event_timestamp, *(c for c in extra if c)]))


def plan_sources(project: Project, input_dir: Path | None = None) -> list[SourcePlan]:
    """The project's sources with their readers; ``input_dir`` relocates every source to
    ``input_dir/<source name>`` (as ``skewless run --input`` does)."""
    plans = []
    for name, config in project.config.sources.items():
        sets = [fs for fs in project.feature_sets if project.source_of(fs) == name]
        path = str(Path(input_dir) / name) if input_dir else project.source_path(name)
        plans.append(
            SourcePlan(
                name,
                path,
                config,
                tuple(fs for fs in sets if fs.order_by),
                tuple(fs for fs in sets if not fs.order_by),
            )
        )
    return [p for p in plans if p.entity_sets or p.request_sets]


def _dataset(path: str) -> ds.Dataset:
    return ds.dataset(path, format="parquet")


def check_input(source: SourcePlan) -> pa.Schema:
    """Fail early, naming the source and column, when raw data is missing or changed."""
    where = f"source '{source.name}'"
    if "://" not in source.path and not Path(source.path).exists():
        raise SchemaError(f"{where}: no data at {source.path}")
    try:
        schema = _dataset(source.path).schema
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{where}: {source.path} is not readable Parquet: {exc}") from None
    cfg = source.config
    utc = pa.timestamp("us", tz="UTC")
    wanted: dict[str, pa.DataType] = {k: KEY_TYPES[t] for k, t in cfg.entities.items()}
    wanted[cfg.event_timestamp] = utc
    if cfg.created_timestamp:
        wanted[cfg.created_timestamp] = utc
    if cfg.row_id:
        wanted.setdefault(cfg.row_id, pa.int64())
    for fs in (*source.entity_sets, *source.request_sets):
        for name, f in fs.inputs.items():
            if name in schema.names or fs.order_by:
                wanted.setdefault(name, f.type.arrow)
    for name, dtype in wanted.items():
        if name not in schema.names:
            raise SchemaError(f"{where}: column '{name}' is missing")
        _check_column(where, name, schema.field(name).type, dtype, name == cfg.row_id)
    return schema


def _check_column(
    where: str, name: str, got: pa.DataType, dtype: pa.DataType, row_id: bool
) -> None:
    """One source column against the type the project wants (integers of any width for
    integers, large strings for strings, any integer or string as the row id)."""
    if pa.types.is_timestamp(dtype):
        if not pa.types.is_timestamp(got):
            raise SchemaError(f"{where}: column '{name}' is {got}, expected a timestamp")
        if got.tz is None:
            raise SchemaError(
                f"{where}: column '{name}' is a timestamp without time zone; write it as UTC"
            )
    elif row_id and (pa.types.is_integer(got) or pa.types.is_string(got)):
        return
    elif pa.types.is_large_string(got) and dtype == pa.string():
        return
    elif got != dtype and not (pa.types.is_integer(got) and pa.types.is_integer(dtype)):
        raise SchemaError(f"{where}: column '{name}' is {got}, expected {dtype}")


def run(
    engine: str,
    project: Project,
    output_dir: Path | None = None,
    *,
    input_dir: Path | None = None,
    master: str = "local[*]",
    beam_options: Sequence[str] = (),
) -> RunReport:
    """Compute the project's artifacts and entity features from its raw sources into
    ``output_dir`` (default: the project's data directory).

    Its features, artifacts and quarantine are replaced only when the whole run
    succeeded; nothing else in the directory is touched.
    """
    if engine not in ("spark", "beam"):
        raise SchemaError(f"--engine must be spark or beam, got {engine!r}")
    output_dir = Path(output_dir) if output_dir else project.data_dir
    sources = plan_sources(project, input_dir)
    schemas = [check_input(src) for src in sources]
    report = RunReport(
        engine=engine, output=str(output_dir), sources={s.name: _absolute(s.path) for s in sources}
    )
    report.stale_staging_removed = [p.name for p in clean_stale_staging(output_dir)]
    started = time.perf_counter()
    if engine == "spark":
        ship_definitions(project)
    with staged_entries(output_dir, OWNED_BY_RUN) as tmp:
        (tmp / "features").mkdir()
        for src, schema in zip(sources, schemas, strict=True):
            if engine == "spark":
                _run_spark(src, tmp, master, report)
            else:
                _run_beam(src, schema, tmp, list(beam_options), report)
        for view_dir in (tmp / "features").iterdir():
            report.rows_out[view_dir.name] = ds.dataset(view_dir, format="parquet").count_rows()
        report.seconds = time.perf_counter() - started
        (tmp / "_run.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def ship_definitions(project: Project) -> None:
    """Spark workers cannot import modules of the project directory: its definition
    modules are pickled by value (cloudpickle), so they also reach a cluster's workers."""
    from pyspark import cloudpickle

    for module in project.modules:
        path = Path(getattr(module, "__file__", "") or "/").resolve()
        if path.is_relative_to(project.root):
            cloudpickle.register_pickle_by_value(module)


def _null_key_filter(src: SourcePlan) -> str:
    return " OR ".join(f"`{c}` IS NULL" for c in src.key_columns) or "FALSE"


def _run_spark(src: SourcePlan, out: Path, master: str, report: RunReport) -> None:
    from pipelines.spark_session import get_spark
    from transforms.engines import spark as spark_engine

    session = get_spark(master)
    raw = session.read.parquet(src.path)
    bad_filter = _null_key_filter(src)
    good = raw.filter(f"NOT ({bad_filter})").cache()
    report.rows_in += raw.count()
    bad = raw.filter(bad_filter).count()
    report.rows_quarantined += bad
    if bad:
        raw.filter(bad_filter).write.parquet(str(out / QUARANTINE / src.name))
    for fs in src.request_sets:
        art = spark_engine.analyze(good, fs)
        art.save(out / "artifacts" / f"{fs.name}.json")
        report.artifacts[fs.name] = art.content_hash
    for fs in src.entity_sets:
        features = spark_engine.apply_transforms(good, fs, None, passthrough=src.passthrough(fs))
        features.write.parquet(str(out / "features" / fs.name))
    good.unpersist()


def _parquet_glob(path: str) -> str:
    """Beam's file pattern for a Parquet file, directory or glob."""
    if any(ch in path for ch in "*?[") or path.endswith(".parquet"):
        return path
    return path.rstrip("/") + "/*.parquet"


def _run_beam(
    src: SourcePlan, schema: pa.Schema, out: Path, options: list[str], report: RunReport
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.engines.beam import LOCAL_RUNNER, AnalyzeDataset, ApplyTransforms

    if not any(o.startswith("--runner") for o in options):
        options = [*LOCAL_RUNNER, *options]
    counts = out / f"_counts-{src.name}"
    counts.mkdir()

    keys = src.key_columns

    def has_null_key(row: dict[str, Any]) -> int:
        return int(any(row.get(c) is None for c in keys))

    with beam.Pipeline(options=PipelineOptions(options)) as p:
        raw = p | "Read" >> beam.io.ReadFromParquet(_parquet_glob(src.path))
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
            str(out / QUARANTINE / src.name / "part"), schema, file_name_suffix=".parquet"
        )
        for fs in src.request_sets:
            path = out / "artifacts" / f"{fs.name}.json"
            _ = (
                good
                | f"Analyze[{fs.name}]" >> AnalyzeDataset(fs)
                | f"Save[{fs.name}]" >> beam.Map(lambda a, path=path: a.save(path))
            )
        for fs in src.entity_sets:
            keep = src.passthrough(fs)
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
    report.rows_in += int((counts / "in").read_text())
    bad_rows = int((counts / "bad").read_text())
    report.rows_quarantined += bad_rows
    if not bad_rows:
        shutil.rmtree(out / QUARANTINE / src.name, ignore_errors=True)
        if (out / QUARANTINE).is_dir() and not any((out / QUARANTINE).iterdir()):
            (out / QUARANTINE).rmdir()
    shutil.rmtree(counts)
    for fs in src.request_sets:
        report.artifacts[fs.name] = StatisticsArtifact.load(
            out / "artifacts" / f"{fs.name}.json"
        ).content_hash


def read_features(project: Project, output_dir: Path, view: str) -> pa.Table:
    """One feature table, sorted by its keys and event order (for comparisons and tests)."""
    table = pq.read_table(Path(output_dir) / "features" / view)
    fs = project.feature_set(view)
    return table.sort_by([(c, "ascending") for c in (*fs.entities, *fs.order_by)])
