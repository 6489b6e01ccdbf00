"""The batch pipeline: Spark == Beam row for row, windows checked against pandas, a real
standalone Spark cluster, bad input, and atomic output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_repo.generate import generate
from pipelines.batch import read_features, run
from pipelines.parity import compare_columns
from tests.support import EXAMPLE_DIR, example_project, free_port
from transforms import SchemaError
from transforms.artifact import StatisticsArtifact

START = datetime(2026, 1, 1, tzinfo=UTC)
VIEWS = ("user_activity", "merchant_activity")


@pytest.fixture(scope="session")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "raw"
    generate(4000, out, seed=3, start=START, days=10, progress=False, chunk_rows=1500)
    return out


@pytest.fixture(scope="session")
def spark_out(raw, spark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("spark") / "features"
    report = run("spark", example_project(), out, input_dir=raw)
    assert report.rows_in == 4000 and report.rows_quarantined == 0
    return out


@pytest.fixture(scope="session")
def beam_out(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("beam") / "features"
    run("beam", example_project(), out, input_dir=raw)
    return out


def assert_same_output(a: Path, b: Path) -> None:
    for view in VIEWS:
        ta, tb = (
            read_features(example_project(), a, view),
            read_features(example_project(), b, view),
        )
        assert ta.schema.names == tb.schema.names
        assert ta.num_rows == tb.num_rows == 4000
        for name in ta.schema.names:
            bad = compare_columns(ta.column(name), tb.column(name))
            assert bad.size == 0, f"{view}.{name} differs at {bad[:5].tolist()}"
    arts = [StatisticsArtifact.load(p / "artifacts" / "transaction_request.json") for p in (a, b)]
    assert arts[0].content_hash == arts[1].content_hash


def test_spark_and_beam_give_identical_output(spark_out, beam_out):
    assert_same_output(spark_out, beam_out)


def test_window_features_match_an_independent_pandas_computation(raw, spark_out):
    tx = pq.read_table(raw / "transactions").to_pandas()
    tx = tx.sort_values(["user_id", "event_timestamp", "txn_id"]).set_index("event_timestamp")
    grouped = tx.groupby("user_id")["amount"]
    expected_mean_10 = grouped.rolling(10, min_periods=1).mean().to_numpy()
    got = read_features(example_project(), spark_out, "user_activity").to_pandas()
    assert np.allclose(
        got["user_amount_mean_last_10"].to_numpy(), expected_mean_10, rtol=1e-12, equal_nan=True
    )
    gaps = tx.groupby("user_id").apply(
        lambda g: g.index.to_series().diff().dt.total_seconds(), include_groups=False
    )
    assert np.allclose(got["user_seconds_since_prev"].to_numpy(), gaps.to_numpy(), equal_nan=True)


def test_output_carries_keys_and_timestamps(spark_out):
    schema = pq.read_schema(next((spark_out / "features" / "user_activity").glob("*.parquet")))
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("created_timestamp").type == pa.timestamp("us", tz="UTC")
    assert {"user_id", "txn_id"} <= set(schema.names)


def test_standalone_spark_cluster_gives_the_same_output(raw, spark_out, tmp_path):
    """A real master and worker on loopback, started from the scripts pyspark ships."""
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    port, ui, wport, wui = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    logs = tmp_path / "logs"
    logs.mkdir()
    master = subprocess.Popen(
        [
            str(spark_class),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=open(logs / "master.log", "w"),
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [
            str(spark_class),
            "org.apache.spark.deploy.worker.Worker",
            f"spark://127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(wport),
            "--webui-port",
            str(wui),
            "--cores",
            "2",
            "--memory",
            "2g",
            "--work-dir",
            str(tmp_path / "work"),
        ],
        env=env,
        stdout=open(logs / "worker.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "Successfully registered with master" not in (logs / "worker.log").read_text():
            assert time.monotonic() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(0.5)
        out = tmp_path / "cluster-out"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "run",
                "--repo",
                str(EXAMPLE_DIR),
                "--engine",
                "spark",
                "--input",
                str(raw),
                "--output",
                str(out),
                "--master",
                f"spark://127.0.0.1:{port}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert_same_output(spark_out, out)
    finally:
        for p in (worker, master):
            p.terminate()
            p.wait(timeout=30)


def test_schema_change_upstream_names_the_column(raw, tmp_path):
    broken = tmp_path / "raw"
    shutil.copytree(raw, broken)
    for f in (broken / "transactions").glob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.drop_columns(["amount"]), f)
    with pytest.raises(SchemaError, match="column 'amount' is missing"):
        run("spark", example_project(), tmp_path / "out", input_dir=broken)
    for f in (broken / "transactions").glob("*.parquet"):
        t = pq.read_table(raw / "transactions" / f.name)
        t = t.set_column(
            t.schema.get_field_index("amount"), "amount", t.column("amount").cast(pa.string())
        )
        pq.write_table(t, f)
    with pytest.raises(SchemaError, match="column 'amount' is string, expected double"):
        run("beam", example_project(), tmp_path / "out", input_dir=broken)


def test_naive_timestamps_are_refused(tmp_path):
    raw = tmp_path / "raw"
    generate(
        300, raw, seed=1, start=START, days=2, progress=False, inject_faults=["naive_timestamps"]
    )
    with pytest.raises(SchemaError, match="timestamp without time zone"):
        run("spark", example_project(), tmp_path / "out", input_dir=raw)


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(SchemaError, match="source 'transactions': no data at"):
        run("spark", example_project(), tmp_path / "out", input_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("engine", ["spark", "beam"])
def test_null_keys_go_to_quarantine_with_counts(engine, tmp_path, spark):
    raw = tmp_path / "raw"
    generate(
        2000,
        raw,
        seed=2,
        start=START,
        days=3,
        progress=False,
        inject_faults=["null_user_id"],
        fault_rate=0.01,
    )
    nulls = pq.read_table(raw / "transactions").column("user_id").null_count
    assert nulls > 0
    report = run(engine, example_project(), tmp_path / "out", input_dir=raw)
    assert report.rows_quarantined == nulls
    assert report.rows_out["user_activity"] == 2000 - nulls
    quarantined = pq.read_table(tmp_path / "out" / "quarantine" / "transactions")
    assert quarantined.num_rows == nulls


def test_a_failed_run_leaves_the_previous_output_intact(raw, spark_out, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(spark_out, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    import pipelines.batch as batch

    def crash(*args, **kwargs):
        (args[1] / "features").mkdir(exist_ok=True)
        (args[1] / "features" / "half-written.parquet").write_bytes(b"PAR1")
        raise RuntimeError("worker lost")

    monkeypatch.setattr(batch, "_run_spark", crash)
    with pytest.raises(RuntimeError, match="worker lost"):
        run("spark", example_project(), out, input_dir=raw)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_engine_outputs_are_sorted_consistently(spark_out):
    t = read_features(example_project(), spark_out, "user_activity").to_pandas()
    # each user's first transaction has no previous one: the rows come in event order
    assert t.groupby("user_id").head(1)["user_seconds_since_prev"].isna().all()
    assert isinstance(t["event_timestamp"].dtype, pd.DatetimeTZDtype)
