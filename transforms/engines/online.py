"""Online engine: one row or a small batch of dicts in, dicts out. No DataFrames, no
Spark, Beam or Feast imports, so the request path starts fast."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transforms.artifact import StatisticsArtifact
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.runtime import FeatureSetRunner


class OnlineEngine:
    """Apply a feature set's transforms (or the request-time ones) to request rows."""

    def __init__(
        self,
        feature_set: FeatureSet,
        artifact: StatisticsArtifact | None,
        *,
        request_time_only: bool = False,
    ) -> None:
        if feature_set.order_by and not request_time_only:
            raise SchemaError(
                f"feature set '{feature_set.name}' is an entity feature set (order_by="
                f"{feature_set.order_by}): its transforms read an entity's whole history, "
                "which single request rows do not carry; its values are served from the "
                "online store (materialize) and computed by Spark or Beam "
                "(EntityHistoryEngine runs it on one entity's rows)"
            )
        selected = feature_set.select(request_time=True) if request_time_only else None
        self.runner = FeatureSetRunner(feature_set, artifact, selected)
        self.inputs = tuple(self.runner.inputs)
        self.outputs = tuple(f.name for f in self.runner.outputs)

    def transform_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Outputs for one row, as Python values (None for null)."""
        columns = {}
        for name in self.inputs:
            if name not in row:
                raise self.runner.missing_input(name)
            columns[name] = (row[name],)
        out = self.runner.run_python_columns(columns, 1)
        return {name: values[0] for name, values in out.items()}

    def transform_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Outputs for a small batch of rows, in order."""
        return self.runner.run_rows(rows)


class EntityHistoryEngine:
    """An entity feature set over one entity's history: the rows of one key, in any
    order, placed as Spark and Beam place them (rule 20) and run in one call."""

    def __init__(self, feature_set: FeatureSet, artifact: StatisticsArtifact | None) -> None:
        if not feature_set.order_by:
            raise SchemaError(
                f"feature set '{feature_set.name}' has no order_by: it is computed per "
                "request row (OnlineEngine), not over an entity's history"
            )
        self.feature_set = feature_set
        self.runner = FeatureSetRunner(feature_set, artifact)
        self.outputs = tuple(f.name for f in self.runner.outputs)

    def transform_history(
        self, rows: Sequence[Mapping[str, Any]], passthrough: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Outputs for every row of one entity, in event order, after ``passthrough``."""
        keys = list(self.feature_set.entities)
        if rows:
            first = tuple(rows[0].get(k) for k in keys)
            for row in rows:
                key = tuple(row.get(k) for k in keys)
                if None in key or key != first:
                    raise SchemaError(
                        f"feature set '{self.feature_set.name}': the history holds rows of "
                        f"more than one entity or a null key ({dict(zip(keys, key, strict=True))}"
                        f" after {dict(zip(keys, first, strict=True))})"[:300]
                    )
        return self.runner.run_grouped_rows(rows, passthrough)
