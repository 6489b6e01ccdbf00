"""Beam engine: composite PTransforms that batch elements and call the feature set's
runner; analysis is a ``CombineFn`` over the same exact accumulators."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import DoOutputsTuple, PCollection

from transforms.aggregations import WindowSet
from transforms.artifact import StatisticsArtifact
from transforms.feature_set import FeatureSet
from transforms.runtime import FeatureSetRunner
from transforms.statistics import Accumulators, StatisticsCombiner
from transforms.window_runtime import WindowRunner

LOCAL_RUNNER = ("--runner=FnApiRunner", "--direct_num_workers=1")
"""Beam's in-process runner, as pipeline options. ``--runner=DirectRunner`` first tries
Prism, which downloads its binary from GitHub (and falls back to this runner only when
that fails); skewless never downloads a runner."""

GOOD, QUARANTINED = "good", "quarantined"  # the tagged outputs of SplitNullKeys

_Rows = PCollection[dict[str, Any]]
# What _AnalyzeFn accumulates: exact accumulators plus dict rows not yet added in a batch.
_AnalyzeState = tuple[Accumulators, list[dict[str, Any]]]


class _RunRows(beam.DoFn):
    def __init__(self, runner: FeatureSetRunner, passthrough: Sequence[str]) -> None:
        self.runner = runner
        self.passthrough = list(passthrough)

    def process(self, rows: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        yield from self.runner.run_rows(rows, self.passthrough)


class _RunGroup(beam.DoFn):
    def __init__(self, runner: FeatureSetRunner, passthrough: Sequence[str]) -> None:
        self.runner = runner
        self.passthrough = list(passthrough)

    def process(self, keyed: tuple[Any, Iterable[dict[str, Any]]]) -> Iterable[dict[str, Any]]:
        yield from self.runner.run_grouped_rows(list(keyed[1]), self.passthrough)


class _RunArrow(beam.DoFn):
    def __init__(self, runner: FeatureSetRunner, passthrough: Sequence[str]) -> None:
        self.runner = runner
        self.passthrough = list(passthrough)

    def process(self, batch: pa.RecordBatch | pa.Table) -> Iterable[pa.RecordBatch]:
        for b in batch.to_batches() if isinstance(batch, pa.Table) else [batch]:
            yield self.runner.run_arrow(b, self.passthrough)


class _SplitNullKeys(beam.DoFn):
    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        self.quarantined = Metrics.counter("skewless", "quarantined_rows")

    def process(self, row: dict[str, Any]) -> Iterable[Any]:
        if any(c in row and row[c] is None for c in self.columns):
            self.quarantined.inc()
            yield beam.pvalue.TaggedOutput(QUARANTINED, row)
        else:
            yield row


class SplitNullKeys(beam.PTransform[_Rows, DoOutputsTuple]):
    """Dict rows -> tagged outputs ``good`` and ``quarantined``: the rows an entity feature
    set cannot place (a null entity key or ``order_by`` column, rule 22), counted in the
    ``skewless/quarantined_rows`` metric. ``ApplyTransforms`` applies it to entity sets."""

    def __init__(self, feature_set: FeatureSet) -> None:
        super().__init__()
        self.columns = feature_set.key_columns

    def expand(self, pcoll: Any) -> Any:
        return pcoll | "Split" >> beam.ParDo(_SplitNullKeys(self.columns)).with_outputs(
            QUARANTINED, main=GOOD
        )


class ApplyTransforms(beam.PTransform[PCollection[Any], PCollection[Any]]):
    """PCollection of dict rows -> dict rows of ``passthrough`` keys plus feature outputs.

    With ``arrow=True`` the elements are Arrow record batches (or tables) instead, as
    ``ReadFromParquetBatched`` yields them, and the output is record batches. An entity
    feature set leaves out and counts the rows ``SplitNullKeys`` quarantines (rule 22).
    """

    def __init__(
        self,
        feature_set: FeatureSet,
        artifact: StatisticsArtifact | None,
        passthrough: Sequence[str] | None = None,
        request_time: bool | None = None,
        arrow: bool = False,
        max_batch_size: int = 10_000,
    ) -> None:
        super().__init__()
        self.runner = FeatureSetRunner(
            feature_set, artifact, feature_set.select(request_time=request_time)
        )
        self.passthrough = list(
            passthrough
            if passthrough is not None
            else [*feature_set.entities, feature_set.event_timestamp]
        )
        self.arrow = arrow
        self.max_batch_size = max_batch_size

    def expand(self, pcoll: Any) -> Any:
        keys = list(self.runner.feature_set.entities)
        if self.runner.feature_set.order_by:
            split = pcoll | "SplitNullKeys" >> SplitNullKeys(self.runner.feature_set)
            return (
                split[GOOD]
                | "KeyByEntity" >> beam.Map(lambda row: (tuple(row[k] for k in keys), row))
                | "GroupByEntity" >> beam.GroupByKey()
                | "Transform" >> beam.ParDo(_RunGroup(self.runner, self.passthrough))
            )
        if self.arrow:
            return pcoll | "Transform" >> beam.ParDo(_RunArrow(self.runner, self.passthrough))
        return (
            pcoll
            | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=self.max_batch_size)
            | "Transform" >> beam.ParDo(_RunRows(self.runner, self.passthrough))
        )


class _EventLog(beam.DoFn):
    """A batch of event dict rows -> (key tuple, that key's event log rows in the batch):
    one element per entity and batch, not per event, goes through the shuffle."""

    def __init__(self, runner: WindowRunner, schema: pa.Schema) -> None:
        self.runner = runner
        self.schema = schema

    def process(self, rows: list[dict[str, Any]]) -> Iterable[tuple[tuple[Any, ...], Any]]:
        log = self.runner.event_values(pa.Table.from_pylist(rows, schema=self.schema))
        keys = self.runner.keys
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in log.to_pylist():
            by_key.setdefault(tuple(row[k] for k in keys), []).append(row)
        yield from by_key.items()


class _KeyQueries(beam.DoFn):
    """A batch of query dict rows -> (key tuple, that key's rows in the batch); a row
    without a place (a null key or query time, rule 24) goes straight to the output,
    with null features."""

    def __init__(self, runner: WindowRunner, query_time: str, passthrough: Sequence[str]) -> None:
        self.runner = runner
        self.columns = runner.unplaced(query_time)
        self.passthrough = list(passthrough)

    def process(self, rows: list[dict[str, Any]]) -> Iterable[Any]:
        keys = self.runner.keys
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in rows:
            if any(row[c] is None for c in self.columns):
                yield beam.pvalue.TaggedOutput(
                    QUARANTINED, self.runner.unplaced_row(row, self.passthrough)
                )
            else:
                by_key.setdefault(tuple(row[k] for k in keys), []).append(row)
        yield from by_key.items()


class _AnswerEntity(beam.DoFn):
    def __init__(
        self,
        runner: WindowRunner,
        log_schema: pa.Schema,
        query_time: str,
        passthrough: Sequence[str],
    ) -> None:
        self.runner = runner
        self.log_schema = log_schema
        self.query_time = query_time
        self.passthrough = list(passthrough)

    def process(self, keyed: tuple[Any, dict[str, Iterable[Any]]]) -> Iterable[dict[str, Any]]:
        groups = keyed[1]
        yield from self.runner.answer_rows(
            [row for part in groups["log"] for row in part],
            self.log_schema,
            [row for part in groups["queries"] for row in part],
            self.query_time,
            self.passthrough,
        )


class ComputeWindows(beam.PTransform[Any, PCollection[dict[str, Any]]]):
    """``{"events": ..., "queries": ...}`` (or a pair) of dict-row PCollections -> dict rows
    of each query's ``passthrough`` columns and window features as of its ``query_time``
    (CONTRACT rules 23-30). Events become the event log in batches (in ``events_schema``);
    each entity's log and query rows meet in one ``aggregate_entity`` call after a
    ``CoGroupByKey``. A query row with a null key or time gets null features (rule 24)."""

    def __init__(
        self,
        ws: WindowSet,
        events_schema: pa.Schema,
        query_time: str,
        passthrough: Sequence[str],
        max_batch_size: int = 10_000,
    ) -> None:
        super().__init__()
        self.runner = WindowRunner(ws)
        self.events_schema = events_schema
        self.log_schema = self.runner.log_schema(events_schema)
        self.query_time = query_time
        self.passthrough = list(passthrough)
        self.max_batch_size = max_batch_size

    def expand(self, pcolls: Any) -> Any:
        events, queries = (
            (pcolls["events"], pcolls["queries"]) if isinstance(pcolls, dict) else pcolls
        )
        size = {"min_batch_size": 64, "max_batch_size": self.max_batch_size}
        log = (
            events
            | "Batch" >> beam.BatchElements(**size)
            | "EventLog" >> beam.ParDo(_EventLog(self.runner, self.events_schema))
        )
        keyed = (
            queries
            | "BatchQueries" >> beam.BatchElements(**size)
            | "KeyQueries"
            >> beam.ParDo(_KeyQueries(self.runner, self.query_time, self.passthrough)).with_outputs(
                QUARANTINED, main=GOOD
            )
        )
        placed = (
            {"log": log, "queries": keyed[GOOD]}
            | "CoGroupByEntity" >> beam.CoGroupByKey()
            | "Answer"
            >> beam.ParDo(
                _AnswerEntity(self.runner, self.log_schema, self.query_time, self.passthrough)
            )
        )
        return (placed, keyed[QUARANTINED]) | "Flatten" >> beam.Flatten()


class _AnalyzeFn(beam.CombineFn):
    def __init__(self, feature_set: FeatureSet, arrow: bool) -> None:
        self.combiner = StatisticsCombiner(feature_set)
        self.arrow = arrow

    def create_accumulator(self) -> _AnalyzeState:
        return self.combiner.create(), []

    def add_input(self, state: _AnalyzeState, element: Any) -> _AnalyzeState:
        acc, pending = state
        if self.arrow:
            self.combiner.add_arrow(acc, element)
            return state
        pending.append(element)
        if len(pending) >= 10_000:
            self.combiner.add_rows(acc, pending)
            pending.clear()
        return state

    def _flush(self, state: _AnalyzeState) -> Accumulators:
        acc, pending = state
        if pending:
            self.combiner.add_rows(acc, pending)
            pending.clear()
        return acc

    def merge_accumulators(self, states: Iterable[_AnalyzeState]) -> _AnalyzeState:
        return self.combiner.merge(self._flush(s) for s in states), []

    def extract_output(self, state: _AnalyzeState) -> StatisticsArtifact:
        return self.combiner.finish(self._flush(state), engine="beam")


class AnalyzeDataset(beam.PTransform[PCollection[Any], PCollection[StatisticsArtifact]]):
    """PCollection of dict rows (or Arrow batches with ``arrow=True``) -> one artifact."""

    def __init__(self, feature_set: FeatureSet, arrow: bool = False) -> None:
        super().__init__()
        self.feature_set = feature_set
        self.arrow = arrow

    def expand(self, pcoll: Any) -> Any:
        return pcoll | "Analyze" >> beam.CombineGlobally(_AnalyzeFn(self.feature_set, self.arrow))
