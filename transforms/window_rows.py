"""Window features (rules 23-30) from one entity's event log rows: the one implementation.

Every engine computes window aggregations with :meth:`RowWindows.aggregate_many`: the
local reference (:meth:`WindowRunner.run_local`), Spark (``apply_windows``) and Beam
(``ComputeWindows``) through :meth:`WindowRunner.aggregate_entity`, which turns an entity's
Arrow log into these rows, and the lookup server (:meth:`RowWindows.aggregate`, one query
time over the rows it read from Redis, ``store/window_layout.py``). So the bits cannot
differ between engines. In plain Python with exact arithmetic:

* a row is ``[event time micros, event id, value per aggregation...]`` with the values in
  the window set's aggregation order, ``None`` for a missing value (the event log form of
  :meth:`WindowRunner.event_values`, one row per event, timestamps as micros; the event id
  is ``None`` when the set declares none, and is then ignored; items after the values are
  ignored);
* rows are put in the one order of rule 29 (event time, event id, the values by
  aggregation name, nulls first, floats by their total order so ``-0.0 < 0.0``), copies
  of an event id dropped but the last (rule 27; an event without an id is never a
  duplicate);
* each feature is then the window ``[t - w, t)`` of the present values, for every query
  time ``t``. The queries are answered in time order, so each window's two ends only move
  forward: per (aggregation, window) the work is O(events + queries). Sums are exact
  integers (:func:`exact_int`'s scaling, the mantissas of one exponent added first)
  updated by what enters and leaves the window and rounded once; min/max use a monotonic
  deque (or, when the windows are short, the slices themselves); distinct a counter.

``tests/parity/test_window_contract.py`` compares the engines bit for bit with an oracle
in exact fractions; ``tests/serving/test_window_state.py`` the online state with
:meth:`WindowRunner.run_local`.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from math import frexp, fsum, isfinite
from typing import Any

from transforms._exact import SHIFT
from transforms.aggregations import WindowFeature, WindowSet
from transforms.errors import SchemaError
from transforms.types import Float64Type, TimestampType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BITS = struct.Struct("<q")
_FLOAT = struct.Struct("<d")
_FLIP = 0x7FFF_FFFF_FFFF_FFFF
_TWO53 = float(1 << 53)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_ONE = 1 << SHIFT
_FSUM_MIN = 12  # from this length math.fsum's exact partials beat the integer loop
_MAX_PARTS = 48  # a finite double sum needs at most ~40 parts of 53 bits (2**-1074..2**1024)
_SLICE_FACTOR = 8  # a value read in a C-level slice op costs well under 1/8 of a Python step

_Plan = tuple[int, str, list[tuple[int, list[WindowFeature]]]]


def exact_int(x: float) -> int:
    """``x * 2**SHIFT`` as an exact integer (``x`` finite)."""
    m, e = frexp(x)
    return int(m * (1 << 53)) << (e - 53 + SHIFT)


def exact_sum(values: Sequence[float]) -> int:
    """``sum(exact_int(v) for v in values)``: the exact sum scaled by ``2**SHIFT``.

    Long slices (the server's one query over an entity's whole window) go through
    :func:`math.fsum`, which is exact before its one rounding: the sum is peeled into
    floats ``s1 = fsum(values)``, ``s2 = fsum(values + [-s1])``, ... until the rest is 0
    (each is the correctly rounded remainder, so the parts add up to the sum exactly;
    usually one or two parts). Short slices, and a sum whose partials overflow, take the
    integer path. Both give the same integer, the exact sum."""
    if len(values) >= _FSUM_MIN:
        parts = _fsum_parts(values)
        if parts is not None:
            return sum(exact_int(p) for p in parts)
    return _integer_sum(values)


def _fsum_parts(values: Sequence[float]) -> list[float] | None:
    """Floats whose exact sum is the values' exact sum; None on intermediate overflow."""
    rest = list(values)
    parts: list[float] = []
    try:
        for _ in range(_MAX_PARTS):
            s = fsum(rest)
            if s == 0.0:  # every partial is a multiple of 2**-1074: 0 only when exact
                return parts
            if not isfinite(s):
                return None
            parts.append(s)
            rest.append(-s)
    except OverflowError:
        return None
    return None


def _integer_sum(values: Sequence[float]) -> int:
    """The exact sum scaled by ``2**SHIFT`` with the mantissas of one exponent added first
    (small integers) and shifted once."""
    by_exp: dict[int, int] = {}
    get = by_exp.get
    for v in values:
        m, e = frexp(v)
        by_exp[e] = get(e, 0) + int(m * _TWO53)
    return sum(mi << (e - 53 + SHIFT) for e, mi in by_exp.items())


