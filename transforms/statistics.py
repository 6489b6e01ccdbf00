"""Runs a feature set's analyzers as one mergeable combiner: create, add, merge, finish.

Spark and Beam call the same four steps on their partitions and bundles; the pure-Python
path calls them on one table. Accumulators are exact, so all three give equal artifacts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from transforms import _columns
from transforms.analyzers import new_accumulator
from transforms.artifact import StatisticsArtifact
from transforms.feature_set import FeatureSet

Accumulators = dict[tuple[str, str], Any]


class StatisticsCombiner:
    """The analyzers of one feature set as a combiner over batches."""

    def __init__(self, feature_set: FeatureSet) -> None:
        self.feature_set = feature_set
        self.slots = feature_set.accumulator_slots

    def create(self) -> Accumulators:
        return {slot: new_accumulator(slot[1]) for slot in self.slots}

    def _owner(self) -> str:
        return f"feature set '{self.feature_set.name}' analyzer"

    def add_arrow(self, acc: Accumulators, batch: pa.RecordBatch | pa.Table) -> Accumulators:
        names = set(batch.schema.names)
        cache: dict[str, Any] = {}
        for column, family in self.slots:
            if column not in cache:
                if column not in names:
                    raise _columns.InputError(
                        f"{self._owner()}: input '{column}' is missing from the batch"
                    )
                f = self.feature_set.inputs[column]
                cache[column] = _columns.from_arrow(f, batch.column(column), self._owner())
            acc[(column, family)].add(cache[column])
        return acc

    def add_rows(self, acc: Accumulators, rows: Sequence[Mapping[str, Any]]) -> Accumulators:
        cache: dict[str, Any] = {}
        for column, family in self.slots:
            if column not in cache:
                try:
                    values = [r[column] for r in rows]
                except KeyError:
                    raise _columns.InputError(
                        f"{self._owner()}: input '{column}' is missing from the batch"
                    ) from None
                f = self.feature_set.inputs[column]
                cache[column] = _columns.from_python(f, values, self._owner())
            acc[(column, family)].add(cache[column])
        return acc

    def merge(self, accs: Iterable[Accumulators]) -> Accumulators:
        out = self.create()
        for acc in accs:
            for slot, a in acc.items():
                out[slot].merge(a)
        return out

    def finish(self, acc: Accumulators, engine: str = "python") -> StatisticsArtifact:
        values = {
            key: analyzer.finish(acc[(analyzer.column, analyzer.family)])
            for key, analyzer in sorted(self.feature_set.analyzers.items())
        }
        return StatisticsArtifact(self.feature_set.name, values, engine=engine)


def analyze_table(
    feature_set: FeatureSet, table: pa.Table, batch_rows: int = 1_000_000
) -> StatisticsArtifact:
    """Pure-Python analysis of an in-memory Arrow table (small data, tests, online checks)."""
    combiner = StatisticsCombiner(feature_set)
    acc = combiner.create()
    for batch in table.to_batches(max_chunksize=batch_rows):
        combiner.add_arrow(acc, batch)
    return combiner.finish(acc, engine="python")
