"""The request-time feature set of the throwaway serving repo (bench.repos.serving_repo), used
by the serving tests and bench.serving: two transforms that read Redis features (``avg_amount``,
``txn_count``) and request data (``request_amount``). Lives here, not under tests/, so the
benchmark does not depend on test modules."""

from __future__ import annotations

from typing import Any

import numpy as np

from transforms import FeatureSet, Float64, Int64, Mean, StatisticsArtifact, Std, transform


@transform(request_time=True)
def amount_vs_avg(request_amount: Float64 | None, avg_amount: Float64 | None) -> Float64 | None:
    """How far this payment is from the user's average (Redis feature)."""
    return request_amount - avg_amount  # type: ignore[operator]


@transform(request_time=True)
def request_amount_z(
    request_amount: Float64 | None,
    txn_count: Int64 | None,
    mean: Any = Mean("request_amount"),  # noqa: B008 - analyzers are declared as defaults
    std: Any = Std("request_amount"),  # noqa: B008
) -> Float64 | None:
    """z-score of the payment with frozen statistics, damped for users with few payments."""
    return (request_amount - mean) / std * np.minimum(txn_count, 10) / 10  # type: ignore[operator,arg-type]


FEATURES = FeatureSet(
    name="payments",
    entities={"user_id": Int64},
    transforms=[amount_vs_avg, request_amount_z],
)

ARTIFACT = StatisticsArtifact(
    "payments",
    {"mean(request_amount)": 52.25, "std(request_amount, ddof=0)": 17.5},
    created_at="2026-01-01T00:00:00+00:00",
)


def feast_udf(inputs: Any) -> Any:
    """The pandas on-demand feature view body: the same functions through OnlineEngine."""
    import pandas as pd

    from transforms.engines.online import OnlineEngine

    engine = OnlineEngine(FEATURES, ARTIFACT, request_time_only=True)
    ints = {f.name for f in engine.runner.fields if f.type is Int64}
    cols = {}
    for name in engine.inputs:  # pandas gives NaN for null and floats for nullable ints
        values = [None if v is None or v != v else v for v in inputs[name].tolist()]
        cols[name] = [None if v is None else int(v) for v in values] if name in ints else values
    out = engine.runner.run_python_columns(cols, len(inputs))
    return pd.DataFrame(
        {
            k: np.array([np.nan if x is None else x for x in v], dtype=np.float64)
            for k, v in out.items()
        }
    )
