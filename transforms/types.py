"""Field types a transform declares for its inputs and output.

Annotate a parameter with ``Float64`` (or ``Nullable[Float64]`` when nulls are allowed;
``Float64 | None`` is read the same way); the annotation decides the numpy array the
function receives, identically in every engine. For type checkers every field type is a
``numpy.ndarray``, so a transform body type-checks as the numpy code it is.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar

import pyarrow as pa


class FieldType:
    """Base of the field types; the class itself is the marker used in annotations."""

    name: ClassVar[str]
    arrow: ClassVar[pa.DataType]


class Float64Type(FieldType):
    name = "float64"
    arrow = pa.float64()


class Int64Type(FieldType):
    name = "int64"
    arrow = pa.int64()


class BoolType(FieldType):
    name = "bool"
    arrow = pa.bool_()


class StringType(FieldType):
    name = "string"
    arrow = pa.string()


class TimestampType(FieldType):
    """An instant, always UTC, microsecond precision (``datetime64[us]`` in a transform)."""

    name = "timestamp"
    arrow = pa.timestamp("us", tz="UTC")


class _NullableMarker:
    def __repr__(self) -> str:
        return "NULLABLE"


NULLABLE = _NullableMarker()
_T = TypeVar("_T")

if TYPE_CHECKING:
    import numpy as np

    Nullable = Annotated[_T, NULLABLE]
    Float64 = np.ndarray
    Int64 = np.ndarray
    Bool = np.ndarray
    String = np.ndarray
    Timestamp = np.ndarray
else:
    Float64, Int64, Bool = Float64Type, Int64Type, BoolType
    String, Timestamp = StringType, TimestampType

    class Nullable:
        """``Nullable[Float64]``: the input or output may hold nulls (see CONTRACT.md)."""

        def __class_getitem__(cls, item: Any) -> Any:
            return Annotated[item, NULLABLE]


FIELD_TYPES: dict[str, type[FieldType]] = {
    t.name: t for t in (Float64Type, Int64Type, BoolType, StringType, TimestampType)
}


@dataclass(frozen=True)
class Field:
    """A named, typed column; ``nullable`` says whether nulls may appear."""

    name: str
    type: type[FieldType]
    nullable: bool

    def describe(self) -> str:
        return f"{self.type.name}{' | None' if self.nullable else ''}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.name, "nullable": self.nullable}


def field_from_annotation(name: str, annotation: Any) -> Field | None:
    """Read ``Float64`` / ``Nullable[Float64]`` / ``Float64 | None``; None when not a field type."""
    if isinstance(annotation, type) and issubclass(annotation, FieldType):
        return Field(name, annotation, nullable=False)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extras = typing.get_args(annotation)
        inner = field_from_annotation(name, base)
        if inner is not None and any(e is NULLABLE for e in extras):
            return Field(name, inner.type, nullable=True)
        return inner
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if (
            len(args) == 1
            and len(typing.get_args(annotation)) == 2
            and isinstance(args[0], type)
            and issubclass(args[0], FieldType)
        ):
            return Field(name, args[0], nullable=True)
    return None
