"""Window features of a project's service end to end: Feast's path (a clear error naming
the skewless command, never a different value) and the skew report over served windows,
with the three injected faults (the stream stopped, every event replayed twice, a late
event)."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import redis

from pipelines.feast_windows import NotComputedByFeast
from pipelines.window_backfill import backfill_windows
from store.window_state import clear_windows, window_keys

DRIVERS = ["d001", "d002", "d003", "d004", "d005"]
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Any:
    from pipelines.apply import apply
    from pipelines.batch import run
    from pipelines.materialize import materialize
    from pipelines.project import load_project
    from pipelines.scaffold import init_project

    base = tmp_path_factory.mktemp("windows")
    repo = base / "repo"
    init_project(repo)
    name = f"w{uuid.uuid4().hex[:10]}"
    saved = os.environ.pop("SKEWLESS_DATA", None)
    client = redis.Redis.from_url(redis_url)
    try:
        run("beam", load_project(repo))
        apply(repo, redis_url, project=name)
        materialize(repo, None, datetime.now(UTC), show_progress=False)
        yield repo, name, client
    finally:
        keys = list(client.scan_iter(match=f"*{name}".encode(), count=1000))
        if keys:
            client.delete(*keys)
        clear_windows(client, name)
        if saved is not None:
            os.environ["SKEWLESS_DATA"] = saved


# ------------------------------------------------------------------------- Feast's path


def test_feast_sdk_names_the_skewless_command_for_window_features(project):
    import pandas as pd
    from feast import FeatureStore
    from feast.errors import RequestDataNotFoundInEntityRowsException

    repo, name, client = project
    store = FeatureStore(repo_path=str(repo))
    ref = "driver_windows:trip_fare_count_1h"
    now_us = int(datetime.now(UTC).timestamp() * 1e6)
    # without the view's request field, Feast's own error names it
    with pytest.raises(RequestDataNotFoundInEntityRowsException, match="request_time"):
        store.get_online_features(features=[ref], entity_rows=[{"driver_id": "d001"}])
    with pytest.raises(NotComputedByFeast, match="skewless serve"):
        store.get_online_features(
            features=[ref], entity_rows=[{"driver_id": "d001", "request_time": now_us}]
        )
    # a request-time set reading a window feature is refused too; its siblings are not
    rows = [{"driver_id": "d001", "distance_km": 3.0, "quoted_fare": 9.0, "request_time": now_us}]
    with pytest.raises(NotComputedByFeast, match="trip_fare_mean_7d.*skewless serve"):
        store.get_online_features(
            features=["trip_vs_driver:fare_per_km_vs_driver"], entity_rows=rows
        )
    z = store.get_online_features(features=["trip_request:distance_z"], entity_rows=rows)
    assert z.to_dict()["distance_z"][0] is not None
    service = store.get_feature_service("pricing_v1")
    rows = [{"driver_id": "d001", "distance_km": 3.0, "quoted_fare": 9.0, "request_time": now_us}]
    with pytest.raises(NotComputedByFeast, match="skewless training-set"):
        store.get_online_features(features=service, entity_rows=rows)
    entity_df = pd.DataFrame(
        {
            "driver_id": ["d001"],
            "event_timestamp": [datetime.now(UTC)],
            "request_time": [now_us],
        }
    )
    with pytest.raises(NotComputedByFeast, match="skewless training-set"):
        features = ["driver_stats:driver_seconds_since_prev", ref]
        store.get_historical_features(entity_df=entity_df, features=features).to_df()
    # Feast's own materialization writes the views and leaves the window state alone
    before = sorted(window_keys(client, name))
    store.materialize(datetime.now(UTC) - timedelta(days=12), datetime.now(UTC))
    assert sorted(window_keys(client, name)) == before
    got = store.get_online_features(
        features=["driver_stats:driver_seconds_since_prev"], entity_rows=[{"driver_id": "d001"}]
    ).to_dict()
    assert got["driver_seconds_since_prev"][0] is not None


# -------------------------------------------------------------------- the skew report


def _serve(repo: Path, redis_url: str, log_dir: Path, at: datetime) -> list[dict[str, Any]]:
    from pipelines.demo import lookup_server

    body = {
        "entities": {
            "driver_id": DRIVERS,
            "distance_km": [3.0] * len(DRIVERS),
            "quoted_fare": [9.0] * len(DRIVERS),
        },
        "request_time": at.isoformat(),
    }
    with lookup_server(repo, redis_url, log_dir) as url:
        answers = [httpx.post(f"{url}/v1/features/pricing_v1", json=body) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers), answers[0].text
    return [a.json() for a in answers]


def _report(repo: Path, log_dir: Path) -> dict[str, Any]:
    from pipelines.skew.report import build_report

    summary = build_report(repo, log_dir, log_dir.parent / f"{log_dir.name}.html")
    return summary.report


def _window_features(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: f for n, f in report["features"].items() if f["kind"] == "window"}


def test_skew_report_attributes_window_faults(project, redis_url, tmp_path):
    repo, name, client = project
    trips = pq.read_table(repo / "sources" / "trips")
    newest = pc.max(trips.column("pickup_at")).as_py()
    at = newest + timedelta(minutes=1)

    # 1. every event in the state: served == recomputed at the logged time, no lag
    clear_windows(client, name)
    backfill_windows(repo)
    report = _report(repo, _logged(repo, redis_url, tmp_path / "clean", at))
    windows = _window_features(report)
    assert len(windows) == 12
    assert all(f["exact_match_rate"] == 1.0 for f in windows.values())
    assert all(f["lag_max_s"] == 0.0 for f in report["freshness"].values())

    # 2. every event replayed twice more: still exact (a replay never double counts)
    backfill_windows(repo)
    backfill_windows(repo)
    report = _report(repo, _logged(repo, redis_url, tmp_path / "replayed", at))
    assert all(f["exact_match_rate"] == 1.0 for f in _window_features(report).values())

    # 3. the stream stopped 12 hours before the requests: lag, attributed per feature
    clear_windows(client, name)
    backfill_windows(repo, end=at - timedelta(hours=12))
    report = _report(repo, _logged(repo, redis_url, tmp_path / "stopped", at))
    lagging = report["freshness"]["trip_fare_count_24h"]
    assert lagging["lag_max_s"] > 0 and lagging["fresh_share"] < 1.0
    f = _window_features(report)["trip_fare_count_24h"]
    assert f["mismatches"] > 0
    assert set(f["causes"]) <= {"window_state_lag", "missing_online_key"}
    assert f["causes"].get("window_state_lag", 0) > 0
    assert report["causes"]["window_state_lag"] > 0

    # 4. a late event: after the requests, the source gains an event older than the
    # newest one the state held, so the state had "caught up" yet missed it
    clear_windows(client, name)
    backfill_windows(repo)
    log_dir = _logged(repo, redis_url, tmp_path / "late", at)
    d001 = trips.filter(pc.equal(trips.column("driver_id"), "d001"))
    last = pc.max(d001.column("pickup_at")).as_py()
    late = d001.slice(0, 1).to_pylist()[0]
    late.update(trip_id=10**9, pickup_at=last - timedelta(seconds=1), fare=123.0)
    extra = repo / "sources" / "trips" / "part-late.parquet"
    pq.write_table(pa.Table.from_pylist([late], schema=trips.schema), extra)
    try:
        assert ds.dataset(str(repo / "sources" / "trips")).count_rows() == trips.num_rows + 1
        report = _report(repo, log_dir)
    finally:
        extra.unlink()
    f = _window_features(report)["trip_fare_sum_7d"]
    assert f["causes"] == {"late_event": 3}  # d001's three logged rows, nothing else
    assert report["causes"]["late_event"] >= 3


def _logged(repo: Path, redis_url: str, log_dir: Path, at: datetime) -> Path:
    _serve(repo, redis_url, log_dir, at)
    return log_dir


def test_training_set_window_features_on_spark_equal_local(project, spark):
    """`skewless training-set --engine spark` computes the window features with Spark's
    adapter (transforms.engines.spark.apply_windows): the same bits as the local path."""
    from pipelines.training_data import model_inputs
    from pipelines.training_set import Engine

    repo, _, _ = project
    trips = pq.read_table(repo / "sources" / "trips")
    entities = trips.select(["driver_id", "pickup_at", "distance_km", "quoted_fare"])
    local, _ = model_inputs(repo, entities, "pricing_v1", timestamp_column="pickup_at")
    on_spark, _ = model_inputs(
        repo, entities, "pricing_v1", timestamp_column="pickup_at", engine=Engine("spark")
    )
    assert on_spark.schema == local.schema
    windows = [c for c in local.column_names if c.startswith("trip_fare_")]
    assert len(windows) == 12
    for name in local.column_names:
        assert on_spark.column(name).equals(local.column(name)), name
