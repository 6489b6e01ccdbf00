"""A second project of another shape than the card-fraud example, through the whole chain
from the command line: string keys, a composite key (store_id, sku), null keys,
duplicate (key, time) rows, an event-time column named ``occurred_at``, no row id."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.demo import lookup_server
from pipelines.parity import compare_columns
from tests.support import skewless_cli

KEYS = ["customer_id", "store_id", "sku"]
REQUEST_FIELDS = ["quantity", "unit_price", "channel"]
SERVED = 30


def skewless(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = skewless_cli(*args, cwd=cwd, env=env)
    assert done.returncode == 0, (
        f"skewless {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    )
    return done


def training_set(repo: Path, env: dict[str, str], entities: pa.Table, out: Path) -> pa.Table:
    """``skewless training-set`` on ``entities`` (request time in ``occurred_at``)."""
    pq.write_table(entities, out.with_suffix(".entities.parquet"))
    skewless(
        "training-set", "--entities", str(out.with_suffix(".entities.parquet")),
        "--timestamp-column", "occurred_at", "--out", str(out), cwd=repo, env=env,
    )  # fmt: skip
    return pq.read_table(out)


def _requests(placed: pa.Table) -> pa.Table:
    """``SERVED`` rows to send: half of them customers whose latest instant holds several
    rows (full ties: materialization and the training-set join must pick the same one),
    the rest at random."""
    df = placed.select(["customer_id", "occurred_at"]).to_pandas()
    df["row"] = np.arange(len(df))
    last = df[df.occurred_at == df.groupby("customer_id").occurred_at.transform("max")]
    tied = last[last.duplicated("customer_id", keep=False)].drop_duplicates("customer_id")
    rng = np.random.default_rng(3)
    chosen = tied.row.to_numpy()[: SERVED // 2]
    assert len(chosen) >= 5, "the generator makes ties at customers' latest instants"
    rest = rng.choice(np.setdiff1d(np.arange(len(df)), chosen), SERVED - len(chosen), replace=False)
    return placed.take(np.concatenate([chosen, rest]))


def _sorted_all(table: pa.Table) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in table.schema.names])


def test_the_whole_chain_on_a_second_project(shop, tmp_path, redis_url):
    repo, env = shop
    skewless("generate", "--rows", "3000", "--days", "20", cwd=repo, env=env)
    source = pq.read_table(repo / "sources" / "orders")
    null_keys = sum(source.column(k).null_count for k in KEYS)
    assert null_keys > 0 and source.num_rows > 3000  # nulls and duplicates are there

    # Spark == Beam, row for row (no row id: rows compared sorted on every column)
    done = skewless("run", "--engine", "spark", cwd=repo, env=env)
    assert f"{null_keys:,} quarantined" in done.stdout
    beam_out = tmp_path / "beam-out"
    skewless("run", "--engine", "beam", "--output", str(beam_out), cwd=repo, env=env)
    for view in ("customer_stats", "store_sku_stats"):
        a = _sorted_all(pq.read_table(repo / "data" / "features" / view))
        b = _sorted_all(pq.read_table(beam_out / "features" / view))
        assert a.num_rows == b.num_rows == source.num_rows - null_keys
        for column in a.schema.names:
            assert compare_columns(a.column(column), b.column(column)).size == 0, (view, column)
    assert pq.read_table(repo / "data" / "quarantine" / "orders").num_rows == null_keys

    skewless("parity", "--source-sample", "2000", cwd=repo, env=env)
    skewless("apply", cwd=repo, env=env)
    skewless("materialize", "--no-progress", cwd=repo, env=env)

    # every placed row in, every row out
    placed = source.filter(
        pc.and_(
            pc.and_(source.column("customer_id").is_valid(), source.column("store_id").is_valid()),
            source.column("sku").is_valid(),
        )
    )
    training = training_set(repo, env, placed, tmp_path / "train.parquet")
    assert training.num_rows == placed.num_rows

    # served values == training-set values for the same entity and time
    picks = _requests(placed)
    rows = picks.select([*KEYS, *REQUEST_FIELDS]).to_pylist()
    log_dir = tmp_path / "logs"
    served: list[dict] = []
    with lookup_server(repo, redis_url, log_dir) as url, httpx.Client(base_url=url) as http:
        for row in rows:
            body = {"entities": {k: [v] for k, v in row.items()}}
            response = http.post("/v1/features/basket_v1", json=body)
            assert response.status_code == 200, response.text
            served.append({k: v[0] for k, v in response.json()["features"].items()})
    asked = picks.select([*KEYS, *REQUEST_FIELDS]).append_column(
        "occurred_at", pa.array([datetime.now(UTC)] * SERVED, pa.timestamp("us", tz="UTC"))
    )
    offline = training_set(repo, env, asked, tmp_path / "asked-train.parquet")
    features = [n for n in served[0] if n not in KEYS and n not in REQUEST_FIELDS]
    assert {
        "customer_seconds_since_prev",
        "sku_units_7d",
        "line_vs_customer",
        "channel_idx",
    } <= set(features)
    for name in features:
        online = pa.array([s[name] for s in served], offline.schema.field(name).type)
        bad = compare_columns(online, offline.column(name))
        assert bad.size == 0, (
            name,
            online.take(bad).to_pylist(),
            offline.column(name).take(bad).to_pylist(),
        )
    assert any(s["customer_spend_mean_7d"] is not None for s in served)

    # the skew report replays the logged traffic: 100% exact
    report = tmp_path / "report.html"
    skewless("skew-report", "--log", str(log_dir), "--out", str(report), cwd=repo, env=env)
    summary = json.loads(report.with_suffix(".json").read_text())
    assert summary["rows"] == SERVED
    assert summary["exact_match_rate"] == 1.0


def test_the_demo_on_the_second_project_catches_an_injected_fault(shop):
    from rich.console import Console

    from pipelines.demo import demo

    repo, env = shop
    os.environ["REDIS_URL"] = env["REDIS_URL"]
    quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
    result = demo(repo, rows=2_000, days=10, requests=60, fault="missing-keys", console=quiet)
    assert list(result.steps) == [
        "generate sources",
        "batch features (spark)",
        "register in Feast",
        "materialize into Redis",
        "point-in-time training set",
        "train model",
        "serve requests and score them",
        "skew report",
    ]
    assert result.served == 60 and 0.0 < result.auc < 1.0
    assert result.exact_match is not None and result.exact_match < 1.0
    report = json.loads((repo / "data" / "skew_report.json").read_text())
    assert report["causes"]["missing_online_key"] > 0