def _round(num: int, den: int) -> float | None:
    """``num / den`` correctly rounded; null when it overflows float64 (rule 2)."""
    try:
        return (num / den) + 0.0  # int true division rounds once; -0.0 becomes 0.0
    except OverflowError:
        return None


def _total(x: float) -> int:
    """A float's IEEE total-order key (``-0.0`` before ``0.0``)."""
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
    """A window set's features over one entity's log rows, as of any query times."""

    def __init__(self, window_set: WindowSet) -> None:
        self.ws = window_set
        aggs = list(window_set.aggregations)
        self.n_values = len(aggs)
        # row positions of the values in the order of rule 29 (by aggregation name)
        self.sort_positions = [2 + aggs.index(a) for a in sorted(aggs, key=lambda a: a.name)]
        self.has_id = window_set.event_id is not None
        self.names = [f.name for f in window_set.features]
        self.plans: list[_Plan] = []
        for i, a in enumerate(aggs):
            by_window: dict[int, list[WindowFeature]] = {}
            for f in a.features():
                by_window.setdefault(f.window.micros, []).append(f)
            self.plans.append((2 + i, a.value.output.type.name, sorted(by_window.items())))

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
        """Every feature as of one query time ``t`` (micros): the server's call."""
        return {k: v[0] for k, v in self.aggregate_many(rows, [t]).items()}

    def aggregate_many(
        self, rows: Sequence[Sequence[Any]], queries: Sequence[int]
    ) -> dict[str, list[Any]]:
        """Every feature as of each query time (micros; in the queries' order) over the
        entity's rows (any order; rows at or after a query time take part in dropping
        duplicates only)."""
        if not queries:
            return {name: [] for name in self.names}
        ordered = self.order(rows)
        q_order = sorted(range(len(queries)), key=queries.__getitem__)
        qs = [queries[i] for i in q_order]
        if all(i == p for p, i in enumerate(q_order)):
            q_order = []  # already in time order: nothing to put back
        all_times = [r[0] for r in ordered]
        out: dict[str, list[Any]] = {}
        for pos, vtype, windows in self.plans:
            values = [r[pos] for r in ordered]
            times = all_times
            if None in values:  # missing values (or filtered out by where) are skipped
                times = [t for t, v in zip(all_times, values, strict=True) if v is not None]
                values = [v for v in values if v is not None]
            _aggregation(values, times, qs, vtype, windows, out)
        if q_order:  # back to the queries' order
            at = [0] * len(q_order)
            for sorted_pos, p in enumerate(q_order):
                at[p] = sorted_pos
            out = {name: [col[i] for i in at] for name, col in out.items()}
        return out


def _time(r: Sequence[Any]) -> Any:
    return r[0]


def _starts(times: list[int], xs: list[int]) -> list[int]:
    """``bisect_left(times, x)`` for each of the ascending ``xs`` (each search starts at
    the previous answer)."""
    out = []
    i = 0
    for x in xs:
        i = bisect_left(times, x, i)
        out.append(i)
    return out


def _aggregation(
    values: list[Any],
    times: list[int],
    qs: list[int],
    vtype: str,
    windows: list[tuple[int, list[WindowFeature]]],
    out: dict[str, list[Any]],
) -> None:
    """Every (op, window) of one aggregation over its present values, for the ascending
    query times ``qs``; windows ascending. Each window's exact sums are the previous
    (shorter) window's plus the slide over ``[lo, previous lo)``."""
    his = _starts(times, qs)  # events strictly before the query (rule 23)
    is_float = vtype == Float64Type.name
    exact: Callable[[list[Any]], int] = exact_sum if is_float else sum
    kind = (is_float, vtype == TimestampType.name)
    needs_sums = any(f.op in ("sum", "mean") for f in windows[0][1])
    prev_los, sums = his, [0] * len(his)
    for w, features in windows:
        los = _starts(times, [q - w for q in qs])
        if needs_sums:
            extra = _slide(values, los, prev_los, exact)
            prev_los, sums = los, [s + e for s, e in zip(sums, extra, strict=True)]
        for f in features:
            out[f.name] = _op(f, values, los, his, kind, sums)


