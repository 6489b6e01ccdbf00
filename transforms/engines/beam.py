"""Beam engine: composite PTransforms that batch elements and call the feature set's
runner; analysis is a ``CombineFn`` over the same exact accumulators."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import DoOutputsTuple, PCollection

from transforms.artifact import StatisticsArtifact
from transforms.feature_set import FeatureSet
from transforms.runtime import FeatureSetRunner
from transforms.statistics import Accumulators, StatisticsCombiner

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
