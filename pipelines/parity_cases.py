"""The parity feature set and its edge-case rows: one transform per rule of
``transforms/CONTRACT.md``, and rows that hit every rule, for ``skewless parity``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from transforms import (
    Bool,
    FeatureSet,
    Float64,
    Int64,
    Max,
    Mean,
    Min,
    Nullable,
    Quantiles,
    Std,
    String,
    Timestamp,
    Vocabulary,
    bucketize,
    transform,
)


@transform
def amount_z(
    amount: Nullable[Float64], mean=Mean("amount"), std=Std("amount")
) -> Nullable[Float64]:
    """z-score with the population std (ddof=0); missing stays missing."""
    return (amount - mean) / std


@transform
def amount_log1p(amount: Nullable[Float64]) -> Nullable[Float64]:
    """log1p: negative inputs give NaN and -1 gives -inf, both written as null."""
    return np.log1p(amount)


@transform
def amount_scaled(
    amount: Nullable[Float64], lo=Min("amount"), hi=Max("amount")
) -> Nullable[Float64]:
    return (amount - lo) / (hi - lo)


@transform
def amount_bucket(
    amount: Nullable[Float64], bounds=Quantiles("amount", num_buckets=8)
) -> Nullable[Int64]:
    return bucketize(amount, bounds)


@transform
def amount_cents(amount: Nullable[Float64]) -> Nullable[Float64]:
    """Round half to even at 2 decimals (numpy's rule, the contract's rule)."""
    return np.round(amount, 2)


@transform
def amount_per_item(amount: Nullable[Float64], items: Nullable[Int64]) -> Nullable[Float64]:
    """Division by zero gives inf or NaN: written as null."""
    return amount / items


@transform
def items_sq(items: Int64) -> Int64:
    return items * items


@transform
def category_idx(
    category: Nullable[String],
    vocab=Vocabulary("category", top_k=6, num_oov_buckets=3, seed=11),
) -> Int64:
    """Vocabulary index; OOV strings hash into 3 buckets; null gives -1."""
    return vocab.lookup(category)


@transform
def name_clean(name: Nullable[String]) -> Nullable[String]:
    return np.array([None if s is None else s.strip().casefold() for s in name], dtype=object)


@transform
def name_len(name: Nullable[String]) -> Nullable[Int64]:
    """Length in code points after NFC normalisation."""
    return np.array([np.nan if s is None else len(s) for s in name], dtype=np.float64)


@transform
def flag_or_big(flag: Nullable[Bool], amount: Nullable[Float64]) -> Nullable[Bool]:
    """Nullable bools arrive as 1.0/0.0/NaN."""
    big = np.where(np.isnan(amount), np.nan, (amount > 100).astype(np.float64))
    return np.fmax(flag, big)


@transform
def weekday(event_timestamp: Timestamp) -> Int64:
    """Day of week in UTC, Monday = 0."""
    days = event_timestamp.astype("datetime64[D]").astype(np.int64)
    return (days + 3) % 7


@transform
def hour_utc(event_timestamp: Timestamp) -> Int64:
    return event_timestamp.astype("datetime64[h]").astype(np.int64) % 24


@transform
def amount_z_clipped(amount_z: Nullable[Float64]) -> Nullable[Float64]:
    """Consumes another transform's output."""
    return np.clip(amount_z, -3.0, 3.0)


@transform(request_time=True)
def amount_vs_request(
    amount: Nullable[Float64], request_amount: Nullable[Float64]
) -> Nullable[Float64]:
    return request_amount - amount


PARITY_FEATURES = FeatureSet(
    name="parity",
    entities={"row_id": Int64},
    event_timestamp="event_timestamp",
    transforms=[
        amount_z,
        amount_log1p,
        amount_scaled,
        amount_bucket,
        amount_cents,
        amount_per_item,
        items_sq,
        category_idx,
        name_clean,
        name_len,
        flag_or_big,
        weekday,
        hour_utc,
        amount_z_clipped,
        amount_vs_request,
    ],
)

