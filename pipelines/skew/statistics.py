"""Per-feature statistics of a training set (or of served values), in Python, Spark or Beam.

Nothing new is counted here: each column becomes a pass-through "transform" whose
parameters ask for analyzers, so the feature set's :class:`StatisticsCombiner` (and with
it ``transforms.engines.spark.analyze`` and ``transforms.engines.beam.AnalyzeDataset``)
computes everything with the exact, mergeable accumulators. Two analyzers are added on the
existing accumulator families: :class:`Histogram` (bin counts from the exact value counts)
and :class:`TopValues` (most frequent values, strings or integers). All three engines
therefore give the same JSON, bit for bit.

The result is written as ``<training_set>.stats.json``::

    {"format": 1, "rows": N, "source": ..., "engine": ..., "features": {
        "amount": {"type": "float64", "count": .., "nulls": .., "mean": .., "std": ..,
                   "min": .., "max": .., "quantiles": [...19 boundaries...],
                   "histogram": {"edges": [...], "counts": [...]},
                   "quantile_histogram": {"edges": [...], "counts": [...]},
                   "top_values": null | {"values": [...], "counts": [...], "distinct": k}},
        ...}}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.analyzers import (
    Analyzer,
    Count,
    CountsAccumulator,
    Max,
    Mean,
    Min,
    NullCount,
    QuantileAccumulator,
    Quantiles,
    Std,
    key_values,
)
from transforms.atomic import atomic_file
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.transform import Transform
from transforms.types import BoolType, Field, Float64Type, Int64Type, StringType

FORMAT = 1
QUANTILE_BUCKETS = 20  # 19 boundaries: the bins of the JSD comparisons
HISTOGRAM_BINS = 30  # equal-width bins between min and max (plots)
TOP_K = 50
STATS_SUFFIX = ".stats.json"

_TYPES: dict[str, Any] = {
    "float64": Float64Type,
    "int64": Int64Type,
    "bool": BoolType,
    "string": StringType,
}


# ---------------------------------------------------------------- extra analyzers


def quantile_histogram(edges: Sequence[float], keys: np.ndarray, counts: np.ndarray) -> list[int]:
    """Counts per bin ``(-inf, e0), [e0, e1), ..., [e_last, inf)`` (``bucketize`` rule)."""
    values = key_values(keys) if len(keys) else np.empty(0)
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    out = np.zeros(len(edges) + 1, dtype=np.int64)
    np.add.at(out, idx, counts)
    return [int(c) for c in out]


@dataclass(frozen=True)
class Histogram(Analyzer):
    """Equal-width histogram plus counts per training-quantile bin, from exact counts."""

    bins: int = HISTOGRAM_BINS
    num_buckets: int = QUANTILE_BUCKETS
    family = "quantiles"
    kind = "skew_histogram"

    def _params(self) -> dict[str, Any]:
        return {"bins": self.bins, "num_buckets": self.num_buckets}

    def finish(self, acc: QuantileAccumulator) -> dict[str, Any]:
        if not len(acc.keys):
            return {"edges": [], "counts": [], "quantile_edges": [], "quantile_counts": []}
        values = key_values(acc.keys)
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            edges = [lo, hi]
            counts = [int(acc.counts.sum())]
        else:
            grid = np.linspace(lo, hi, self.bins + 1)
            idx = np.clip(np.searchsorted(grid, values, side="right") - 1, 0, self.bins - 1)
            c = np.zeros(self.bins, dtype=np.int64)
            np.add.at(c, idx, acc.counts)
            edges, counts = [float(x) for x in grid], [int(x) for x in c]
        q_edges = acc.boundaries(self.num_buckets)
        return {
            "edges": edges,
            "counts": counts,
            "quantile_edges": q_edges,
            "quantile_counts": quantile_histogram(q_edges, acc.keys, acc.counts),
        }


@dataclass(frozen=True)
class NumericTopValues(Analyzer):
    """Most frequent numeric values (exact while the column has few distinct values)."""

    top_k: int = TOP_K
    family = "quantiles"
    kind = "skew_top_values"

    def _params(self) -> dict[str, Any]:
        return {"top_k": self.top_k}

    def finish(self, acc: QuantileAccumulator) -> dict[str, Any]:
        values = key_values(acc.keys) if len(acc.keys) else np.empty(0)
        order = sorted(range(len(values)), key=lambda i: (-int(acc.counts[i]), float(values[i])))
        top = order[: self.top_k]
        return {
            "values": [_num(values[i]) for i in top],
            "counts": [int(acc.counts[i]) for i in top],
            "distinct": int(len(values)),
            "exact": not acc.coarse,
        }


@dataclass(frozen=True)
class StringTopValues(Analyzer):
    """Most frequent strings (count descending, then UTF-8 bytes), nulls and distinct count."""

    top_k: int = TOP_K
    family = "counts"
    kind = "skew_top_values"

    def _params(self) -> dict[str, Any]:
        return {"top_k": self.top_k}

    def finish(self, acc: CountsAccumulator) -> dict[str, Any]:
        items = sorted(acc.counts.items(), key=lambda vc: (-vc[1], vc[0].encode("utf-8")))
        total = sum(acc.counts.values())
        return {
            "values": [v for v, _ in items[: self.top_k]],
            "counts": [c for _, c in items[: self.top_k]],
            "distinct": len(items),
            "exact": True,
            "count": total,
            "nulls": acc.nulls,
        }


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


# ---------------------------------------------------------------- the feature set


def _unused(**_: Any) -> None:  # pragma: no cover - analysis never calls a transform
    raise RuntimeError("statistics transforms are never run")


def column_type(t: pa.DataType) -> str | None:
    """Field type name for an Arrow column type, None when it gets no statistics."""
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_dictionary(t):
        return column_type(t.value_type)
    return None


def statistics_feature_set(columns: dict[str, str], name: str = "skew_statistics") -> FeatureSet:
    """One analyzer-only transform per column (``columns``: name -> field type name)."""
    transforms = []
    for col, tname in sorted(columns.items()):
        ftype = _TYPES[tname]
        analyzers: dict[str, Analyzer]
        if ftype is StringType:
            analyzers = {"top": StringTopValues(col)}
        else:
            analyzers = {
                "count": Count(col),
                "nulls": NullCount(col),
                "mean": Mean(col),
                "std": Std(col),
                "min": Min(col),
                "max": Max(col),
                "quantiles": Quantiles(col, num_buckets=QUANTILE_BUCKETS),
                "histogram": Histogram(col),
            }
            if ftype is not Float64Type:
                analyzers["top"] = NumericTopValues(col)
        transforms.append(
            Transform(
                name=f"__stats__{col}",
                fn=_unused,
                inputs=(Field(col, ftype, nullable=True),),
                output=Field(f"__stats__{col}", Float64Type, nullable=True),
                analyzers=analyzers,
            )
        )
    return FeatureSet(name=name, entities={}, transforms=transforms)


def _shape(fs: FeatureSet, values: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """Artifact values (by analyzer key) -> per-feature statistics."""
    out: dict[str, Any] = {}
    for t in fs.transforms:
        col = t.inputs[0].name
        a = t.analyzers
        if "top" in a and isinstance(a["top"], StringTopValues):
            top = values[a["top"].key()]
            out[col] = {
                "type": columns[col],
                "count": top.pop("count"),
                "nulls": top.pop("nulls"),
                "mean": None,
                "std": None,
                "min": None,
                "max": None,
                "quantiles": [],
                "histogram": None,
                "quantile_histogram": None,
                "top_values": top,
            }
            continue
        hist = values[a["histogram"].key()]
        out[col] = {
            "type": columns[col],
            "count": values[a["count"].key()],
            "nulls": values[a["nulls"].key()],
            "mean": values[a["mean"].key()],
            "std": values[a["std"].key()],
            "min": values[a["min"].key()],
            "max": values[a["max"].key()],
            "quantiles": values[a["quantiles"].key()],
            "histogram": {"edges": hist["edges"], "counts": hist["counts"]},
            "quantile_histogram": {
                "edges": hist["quantile_edges"],
                "counts": hist["quantile_counts"],
            },
            "top_values": values[a["top"].key()] if "top" in a else None,
        }
    return out


def stat_columns(schema: pa.Schema, features: Sequence[str] | None = None) -> dict[str, str]:
    """Columns of ``schema`` that get statistics (``features`` or every typed column)."""
    names = list(features) if features is not None else list(schema.names)
    out = {}
    for n in names:
        if n not in schema.names:
            raise SchemaError(f"statistics: column {n!r} is not in the table")
        t = column_type(schema.field(n).type)
        if t is not None:
            out[n] = t
    return out


def compute_statistics(
    table: pa.Table,
    features: Sequence[str] | None = None,
    *,
    engine: str = "python",
    spark: Any = None,
) -> dict[str, Any]:
    """Per-feature statistics of ``table`` with the python, spark or beam engine."""
    columns = _beyond_float(table, stat_columns(table.schema, features))
    fs = statistics_feature_set(columns)
    table = _castable(table.select(list(columns)), columns)
    if engine == "python":
        from transforms.statistics import analyze_table

        artifact = analyze_table(fs, table)
    elif engine == "spark":
        from transforms.engines.spark import analyze

        if spark is None:
            from pipelines.spark_session import get_spark

            spark = get_spark("local[2]")
        artifact = analyze(spark.createDataFrame(table), fs)
    elif engine == "beam":
        artifact = _beam_analyze(fs, table)
    else:
        raise SchemaError(f"statistics engine must be python, spark or beam, got {engine!r}")
    return {
        "format": FORMAT,
        "rows": table.num_rows,
        "engine": engine,
        "features": _shape(fs, dict(artifact.values), columns),
    }


def _beyond_float(table: pa.Table, columns: dict[str, str]) -> dict[str, str]:
    """Integer columns holding values beyond +-2**53 (ids, hashes) are summarised as
    float64: statistics are for drift, and a nullable Int64 is exact only within it."""
    out = dict(columns)
    for name, tname in columns.items():
        if tname == "int64" and table.num_rows:
            col = table.column(name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            lo, hi = pc.min_max(col.cast(pa.int64())).values()
            if lo.is_valid and max(-lo.as_py(), hi.as_py()) > 2**53:
                out[name] = "float64"
    return out


def _castable(table: pa.Table, columns: dict[str, str]) -> pa.Table:
    """Dictionary columns decoded, integers widened to int64 (the analyzers' input forms)."""
    arrays = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if columns[name] == "int64" and col.type != pa.int64():
            col = col.cast(pa.int64())
        if columns[name] == "float64" and col.type != pa.float64():
            col = col.cast(pa.float64(), safe=False)  # integers beyond 2**53: rounded
        arrays.append(col)
    return pa.table(arrays, names=table.column_names)


def _beam_analyze(fs: FeatureSet, table: pa.Table) -> Any:
    """AnalyzeDataset over Arrow batches; the artifact comes back through a JSON file."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.artifact import StatisticsArtifact
    from transforms.engines.beam import LOCAL_RUNNER, AnalyzeDataset

    batches = table.to_batches(max_chunksize=max(1, table.num_rows // 4))
    if not batches:
        batches = [pa.RecordBatch.from_pylist([], schema=table.schema)]
    with tempfile.TemporaryDirectory(prefix="skew-beam-") as tmp:
        prefix = os.path.join(tmp, "artifact")
        with beam.Pipeline(options=PipelineOptions(list(LOCAL_RUNNER))) as p:
            _ = (
                p
                | beam.Create(batches)
                | AnalyzeDataset(fs, arrow=True)
                | beam.Map(lambda art: json.dumps(art.to_json()))
                | beam.io.WriteToText(prefix, shard_name_template="")
            )
        raw = json.loads(Path(prefix).read_text())
    return StatisticsArtifact.from_json(raw)


# ---------------------------------------------------------------- files


def stats_path(training_set: str | Path) -> Path:
    """``<training_set>.stats.json`` beside the training set."""
    return Path(f"{training_set}{STATS_SUFFIX}")


def write_statistics(stats: dict[str, Any], path: str | Path) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    with atomic_file(path, "w") as fh:
        json.dump(stats, fh, indent=1, sort_keys=True, allow_nan=False)
        fh.write("\n")
    return path


def load_statistics(path: str | Path) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SchemaError(f"training statistics {path} do not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"training statistics {path} are not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or "features" not in raw:
        raise SchemaError(f"training statistics {path} are not format {FORMAT}")
    return raw


def training_features(table: pa.Table) -> list[str] | None:
    """Model inputs named in the training set's metadata: service features + request data."""
    meta = table.schema.metadata or {}
    raw = meta.get(b"skewless.features")
    if raw is None:
        return None
    names = [ref.split(":")[1] for ref in json.loads(raw)]
    return [n for n in names if n in table.schema.names]


def statistics_for_training_set(
    training_set: str | Path,
    *,
    engine: str = "python",
    features: Sequence[str] | None = None,
    extra: Sequence[str] | None = None,
    spark: Any = None,
) -> Path:
    """Compute and write ``<training_set>.stats.json`` (model inputs + request data).

    ``extra`` defaults to the request fields the training set's metadata lists.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(training_set)
    except FileNotFoundError:
        raise SchemaError(f"training set {training_set} does not exist") from None
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise SchemaError(f"training set {training_set} is not readable Parquet: {exc}") from None
    wanted = list(features) if features is not None else training_features(table)
    if wanted is None:
        wanted = list(table.column_names)
    if extra is None:
        raw_fields = (table.schema.metadata or {}).get(b"skewless.request_fields", b"[]")
        extra = json.loads(raw_fields)
    wanted += [c for c in extra if c in table.column_names and c not in wanted]
    stats = compute_statistics(table, wanted, engine=engine, spark=spark)
    stats["source"] = str(training_set)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    stats["training_metadata"] = {k: v for k, v in meta.items() if k.startswith("skewless.")}
    return write_statistics(stats, stats_path(training_set))
