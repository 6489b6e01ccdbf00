"""A project of the user's own: skewless.yaml validation, and `skewless init` followed by
the whole chain from the command line on a domain that is not the card-fraud example."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis

from pipelines.demo import lookup_server
from pipelines.parity import compare_columns
from pipelines.project import load_project
from store.window_state import clear_windows
from tests.support import skewless_cli as skewless
from transforms import SchemaError


def test_a_bad_field_names_the_file_and_the_field(tmp_path):
    (tmp_path / "skewless.yaml").write_text(
        "definitions: [features]\nsources:\n  trips:\n    path: x\n"
        "    entities: {driver_id: float}\n"
    )
    with pytest.raises(SchemaError) as err:
        load_project(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "skewless.yaml") in message
    assert "field 'sources.trips.entities.driver_id'" in message
    (tmp_path / "skewless.yaml").write_text("definitions: [features]\nsurces: {}\n")
    with pytest.raises(SchemaError, match="field 'sources'"):
        load_project(tmp_path)


def test_a_missing_declaration_says_how_to_make_one(tmp_path):
    with pytest.raises(SchemaError, match="skewless init"):
        load_project(tmp_path)


def test_init_then_the_chain_from_the_cli(tmp_path, redis_url):
    name = f"p{uuid.uuid4().hex[:10]}"
    repo = tmp_path / name
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("SKEWLESS_DATA", None)
    try:
        done = skewless("init", str(repo), cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        done = skewless("init", str(repo), cwd=tmp_path, env=env)
        assert done.returncode == 2 and "not an empty directory" in done.stderr
        # a service of the ratio alone: the window feature it divides by is read, not served
        with (repo / "skewless.yaml").open("a") as f:
            f.write("  quotes_v1:\n    feature_sets: [trip_vs_driver]\n")

        done = skewless("run", "--engine", "spark", cwd=repo, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        beam_out = tmp_path / "beam-out"
        done = skewless("run", "--engine", "beam", "--output", str(beam_out), cwd=repo, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        key = [(c, "ascending") for c in ("driver_id", "pickup_at", "trip_id")]
        a = pq.read_table(repo / "data" / "features" / "driver_stats").sort_by(key)
        b = pq.read_table(beam_out / "features" / "driver_stats").sort_by(key)
        assert a.num_rows == b.num_rows == 2000
        for column in a.schema.names:
            assert compare_columns(a.column(column), b.column(column)).size == 0, column
        assert (repo / "sources" / "trips" / "part-0.parquet").is_file()  # run kept the source

        done = skewless("parity", "--source-sample", "1500", cwd=repo, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "0 mismatches across online/spark/beam" in done.stdout

        done = skewless("apply", cwd=repo, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = (repo / "skewless_manifest.json").read_text()
        assert '"artifact_path": "data/artifacts/trip_request.json"' in manifest
        done = skewless("materialize", "--no-progress", cwd=repo, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        body = {
            "entities": {
                "driver_id": ["d001", "nobody"],
                "distance_km": [3.0, 1.0],
                "quoted_fare": [9.0, 4.0],
            }
        }
        with lookup_server(repo, redis_url, tmp_path / "logs") as url:
            answer = httpx.post(f"{url}/v1/features/pricing_v1", json=body).json()
        assert answer["statuses"]["driver_seconds_since_prev"] == ["PRESENT", "NOT_FOUND"]
        assert answer["features"]["distance_z"][0] is not None
        # window features as of the request time, from the state `materialize` backfilled
        assert answer["features"]["trip_fare_count_7d"][0] >= 1
        assert answer["features"]["trip_fare_count_7d"][1] == 0  # an empty window counts 0
        assert answer["features"]["trip_fare_mean_7d"][1] is None
        # a request-time transform reads the window feature as of the request time
        mean_7d = answer["features"]["trip_fare_mean_7d"][0]
        assert answer["features"]["fare_per_km_vs_driver"] == [9.0 / 3.0 / mean_7d, None]
        with lookup_server(repo, redis_url, tmp_path / "logs-quotes") as url:
            quotes = httpx.post(f"{url}/v1/features/quotes_v1", json=body).json()
        assert list(quotes["features"]) == ["driver_id", "fare_per_km_vs_driver"]
        assert quotes["features"]["fare_per_km_vs_driver"] == [9.0 / 3.0 / mean_7d, None]

        trips = pq.read_table(repo / "sources" / "trips")
        entities = trips.select(["driver_id", "pickup_at", "distance_km", "quoted_fare"])
        pq.write_table(entities, tmp_path / "entities.parquet")
        training = _training_set(repo, env, tmp_path, "pricing_v1")
        assert training.num_rows == trips.num_rows
        assert {"driver_seconds_since_prev", "distance_z", "trip_fare_count_24h"} <= set(
            training.schema.names
        )
        assert training.column("driver_seconds_since_prev").null_count < training.num_rows
        assert training.column("trip_fare_count_24h").null_count == 0
        assert pc.max(training.column("trip_fare_count_24h")).as_py() >= 1
        ratio = pc.divide(
            pc.divide(training.column("quoted_fare"), training.column("distance_km")),
            training.column("trip_fare_mean_7d"),
        )
        assert training.column("fare_per_km_vs_driver").equals(ratio)
        # the same transform where the service does not list the window feature
        quotes_set = _training_set(repo, env, tmp_path, "quotes_v1")
        assert "trip_fare_mean_7d" not in quotes_set.schema.names
        assert quotes_set.column("fare_per_km_vs_driver").equals(ratio)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{name}".encode(), count=1000))
        if keys:
            client.delete(*keys)
        clear_windows(client, name)


def _training_set(repo: Path, env: dict[str, str], tmp_path: Path, service: str) -> pa.Table:
    """`skewless training-set` of ``service`` over ``tmp_path/entities.parquet``."""
    out = tmp_path / f"{service}.parquet"
    done = skewless(
        "training-set",
        *("--entities", str(tmp_path / "entities.parquet"), "--timestamp-column", "pickup_at"),
        *("--out", str(out), "--service", service),
        cwd=repo,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return pq.read_table(out)


NOISY = """

@transform
def driver_noise(pickup_at: Timestamp) -> Float64:
    \"\"\"Differs on every call: what parity must catch.\"\"\"
    return np.random.default_rng().random(len(pickup_at))


DRIVER_STATS = FeatureSet(
    name="driver_stats",
    entities={"driver_id": String},
    event_timestamp="pickup_at",
    order_by=("pickup_at", "trip_id"),
    transforms=[driver_seconds_since_prev, driver_noise],
)
"""


def test_parity_counts_the_mismatches_of_a_nondeterministic_transform(tmp_path):
    repo = tmp_path / "noisy"
    done = skewless("init", str(repo), cwd=tmp_path, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    features = repo / "features.py"
    features.write_text(features.read_text() + NOISY)
    wide = {**os.environ, "COLUMNS": "200"}  # one table line per feature, names unwrapped
    done = skewless("parity", "--source-sample", "500", cwd=repo, env=wide)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {line.split("│")[2].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert rows["driver_noise"].split("│")[3].strip() == "500"  # every row, against spark
    assert rows["driver_noise"].split("│")[4].strip() == "500"  # and against beam
    assert rows["driver_seconds_since_prev"].split("│")[3].strip() == "0"
    assert "1000 mismatches across online/spark/beam" in done.stdout
