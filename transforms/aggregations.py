"""Window aggregations declared once: ``@aggregate`` and ``WindowSet``.

An aggregation is a plain function over an event's columns (its parameters name them, as
in ``@transform``) giving the value to aggregate, with the operations and windows to
compute over each entity's events. A query at time ``t`` sees the events with event time
in ``[t - w, t)`` (CONTRACT rules 23-30); the same definition is computed offline for a
training set, by the streaming job and by the server.

    @aggregate(ops=("count", "sum", "mean"), windows=("1h", "7d"))
    def txn_amount(amount: Float64) -> Float64:
        return amount

    user_windows = WindowSet("user_windows", {"user_id": Int64Type}, [txn_amount],
                             event_timestamp="event_ts", event_id="event_id")

gives ``txn_amount_count_1h``, ``txn_amount_sum_1h``, ``txn_amount_mean_1h`` and the same
over ``7d``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from transforms.errors import SchemaError, TransformError
from transforms.feature_set import FeatureSet
from transforms.transform import Transform, _build
from transforms.types import (
    BoolType,
    Field,
    FieldType,
    Float64Type,
    Int64Type,
    StringType,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_NUMERIC = (Float64Type, Int64Type)
# op -> the value types it takes (None: any)
OPS: dict[str, tuple[type[FieldType], ...] | None] = {
    "count": None,
    "sum": _NUMERIC,
    "mean": _NUMERIC,
    "min": _NUMERIC,
    "max": _NUMERIC,
    "last": None,
    "distinct": (Int64Type, StringType, BoolType),
    "last_k": None,
}
WHERE_SUFFIX = "__where"
VALUE_SUFFIX = "__value"  # the value transform's name in WindowSet.values


@dataclass(frozen=True, order=True)
class Window:
    """A window length; ``name`` is how features are suffixed (``1h``, ``7d``)."""

    micros: int
    name: str

    @classmethod
    def parse(cls, spec: str | Window) -> Window:
        if isinstance(spec, Window):
            return spec
        m = _WINDOW.fullmatch(spec) if isinstance(spec, str) else None
        if m is None:
            raise SchemaError(
                f"window {spec!r}: give a whole number and a unit s, m, h or d, like '10m' or '7d'"
            )
        return cls(int(m.group(1)) * _UNITS[m.group(2)] * 1_000_000, spec)


@dataclass(frozen=True)
class WindowFeature:
    """One output column: ``op`` over ``window`` of an aggregation's value."""

    name: str
    aggregation: str
    op: str
    window: Window
    type: type[FieldType]
    k: int = 0  # last_k only


@dataclass(frozen=True)
class Aggregation:
    """``value`` (a transform over event columns) aggregated by ``ops`` over ``windows``;
    events where ``where`` is false or null are left out (rule 24)."""

    name: str
    value: Transform
    ops: tuple[str, ...]
    windows: tuple[Window, ...]
    where: Transform | None = None
    k: int = 0
    description: str = ""

    def features(self) -> list[WindowFeature]:
        out = []
        vtype = self.value.output.type
        for w in self.windows:
            for op in self.ops:
                label = f"last{self.k}" if op == "last_k" else op
                typ = {"count": Int64Type, "distinct": Int64Type, "mean": Float64Type}.get(
                    op, vtype
                )
                out.append(
                    WindowFeature(f"{self.name}_{label}_{w.name}", self.name, op, w, typ, self.k)
                )
        return out


