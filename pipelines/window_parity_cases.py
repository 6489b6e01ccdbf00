"""The built-in window set of ``skewless parity --windows`` and its seeded events and
queries: every op over 1s, 10m, 1h and 7d, a ``where`` filter, a (string, int) key, and
events that are late, replayed, conflicting copies of one id, null (values, keys, times)
or at one instant, so every rule of CONTRACT 23-30 is reached at any size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.window_layout import GRACE_MICROS
from transforms import Bool, Float64, Int64, String, Timestamp, WindowSet, aggregate

__all__ = ["PARITY_WINDOWS", "QUERY_TIME", "WindowParityData", "window_parity_data"]

QUERY_TIME = "at"
WINDOWS = ("1s", "10m", "1h", "7d")
SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
WINDOW_MICROS = (SECOND, 600 * SECOND, HOUR, 7 * DAY)
T0 = 1_709_251_200 * SECOND  # 2024-03-01T00:00:00Z
SPAN = 30 * DAY  # entities end their histories over 30 days
EVENTS_PER_ENTITY = 40  # on average; activity is skewed, a few entities hold thousands
STORES = ("north", "south", "Z\u00fcrich", "Zu\u0308rich", "", "\u65e5\u672c")
MERCHANTS = (
    "caf\u00e9",
    "cafe\u0301",
    "Caf\u00e9",
    "",
    "bar",
    "baz",
    None,
    "\u65e5\u672c",
    "\ufb01",
)
EXTREMES = (1e300, 1.7e308, -1.7e308, 5e-324, 1e16, -1e16)
ROUND = (0.1, 0.2, 0.3, 1.0, 2.5)
TS = pa.timestamp("us", tz="UTC")


def approved(ok: Bool | None) -> Bool | None:
    return ok


@aggregate(ops=("count", "sum", "mean", "min", "max", "last", "last_k"), windows=WINDOWS, k=3)
def amount(amount: Float64 | None) -> Float64 | None:
    return amount


@aggregate(
    ops=("count", "sum", "mean", "min", "max", "distinct", "last"), windows=WINDOWS, where=approved
)
def qty(qty: Int64) -> Int64 | None:
    """Never null as an input, so it may leave 2**53 (a nullable Int64 arrives as float64)."""
    return qty


@aggregate(ops=("count", "sum", "max"), windows=("10m", "7d"))
def units(units: Int64 | None) -> Int64 | None:
    return units


@aggregate(ops=("count", "distinct", "last", "last_k"), windows=WINDOWS, k=2)
def merchant(merchant: String | None) -> String | None:
    return merchant


@aggregate(ops=("distinct", "last", "last_k"), windows=("1h",), k=2)
def flag(ok: Bool | None) -> Bool | None:
    return ok


@aggregate(ops=("count", "last"), windows=("10m", "7d"))
def seen(ts: Timestamp) -> Timestamp:
    return ts


PARITY_WINDOWS = WindowSet(
    "parity_windows",
    {"store": String, "user": Int64},
    [amount, qty, units, merchant, flag, seen],
    event_timestamp="ts",
    event_id="eid",
    description="skewless parity --windows: every op, a where filter, a (string, int) key",
)


@dataclass
class WindowParityData:
    """Events in arrival order, queries, and how many rows reach each hard case."""

    events: pa.Table
    queries: pa.Table
    cases: dict[str, int] = field(default_factory=dict)


def window_parity_data(events: int, queries: int, seed: int = 0) -> WindowParityData:
    """``events`` event rows and ``queries`` query rows for :data:`PARITY_WINDOWS`, the same
    for the same seed. Query times are where the online state is exact (no earlier than an
    entity's newest event time minus the grace, rule 28), so every engine must agree."""
    rng = np.random.default_rng(seed)
    n_ent = max(1, events // EVENTS_PER_ENTITY)
    ent_user = (np.arange(n_ent) // len(STORES)) * 7919 - 1000
    ent_end = T0 + rng.integers(0, SPAN, n_ent)
    replays = events * 3 // 100
    conflicts = events * 3 // 100
    base = events - replays - conflicts
    cols, ent = _base_events(rng, base, ent_end)
    cases = {"replayed": replays, "conflicting copies": conflicts}
    ids = np.flatnonzero(~cols["eid_null"])
    if not ids.size:
        ids = np.arange(base)
    src = rng.choice(ids, replays + conflicts)
    cols = {k: np.concatenate([v, v[src]]) for k, v in cols.items()}
    ent = np.concatenate([ent, ent[src]])
    delay = _conflict(rng, cols, base + replays, conflicts)
    delay[base : base + replays] += rng.integers(0, 2 * DAY, replays)
    cases.update(_unplace(rng, cols, events))
    late = delay >= HOUR
    cases["late (arrive >= 1h after)"] = int(late.sum())
    arrival = np.where(cols["ts_null"], T0 + rng.integers(0, SPAN, events), cols["ts"] + delay)
    order = np.argsort(arrival, kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    ent = ent[order]
    table = _events_table(cols, ent, ent_user)
    cases.update(_value_cases(table))
    q = _queries(rng, queries, cols, ent, ent_user)
    return WindowParityData(table, q, cases)


def _base_events(
    rng: np.random.Generator, n: int, ent_end: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns of ``n`` distinct events: entity activity skewed (``u**2``), times mostly
    in the last hours of each entity's history, many at a few shared instants."""
    n_ent = len(ent_end)
    ent = np.minimum((n_ent * rng.random(n) ** 2).astype(np.int64), n_ent - 1)
    r = rng.random(n)
    pools = rng.integers(0, 2 * HOUR, (n_ent, 4))
    back = np.select(
        [r < 0.30, r < 0.45, r < 0.65, r < 0.90],
        [
            rng.integers(0, HOUR, n),
            pools[ent, rng.integers(0, 4, n)],  # one of four instants: ties (rule 29)
            rng.integers(0, DAY, n),
            rng.integers(0, 7 * DAY + HOUR, n),
        ],
        rng.integers(7 * DAY, 10 * DAY, n),  # old: out of the state's retention
    )
    ts = ent_end[ent] - back
    whole = rng.random(n) < 0.5
    ts = np.where(whole, ts - ts % SECOND, ts)
    eid_null = rng.random(n) < 0.01
    amount, amount_null = _amounts(rng, n)
    # an event without an id is never a duplicate: its amount is its own, so no other row
    # is equal to it (online, an equal row written apart is taken as a replay, rule 27)
    amount = np.where(eid_null, np.arange(n) + 0.25, amount)
    amount_null &= ~eid_null
    qtys, units_v, units_null = _ints(rng, n)
    ok_r = rng.random(n)
    cols = {
        "ts": ts,
        "ts_null": np.zeros(n, bool),
        "eid": np.arange(1, n + 1, dtype=np.int64),
        "eid_null": eid_null,
        "amount": amount,
        "amount_null": amount_null,
        "qty": qtys,
        "units": units_v,
        "units_null": units_null,
        "ok": ok_r < 0.6,
        "ok_null": ok_r >= 0.8,
        "merchant": rng.integers(0, len(MERCHANTS), n),
        "store_null": np.zeros(n, bool),
        "user_null": np.zeros(n, bool),
    }
    return cols, ent


def _amounts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values with NaN, +-inf, -0.0, 0.0, sums that overflow or cancel; nulls."""
    r = rng.random(n)
    values = np.select(
        [r < 0.02, r < 0.03, r < 0.07, r < 0.11, r < 0.15, r < 0.21],
        [
            np.full(n, np.nan),
            rng.choice([np.inf, -np.inf], n),
            np.full(n, -0.0),
            np.zeros(n),
            rng.choice(EXTREMES, n),
            rng.choice(ROUND, n),
        ],
        rng.uniform(-1e6, 1e6, n),
    )
    return values, rng.random(n) < 0.06


def _ints(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantities (never null; some near 2**62, so that sums leave int64, rule 26), and
    units in -50..50, null for 5%."""
    big = rng.choice([1, -1], n) * (2**62 + rng.integers(-1000, 1000, n))
    qtys = np.where(rng.random(n) < 0.03, big, rng.integers(-50, 51, n)).astype(np.int64)
    return qtys, rng.integers(-50, 51, n), rng.random(n) < 0.05


def _conflict(rng: np.random.Generator, cols: dict[str, np.ndarray], lo: int, n: int) -> np.ndarray:
    """Copies ``lo:lo+n`` get other values (30% another time too); returns every row's
    arrival delay: seconds for most, hours to 8 days for 2% (late; some so late that the
    online state drops them on arrival, rule 28)."""
    total = len(cols["ts"])
    part = slice(lo, lo + n)
    amount, amount_null = _amounts(rng, n)
    cols["amount"][part] = amount
    cols["amount_null"][part] = amount_null
    cols["qty"][part], cols["units"][part], cols["units_null"][part] = _ints(rng, n)
    cols["merchant"][part] = rng.integers(0, len(MERCHANTS), n)
    shift = rng.choice([-HOUR, -SECOND, -1, 1, SECOND, HOUR], n)
    cols["ts"][part] += np.where(rng.random(n) < 0.3, shift, 0)
    delay = rng.integers(0, 10 * SECOND, total)
    late = rng.random(total) < 0.02
    delay[late] = rng.integers(HOUR, 8 * DAY, int(late.sum()))
    return delay


def _unplace(rng: np.random.Generator, cols: dict[str, np.ndarray], n: int) -> dict[str, int]:
    """0.3% of the rows lose their store, user or time: they belong to no entity (rule 24)."""
    which = np.where(rng.random(n) < 0.003, rng.integers(0, 3, n), -1)
    for i, name in enumerate(("store_null", "user_null", "ts_null")):
        cols[name] |= which == i
    return {"no key or time": int((which >= 0).sum())}


def _events_table(cols: dict[str, np.ndarray], ent: np.ndarray, ent_user: np.ndarray) -> pa.Table:
    stores = np.array(STORES, dtype=object)[ent % len(STORES)]
    merchants = np.array(MERCHANTS, dtype=object)[cols["merchant"]]
    return pa.table(
        {
            "store": pa.array(stores, pa.string(), mask=cols["store_null"]),
            "user": pa.array(ent_user[ent], pa.int64(), mask=cols["user_null"]),
            "ts": pa.array(cols["ts"], pa.int64(), mask=cols["ts_null"]).cast(TS),
            "eid": pa.array(cols["eid"], pa.int64(), mask=cols["eid_null"]),
            "amount": pa.array(cols["amount"], pa.float64(), mask=cols["amount_null"]),
            "qty": pa.array(cols["qty"], pa.int64()),
            "units": pa.array(cols["units"], pa.int64(), mask=cols["units_null"]),
            "ok": pa.array(cols["ok"], pa.bool_(), mask=cols["ok_null"]),
            "merchant": pa.array(merchants, pa.string()),
        }
    )


def _value_cases(table: pa.Table) -> dict[str, int]:
    """How many placed events share their entity and instant with another event, and how
    many have no amount (null, NaN or inf) or no id."""
    placed = table.filter(
        pc.and_(
            pc.and_(pc.is_valid(table["store"]), pc.is_valid(table["user"])),
            pc.is_valid(table["ts"]),
        )
    )
    counts = placed.group_by(["store", "user", "ts"]).aggregate([([], "count_all")])
    shared = pc.filter(counts["count_all"], pc.greater(counts["count_all"], 1))
    amount = table["amount"]
    finite = pc.is_finite(amount).fill_null(False)
    return {
        "same instant": int(pc.sum(shared).as_py() or 0),
        "no amount (null, NaN, inf)": int(pc.sum(pc.invert(finite)).as_py() or 0),
        "no event id": table["eid"].null_count,
    }


def _queries(
    rng: np.random.Generator,
    n: int,
    cols: dict[str, np.ndarray],
    ent: np.ndarray,
    ent_user: np.ndarray,
) -> pa.Table:
    """``n`` query rows: most at times where windows of every length hold events (an
    event's instant, one window after it, a microsecond either side), some far after,
    some for a key without events, some without a key or a time (rule 24)."""
    n_ent = len(ent_user)
    placed = ~(cols["store_null"] | cols["user_null"] | cols["ts_null"])
    has = np.zeros(n_ent, bool)
    has[ent[placed]] = True
    newest = np.full(n_ent, T0)
    np.maximum.at(newest, ent[placed], cols["ts"][placed])
    floor = newest - GRACE_MICROS  # the online state is exact from here on (rule 28)
    known = np.flatnonzero(has) if has.any() else np.zeros(1, np.int64)
    recent = np.flatnonzero(placed & (cols["ts"] >= floor[ent]))
    if not recent.size:
        recent = np.zeros(1, np.int64)
    r = rng.random(n)
    pick = rng.choice(recent, n)
    anyone = rng.choice(known, n)
    q_ent = np.select(
        [r < 0.30, r < 0.62, r < 0.72, r < 0.80],
        [anyone, ent[pick], ent[rng.choice(recent, n)], anyone],
        ent[pick],
    )
    last = newest[q_ent]
    t = np.select(
        [r < 0.30, r < 0.62, r < 0.72, r < 0.80],
        [
            last - HOUR + rng.integers(0, 2 * HOUR, n),
            cols["ts"][pick] + rng.choice((0, *WINDOW_MICROS), n) + rng.choice([0, 0, 1, -1], n),
            last + rng.integers(0, 8 * DAY, n),
            last + rng.choice([-GRACE_MICROS, 0, 1], n),
        ],
        last + rng.integers(-HOUR, HOUR, n),
    )
    t = np.maximum(t, floor[q_ent])
    users = ent_user[q_ent]
    unknown = (r >= 0.90) & (r < 0.96)  # a key without events
    users = np.where(unknown, -(10**9) - rng.integers(0, 1000, n), users)
    t = np.where(unknown, T0 + rng.integers(0, SPAN, n), t)
    holes = np.where(r >= 0.96, rng.integers(0, 3, n), -1)
    stores = np.array(STORES, dtype=object)[q_ent % len(STORES)]
    out: dict[str, Any] = {
        "qid": pa.array(np.arange(n), pa.int64()),
        "store": pa.array(stores, pa.string(), mask=holes == 0),
        "user": pa.array(users, pa.int64(), mask=holes == 1),
        QUERY_TIME: pa.array(t, pa.int64(), mask=holes == 2).cast(TS),
    }
    return pa.table(out)
