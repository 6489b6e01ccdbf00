"""Response encoding: Feast's and the native JSON shapes, timestamps and error bodies."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from serving.decode import PRESENT, STATUS_NAMES
from serving.lookup import Result

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=65_536)
def timestamp_str(ts: tuple[int, int]) -> str:
    """RFC 3339 with Feast's adaptive precision (none, ms, us or ns digits) and a Z."""
    seconds, nanos = ts
    if seconds == 0 and nanos == 0:
        return "1970-01-01T00:00:00Z"
    base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def _float_native(v: Any) -> Any:
    if v is None or math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def _ts_seconds(v: Any) -> Any:
    return None if v is None else (v - _EPOCH) // _SECOND


_SECOND = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC) - _EPOCH


def _all_finite(values: list[Any]) -> bool:
    """True when no float in ``values`` is NaN or infinite (None allowed): one C-level sum
    (NaN and inf propagate; inf - inf is NaN), and the exact per-value check only if the
    sum is not finite (which a huge but finite column may also give)."""
    if len(values) == 1:
        v = values[0]
        return v is None or v - v == 0.0  # NaN - NaN and inf - inf are NaN
    try:
        if math.isfinite(sum(filter(None, values))):
            return True
    except (TypeError, OverflowError):
        pass
    return all(v is None or math.isfinite(v) for v in values)


_CONVERTED = frozenset({"double", "float", "float64", "bytes", "unix_timestamp", "timestamp"})
"""Column types whose JSON differs from the Python values (see native_column)."""


def native_column(values: list[Any], type_name: str, iso_timestamps: bool) -> list[Any]:
    """Values as Feast's JSON gives them: non-finite floats as strings, bytes base64,
    unix timestamps as epoch seconds (or ISO strings in the native API)."""
    if type_name in ("double", "float", "float64"):
        if _all_finite(values):
            return values
        return [_float_native(x) for x in values]
    if type_name == "bytes":
        return [None if v is None else base64.b64encode(v).decode("ascii") for v in values]
    if type_name in ("unix_timestamp", "timestamp") and not iso_timestamps:
        return [_ts_seconds(v) for v in values]
    return values


def feast_response(result: Result) -> bytes:
    """Feast's /get-online-features JSON (convert_response_to_dict's shape).

    Status-name and event-timestamp lists are built once per distinct column object (all
    features of a view share one timestamp column; columns without nulls share one
    all-PRESENT status column) and orjson writes the shared lists as often as needed.
    """
    results = []
    status_cache: dict[int, list[str]] = {}
    ts_cache: dict[int, list[str]] = {}
    status_name = STATUS_NAMES.__getitem__
    columns = zip(
        result.values, result.statuses, result.timestamps, result.plan.column_types, strict=True
    )
    for values, statuses, tss, type_name in columns:
        names = status_cache.get(id(statuses))
        if names is None:
            names = status_cache[id(statuses)] = list(map(status_name, statuses))
        stamps = ts_cache.get(id(tss))
        if stamps is None:
            stamps = ts_cache[id(tss)] = list(map(timestamp_str, tss))
        if type_name in _CONVERTED:
            values = native_column(values, type_name, False)
        results.append({"values": values, "statuses": names, "event_timestamps": stamps})
    return orjson.dumps({"metadata": {"feature_names": result.names}, "results": results})


def native_response(result: Result) -> bytes:
    plan = result.plan
    n_ent = len(plan.entity_names)
    features: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    columns = zip(result.names, result.values, result.statuses, plan.column_types, strict=True)
    for i, (name, values, col, type_name) in enumerate(columns):
        if i >= n_ent:
            values = native_column(values, type_name, True)
            if any(s != PRESENT for s in col):
                statuses[name] = [STATUS_NAMES[s] for s in col]
        features[name] = values
    return orjson.dumps(
        {
            "feature_service": plan.name,
            "n": result.n,
            "features": features,
            "statuses": statuses,
            "fingerprints": plan.fingerprints,
            "artifact_hashes": plan.artifact_hashes,
        }
    )


def error_body(message: str, field: str | None) -> bytes:
    return orjson.dumps({"error": message, "field": field})