def aggregate(
    fn: Callable[..., Any] | None = None,
    *,
    ops: Sequence[str],
    windows: Sequence[str | Window],
    where: Callable[..., Any] | None = None,
    k: int = 0,
    name: str | None = None,
    description: str | None = None,
) -> Any:
    """Declare a window aggregation over the value ``fn`` computes from an event's columns.

    ``ops``: count, sum, mean, min, max, last, distinct, last_k (with ``k``).
    ``windows``: lengths such as ``"10m"``, ``"1h"``, ``"7d"``.
    ``where``: an optional function over event columns returning Bool (events where it is
    false or null are left out)."""

    def build(f: Callable[..., Any]) -> Aggregation:
        agg_name = name or f.__name__
        value = _nullable(_build(f, agg_name, False, description))
        if value.analyzers:
            raise TransformError(f"aggregation '{agg_name}': statistics are not supported here")
        bad = [op for op in ops if op not in OPS]
        if bad or not ops:
            raise SchemaError(
                f"aggregation '{agg_name}': unknown op(s) {bad or 'none given'}; use {sorted(OPS)}"
            )
        for op in ops:
            wanted = OPS[op]
            if wanted is not None and value.output.type not in wanted:
                raise SchemaError(
                    f"aggregation '{agg_name}': {op} needs a "
                    f"{'/'.join(t.name for t in wanted)} value, the function returns "
                    f"{value.output.type.name}"
                )
        if "last_k" in ops and not 1 <= k <= 100:
            raise SchemaError(f"aggregation '{agg_name}': last_k needs 1 <= k <= 100, got {k}")
        spans = tuple(sorted({Window.parse(w) for w in windows}))
        if not spans:
            raise SchemaError(f"aggregation '{agg_name}': give at least one window")
        cond = None
        if where is not None:
            cond = _nullable(_build(where, agg_name + WHERE_SUFFIX, False, ""))
            if cond.output.type is not BoolType or cond.analyzers:
                raise SchemaError(f"aggregation '{agg_name}': where must return Bool")
        return Aggregation(
            agg_name, value, tuple(dict.fromkeys(ops)), spans, cond, k, value.description
        )

    return build(fn) if fn is not None else build


def _nullable(t: Transform) -> Transform:
    """A missing value is skipped by every op (rule 24), so value functions may return null."""
    return dataclasses.replace(t, output=dataclasses.replace(t.output, nullable=True))


@dataclass(frozen=True)
class WindowSet:
    """Aggregations of one entity's events, computed as of a query time.

    ``event_timestamp`` is the event time; ``event_id`` (optional) identifies an event, so
    the same event delivered twice counts once (rule 27)."""

    name: str
    entities: dict[str, Any]
    aggregations: Sequence[Aggregation]
    event_timestamp: str = "event_timestamp"
    event_id: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"window set '{self.name}': feature names repeat: {dupes}")
        clash = set(names) & {*self.entities, self.event_timestamp}
        if clash:
            raise SchemaError(f"window set '{self.name}': features shadow keys: {sorted(clash)}")
        clash = {a.name for a in self.aggregations} & {*self.entities, self.event_timestamp}
        if clash:
            raise SchemaError(
                f"window set '{self.name}': aggregations named like keys: {sorted(clash)}"
            )
        _ = self.values.inputs  # one type per input column, checked now

    @cached_property
    def features(self) -> tuple[WindowFeature, ...]:
        return tuple(f for a in self.aggregations for f in a.features())

    @cached_property
    def values(self) -> FeatureSet:
        """The per-event value (and filter) transforms as a row-wise feature set: every
        engine computes them with the one executor before aggregating. The value of
        aggregation ``a`` is the output ``a`` + ``VALUE_SUFFIX``, so a value may read a
        column named like its aggregation (``def amount(amount: Float64)``) or like another
        one: values read event columns only, never each other."""
        transforms = []
        for a in self.aggregations:
            value = dataclasses.replace(
                a.value,
                name=a.name + VALUE_SUFFIX,
                output=dataclasses.replace(a.value.output, name=a.name + VALUE_SUFFIX),
            )
            transforms.append(value)
            if a.where is not None:
                transforms.append(a.where)
        return FeatureSet(
            f"{self.name}.values",
            self.entities,
            transforms,
            event_timestamp=self.event_timestamp,
        )

    @property
    def max_window_micros(self) -> int:
        return max(w.micros for a in self.aggregations for w in a.windows)

    def output_fields(self) -> list[Field]:
        return [
            Field(f.name, f.type, nullable=f.op not in ("count", "distinct")) for f in self.features
        ]
