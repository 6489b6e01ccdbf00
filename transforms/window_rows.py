"""One entity's window features at one query time, from plain Python rows: the lookup
server's path, with the bits of :meth:`WindowRunner.aggregate_entity`.

``aggregate_entity`` builds and sorts Arrow tables, which costs about half a millisecond
per call whatever the number of events; a request for one entity cannot afford that. This
is the same computation (rules 23-30) for a single query time over a short list of rows,
in plain Python, with the same exact arithmetic (the sums of
:func:`transforms.window_runtime.exact_int`, added by exponent first, and the one rounding):

* a row is ``[event time micros, event id, value per aggregation...]`` with the values in
  the window set's aggregation order, ``None`` for a missing value (the event log form of
  :meth:`WindowRunner.event_values`, one row per event; the event id is ``None`` when the
  set declares none, and is then ignored; items after the values are ignored);
* rows are put in the one order of rule 29 (event time, event id, the values by
  aggregation name, nulls first, floats by their total order so ``-0.0 < 0.0``), copies
  of an event id dropped but the last (rule 27; an event without an id is never a
  duplicate), exactly as :meth:`WindowRunner.order` does;
* each feature is then the window ``[t - w, t)`` of the present values.

``tests/serving/test_window_state.py`` checks it bit for bit against
:meth:`WindowRunner.run_local` on random events.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from math import frexp
from typing import Any

from transforms._exact import SHIFT
from transforms.aggregations import WindowFeature, WindowSet
from transforms.types import Float64Type, TimestampType
from transforms.window_runtime import _INT64, _ONE, _round

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BITS = struct.Struct("<q")
_FLOAT = struct.Struct("<d")
_FLIP = 0x7FFF_FFFF_FFFF_FFFF
_TWO53 = float(1 << 53)


def _total(x: float) -> int:
    """A float's IEEE total-order key (as ``WindowRunner.order`` sorts floats)."""
    bits: int = _BITS.unpack(_FLOAT.pack(x))[0]
    return bits ^ _FLIP if bits < 0 else bits


def _nullable_key(v: Any) -> tuple[Any, ...]:
    """Ascending with nulls first; floats by total order."""
    if v is None:
        return (0,)
    if type(v) is float:
        return (1, _total(v))
    return (1, v)


