"""A throwaway Feast repo of driver statistics for the materializer's benchmark and tests.

``generate`` makes rows that exercise every rule of ``pipelines.materialize``: several rows
per entity, event-time ties broken by created time, rows outside the window, NaN and nulls,
negative and very large ids, unicode and long strings. ``build_repo`` applies it with the
Feast SDK (Entity, FileSource, FeatureView) so ``feast materialize`` and ours run on the
same repo; ``snapshot`` reads back every hash of a project for byte-for-byte comparison.
Lives here, not under tests/, so the benchmark does not depend on test modules (as
``bench.repos.serving_repo`` does for the lookup server).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.materialize import project_keys

BASE = datetime(2024, 1, 1, tzinfo=UTC)
WINDOW_HOURS = 72  # rows are spread over [BASE - 6h, BASE + 78h]; the window is 72h
CITIES = ["Paris", "São Paulo", "東京", "", "New York", "Zürich", "🚕 town", "x" * 200]


def window() -> tuple[datetime, datetime]:
    """The materialization window used by the benchmark and the tests (inclusive)."""
    return BASE, BASE + timedelta(hours=WINDOW_HOURS)


def generate(rows: int, entities: int, seed: int = 0) -> pa.Table:
    """Driver stats with duplicates per entity, event-time ties broken by created time,
    rows outside the window, NaN/nulls, negative and large ids, unicode strings."""
    rng = np.random.default_rng(seed)
    pool = (np.arange(entities, dtype=np.int64) - entities // 3) * 1_000_003
    pool[-1] = 2**62 + 7
    ent = rng.integers(0, entities, rows)
    ent[: min(rows, entities)] = rng.permutation(entities)[: min(rows, entities)]
    hours = rng.integers(-6, WINDOW_HOURS + 7, rows)  # coarse: many event-time ties
    event_us = BASE.timestamp() * 1_000_000 + hours * 3_600_000_000
    created_us = event_us + rng.integers(0, 3_600_000_000, rows)
    conv = rng.random(rows)
    conv[rng.random(rows) < 0.02] = np.nan
    conv_mask = rng.random(rows) < 0.01
    trips = rng.integers(-(2**40), 2**40, rows)
    trips_mask = rng.random(rows) < 0.01
    city_idx = rng.integers(0, len(CITIES), rows)
    city = np.array(CITIES, dtype=object)[city_idx]
    city[rng.random(rows) < 0.01] = None
    active = rng.random(rows) < 0.5
    active_mask = rng.random(rows) < 0.01
    return pa.table(
        {
            "driver_id": pa.array(pool[ent]),
            "event_timestamp": pa.array(event_us.astype("int64"), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "created": pa.array(created_us.astype("int64"), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "conv_rate": pa.array(conv, mask=conv_mask),
            "trips": pa.array(trips, mask=trips_mask),
            "city": pa.array(city.tolist(), pa.string()),
            "active": pa.array(active, mask=active_mask),
        }
    )


def build_repo(
    repo: Path,
    table: pa.Table,
    connection_string: str,
    project: str | None = None,
    key_ttl_seconds: int | None = None,
    redis_type: str = "redis",
) -> Any:
    """Write feature_store.yaml + Parquet into ``repo`` and apply an Entity, a FileSource and
    a FeatureView with the Feast SDK; returns the FeatureStore. ``redis_type`` is Feast's
    online-store ``redis_type`` (``redis`` or ``redis_cluster``)."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String

    from pipelines.feast_objects import write_feature_store_yaml

    project = project or f"sk_{uuid.uuid4().hex[:10]}"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    pq.write_table(table, repo / "data" / "driver_stats.parquet", row_group_size=200_000)
    write_feature_store_yaml(
        repo,
        project,
        connection_string,
        redis_type=redis_type,
        key_ttl_seconds=key_ttl_seconds,
    )
    store = FeatureStore(repo_path=str(repo))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(
        name="driver_stats_source",
        path="data/driver_stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = FeatureView(
        name="driver_stats",
        entities=[driver],
        ttl=timedelta(days=2),
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="conv_rate", dtype=Float64),
            Field(name="trips", dtype=Int64),
            Field(name="city", dtype=String),
            Field(name="active", dtype=Bool),
        ],
        online=True,
        source=source,
    )
    store.apply([driver, source, view])
    return store


def snapshot(client: Any, project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the project, for byte-for-byte comparison."""
    keys = project_keys(client, project)
    out: dict[bytes, dict[bytes, bytes]] = {}
    for i in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for k in keys[i : i + 5000]:
            pipe.hgetall(k)
        for k, h in zip(keys[i : i + 5000], pipe.execute(), strict=True):
            out[k] = h
    return out
