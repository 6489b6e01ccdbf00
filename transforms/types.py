"""Field types a transform declares for its inputs and output.

Annotate a parameter with ``Float64`` (or ``Float64 | None`` when nulls are allowed); the
annotation decides the numpy array the function receives, identically in every engine.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa


class FieldType:
    """Base of the field types; the class itself is the marker used in annotations."""

    name: ClassVar[str]
    arrow: ClassVar[pa.DataType]


class Float64(FieldType):
    name = "float64"
    arrow = pa.float64()


class Int64(FieldType):
    name = "int64"
    arrow = pa.int64()


class Bool(FieldType):
    name = "bool"
    arrow = pa.bool_()


class String(FieldType):
    name = "string"
    arrow = pa.string()


class Timestamp(FieldType):
    """An instant, always UTC, microsecond precision (``datetime64[us]`` in a transform)."""

    name = "timestamp"
    arrow = pa.timestamp("us", tz="UTC")


FIELD_TYPES: dict[str, type[FieldType]] = {
    t.name: t for t in (Float64, Int64, Bool, String, Timestamp)
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
    """Read ``Float64`` / ``Float64 | None`` / ``Optional[Float64]``; None when not a field type."""
    if isinstance(annotation, type) and issubclass(annotation, FieldType):
        return Field(name, annotation, nullable=False)
    origin = typing.get_origin(annotation)
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