class RowWindows:
    """A window set's features over one entity's rows at one query time."""

    def __init__(self, window_set: WindowSet) -> None:
        self.ws = window_set
        aggs = list(window_set.aggregations)
        self.n_values = len(aggs)
        # row positions of the values in the order of rule 29 (by aggregation name)
        self.sort_positions = [2 + aggs.index(a) for a in sorted(aggs, key=lambda a: a.name)]
        self.has_id = window_set.event_id is not None
        self.plans: list[tuple[int, str, list[WindowFeature]]] = []
        for i, a in enumerate(aggs):
            self.plans.append((2 + i, a.value.output.type.name, a.features()))

    # ------------------------------------------------------------ order (rules 27, 29)

    def order(self, rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """Rows in the one order, duplicates of an event id dropped but the last."""
        out = list(rows)
        if len(out) > 1:
            times = [r[0] for r in out]
            if times != sorted(times):
                out.sort(key=_time)  # stable; ties are put in order below
                times.sort()
            if len(set(times)) < len(times):
                self._order_ties(out, times)
        if self.has_id and len(out) > 1:
            ids = [r[1] for r in out]
            if len(set(ids)) < len(ids):
                last = {v: i for i, v in enumerate(ids)}
                last.pop(None, None)  # an event without an id is never a duplicate
                if len(last) + ids.count(None) < len(ids):
                    out = [r for i, r in enumerate(out) if r[1] is None or last[r[1]] == i]
        return out

    def _order_ties(self, out: list[Sequence[Any]], times: list[int]) -> None:
        """Rows sorted by time: each run at one instant sorted by the rest of rule 29."""
        n = len(times)
        i = 0
        while i < n:
            j = i + 1
            while j < n and times[j] == times[i]:
                j += 1
            if j - i > 1:
                out[i:j] = sorted(out[i:j], key=self._sort_key)
            i = j

    def _sort_key(self, r: Sequence[Any]) -> tuple[Any, ...]:
        ident = _nullable_key(r[1]) if self.has_id else (0,)
        return (r[0], ident, *(_nullable_key(r[p]) for p in self.sort_positions))

    # ------------------------------------------------------------ features

    def aggregate(self, rows: Sequence[Sequence[Any]], t: int) -> dict[str, Any]:
        """Every feature as of query time ``t`` (micros) over the entity's rows (any order;
        rows at or after ``t`` take part in dropping duplicates only)."""
        ordered = self.order(rows)
        all_times = [r[0] for r in ordered]
        out: dict[str, Any] = {}
        for pos, vtype, features in self.plans:
            values = [r[pos] for r in ordered]
            times = all_times
            if None in values:  # missing values (or filtered out by where) are skipped
                times = [t for t, v in zip(all_times, values, strict=True) if v is not None]
                values = [v for v in values if v is not None]
            hi = bisect_left(times, t)  # events strictly before the query (rule 23)
            sums = _Sums(values, hi, vtype)
            for f in features:
                lo = bisect_left(times, t - f.window.micros, 0, hi)
                out[f.name] = _op(f, values, lo, hi, vtype, sums)
        return out


class _Sums:
    """Exact scaled sums of ``values[lo:hi]`` for the windows of one query: they all end
    at ``hi``, so each is the sum of a shorter one plus the values before it."""

    def __init__(self, values: list[Any], hi: int, vtype: str) -> None:
        self.values = values
        self.hi = hi
        self.exact = exact_sum if vtype == Float64Type.name else _int_sum
        self.done: list[tuple[int, int]] = []  # (lo, sum of values[lo:hi]), lo descending

    def __call__(self, lo: int) -> int:
        best_lo, best = self.hi, 0
        for done_lo, s in self.done:
            if done_lo == lo:
                return s
            if lo < done_lo < best_lo:
                best_lo, best = done_lo, s
        s = best + self.exact(self.values[lo:best_lo])
        self.done.append((lo, s))
        return s


def _int_sum(values: list[int]) -> int:
    return sum(values) << SHIFT


def _time(r: Sequence[Any]) -> Any:
    return r[0]


def exact_sum(values: Sequence[float]) -> int:
    """``sum(exact_int(v) for v in values)``: the exact sum scaled by ``2**SHIFT``, with
    the mantissas of one exponent added first (small integers) and shifted once."""
    by_exp: dict[int, int] = {}
    get = by_exp.get
    for v in values:
        m, e = frexp(v)
        by_exp[e] = get(e, 0) + int(m * _TWO53)
    return sum(mi << (e - 53 + SHIFT) for e, mi in by_exp.items())


def _op(f: WindowFeature, values: list[Any], lo: int, hi: int, vtype: str, sums: _Sums) -> Any:
    op = f.op
    if op == "count":
        return hi - lo
    if op in ("sum", "mean"):
        s = sums(lo)
        if op == "mean":
            return None if hi == lo else _round(s, (hi - lo) << SHIFT)
        if vtype == Float64Type.name:
            return _round(s, _ONE)
        v = s >> SHIFT
        return v if _INT64[0] <= v <= _INT64[1] else None
    part = values[lo:hi]
    if op in ("min", "max"):
        if not part:
            return None
        got = min(part) if op == "min" else max(part)
        return got + 0.0 if vtype == Float64Type.name else got  # -0.0 reported as 0.0
    if op == "last":
        return _value(part[-1], vtype) if part else None
    if op == "last_k":
        return [_value(v, vtype) for v in part[max(0, len(part) - f.k) :][::-1]]
    if op == "distinct":
        return len(set(part))
    raise ValueError(f"unknown op {op}")


def _value(v: Any, vtype: str) -> Any:
    """A stored value as the log gives it: timestamps (micros in rows) as UTC datetimes."""
    if vtype == TimestampType.name:
        return _EPOCH + timedelta(microseconds=v)
    return v
