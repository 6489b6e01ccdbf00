"""Raw events of a window set, given as JSON-like Python values (Feast's push ``df``
columns, dict rows), as the typed Arrow table ``WindowRunner.event_values`` takes: the
one conversion the lookup server's ``POST /push`` and :func:`store.window_state.push` share.
A missing column or a value of the wrong type is a RequestError naming the column.

Imports pyarrow only when a table is built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from store.errors import LayoutError
from transforms.errors import RequestError

if TYPE_CHECKING:
    import pyarrow as pa

    from transforms.aggregations import WindowSet

__all__ = ["events_table", "parse_time", "rows_to_columns"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: Any, where: str) -> int:
    """An instant as epoch microseconds: an ``int`` (epoch micros), a zoned ``datetime``,
    or an ISO-8601 string with a zone (``Z`` or ``+hh:mm``); RequestError naming
    ``where`` otherwise (rule 9: a time without a zone is an error)."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise RequestError(
                f"'{where}': {value[:40]!r} is not an ISO-8601 time (e.g. 2024-05-01T12:00:00Z)",
                where,
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise RequestError(
                f"'{where}': time {value.isoformat()} has no zone; give one (Z or +hh:mm)", where
            )
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise RequestError(
        f"'{where}' must be epoch microseconds or an ISO-8601 time with a zone, got "
        f"{type(value).__name__}",
        where,
    )


_INT64 = (-(1 << 63), (1 << 63) - 1)
_FLOAT_INT = 1 << 1023  # an int beyond converts to no float


def _bad(name: str, v: Any, want: str) -> RequestError:
    shown = repr(v)[:40]
    return RequestError(f"column '{name}' expects {want}, got {shown}", name)


def _column(name: str, type_name: str, values: Sequence[Any]) -> Any:
    """One typed Arrow column of raw event values; RequestError naming the column."""
    import pyarrow as pa

    if type_name == "timestamp":
        micros = [None if v is None else parse_time(v, name) for v in values]
        return pa.array(micros, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    if type_name == "float64":
        return pa.array(_floats(name, values), pa.float64())
    if type_name == "id":
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int}:
            return _column(name, "int64", values)
        if kinds == {str}:
            return pa.array(values, pa.string())
        raise RequestError(f"column '{name}' (the event id) takes integers or strings", name)
    if type_name in ("int64", "string", "bool"):
        return _exact_column(name, type_name, values)
    raise LayoutError(f"column '{name}': unsupported type {type_name}")


def _floats(name: str, values: Sequence[Any]) -> list[float | None]:
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
        elif type(v) is float:
            out.append(v)
        elif type(v) is int and -_FLOAT_INT <= v <= _FLOAT_INT:
            out.append(float(v))
        else:
            raise _bad(name, v, "a number")
    return out


def _exact_column(name: str, type_name: str, values: Sequence[Any]) -> Any:
    """An int64, string or bool column: values of exactly that Python type, or None."""
    import pyarrow as pa

    if type_name == "int64":
        for v in values:
            if v is not None and not (type(v) is int and _INT64[0] <= v <= _INT64[1]):
                raise _bad(name, v, "an int64")
        return pa.array(values, pa.int64())
    if type_name == "string":
        for v in values:
            if v is not None and type(v) is not str:
                raise _bad(name, v, "a string")
        return pa.array(values, pa.string())
    for v in values:
        if v is not None and type(v) is not bool:
            raise _bad(name, v, "a boolean")
    return pa.array(values, pa.bool_())


def events_table(window_set: WindowSet, columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """Raw events given as columns of Python (JSON) values -> the Arrow table
    :meth:`WindowRunner.event_values` takes, typed by the set's declaration: keys as
    declared, times as :func:`parse_time` reads them, the event id as integers or strings,
    value inputs by their field types. A missing column or a value of the wrong type is a
    RequestError naming the column; other columns are ignored."""
    import pyarrow as pa

    ws = window_set
    wanted: dict[str, str] = {k: getattr(t, "name", str(t)) for k, t in ws.entities.items()}
    wanted[ws.event_timestamp] = "timestamp"
    if ws.event_id:
        wanted[ws.event_id] = "id"
    for name, f in ws.values.inputs.items():
        wanted.setdefault(name, f.type.name)
    n = -1
    for name in wanted:
        col = columns.get(name)
        if col is None:
            raise RequestError(f"window set '{ws.name}': column '{name}' is missing", name)
        if not isinstance(col, list | tuple):
            raise RequestError(f"column '{name}' must be a list of values", name)
        if n == -1:
            n = len(col)
        elif len(col) != n:
            raise RequestError(f"column '{name}' has {len(col)} values, others {n}", name)
    arrays = [_column(name, t, columns[name]) for name, t in wanted.items()]
    return pa.Table.from_arrays(arrays, names=list(wanted))


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Dict rows -> columns (a key absent from a row is null there)."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    return {c: [r.get(c) for r in rows] for c in names}
