"""Entity columns of a request: Feast's accepted id forms, request-data checks, and the
Redis keys they encode to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.catalog import KeyGroup, Plan, WindowRead
from serving.errors import InvalidBody, MissingRequestData, TooManyEntities, clip, describe
from transforms.errors import RequestError

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INT_KEY_RANGES = {
    "int64": (_INT64_MIN, _INT64_MAX),
    "unix_timestamp": (_INT64_MIN, _INT64_MAX),
    "int32": (-(1 << 31), (1 << 31) - 1),
}
_EXACT_FLOAT = float(1 << 53)  # beyond, a JSON number may already have lost digits

# Request field type names (manifest) -> a check of one JSON value.
_REQUEST_CHECKS: dict[str, Any] = {
    "float64": lambda v: type(v) is float or type(v) is int,
    "int64": lambda v: type(v) is int and _INT64_MIN <= v <= _INT64_MAX,
    "string": lambda v: type(v) is str,
    "bool": lambda v: type(v) is bool,
    "timestamp": lambda v: type(v) is str,
}


def parse_entities(
    plan: Plan, entities: Any, max_entities: int
) -> tuple[int, dict[str, list[Any]]]:
    """Validate the ``entities`` object (join keys + request data); return n and columns.

    Join-key columns come back as the view's key type: int keys sent as a string Python's
    ``int`` parses or as an integral float (as Feast's server accepts them) become ints,
    exactly or not at all (RequestError naming the key and both types)."""
    if not isinstance(entities, dict):
        raise InvalidBody("'entities' must be an object of equal-length lists", "entities")
    n = _row_count(entities, max_entities)
    for k in plan.entity_names:
        if k not in entities:
            raise RequestError(f"missing entity key '{k}'", k)
    for g in plan.groups:
        for k, t in zip(g.join_keys, g.key_types, strict=True):
            entities[k] = key_column(k, t, entities[k])
    for w in plan.windows:
        layout = w.windows.layout
        for k, t in zip(layout.join_keys, layout.key_types, strict=True):
            entities[k] = key_column(k, t, entities[k])
    if plan.request_fields:
        _check_request_data(plan.request_fields, entities)
    return n, entities


def _row_count(entities: dict[Any, Any], max_entities: int) -> int:
    """The common length of the entity and request-data lists (RequestError otherwise)."""
    n = -1
    for k, v in entities.items():
        if not isinstance(v, list):
            raise InvalidBody(f"entities['{clip(k)}'] must be a list, got {describe(v)}", clip(k))
        if n == -1:
            n = len(v)
        elif len(v) != n:
            raise RequestError(
                "all entity and request-data lists must have the same length", clip(k)
            )
    if n <= 0:
        raise RequestError("no entities given", "entities")
    if n > max_entities:
        raise TooManyEntities(f"{n} entities exceed the limit of {max_entities}", "entities")
    return n


def _check_request_data(fields: Mapping[str, str], entities: dict[Any, Any]) -> None:
    """Every request-data field is present and its values have the declared type."""
    for k, type_name in fields.items():
        col = entities.get(k)
        if col is None:
            raise MissingRequestData(f"missing request data field '{k}'", k)
        check = _REQUEST_CHECKS.get(type_name)
        if check is not None:
            for v in col:
                if v is not None and not check(v):
                    raise RequestError(
                        f"request data '{k}' expects {type_name}, got {describe(v)}", k
                    )


def key_column(key: str, type_name: str, col: list[Any]) -> list[Any]:
    """An entity-key column as the declared key type (``col`` itself when it already is);
    RequestError naming the key, the type and the offending value otherwise."""
    bounds = _INT_KEY_RANGES.get(type_name)
    if bounds is not None:
        lo, hi = bounds
        # one C-level pass each: all exact ints (bool excluded), then the range
        if all(type(v) is int for v in col) and lo <= min(col) and max(col) <= hi:
            return col
        return [_exact_int(key, type_name, v, lo, hi) for v in col]
    if type_name == "string":
        if not all(type(v) is str for v in col):
            bad = next(v for v in col if type(v) is not str)
            raise _wrong_key(key, type_name, bad)
        return col
    if not all(isinstance(v, str | bytes) for v in col):
        raise _wrong_key(key, type_name, next(v for v in col if not isinstance(v, str | bytes)))
    return col


def _exact_int(key: str, type_name: str, v: Any, lo: int, hi: int) -> int:
    """``v`` as the integer it denotes exactly: an int, a string Python's ``int`` parses
    (as Feast does: sign, spaces, leading zeros, ``_``), or a float with no fraction within
    2**53 (larger floats may already have lost digits in the JSON parser)."""
    t = type(v)
    out: int
    if t is int:
        out = v
    elif t is str:
        try:
            out = int(v)
        except ValueError:
            raise _wrong_key(key, type_name, v, "not an integer") from None
    elif t is float:
        if not (v.is_integer() and -_EXACT_FLOAT <= v <= _EXACT_FLOAT):
            raise _wrong_key(key, type_name, v, "not an exact integer")
        out = int(v)
    else:
        raise _wrong_key(key, type_name, v)
    if not lo <= out <= hi:
        raise _wrong_key(key, type_name, v, f"outside the {type_name} range")
    return out


def _wrong_key(key: str, type_name: str, v: Any, why: str = "") -> RequestError:
    detail = f" ({why})" if why else ""
    return RequestError(f"entity key '{key}' expects {type_name}, got {describe(v)}{detail}", key)


def encode_keys(group: KeyGroup, entities: Mapping[str, list[Any]]) -> list[bytes]:
    """Redis keys of the group's entities, whose key columns :func:`parse_entities` has
    checked and converted to the key types."""
    return group.encoder.encode_columns([entities[k] for k in group.join_keys])


def encode_window_keys(read: WindowRead, entities: Mapping[str, list[Any]]) -> list[bytes]:
    """Window-state keys of the entities (:mod:`store.window_state`), key columns checked
    and converted by :func:`parse_entities`."""
    layout = read.windows.layout
    return layout.keys([entities[k] for k in layout.join_keys])
