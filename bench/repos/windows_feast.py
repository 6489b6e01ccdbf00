"""Feast's nearest way to the window features of ``bench.windows``, for its Feast column.

Feast has no window aggregations. What it can serve is each driver's recent events held as
list features of a FeatureView (``driver_trips``: event times in epoch microseconds and
fares, NaN for a missing fare), written by ``feast materialize``, and an on-demand feature
view (pandas mode) computing the same 8 features from them and a request field
``request_time_us``: per row, one filter per window and count/sum/mean/max. ``build``
writes the repo (its own Feast project), applies and materializes it with the Feast SDK;
``feast serve`` then serves ``driver_windows_feast:<feature>``. Feast is imported inside
functions only.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

VIEW = "driver_trips"
ODFV = "driver_windows_feast"
REQUEST_TIME = "request_time_us"
WINDOWS = (("1h", 3_600_000_000), ("24h", 86_400_000_000))
OPS = ("count", "sum", "mean", "max")
NAMES = [f"trip_fare_{op}_{w}" for w, _ in WINDOWS for op in OPS]

REPO_PY = """
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.STRING)
trips_source = FileSource(path="{data}", timestamp_field="event_timestamp")
{view} = FeatureView(
    name="{view}", entities=[driver], ttl=timedelta(0), online=True, source=trips_source,
    schema=[Field(name="driver_id", dtype=String), Field(name="pickup_us", dtype=Array(Int64)),
            Field(name="fare", dtype=Array(Float64))],
)
trip_request = RequestSource(name="trip_request",
                             schema=[Field(name="{request_time}", dtype=Int64)])


@on_demand_feature_view(
    sources=[{view}, trip_request],
    schema=[{schema}],
    mode="pandas",
)
def {odfv}(inputs: pd.DataFrame) -> pd.DataFrame:
    from bench.repos.windows_feast import window_features

    return window_features(inputs)
"""


def window_features(inputs: Any) -> Any:
    """The on-demand feature view's body: per row, its events in each window ending just
    before the request time, count/sum/mean/max of the fares that are not NaN."""
    import pandas as pd

    out: dict[str, list[Any]] = {n: [] for n in NAMES}
    rows = zip(inputs["pickup_us"], inputs["fare"], inputs[REQUEST_TIME], strict=True)
    for times, fares, at in rows:
        t = np.asarray(times, dtype=np.int64)
        f = np.asarray(fares, dtype=np.float64)
        for name, width in WINDOWS:
            v = f[(t >= at - width) & (t < at)]
            v = v[~np.isnan(v)]
            out[f"trip_fare_count_{name}"].append(len(v))
            out[f"trip_fare_sum_{name}"].append(float(v.sum()))
            out[f"trip_fare_mean_{name}"].append(float(v.mean()) if len(v) else np.nan)
            out[f"trip_fare_max_{name}"].append(float(v.max()) if len(v) else np.nan)
    return pd.DataFrame(out)


def _lists(events: pa.Table, end_us: int) -> pa.Table:
    """One row per driver: its event times (micros) and fares as lists."""
    table = pa.table(
        {
            "driver_id": events.column("driver_id"),
            "pickup_us": events.column("pickup_at").cast(pa.int64()),
            "fare": pc.fill_null(events.column("fare"), float("nan")),
        }
    )
    grouped = table.group_by("driver_id").aggregate([("pickup_us", "list"), ("fare", "list")])
    stamp = pa.array([end_us] * grouped.num_rows, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "driver_id": grouped.column("driver_id"),
            "pickup_us": grouped.column("pickup_us_list"),
            "fare": grouped.column("fare_list"),
            "event_timestamp": stamp,
        }
    )


def build(root: Path, project: str, events: pa.Table, end_us: int, connection: str) -> None:
    """Write, ``feast apply`` and ``feast materialize`` the repo at ``root``."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    from pipelines.feast_objects import write_feature_store_yaml

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(_lists(events, end_us), data / "driver_trips.parquet")
    write_feature_store_yaml(root, project, connection, registry=data / "registry.db")
    types = {"count": "Int64"}
    schema = ", ".join(
        f'Field(name="{n}", dtype={types.get(n.split("_")[2], "Float64")})' for n in NAMES
    )
    source = data / "driver_trips.parquet"
    text = REPO_PY.format(
        data=source, view=VIEW, odfv=ODFV, request_time=REQUEST_TIME, schema=schema
    )
    # a unique module name: Feast imports repo files by name, and sys.modules caches them
    (root / f"repo_{project}.py").write_text(textwrap.dedent(text))
    importlib.invalidate_caches()
    cwd = os.getcwd()  # apply_total chdirs into the repo and imports its files from there
    sys.path.insert(0, str(root))
    try:
        apply_total(
            load_repo_config(root, root / "feature_store.yaml"), root, skip_source_validation=True
        )
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
    end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=end_us)
    FeatureStore(repo_path=str(root)).materialize(
        start_date=end - timedelta(days=2), end_date=end + timedelta(seconds=1)
    )
