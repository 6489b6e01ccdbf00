"""``skewless init DIR``: a working project of the user's own, the way ``feast init`` makes
one: definitions with an entity and a request-time feature set, a tiny generated source,
``skewless.yaml`` and ``feature_store.yaml`` with a Redis online store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.errors import SchemaError

FEATURES_PY = '''"""Feature definitions of this project: edit freely, then `skewless run`."""

import numpy as np

from transforms import (
    FeatureSet,
    Float64,
    Mean,
    Nullable,
    Std,
    String,
    Timestamp,
    WindowSet,
    aggregate,
    transform,
)
from transforms.windows import seconds_since_previous

HOUR, DAY = 3_600, 86_400


@transform
def driver_seconds_since_prev(pickup_at: Timestamp) -> Nullable[Float64]:
    """Seconds between a driver's trip and their previous one."""
    return seconds_since_previous(pickup_at)


DRIVER_STATS = FeatureSet(
    name="driver_stats",
    entities={"driver_id": String},
    event_timestamp="pickup_at",
    order_by=("pickup_at", "trip_id"),
    ttl_seconds=7 * DAY,
    description="The gap before a driver's latest trip, as of each of their trips "
    "(windows as of the request time: driver_windows).",
    transforms=[driver_seconds_since_prev],
)


@transform(request_time=True)
def distance_z(
    distance_km: Float64, mean=Mean("distance_km"), std=Std("distance_km")
) -> Nullable[Float64]:
    """The requested trip's distance as a z-score over all trips."""
    return (distance_km - mean) / std


TRIP_REQUEST = FeatureSet(
    name="trip_request",
    entities={"driver_id": String},
    event_timestamp="pickup_at",
    description="Features of the trip being priced, computed when it is requested.",
    transforms=[distance_z],
)


@transform(request_time=True)
def fare_per_km_vs_driver(
    quoted_fare: Float64, distance_km: Float64, trip_fare_mean_7d: Nullable[Float64]
) -> Nullable[Float64]:
    """The quoted fare per km over the driver's mean fare in the 7 days before the
    request (a window feature of driver_windows, as of the request time)."""
    return np.divide(quoted_fare, distance_km) / trip_fare_mean_7d


TRIP_VS_DRIVER = FeatureSet(
    name="trip_vs_driver",
    entities={"driver_id": String},
    event_timestamp="pickup_at",
    description="The requested trip against the driver's recent trips. It reads a window "
    "feature, so `skewless serve` and `skewless training-set` compute it (Feast refuses).",
    transforms=[fare_per_km_vs_driver],
)


@aggregate(ops=("count", "sum", "mean", "max"), windows=("1h", "24h", "7d"))
def trip_fare(fare: Nullable[Float64]) -> Float64:
    """The fares of a driver's trips in each window before the request time."""
    return fare


DRIVER_WINDOWS = WindowSet(
    name="driver_windows",
    entities={"driver_id": String},
    aggregations=[trip_fare],
    event_timestamp="pickup_at",
    event_id="trip_id",
    description="A driver's trips in the windows ending just before the request time "
    "(served from the online window state; `skewless stream` or POST /push keeps it fresh).",
)
'''

DEFINITIONS_PY = '''"""Feast objects of this project, for `feast apply` (skewless apply registers the same)."""

from pathlib import Path

from pipelines.feast_objects import repo_objects
from pipelines.project import load_project

globals().update(repo_objects(load_project(Path(__file__).resolve().parent)))
'''

SKEWLESS_YAML = """# The project's declaration: definitions, raw sources, data directory, services.
definitions: [features]
data_dir: data
sources:
  trips:
    path: sources/trips            # Parquet file, directory, glob or filesystem URI
    event_timestamp: pickup_at
    row_id: trip_id                # tie-break of trips at the same instant
    entities: {driver_id: string}
services:
  pricing_v1:
    feature_sets: [driver_stats, trip_request, trip_vs_driver, driver_windows]
    description: Trip pricing model, version 1.
"""


def trips(rows: int = 2_000, drivers: int = 50, seed: int = 1) -> pa.Table:
    """A small, seeded trips source over the last 10 days."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = int((now - timedelta(days=10)).timestamp() * 1_000_000)
    micros = np.sort(start + rng.integers(0, 10 * 86_400 * 1_000_000, rows))
    distance = np.round(rng.gamma(2.0, 3.0, rows), 2)
    return pa.table(
        {
            "trip_id": np.arange(rows, dtype=np.int64),
            "driver_id": pa.array([f"d{int(i):03d}" for i in rng.integers(0, drivers, rows)]),
            "pickup_at": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "distance_km": distance,
            "fare": np.round(2.5 + distance * rng.uniform(1.0, 1.6, rows), 2),
            "quoted_fare": np.round(2.5 + distance * 1.3, 2),
        }
    )


def init_project(target: Path, redis_connection: str = "127.0.0.1:6379") -> list[Path]:
    """Write a new project into ``target`` (absent or empty); return the files written."""
    from pipelines.feast_objects import write_feature_store_yaml

    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SchemaError(f"{target} exists and is not an empty directory")
    target.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "_" for c in target.resolve().name).strip("_")
    files = {
        "features.py": FEATURES_PY,
        "definitions.py": DEFINITIONS_PY,
        "skewless.yaml": SKEWLESS_YAML,
        ".feastignore": "data/\nsources/\n",
        ".gitignore": "data/\n",
    }
    for rel, text in files.items():
        (target / rel).write_text(text)
    write_feature_store_yaml(target, name or "project", redis_connection)
    (target / "sources" / "trips").mkdir(parents=True)
    pq.write_table(trips(), target / "sources" / "trips" / "part-0.parquet")
    return [target / rel for rel in (*files, "feature_store.yaml", "sources/trips/part-0.parquet")]
