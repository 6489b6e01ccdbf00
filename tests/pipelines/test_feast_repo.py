"""The generated Feast repo: `feast apply` / `feast materialize` with the real CLI, and the
Feast SDK reading what the batch pipeline produced, request-time views included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis

from feature_repo.generate import generate
from pipelines.apply import apply
from pipelines.batch import read_features, run
from store.manifest import Manifest
from tests.support import EXAMPLE_DIR, EXAMPLE_FILES, example_project

START = datetime(2026, 2, 1, tzinfo=UTC)
FEAST = str(Path(sys.executable).parent / "feast")


@pytest.fixture(scope="module")
def repo(tmp_path_factory, redis_url, spark):
    base = tmp_path_factory.mktemp("feastrepo")
    generate(3000, base / "raw", seed=5, start=START, days=8, progress=False)
    run("spark", example_project(), base / "data", input_dir=base / "raw")
    repo = base / "repo"
    repo.mkdir()
    for name in EXAMPLE_FILES:
        shutil.copy(EXAMPLE_DIR / name, repo / name)
    project = f"t{uuid.uuid4().hex[:10]}"
    old = os.environ.get("SKEWLESS_DATA")
    os.environ["SKEWLESS_DATA"] = str(base / "data")
    try:
        manifest = apply(repo, redis_url, base / "data", project=project)
        yield repo, base / "data", manifest
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"*{project}".encode(), count=1000):
            client.delete(key)
        if old is None:
            os.environ.pop("SKEWLESS_DATA", None)
        else:
            os.environ["SKEWLESS_DATA"] = old


def feast_cli(repo: Path, data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKEWLESS_DATA": str(data)}
    return subprocess.run(
        [FEAST, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )


def latest_per_user(data: Path) -> dict[int, dict]:
    table = read_features(example_project(), data, "user_activity")
    # sorted by (user_id, event_timestamp, txn_id): the last row per user is its latest
    users = table.column("user_id").to_numpy()
    last = [i for i in range(len(users)) if i + 1 == len(users) or users[i + 1] != users[i]]
    return {row["user_id"]: row for row in table.take(pa.array(last)).to_pylist()}


def test_feast_cli_apply_and_materialize_then_sdk_reads_every_feature(repo):
    repo_dir, data, manifest = repo
    done = feast_cli(repo_dir, data, "apply")
    assert done.returncode == 0, done.stderr[-2000:]
    end = (START + timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%S")
    done = feast_cli(repo_dir, data, "materialize", START.strftime("%Y-%m-%dT%H:%M:%S"), end)
    assert done.returncode == 0, done.stderr[-2000:]

    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo_dir))
    expected = latest_per_user(data)
    users = sorted(expected)[:200]
    features = [f"user_activity:{f}" for f in manifest.views["user_activity"].features]
    got = store.get_online_features(
        features=features, entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    for i, user in enumerate(users):
        for ref in features:
            name = ref.split(":")[1]
            assert got[name][i] == expected[user][name], (user, name)


def test_request_time_view_runs_the_same_transforms(repo):
    repo_dir, data, manifest = repo
    from feast import FeatureStore

    from feature_repo.feature_sets import TRANSACTION_REQUEST
    from pipelines.feast_windows import NotComputedByFeast
    from transforms.artifact import StatisticsArtifact
    from transforms.engines.online import OnlineEngine

    store = FeatureStore(repo_path=str(repo_dir))
    store.materialize(START, START + timedelta(days=9))
    service = store.get_feature_service("fraud_model_v1")
    rows = [
        {"user_id": u, "merchant_id": m, "amount": a, "device": d}
        for u, m, a, d in [(1, 1, 12.5, "ios"), (2, 3, 900.0, "web"), (3, 2, 0.0, "fax")]
    ]
    # the service's window features are computed by skewless only (pipelines.feast_windows)
    with pytest.raises(NotComputedByFeast, match="skewless serve"):
        store.get_online_features(
            features=service, entity_rows=[{**r, "request_time": 0} for r in rows]
        )
    got = store.get_online_features(
        features=feast_refs(store, manifest), entity_rows=rows
    ).to_dict()
    art = StatisticsArtifact.load(data / "artifacts" / "transaction_request.json")
    engine = OnlineEngine(TRANSACTION_REQUEST, art, request_time_only=True)
    for i, row in enumerate(rows):
        for name, value in engine.transform_row(row).items():
            assert got[name][i] == value, (i, name)


def test_request_time_view_refuses_an_artifact_other_than_the_registered_one(repo):
    """A new `skewless run` without `apply` rewrites the artifact on disk: Feast's
    on-demand view (as a restarted `feast serve` loads it) refuses to compute with it."""
    repo_dir, data, manifest = repo
    from feast import FeatureStore

    from pipelines import feast_objects
    from transforms.artifact import StatisticsArtifact

    path = data / "artifacts" / "transaction_request.json"
    original = path.read_bytes()
    art = StatisticsArtifact.load(path)
    values = {**art.values, "mean(amount)": art.values["mean(amount)"] * 1.01}
    store = FeatureStore(repo_path=str(repo_dir))
    store.materialize(START, START + timedelta(days=9))
    row = [{"user_id": 1, "merchant_id": 1, "amount": 12.5, "device": "ios"}]
    try:
        StatisticsArtifact(art.feature_set, values, art.engine).save(path)
        feast_objects._engine.cache_clear()  # a restarted server
        with pytest.raises(Exception, match="the registered one"):
            store.get_online_features(
                features=feast_refs(store, manifest), entity_rows=row
            ).to_dict()
    finally:
        path.write_bytes(original)
        feast_objects._engine.cache_clear()
    got = store.get_online_features(features=feast_refs(store, manifest), entity_rows=row).to_dict()
    assert got["amount_z"][0] is not None


def test_feature_service_is_tagged_with_artifact_hash_and_fingerprints(repo):
    repo_dir, data, manifest = repo
    from feast import FeatureStore

    service = FeatureStore(repo_path=str(repo_dir)).get_feature_service("fraud_model_v1")
    spec = manifest.request_transforms["transaction_request"]
    assert service.tags["skewless.artifact.transaction_request"] == spec.artifact_hash
    assert json.loads(service.tags["skewless.fingerprints.transaction_request"]) == (
        spec.fingerprints
    )
    assert Manifest.load(repo_dir) == manifest


def test_historical_features_are_point_in_time(repo):
    repo_dir, data, _ = repo
    import pandas as pd
    from feast import FeatureStore

    table = read_features(example_project(), data, "user_activity")
    user = table.column("user_id")[0].as_py()
    rows = table.filter(pc.equal(table.column("user_id"), user)).to_pylist()
    assert len(rows) >= 3
    probe = rows[2]["event_timestamp"] + timedelta(microseconds=1)
    entity_df = pd.DataFrame({"user_id": [user], "event_timestamp": [probe]})
    store = FeatureStore(repo_path=str(repo_dir))
    got = store.get_historical_features(
        entity_df=entity_df, features=["user_activity:user_amount_mean_last_10"]
    ).to_df()
    assert got["user_amount_mean_last_10"].tolist() == [rows[2]["user_amount_mean_last_10"]]


def test_training_set_equals_feast_historical_features_and_keeps_duplicates(repo):
    """Our training set (strictly before the request time) == Feast's
    get_historical_features at request time minus 1 µs, request-time view included;
    duplicate entity rows, which Feast's file store drops, are all kept."""
    repo_dir, data, manifest = repo
    import pandas as pd
    from feast import FeatureStore

    from pipelines.training_data import model_inputs

    tx = pq_read_transactions(data)
    entities = tx.slice(500, 400)
    duplicated = pa.concat_tables([entities, entities.slice(0, 25)])
    ours, meta = model_inputs(repo_dir, duplicated, "fraud_model_v1")
    assert ours.num_rows == duplicated.num_rows == 425
    assert meta["skewless.artifact.transaction_request"] == (
        manifest.request_transforms["transaction_request"].artifact_hash
    )
    store = FeatureStore(repo_path=str(repo_dir))
    frame = entities.to_pandas()
    frame["event_timestamp"] = frame["event_timestamp"] - pd.Timedelta(microseconds=1)
    theirs = store.get_historical_features(
        entity_df=frame, features=feast_refs(store, manifest)
    ).to_df()
    theirs = theirs.set_index("txn_id")
    mine = ours.slice(0, 400).to_pandas().set_index("txn_id")
    assert len(theirs) >= 0.95 * len(mine)  # Feast may drop a few rows; we keep every one
    mine_common = mine.loc[theirs.index]
    theirs = theirs.loc[mine_common.index]
    for ref in feast_refs(store, manifest):
        name = ref.split(":")[1]
        a, b = mine_common[name].to_numpy(dtype=float), theirs[name].to_numpy(dtype=float)
        assert np.array_equal(a, b, equal_nan=True), name
    for name in mine.columns:
        tail = ours.slice(400).column(name).to_pylist()
        assert tail == ours.slice(0, 25).column(name).to_pylist(), name  # duplicates agree


