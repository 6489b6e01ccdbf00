"""Spark engine: moves Arrow batches through ``mapInArrow``; the logic is the feature set's.

Workers must run the driver's Python (``PYSPARK_PYTHON = sys.executable``) and the
session time zone must be UTC; :func:`pipelines.spark_session.get_spark` does both.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from transforms.aggregations import WindowSet
from transforms.artifact import StatisticsArtifact
from transforms.feature_set import FeatureSet
from transforms.runtime import FeatureSetRunner
from transforms.statistics import StatisticsCombiner
from transforms.window_runtime import WindowRunner


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, prefer_timestamp_ntz=False)


def apply_transforms(
    df: Any,
    feature_set: FeatureSet,
    artifact: StatisticsArtifact | None,
    passthrough: Sequence[str] | None = None,
    request_time: bool | None = None,
) -> Any:
    """A DataFrame of ``passthrough`` columns (default: keys and event time) plus outputs."""
    selected = feature_set.select(request_time=request_time)
    runner = FeatureSetRunner(feature_set, artifact, selected)
    keep = list(passthrough if passthrough is not None else _default_passthrough(df, feature_set))
    arrow_in = _input_arrow_schema(df, keep)
    out_schema = runner.output_schema(arrow_in, keep)

    if feature_set.order_by:
        # Entity feature set: Spark shuffles each entity's rows to one call; a row with a
        # null key or ordering column has no place in a history (rule 22).
        def run_group(table: pa.Table) -> pa.Table:
            return runner.run_grouped_arrow(table, keep)

        placed = df.filter(~_null_key_condition(df, feature_set))
        return placed.groupBy(*feature_set.entities).applyInArrow(
            run_group, _spark_schema(out_schema)
        )

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield runner.run_arrow(batch, keep)

    return df.mapInArrow(run, _spark_schema(out_schema))


def null_key_rows(df: Any, feature_set: FeatureSet) -> Any:
    """The rows of ``df`` that ``apply_transforms`` leaves out of an entity feature set's
    output: a null entity key or ``order_by`` column (rule 22). Count or keep them."""
    return df.filter(_null_key_condition(df, feature_set))


def _null_key_condition(df: Any, feature_set: FeatureSet) -> Any:
    from pyspark.sql import functions as F

    condition = F.lit(False)
    for name in feature_set.key_columns:
        if name in df.columns:  # a missing column stays the runner's error (rule 17)
            condition = condition | F.col(name).isNull()
    return condition


def apply_windows(
    ws: WindowSet, events: Any, queries: Any, query_time: str, passthrough: Sequence[str]
) -> Any:
    """Every query row's ``passthrough`` columns and window features as of its
    ``query_time`` (CONTRACT rules 23-30): events become the event log per Arrow batch,
    then each entity's log rows and query rows meet in one ``aggregate_entity`` call.
    A query row with a null key or time gets null features (rule 24)."""
    from pyspark.sql import functions as F

    runner = WindowRunner(ws)
    log_schema = runner.log_schema(_input_arrow_schema(events, events.columns))
    out_schema = runner.output_schema(
        _input_arrow_schema(queries, queries.columns), query_time, passthrough
    )
    spark_out = _spark_schema(out_schema)

    def to_log(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield from runner.event_values(batch).to_batches()

    def answer(log: pa.Table, rows: pa.Table) -> pa.Table:
        return runner.answer_arrow(log, rows, query_time, out_schema)

    log = events.mapInArrow(to_log, _spark_schema(log_schema))
    unplaced = F.lit(False)
    for c in runner.unplaced(query_time):
        unplaced = unplaced | F.col(c).isNull()
    keys = runner.keys
    placed = log.groupBy(*keys).cogroup(queries.filter(~unplaced).groupBy(*keys))
    nulls = [
        F.lit(None).cast(f.dataType).alias(f.name) for f in spark_out.fields[len(passthrough) :]
    ]
    rest = queries.filter(unplaced).select(*passthrough, *nulls)
    return placed.applyInArrow(answer, spark_out).unionByName(rest)


def analyze(df: Any, feature_set: FeatureSet) -> StatisticsArtifact:
    """Full-pass statistics: each partition folds its batches, the driver merges partials."""
    combiner = StatisticsCombiner(feature_set)
    columns = sorted({c for c, _ in combiner.slots})
    if not columns:
        return combiner.finish(combiner.create(), engine="spark")

    def fold(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        acc = combiner.create()
        for batch in batches:
            combiner.add_arrow(acc, batch)
        yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps(acc)], pa.binary())], ["acc"])

    from pyspark.sql.types import BinaryType, StructField, StructType

    partials = (
        df.select(*columns)
        .mapInArrow(fold, StructType([StructField("acc", BinaryType())]))
        .collect()
    )
    merged = combiner.merge(pickle.loads(row["acc"]) for row in partials)
    return combiner.finish(merged, engine="spark")


def _default_passthrough(df: Any, feature_set: FeatureSet) -> list[str]:
    wanted = [*feature_set.entities, feature_set.event_timestamp]
    return [c for c in wanted if c in df.columns]


def _input_arrow_schema(df: Any, keep: Sequence[str]) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.select(*keep).schema, timezone="UTC") if keep else pa.schema([])
