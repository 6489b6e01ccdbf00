"""Order-line features of a shop: per customer, per (store, sku) and at request time."""

import numpy as np

from transforms import (
    FeatureSet,
    Float64,
    Int64,
    Mean,
    Nullable,
    Std,
    String,
    Timestamp,
    Vocabulary,
    transform,
)
from transforms.windows import (
    seconds_since_previous,
    window_count,
    window_distinct,
    window_mean,
    window_sum,
)

HOUR, DAY = 3_600, 86_400


@transform
def customer_orders_24h(occurred_at: Timestamp) -> Int64:
    return window_count(occurred_at, DAY)


@transform
def customer_spend_mean_7d(
    occurred_at: Timestamp, quantity: Int64, unit_price: Nullable[Float64]
) -> Nullable[Float64]:
    """Mean line value over the 7 days before the order (the order itself excluded)."""
    return window_mean(occurred_at, quantity * unit_price, 7 * DAY, include_current=False)


@transform
def customer_channels_7d(occurred_at: Timestamp, channel: Nullable[String]) -> Int64:
    return window_distinct(occurred_at, channel, 7 * DAY)


@transform
def customer_seconds_since_prev(occurred_at: Timestamp) -> Nullable[Float64]:
    return seconds_since_previous(occurred_at)


CUSTOMER_STATS = FeatureSet(
    name="customer_stats",
    entities={"customer_id": String},
    event_timestamp="occurred_at",
    order_by=("occurred_at",),
    ttl_seconds=30 * DAY,
    transforms=[
        customer_orders_24h,
        customer_spend_mean_7d,
        customer_channels_7d,
        customer_seconds_since_prev,
    ],
)


@transform
def sku_units_7d(occurred_at: Timestamp, quantity: Int64) -> Float64:
    return window_sum(occurred_at, quantity, 7 * DAY)


@transform
def sku_price_mean_30d(occurred_at: Timestamp, unit_price: Nullable[Float64]) -> Nullable[Float64]:
    return window_mean(occurred_at, unit_price, 30 * DAY)


STORE_SKU_STATS = FeatureSet(
    name="store_sku_stats",
    entities={"store_id": String, "sku": Int64},
    event_timestamp="occurred_at",
    order_by=("occurred_at",),
    transforms=[sku_units_7d, sku_price_mean_30d],
)


@transform(request_time=True)
def price_z(
    unit_price: Nullable[Float64], mean=Mean("unit_price"), std=Std("unit_price")
) -> Nullable[Float64]:
    return (unit_price - mean) / std


@transform(request_time=True)
def price_vs_sku(
    unit_price: Nullable[Float64], sku_price_mean_30d: Nullable[Float64]
) -> Nullable[Float64]:
    return unit_price / sku_price_mean_30d


@transform(request_time=True)
def line_vs_customer(
    quantity: Int64, unit_price: Nullable[Float64], customer_spend_mean_7d: Nullable[Float64]
) -> Nullable[Float64]:
    return np.round(quantity * unit_price / customer_spend_mean_7d, 6)


@transform(request_time=True)
def channel_idx(channel: Nullable[String], vocab=Vocabulary("channel", num_oov_buckets=2)) -> Int64:
    return vocab.lookup(channel)


ORDER_REQUEST = FeatureSet(
    name="order_request",
    entities={"customer_id": String, "store_id": String, "sku": Int64},
    event_timestamp="occurred_at",
    transforms=[price_z, price_vs_sku, line_vs_customer, channel_idx],
)
