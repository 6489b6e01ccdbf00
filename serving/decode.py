"""Decoding HMGET replies into view columns with their statuses (NOT_FOUND, NULL_VALUE,
OUTSIDE_MAX_AGE by the view's ttl)."""

from __future__ import annotations

from typing import Any

from serving.catalog import Plan
from store import redis_layout as rl

# Statuses (Feast's ``FieldStatus`` numbers) and where they differ from Feast's server, on
# purpose, to match offline retrieval:
#
# * ``PRESENT`` (1): a value was stored and is within the view's ttl;
# * ``NULL_VALUE`` (2): the entity's row exists but this value is null (Feast says PRESENT);
# * ``NOT_FOUND`` (3): the entity has no row for the view (Feast says PRESENT with null);
# * ``OUTSIDE_MAX_AGE`` (4): the row is older than the view's ttl relative to now, so the
#   value is null, as a point-in-time join would give (Feast's server returns the stale value).
#
# Request-time transform outputs are PRESENT or NULL_VALUE; their inputs from views are null
# unless PRESENT, exactly what the offline join feeds the same transforms.
PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = 1, 2, 3, 4
STATUS_NAMES = ("INVALID", "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE")
EPOCH_TS = (0, 0)

_TS_CACHE: dict[bytes, tuple[int, int]] = {}
_TS_CACHE_MAX = 200_000
_ALL_PRESENT: dict[int, list[int]] = {}


def _all_present(n: int) -> list[int]:
    """A shared, never mutated [PRESENT] * n (lets the JSON encoder reuse its name list)."""
    col = _ALL_PRESENT.get(n)
    if col is None:
        if len(_ALL_PRESENT) > 4096:
            _ALL_PRESENT.clear()
        col = _ALL_PRESENT[n] = [PRESENT] * n
    return col


def _decode_ts(raw: bytes) -> tuple[int, int]:
    ts = _TS_CACHE.get(raw)
    if ts is None:
        if len(_TS_CACHE) >= _TS_CACHE_MAX:
            _TS_CACHE.clear()
        ts = _TS_CACHE[raw] = rl.decode_timestamp(raw)
    return ts


Decoded = list[list[tuple[list[list[Any]], list[list[int]], list[tuple[int, int]]]]]
"""Per key group, per view: (values per feature, statuses per feature, ts per entity)."""


def decode_views(
    plan: Plan, n: int, replies: list[list[list[bytes | None]]], now_ns: int
) -> Decoded:
    """The view columns of one lookup, with statuses (NOT_FOUND, NULL_VALUE, TTL)."""
    if n == 1:
        return _decode_views_one(plan, replies, now_ns)
    return _decode_views_columns(plan, n, replies, now_ns)


def _decode_views_columns(
    plan: Plan, n: int, replies: list[list[list[bytes | None]]], now_ns: int
) -> Decoded:
    """:func:`decode_views` column by column (see :func:`decode`)."""
    decode_column = rl.decode_column
    present = _all_present(n)
    decoded: Decoded = []
    for gi, group in enumerate(plan.groups):
        per_view = []
        cols = list(zip(*replies[gi], strict=True))
        for vr in group.views:
            nf = len(vr.features)
            off = vr.offset
            ttl = vr.ttl_ns
            tss: list[tuple[int, int]] = [EPOCH_TS] * n
            dead: list[tuple[int, int]] = []  # (entity, status) of missing / expired rows
            for e, raw_ts in enumerate(cols[off + nf]):
                if raw_ts is None:
                    dead.append((e, NOT_FOUND))  # entity has no row for this view
                    continue
                ts = tss[e] = _decode_ts(raw_ts)
                if ttl and now_ns - (ts[0] * 1_000_000_000 + ts[1]) > ttl:
                    dead.append((e, OUTSIDE_MAX_AGE))
            vals: list[list[Any]] = []
            stats: list[list[int]] = []
            for f, type_name in enumerate(vr.types):
                raws = cols[off + f]
                col = decode_column(raws, type_name)
                if dead or None in col:
                    st = [PRESENT] * n
                    if None in col:
                        for e, v in enumerate(col):
                            if v is None:  # never written: NOT_FOUND; written as null
                                st[e] = NOT_FOUND if raws[e] is None else NULL_VALUE
                    for e, s in dead:
                        col[e] = None
                        st[e] = s
                    stats.append(st)
                else:
                    stats.append(present)
                vals.append(col)
            per_view.append((vals, stats, tss))
        decoded.append(per_view)
    return decoded


_ONE = {status: [status] for status in (NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE)}


def _decode_views_one(plan: Plan, replies: list[list[list[bytes | None]]], now_ns: int) -> Decoded:
    """:func:`decode_views` of a single entity (most online requests), value by value with
    no column set-up; the same values and statuses. Status lists are shared constants
    (never mutated), like the all-PRESENT list of the general path."""
    decode_value = rl.decode_value
    present = _all_present(1)
    decoded: Decoded = []
    for gi, group in enumerate(plan.groups):
        row = replies[gi][0]
        per_view = []
        for vr in group.views:
            off = vr.offset
            nf = len(vr.features)
            raw_ts = row[off + nf]
            if raw_ts is None:
                dead = NOT_FOUND  # entity has no row for this view
                tss = [EPOCH_TS]
            else:
                ts = _decode_ts(raw_ts)
                tss = [ts]
                ttl = vr.ttl_ns
                expired = ttl and now_ns - (ts[0] * 1_000_000_000 + ts[1]) > ttl
                dead = OUTSIDE_MAX_AGE if expired else 0
            if dead:
                per_view.append(([[None] for _ in range(nf)], [_ONE[dead]] * nf, tss))
                continue
            vals: list[list[Any]] = []
            stats: list[list[int]] = []
            for raw in row[off : off + nf]:
                v = decode_value(raw)
                vals.append([v])
                if v is not None:
                    stats.append(present)
                else:  # never written: NOT_FOUND; written as null
                    stats.append(_ONE[NOT_FOUND if raw is None else NULL_VALUE])
            per_view.append((vals, stats, tss))
        decoded.append(per_view)
    return decoded