def feast_refs(store: Any, manifest: Manifest) -> list[str]:
    """The service's features Feast computes: all but its window sets' and those of the
    request-time sets reading window features (those raise NotComputedByFeast: skewless
    computes them as of each request's time)."""
    service = store.get_feature_service("fraud_model_v1")
    over_windows = {n for n, rt in manifest.request_transforms.items() if rt.window_inputs}
    return [
        f"{p.name}:{f.name}"
        for p in service.feature_view_projections
        if p.name not in manifest.window_sets and p.name not in over_windows
        for f in p.features
    ]


def pq_read_transactions(data: Path) -> pa.Table:
    import pyarrow.parquet as pq

    raw = data.parent / "raw" / "transactions"
    return pq.read_table(raw).select(
        ["txn_id", "user_id", "merchant_id", "event_timestamp", "amount", "device"]
    )


def test_manifest_refuses_a_service_with_an_untagged_on_demand_view(tmp_path: Path) -> None:
    """A FeatureService using an OnDemandFeatureView skewless did not tag (its transforms
    are not a skewless feature set) cannot be served: apply says which and why."""
    from feast import (
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        FileSource,
        ValueType,
    )
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64

    from pipelines.apply import manifest_from_registry
    from pipelines.feast_objects import write_feature_store_yaml
    from transforms.errors import SchemaError

    (tmp_path / "data").mkdir()
    pq_path = tmp_path / "data" / "stats.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1], pa.int64()),
                "x": pa.array([1.0]),
                "event_timestamp": pa.array([START], pa.timestamp("us", tz="UTC")),
            }
        ),
        pq_path,
    )
    write_feature_store_yaml(tmp_path, f"t{uuid.uuid4().hex[:10]}", "127.0.0.1:6379")
    store = FeatureStore(repo_path=str(tmp_path))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="stats",
        entities=[user],
        schema=[Field(name="x", dtype=Float64)],
        source=FileSource(path=str(pq_path), timestamp_field="event_timestamp"),
    )

    @on_demand_feature_view(
        sources=[stats], schema=[Field(name="x2", dtype=Float64)], mode="python"
    )
    def doubled(inputs: dict) -> dict:
        return {"x2": [v * 2 for v in inputs["x"]]}

    store.apply([user, stats, doubled, FeatureService(name="svc", features=[stats, doubled])])
    with pytest.raises(SchemaError, match=r"feature service 'svc': on-demand feature view "
                       r"'doubled' lacks the tags skewless\.feature_set"):  # fmt: skip
        manifest_from_registry(store)
