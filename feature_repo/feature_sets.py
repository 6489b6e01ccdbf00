"""The reference domain: card-transaction fraud features, written once.

Entity feature sets (``order_by``) run per user / per merchant over their transactions
in event order, in Spark or Beam; window sets answer "in the last hour" as of the request
time from the online window state (and offline as of each training row's time); the
request-time sets run in the online server and in training-set building, and may read
window features (the amount against the user's last 7 days). Adding a domain means adding
a module like this one.
"""

from __future__ import annotations

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
    WindowSet,
    aggregate,
    transform,
)
from transforms.windows import last_n_mean, seconds_since_previous

HOUR, DAY = 3_600, 86_400

# ---------------------------------------------------------------- as of each event
# Features that mean "as of the entity's latest event": a user's pace (the gap before their
# latest transaction) and typical amounts over their last N transactions, which no
# request-time clock changes. Anything "in the last hour / 7 days" is a request-time
# window (below): it means the days before the request, not before the entity's last event.


@transform
def user_amount_mean_last_10(amount: Nullable[Float64]) -> Nullable[Float64]:
    """The mean amount of the user's last 10 transactions."""
    return last_n_mean(amount, 10)


@transform
def user_seconds_since_prev(event_timestamp: Timestamp) -> Nullable[Float64]:
    return seconds_since_previous(event_timestamp)


USER_ACTIVITY = FeatureSet(
    name="user_activity",
    entities={"user_id": Int64},
    order_by=("event_timestamp", "txn_id"),
    ttl_seconds=7 * DAY,
    description="A user's pace and typical amount as of each of their transactions.",
    transforms=[user_amount_mean_last_10, user_seconds_since_prev],
)


@transform
def merchant_amount_mean_last_100(amount: Nullable[Float64]) -> Nullable[Float64]:
    """The mean amount of the merchant's last 100 transactions."""
    return last_n_mean(amount, 100)


MERCHANT_ACTIVITY = FeatureSet(
    name="merchant_activity",
    entities={"merchant_id": Int64},
    order_by=("event_timestamp", "txn_id"),
    ttl_seconds=7 * DAY,
    description="A merchant's typical amount as of each of its transactions.",
    transforms=[merchant_amount_mean_last_100],
)

# ---------------------------------------------------------------- as of the request time


@aggregate(ops=("count", "sum", "mean", "max"), windows=("10m", "1h", "24h", "7d"))
def user_spend(amount: Nullable[Float64]) -> Float64:
    """The user's transaction amounts in each window ending just before the request."""
    return amount


@aggregate(ops=("distinct",), windows=("24h", "7d"))
def user_merchants(merchant_id: Int64) -> Int64:
    """Distinct merchants the user paid in each window before the request."""
    return merchant_id


USER_WINDOWS = WindowSet(
    name="user_windows",
    entities={"user_id": Int64},
    aggregations=[user_spend, user_merchants],
    event_timestamp="event_timestamp",
    event_id="txn_id",
    description="A user's spending in the windows ending just before the request time "
    "(served from the online window state; `skewless stream` or POST /push keeps it fresh).",
)


@aggregate(ops=("count", "sum", "mean"), windows=("1h", "24h"))
def merchant_sales(amount: Nullable[Float64]) -> Float64:
    """The merchant's transaction amounts in each window before the request."""
    return amount


MERCHANT_WINDOWS = WindowSet(
    name="merchant_windows",
    entities={"merchant_id": Int64},
    aggregations=[merchant_sales],
    event_timestamp="event_timestamp",
    event_id="txn_id",
    description="A merchant's traffic in the windows ending just before the request time.",
)

# ---------------------------------------------------------------- at request time


@transform(request_time=True)
def amount_z(amount: Float64, mean=Mean("amount"), std=Std("amount")) -> Nullable[Float64]:
    """The transaction amount as a z-score over all training transactions."""
    return (amount - mean) / std


@transform(request_time=True)
def amount_log(amount: Float64) -> Nullable[Float64]:
    return np.log1p(amount)


@transform(request_time=True)
def device_idx(device: Nullable[String], vocab=Vocabulary("device", num_oov_buckets=2)) -> Int64:
    return vocab.lookup(device)


TRANSACTION_REQUEST = FeatureSet(
    name="transaction_request",
    entities={"user_id": Int64, "merchant_id": Int64},
    description="Features of the transaction being scored, computed when it is requested.",
    transforms=[amount_z, amount_log, device_idx],
)


@transform(request_time=True)
def amount_vs_user_mean_7d(
    amount: Float64, user_spend_mean_7d: Nullable[Float64]
) -> Nullable[Float64]:
    """How unusual the amount is for this user: over their mean in the 7 days before the
    request (a window feature, as of the request time; null without such history)."""
    return amount / user_spend_mean_7d


@transform(request_time=True)
def amount_vs_merchant_mean_24h(
    amount: Float64, merchant_sales_mean_24h: Nullable[Float64]
) -> Nullable[Float64]:
    """Over the merchant's mean in the day before the request (a busy merchant's week of
    events would make every lookup read thousands)."""
    return amount / merchant_sales_mean_24h


TRANSACTION_VS_HISTORY = FeatureSet(
    name="transaction_vs_history",
    entities={"user_id": Int64, "merchant_id": Int64},
    description="The transaction against the user's last 7 days and the merchant's last day "
    "before the request. It reads window features, so skewless serves it (Feast refuses).",
    transforms=[amount_vs_user_mean_7d, amount_vs_merchant_mean_24h],
)

ENTITY_FEATURE_SETS = (USER_ACTIVITY, MERCHANT_ACTIVITY)
REQUEST_FEATURE_SETS = (TRANSACTION_REQUEST, TRANSACTION_VS_HISTORY)