def _slide(
    values: list[Any], los: list[int], his: list[int], exact: Callable[[list[Any]], int]
) -> list[int]:
    """``exact(values[lo:hi])`` per window, both ends nondecreasing: each value is added
    when it enters and subtracted when it leaves (or the slice summed when it is new)."""
    out = []
    s = a0 = b0 = 0
    for a, b in zip(los, his, strict=True):
        if a >= b0:
            s = exact(values[a:b]) if b > a else 0
        else:
            if b > b0:
                s += exact(values[b0:b])
            if a > a0:
                s -= exact(values[a0:a])
        a0, b0 = a, b
        out.append(s)
    return out


def _op(
    f: WindowFeature,
    values: list[Any],
    los: list[int],
    his: list[int],
    kind: tuple[bool, bool],
    sums: list[int],
) -> list[Any]:
    """One feature per query; ``kind``: (Float64 values, Timestamp values)."""
    op = f.op
    if op == "count":
        return [b - a for a, b in zip(los, his, strict=True)]
    if op == "sum" or op == "mean":
        return _sum_or_mean(op == "mean", kind[0], sums, los, his)
    if op == "min" or op == "max":
        return _extremes(values, los, his, op == "min", kind[0])
    conv = _value if kind[1] else None
    pairs = zip(los, his, strict=True)
    if op == "last":
        got = [values[b - 1] if b > a else None for a, b in pairs]
        return [None if v is None else conv(v) for v in got] if conv else got
    if op == "last_k":
        k = f.k
        parts = [values[max(a, b - k) : b][::-1] for a, b in pairs]
        return [[conv(v) for v in p] for p in parts] if conv else parts
    if op == "distinct":
        return _distinct(values, los, his)
    raise SchemaError(f"unknown op {op}")


def _sum_or_mean(
    mean: bool, is_float: bool, sums: list[int], los: list[int], his: list[int]
) -> list[Any]:
    """Exact sums (scaled by ``2**SHIFT`` for floats) to the reported values."""
    if mean:
        den = SHIFT if is_float else 0
        return [
            None if b == a else _round(s, (b - a) << den)
            for s, a, b in zip(sums, los, his, strict=True)
        ]
    if is_float:
        return [_round(s, _ONE) for s in sums]
    return [s if _INT64[0] <= s <= _INT64[1] else None for s in sums]


def _short(los: list[int], his: list[int], n: int) -> bool:
    """Whether reading every window's slice (at C speed: ``min``, ``set``) costs no more
    than a few Python-level passes over the values would (so still O(events + queries))."""
    return sum(his) - sum(los) <= _SLICE_FACTOR * (n + len(los))


def _extremes(
    values: list[Any], los: list[int], his: list[int], is_min: bool, is_float: bool
) -> list[Any]:
    """min or max per window; ``-0.0`` and ``0.0`` are one value, reported as ``0.0``
    (rule 26)."""
    if _short(los, his, len(values)):
        pick = min if is_min else max
        got = [pick(values[a:b]) if b > a else None for a, b in zip(los, his, strict=True)]
    else:
        got = _deque_extremes(values, los, his, is_min)
    if is_float:
        return [None if v is None else v + 0.0 for v in got]
    return got


def _deque_extremes(values: list[Any], los: list[int], his: list[int], is_min: bool) -> list[Any]:
    """min or max per window by a monotonic deque of indices (windows slide forward)."""
    keys = values if is_min else [-v for v in values]  # exact for ints and floats
    dq: deque[int] = deque()
    nxt = 0
    out: list[Any] = []
    for a, b in zip(los, his, strict=True):
        while nxt < b:
            v = keys[nxt]
            while dq and keys[dq[-1]] >= v:
                dq.pop()
            dq.append(nxt)
            nxt += 1
        while dq and dq[0] < a:
            dq.popleft()
        out.append(values[dq[0]] if dq else None)
    return out


def _distinct(values: list[Any], los: list[int], his: list[int]) -> list[int]:
    """Distinct values per window; the windows slide forward, so each value enters and
    leaves the counter once."""
    if _short(los, his, len(values)):
        return [len(set(values[a:b])) for a, b in zip(los, his, strict=True)]
    seen: Counter[Any] = Counter()
    a0 = b0 = 0
    res = []
    for a, b in zip(los, his, strict=True):
        for v in values[b0:b]:
            seen[v] += 1
        b0 = max(b0, b)
        for v in values[a0:a]:
            seen[v] -= 1
            if not seen[v]:
                del seen[v]
        a0 = max(a0, a)
        res.append(len(seen))
    return res


def _value(v: Any) -> Any:
    """A timestamp value (micros in rows) as the log gives it: a UTC datetime."""
    return _EPOCH + timedelta(microseconds=v)
