"""The executor every engine calls: canonical columns in, validated outputs out.

Engines differ only in how a batch arrives (an Arrow record batch in Spark and in
files, Python dicts online and in Beam); both are turned into the same numpy columns by
:mod:`transforms._columns`, then the same transform functions run on them here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import _columns
from transforms.artifact import StatisticsArtifact
from transforms.errors import TransformError
from transforms.feature_set import FeatureSet
from transforms.transform import Transform
from transforms.types import BoolType, Field, Int64Type

Column = np.ndarray
Output = tuple[np.ndarray, "np.ndarray | None"]


def _as_input(f: Field, values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """An upstream transform's output seen as another transform's input (same rules as raw)."""
    if f.nullable and f.type in (Int64Type, BoolType):
        out = values.astype(np.float64)
        if valid is not None:
            out[~valid] = np.nan
        return out
    if valid is not None and not f.nullable:
        raise _columns.InputError(f"input '{f.name}' is not nullable but has nulls", f.name)
    return values


def entity_order(schema: pa.Schema, fs: FeatureSet) -> list[tuple[str, str]]:
    """Sort keys placing an entity's rows (rule 20): keys, ``order_by``, then every other
    sortable column by name, so rows that tie on ``order_by`` still have one order in
    every engine (rows equal in every column are interchangeable)."""
    first = [*fs.entities, *fs.order_by]
    rest = sorted(
        f.name
        for f in schema
        if f.name not in first
        and (
            pa.types.is_primitive(f.type)
            or pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
            or pa.types.is_binary(f.type)
            or pa.types.is_null(f.type)
        )
    )
    return [(c, "ascending") for c in (*first, *rest)]


class FeatureSetRunner:
    """A feature set bound to a statistics artifact, ready to run on any engine's batches.

    ``transforms`` picks a subset (e.g. only request-time ones); inputs it needs that
    another selected transform produces are computed, others must be in the batch.
    """

    def __init__(
        self,
        feature_set: FeatureSet,
        artifact: StatisticsArtifact | None,
        transforms: Sequence[Transform] | None = None,
    ) -> None:
        self.feature_set = feature_set
        self.transforms = tuple(transforms) if transforms is not None else feature_set.order
        if feature_set.analyzers:
            if artifact is None:
                raise TransformError(
                    f"feature set '{feature_set.name}' has analyzers; give it a statistics artifact"
                )
            feature_set.check_artifact(artifact)
        self.artifact = artifact
        produced = {t.name for t in self.transforms}
        # One canonical column per distinct declaration: a column may be nullable for one
        # transform and not for another, and each must see (and check) its own form.
        self.fields: dict[Field, str] = {}
        for t in self.transforms:
            for f in t.inputs:
                if f.name not in produced:
                    self.fields.setdefault(f, t.name)
        self.inputs: dict[str, str] = {}
        for f, owner in self.fields.items():
            self.inputs.setdefault(f.name, owner)
        # The plan: per transform, where each argument comes from (a canonical input by
        # position, an upstream output by name, or a frozen statistic), resolved once here.
        position = {f: i for i, f in enumerate(self.fields)}
        self._plan: list[
            tuple[Transform, Callable[..., Any], dict[str, Any], list[tuple[str, Any]]]
        ] = []
        for t in self.transforms:
            bound = {
                p: a.load(artifact.values[a.key()])  # type: ignore[union-attr]
                for p, a in t.analyzers.items()
            }
            sources = [(f.name, f if f.name in produced else position[f]) for f in t.inputs]
            self._plan.append((t, t.fn, bound, sources))
        self.outputs: tuple[Field, ...] = tuple(t.output for t in self.transforms)

    # ------------------------------------------------------------ core

    def run_columns(self, columns: Sequence[Column], n: int) -> dict[str, Output]:
        """Run every selected transform on canonical input columns (in ``fields`` order)."""
        results: dict[str, Output] = {}
        with np.errstate(all="ignore"):  # NaN/inf results are rules of the contract, not warnings
            for t, fn, bound, sources in self._plan:
                kwargs = dict(bound) if bound else {}
                for name, src in sources:
                    kwargs[name] = (
                        columns[src] if type(src) is int else _as_input(src, *results[name])
                    )
                try:
                    raw = fn(**kwargs)
                except TransformError:
                    raise
                except Exception as exc:
                    raise TransformError(
                        f"transform '{t.name}' raised {type(exc).__name__}: {exc}"
                    ) from exc
                results[t.name] = _columns.check_output(t.output, raw, n, t.name)
        return results

    def missing_input(self, name: str) -> TransformError:
        return _columns.InputError(
            f"transform '{self.inputs[name]}': input '{name}' is missing from the batch", name
        )

    # ------------------------------------------------------------ Arrow batches

    def canonical_from_arrow(self, batch: pa.RecordBatch | pa.Table) -> list[Column]:
        names = set(batch.schema.names)
        out: list[Column] = []
        for f, owner in self.fields.items():
            if f.name not in names:
                raise self.missing_input(f.name)
            out.append(_columns.from_arrow(f, batch.column(f.name), f"transform '{owner}'"))
        return out

    def run_arrow(self, batch: pa.RecordBatch, passthrough: Iterable[str] = ()) -> pa.RecordBatch:
        """Outputs for one Arrow batch, after the ``passthrough`` columns copied unchanged."""
        results = self.run_columns(self.canonical_from_arrow(batch), batch.num_rows)
        arrays = [batch.column(c) for c in passthrough]
        names = list(passthrough)
        for f in self.outputs:
            arrays.append(_columns.to_arrow(f, *results[f.name]))
            names.append(f.name)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def output_schema(self, input_schema: pa.Schema, passthrough: Iterable[str] = ()) -> pa.Schema:
        fields = [input_schema.field(c) for c in passthrough]
        fields += [pa.field(f.name, f.type.arrow, nullable=f.nullable) for f in self.outputs]
        return pa.schema(fields)

    def run_grouped_arrow(self, table: pa.Table, passthrough: Sequence[str] = ()) -> pa.Table:
        """Entity feature sets: sort by keys and ``order_by``, run once per entity group."""
        fs = self.feature_set
        keys = list(fs.entities)
        for name in fs.key_columns:
            if name not in table.schema.names:
                raise (
                    self.missing_input(name)
                    if name in self.inputs
                    else _columns.InputError(
                        f"feature set '{fs.name}': column '{name}' is missing from the batch"
                    )
                )
            nulls = table.column(name).null_count
            if nulls:
                raise _columns.InputError(
                    f"feature set '{fs.name}': column '{name}' has {nulls} null(s); "
                    "keys and ordering columns must be present"
                )
        ordered = table.sort_by(entity_order(table.schema, fs))
        n = ordered.num_rows
        if not n:
            return self.output_schema(table.schema, passthrough).empty_table()
        whole = ordered.combine_chunks().to_batches()[0]
        change = np.zeros(n, dtype=bool)
        for k in keys:
            col = whole.column(k).to_numpy(zero_copy_only=False)
            change[1:] |= col[1:] != col[:-1]
        starts = [0, *np.flatnonzero(change).tolist()]
        ends = [*starts[1:], n]
        batches = [
            self.run_arrow(whole.slice(a, b - a), passthrough)
            for a, b in zip(starts, ends, strict=True)
        ]
        return pa.Table.from_batches(batches)

    def run_grouped_rows(
        self, rows: Sequence[Mapping[str, Any]], passthrough: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """One entity's rows (any order) in the order ``run_grouped_arrow`` gives them
        (``order_by``, then the other columns: rule 20), then run like ``run_rows``."""
        fs = self.feature_set
        for row in rows:
            for c in fs.order_by:
                if c not in row:
                    raise _columns.InputError(
                        f"feature set '{fs.name}': column '{c}' is missing from the batch"
                    )
                if row[c] is None:
                    raise _columns.InputError(
                        f"feature set '{fs.name}': column '{c}' has null(s); "
                        "keys and ordering columns must be present"
                    )
        if len(rows) > 1:
            as_table = pa.Table.from_pylist(list(rows))
            order = pc.sort_indices(as_table, sort_keys=entity_order(as_table.schema, fs))
            rows = [rows[i] for i in order.to_pylist()]
        return self.run_rows(rows, passthrough)

    # ------------------------------------------------------------ Python rows

    def canonical_from_python(self, columns: Mapping[str, Sequence[Any]]) -> list[Column]:
        out: list[Column] = []
        for f, owner in self.fields.items():
            values = columns.get(f.name)
            if values is None:
                raise self.missing_input(f.name)
            out.append(_columns.from_python(f, values, f"transform '{owner}'"))
        return out

    def run_python_columns(
        self, columns: Mapping[str, Sequence[Any]], n: int
    ) -> dict[str, list[Any]]:
        """Outputs as Python lists (None for null) from columns of Python values."""
        results = self.run_columns(self.canonical_from_python(columns), n)
        return {f.name: _columns.to_python(f, *results[f.name]) for f in self.outputs}

    def run_rows(
        self, rows: Sequence[Mapping[str, Any]], passthrough: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Outputs for a list of dict rows, with the ``passthrough`` keys copied first."""
        n = len(rows)
        columns: dict[str, list[Any]] = {}
        for name in self.inputs:
            try:
                columns[name] = [r[name] for r in rows]
            except KeyError:
                raise self.missing_input(name) from None
        outputs = self.run_python_columns(columns, n)
        keep = list(passthrough)
        out = [{k: r.get(k) for k in keep} for r in rows]
        for name, values in outputs.items():
            for row, v in zip(out, values, strict=True):
                row[name] = v
        return out