_AMOUNT_EDGES = [
    None,
    float("nan"),
    float("inf"),
    float("-inf"),
    0.0,
    -0.0,
    -1.0,
    -0.5,
    1e308,
    -1e308,
    5e-324,
    0.125,
    0.005,
    0.015,
    2.675,
    1.5,
    2.5,
    100.0,
    100.00000000000001,
]
_CATEGORY_EDGES = [
    None,
    "",
    "groceries",
    "café",
    "cafe\u0301",
    "CAFÉ",
    " travel ",
    "日本",
    "🚀",
    "rare-1",
    "rare-2",
    "a" * 200,
    "\u212b",
    "\u00c5",
    "x\x00y",
]
_NAME_EDGES = [None, "", "  Straße ", "ÅNGSTRÖM", "A\u030angstro\u0308m", "\t tab\n", "ǅ", "ﬁ"]
_TS_EDGES = [
    dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2024, 2, 29, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=dt.UTC),
    dt.datetime(1900, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=dt.UTC),
]
_CATEGORIES = [
    "groceries",
    "travel",
    "fuel",
    "dining",
    "online",
    "pharmacy",
    "electronics",
    "jewelry",
    "gaming",
    "gifts",
]


def parity_rows(rows: int, seed: int = 42) -> pa.Table:
    """``rows`` rows: every edge case first, then seeded random rows with ~5% nulls."""
    rng = np.random.default_rng(seed)
    n = max(rows, 1)
    amount = rng.lognormal(3.0, 1.5, n) * np.where(rng.random(n) < 0.05, -1, 1)
    amount_list: list[float | None] = amount.tolist()
    for i in np.flatnonzero(rng.random(n) < 0.05).tolist():
        amount_list[i] = None
    items = rng.integers(0, 6, n).tolist()
    items_null: list[int | None] = list(items)
    for i in np.flatnonzero(rng.random(n) < 0.05).tolist():
        items_null[i] = None
    zipf = np.minimum(rng.zipf(1.6, n), len(_CATEGORIES) + 40) - 1
    category: list[str | None] = [
        _CATEGORIES[z] if z < len(_CATEGORIES) else f"tail-{z}" for z in zipf.tolist()
    ]
    name: list[str | None] = [f" User {i % 997} " for i in range(n)]
    flag: list[bool | None] = (rng.random(n) < 0.3).tolist()
    base = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    ts_us = base + rng.integers(0, 90 * 86_400 * 1_000_000, n)
    ts: list[dt.datetime] = [
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(u))
        for u in ts_us.tolist()
    ]
    request_amount: list[float | None] = (amount * rng.uniform(0.5, 1.5, n)).tolist()
    for i in range(min(n, 200)):  # the edge cases, in combinations, at the head of the data
        amount_list[i] = _AMOUNT_EDGES[i % len(_AMOUNT_EDGES)]
        category[i] = _CATEGORY_EDGES[i % len(_CATEGORY_EDGES)]
        name[i] = _NAME_EDGES[i % len(_NAME_EDGES)]
        items_null[i] = [0, None, 1, -3, 2**40][i % 5]
        items[i] = [0, -7, 3_037_000_499, 5][i % 4]
        flag[i] = [None, True, False][i % 3]
        ts[i] = _TS_EDGES[i % len(_TS_EDGES)]
        request_amount[i] = [None, float("inf"), 0.0, 1.0][i % 4]
    schema = pa.schema(
        [
            ("row_id", pa.int64()),
            ("amount", pa.float64()),
            ("request_amount", pa.float64()),
            ("items", pa.int64()),
            ("items_null", pa.int64()),
            ("category", pa.string()),
            ("name", pa.string()),
            ("flag", pa.bool_()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ]
    )
    table = pa.table(
        {
            "row_id": np.arange(n, dtype=np.int64),
            "amount": pa.array(amount_list, pa.float64(), from_pandas=False),
            "request_amount": pa.array(request_amount, pa.float64(), from_pandas=False),
            "items": pa.array(items, pa.int64()),
            "items_null": pa.array(items_null, pa.int64()),
            "category": pa.array(category, pa.string()),
            "name": pa.array(name, pa.string()),
            "flag": pa.array(flag, pa.bool_()),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        },
        schema=schema,
    )
    return table.slice(0, rows)
