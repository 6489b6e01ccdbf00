"""The canonical column codec: the only place values cross between an engine's
representation (Arrow batches, Python rows) and the numpy arrays a transform sees.

Every engine goes through these functions, so the rules of ``CONTRACT.md`` hold in one
place: missing floats are NaN, strings are NFC, timestamps are UTC microseconds, and a
non-finite float output is null.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from transforms.errors import TransformError
from transforms.types import (
    BoolType,
    Field,
    FieldType,
    Float64Type,
    Int64Type,
    StringType,
    TimestampType,
)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class InputError(TransformError):
    """An input column is missing or holds a value its declaration does not allow."""


class OutputError(TransformError):
    """A transform returned values that do not match its declared output."""


def all_true(mask: np.ndarray) -> bool:
    """``mask.all()``, without numpy's reduction overhead on the one-row online path."""
    return all(mask.tolist()) if mask.size <= 32 else bool(mask.all())


def _nfc(value: str) -> str:
    return value if value.isascii() else unicodedata.normalize("NFC", value)


# ---------------------------------------------------------------- Arrow -> numpy


def _to_numpy(array: pa.Array) -> npt.NDArray[Any]:
    """``array.to_numpy(zero_copy_only=False)``, typed once here: pyarrow is untyped."""
    values: npt.NDArray[Any] = array.to_numpy(zero_copy_only=False)
    return values


def _naming(field: Field, exc: InputError) -> InputError:
    """``exc`` with ``field`` set to the input it is about (raise sites only build text)."""
    if exc.field is None:
        exc.field = field.name
    return exc


def from_arrow(field: Field, array: pa.Array | pa.ChunkedArray, owner: str) -> np.ndarray:
    """Canonical numpy column for ``field`` from an Arrow array (Spark, Beam batches, files)."""
    try:
        return _from_arrow(field, array, owner)
    except InputError as exc:
        raise _naming(field, exc) from None


def _from_arrow(field: Field, array: pa.Array | pa.ChunkedArray, owner: str) -> np.ndarray:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    where = f"{owner}: input '{field.name}'"
    convert = _FROM_ARROW.get(field.type)
    if convert is None:
        raise InputError(f"{where} has unsupported field type {field.type.__name__}")
    return convert(field, array, where)


def _check_nulls(field: Field, array: pa.Array, where: str) -> None:
    if array.null_count and not field.nullable:
        raise InputError(f"{where} is not nullable but has {array.null_count} null(s)")


def _float_from_arrow(field: Field, array: pa.Array, where: str) -> np.ndarray:
    t = array.type
    if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        raise InputError(f"{where} expected float64, got {t}")
    values = _to_numpy(array.cast(pa.float64()))
    return _missing_as_nan(values, field, where)


def _int_from_arrow(field: Field, array: pa.Array, where: str) -> np.ndarray:
    if not pa.types.is_integer(array.type):
        raise InputError(f"{where} expected int64, got {array.type}")
    _check_nulls(field, array, where)
    if field.nullable:
        try:  # a nullable Int64 is float64 with NaN for null: exact within +-2**53 only
            return _to_numpy(array.cast(pa.float64()))
        except pa.ArrowInvalid:
            big = pc.max(pc.abs_checked(array.cast(pa.decimal128(20, 0)))).as_py()
            raise InputError(
                f"{where} is a nullable int64 whose values must lie within +-2**53 "
                f"(exact as float64, transforms/CONTRACT.md); got one of magnitude {big}"
            ) from None
    return _to_numpy(array.cast(pa.int64()))


def _bool_from_arrow(field: Field, array: pa.Array, where: str) -> np.ndarray:
    if not pa.types.is_boolean(array.type):
        raise InputError(f"{where} expected bool, got {array.type}")
    _check_nulls(field, array, where)
    if field.nullable:
        return _to_numpy(array.cast(pa.float64()))
    return np.asarray(_to_numpy(array), dtype=np.bool_)


def _string_from_arrow(field: Field, array: pa.Array, where: str) -> np.ndarray:
    t = array.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise InputError(f"{where} expected string, got {t}")
    _check_nulls(field, array, where)
    values = _to_numpy(array)
    if len(array) and not pc.all(pc.string_is_ascii(array)).as_py():
        values = np.array([None if v is None else _nfc(v) for v in values], dtype=object)
    return values


