"""Sliding-window helpers for entity feature sets (``FeatureSet(order_by=...)``).

An entity feature set's transforms are called once per entity with that entity's rows
sorted by ``order_by`` (event time first, then a unique tie-break), so these plain
numpy functions compute "as of each event" aggregates. A window of ``seconds`` at row i
covers rows whose timestamp t satisfies ``t_i - seconds < t <= t_i``: the event itself
and every event at the same instant are inside, whatever their order. With
``include_current=False`` it covers ``t_i - seconds < t < t_i``: only what was known
strictly before the event (no leakage of the event, or of events at its instant, into its
own features); such a window may be empty (count 0, sum 0, mean null).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

_US = 1_000_000
_Timestamps = npt.NDArray[np.datetime64]
_Indices = npt.NDArray[np.intp]


def _bounds(
    ts: _Timestamps, seconds: float, include_current: bool = True
) -> tuple[_Indices, _Indices]:
    micros = ts.astype("datetime64[us]").astype(np.int64)
    hi = np.searchsorted(micros, micros, side="right" if include_current else "left")
    lo = np.searchsorted(micros, micros - int(seconds * _US), side="right")
    return lo, hi


def window_count(
    ts: _Timestamps, seconds: float, include_current: bool = True
) -> npt.NDArray[np.int64]:
    """Number of events in the window ending at each event (int64)."""
    lo, hi = _bounds(ts, seconds, include_current)
    return (hi - lo).astype(np.int64)


def _segment_sums(
    x: npt.NDArray[np.float64], lo: _Indices, hi: _Indices
) -> npt.NDArray[np.float64]:
    # reduceat over interleaved (lo, hi) pairs sums each x[lo:hi] when hi > lo, and gives
    # x[lo] for an empty window (hi == lo), set to 0 after; a trailing 0 makes
    # hi == len(x) a valid index.
    padded = np.append(x, 0.0)
    sums = np.add.reduceat(padded, np.ravel(np.column_stack([lo, hi])))[::2]
    sums[hi == lo] = 0.0
    return sums


def window_sum(
    ts: _Timestamps, values: npt.NDArray[Any], seconds: float, include_current: bool = True
) -> npt.NDArray[np.float64]:
    """Sum of the present values in each window (missing values count as 0).

    Summed per window (no running prefix difference), so the result does not drift with
    history length and depends only on the window's values in event order.
    """
    lo, hi = _bounds(ts, seconds, include_current)
    if not len(lo):
        return np.empty(0, dtype=np.float64)
    x = values.astype(np.float64)
    return _segment_sums(np.where(np.isnan(x), 0.0, x), lo, hi)


def window_mean(
    ts: _Timestamps, values: npt.NDArray[Any], seconds: float, include_current: bool = True
) -> npt.NDArray[np.float64]:
    """Mean of the present values in each window; NaN (null) when none."""
    lo, hi = _bounds(ts, seconds, include_current)
    if not len(lo):
        return np.empty(0, dtype=np.float64)
    x = values.astype(np.float64)
    present = ~np.isnan(x)
    total = _segment_sums(np.where(present, x, 0.0), lo, hi)
    count = _segment_sums(present.astype(np.float64), lo, hi)
    return total / count  # 0/0 -> NaN -> null


def last_n_mean(values: npt.NDArray[Any], n: int) -> npt.NDArray[np.float64]:
    """Mean of the present values among each event's last ``n`` events (the event itself
    included); NaN (null) when none is present. Counted in events, not time, so the
    value as of an entity's latest event is also its value at any later request."""
    x = values.astype(np.float64)
    if not len(x):
        return np.empty(0, dtype=np.float64)
    hi = np.arange(1, len(x) + 1)
    lo = np.maximum(hi - n, 0)
    present = ~np.isnan(x)
    total = _segment_sums(np.where(present, x, 0.0), lo, hi)
    count = _segment_sums(present.astype(np.float64), lo, hi)
    return total / count  # 0/0 -> NaN -> null


def window_distinct(
    ts: _Timestamps, values: npt.NDArray[Any], seconds: float, include_current: bool = True
) -> npt.NDArray[np.int64]:
    """Number of distinct values in each window (int64)."""
    lo, hi = _bounds(ts, seconds, include_current)
    items = values.tolist()
    out = np.empty(len(items), dtype=np.int64)
    for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        out[i] = len(set(items[a:b]))
    return out


def seconds_since_previous(ts: _Timestamps) -> npt.NDArray[np.float64]:
    """Seconds since the entity's previous event (float64); NaN (null) for the first."""
    micros = ts.astype("datetime64[us]").astype(np.int64)
    out = np.full(len(micros), np.nan)
    out[1:] = (micros[1:] - micros[:-1]) / _US
    return out