def _timestamp_from_arrow(field: Field, array: pa.Array, where: str) -> np.ndarray:
    t = array.type
    if not pa.types.is_timestamp(t):
        raise InputError(f"{where} expected timestamp, got {t}")
    if t.tz is None:
        raise InputError(f"{where} is a timestamp without time zone; give it a zone (UTC)")
    _check_nulls(field, array, where)
    try:
        us = array.cast(pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{where} has sub-microsecond precision: {exc}") from None
    return _to_numpy(us).astype("datetime64[us]")


_FROM_ARROW: dict[type[FieldType], Callable[[Field, pa.Array, str], np.ndarray]] = {
    Float64Type: _float_from_arrow,
    Int64Type: _int_from_arrow,
    BoolType: _bool_from_arrow,
    StringType: _string_from_arrow,
    TimestampType: _timestamp_from_arrow,
}


def _missing_as_nan(values: np.ndarray, field: Field, where: str) -> np.ndarray:
    finite = np.isfinite(values)
    if all_true(finite):
        return values
    if not field.nullable:
        raise InputError(f"{where} is not nullable but has {int((~finite).sum())} missing value(s)")
    values = np.array(values, dtype=np.float64, copy=True)
    values[~finite] = np.nan
    return values


# ---------------------------------------------------------------- Python -> numpy


def from_python(field: Field, values: Sequence[Any], owner: str) -> np.ndarray:
    """Canonical numpy column for ``field`` from Python values (online requests, Beam rows)."""
    try:
        return _from_python(field, values, owner)
    except InputError as exc:
        raise _naming(field, exc) from None


def _from_python(field: Field, values: Sequence[Any], owner: str) -> np.ndarray:
    where = f"{owner}: input '{field.name}'"
    convert = _FROM_PYTHON.get(field.type)
    if convert is None:
        raise InputError(f"{where} has unsupported field type {field.type.__name__}")
    return convert(field, values, where)


def _float_from_python(field: Field, values: Sequence[Any], where: str) -> np.ndarray:
    clean = True  # every value a finite number: skip the vectorised missing check
    for v in values:
        tv = type(v)
        if tv is float:
            clean = clean and v - v == 0.0  # False for NaN and +-inf
        elif tv is not int:
            clean = False
            if v is not None and (
                not isinstance(v, (float, int, np.floating, np.integer)) or isinstance(v, bool)
            ):
                raise InputError(f"{where} expected float64, got {_py_kind(v)}")
    arr = np.array(values, dtype=np.float64)
    return arr if clean else _missing_as_nan(arr, field, where)


def _int_from_python(field: Field, values: Sequence[Any], where: str) -> np.ndarray:
    has_null = False
    for v in values:
        if v is None:
            has_null = True
        elif type(v) is not int and not (
            isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        ):
            raise InputError(f"{where} expected int64, got {_py_kind(v)}")
        elif not _INT64_MIN <= v <= _INT64_MAX:
            raise InputError(f"{where} value {v} is outside int64")
    if has_null and not field.nullable:
        raise InputError(f"{where} is not nullable but has null(s)")
    if field.nullable and has_null:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if field.nullable:
        return np.array(values, dtype=np.int64).astype(np.float64)
    return np.array(values, dtype=np.int64)


def _bool_from_python(field: Field, values: Sequence[Any], where: str) -> np.ndarray:
    for v in values:
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise InputError(f"{where} expected bool, got {_py_kind(v)}")
    if field.nullable:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if any(v is None for v in values):
        raise InputError(f"{where} is not nullable but has null(s)")
    return np.array(values, dtype=np.bool_)


def _string_from_python(field: Field, values: Sequence[Any], where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None:
            if not field.nullable:
                raise InputError(f"{where} is not nullable but has null(s)")
            out[i] = None
        elif type(v) is str:
            out[i] = _nfc(v)
        else:
            raise InputError(f"{where} expected string, got {_py_kind(v)}")
    return out


def _timestamp_from_python(field: Field, values: Sequence[Any], where: str) -> np.ndarray:
    out_us = np.empty(len(values), dtype="datetime64[us]")
    for i, v in enumerate(values):
        if v is None:
            if not field.nullable:
                raise InputError(f"{where} is not nullable but has null(s)")
            out_us[i] = np.datetime64("NaT")
        else:
            out_us[i] = np.datetime64(_epoch_us(v, where), "us")
    return out_us


_FROM_PYTHON: dict[type[FieldType], Callable[[Field, Sequence[Any], str], np.ndarray]] = {
    Float64Type: _float_from_python,
    Int64Type: _int_from_python,
    BoolType: _bool_from_python,
    StringType: _string_from_python,
    TimestampType: _timestamp_from_python,
}


def _epoch_us(value: Any, where: str) -> int:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InputError(f"{where} expected an ISO-8601 timestamp, got {value!r}") from None
    if not isinstance(value, dt.datetime):
        raise InputError(f"{where} expected timestamp, got {_py_kind(value)}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"{where} is a timestamp without time zone; give it a zone (UTC)")
    return (value - _EPOCH) // _MICROSECOND


def _py_kind(value: Any) -> str:
    names = {bool: "bool", int: "int64", float: "float64", str: "string", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- transform output


def check_output(
    field: Field, result: Any, n: int, owner: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate what a transform returned; give (values, valid mask or None when all valid)."""
    arr = result if type(result) is np.ndarray else np.asarray(result)
    if arr.shape != (n,):
        if arr.ndim != 0:
            raise OutputError(f"{_where(owner, field)} has shape {arr.shape}, expected ({n},)")
        arr = np.broadcast_to(arr, (n,))
    values, valid = _CHECKERS[field.type](arr, n, owner, field)
    if valid is not None:
        if all_true(valid):
            return values, None
        if not field.nullable:
            raise OutputError(
                f"{_where(owner, field)} is not nullable but {int((~valid).sum())} value(s) are null"
            )
    return values, valid


def _where(owner: str, field: Field) -> str:
    return f"transform '{owner}': output '{field.name}'"


Checked = tuple[np.ndarray, "np.ndarray | None"]


def _out_float(arr: np.ndarray, _n: int, owner: str, field: Field) -> Checked:
    if arr.dtype.kind not in "fiub":
        raise OutputError(f"{_where(owner, field)} expected float64, got {arr.dtype}")
    values = arr.astype(np.float64, copy=False)
    return values, np.isfinite(values)


def _out_int(arr: np.ndarray, n: int, owner: str, field: Field) -> Checked:
    kind = arr.dtype.kind
    if kind in "iub":
        if kind == "u" and n and int(arr.max()) > _INT64_MAX:
            raise OutputError(f"{_where(owner, field)} has values outside int64")
        return arr.astype(np.int64, copy=False), None
    if kind == "f":
        if n <= 32:  # the online path: plain Python is several times faster on a few values
            items = arr.tolist()
            if not all(math.isnan(v) or v.is_integer() for v in items):
                raise OutputError(f"{_where(owner, field)} expected int64, got non-integral floats")
            present = [not math.isnan(v) for v in items]
            ints = [int(v) if ok else 0 for v, ok in zip(items, present, strict=True)]
            return np.array(ints, dtype=np.int64), np.array(present, dtype=np.bool_)
        valid = ~np.isnan(arr)
        filled = np.where(valid, arr, 0.0)
        if not (all_true(np.isfinite(filled)) and all_true(np.floor(filled) == filled)):
            raise OutputError(f"{_where(owner, field)} expected int64, got non-integral floats")
        return filled.astype(np.int64), valid
    raise OutputError(f"{_where(owner, field)} expected int64, got {arr.dtype}")


def _out_bool(arr: np.ndarray, _n: int, owner: str, field: Field) -> Checked:
    kind = arr.dtype.kind
    if kind == "b":
        return arr, None
    if kind == "f":
        valid = ~np.isnan(arr)
        filled = np.where(valid, arr, 0.0)
        if not all_true((filled == 0.0) | (filled == 1.0)):
            raise OutputError(
                f"{_where(owner, field)} expected bool, got floats other than 0/1/NaN"
            )
        return filled.astype(np.bool_), valid
    raise OutputError(f"{_where(owner, field)} expected bool, got {arr.dtype}")


def _out_string(arr: np.ndarray, _n: int, owner: str, field: Field) -> Checked:
    kind = arr.dtype.kind
    if kind == "U":
        return arr.astype(object), None
    if kind == "O":
        for v in arr.tolist():
            if v is not None and type(v) is not str:
                raise OutputError(f"{_where(owner, field)} expected string, got {_py_kind(v)}")
        return arr, arr != None  # noqa: E711 - elementwise comparison on an object array
    raise OutputError(f"{_where(owner, field)} expected string, got {arr.dtype}")


def _out_timestamp(arr: np.ndarray, _n: int, owner: str, field: Field) -> Checked:
    if arr.dtype.kind != "M":
        raise OutputError(f"{_where(owner, field)} expected timestamp, got {arr.dtype}")
    values = arr.astype("datetime64[us]", copy=False)
    return values, ~np.isnat(values)


_CHECKERS = {
    Float64Type: _out_float,
    Int64Type: _out_int,
    BoolType: _out_bool,
    StringType: _out_string,
    TimestampType: _out_timestamp,
}


# ---------------------------------------------------------------- numpy -> engine


def to_arrow(field: Field, values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    mask = None if valid is None else ~valid
    return pa.array(values, type=field.type.arrow, mask=mask, from_pandas=False)


def to_python(field: Field, values: np.ndarray, valid: np.ndarray | None) -> list[Any]:
    if field.type is TimestampType:
        micros = values.astype(np.int64).tolist()
        out: list[Any] = [_EPOCH + dt.timedelta(microseconds=m) for m in micros]
    else:
        out = values.tolist()
    if valid is not None:
        out = [v if ok else None for v, ok in zip(out, valid.tolist(), strict=True)]
    return out
