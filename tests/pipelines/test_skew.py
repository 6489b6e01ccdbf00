"""Skew reports on a real served-and-logged repo: no faults gives 100% exact match, and
each injected fault is detected with the right cause (one group of users per fault)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipelines.skew import attribution as cause
from pipelines.skew.report import build_report
from pipelines.skew.statistics import compute_statistics, load_statistics, stats_path
from tests.pipelines.skew_fixtures import (
    Env,
    build_env,
    drop_project_keys,
    requests_for,
    serve,
)
from transforms import Float64, Nullable, transform

# disjoint user groups, so faults written to Redis never touch another test's users
CLEAN, FRESH, TTL, GAP = slice(0, 40), slice(40, 55), slice(55, 70), slice(70, 85)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Env]:
    old = os.environ.get("SKEWLESS_DATA")
    e = build_env(tmp_path_factory.mktemp("skew"), redis_url)
    try:
        yield e
    finally:
        drop_project_keys(redis_url, e.project)
        if old is None:
            os.environ.pop("SKEWLESS_DATA", None)
        else:
            os.environ["SKEWLESS_DATA"] = old


def _report(env: Env, log_dir: Path, name: str) -> Any:
    return build_report(env.repo, log_dir, env.base / name / "report.html", env.training_set)


def _user_rows(env: Env, users: list[int]) -> dict[int, list[dict[str, Any]]]:
    import pyarrow.compute as pc

    from pipelines.batch import read_features
    from tests.support import example_project

    t = read_features(example_project(), env.data, "user_activity")
    t = t.filter(pc.is_in(t.column("user_id"), pa.array(users)))
    out: dict[int, list[dict[str, Any]]] = {}
    for row in t.to_pylist():
        out.setdefault(row["user_id"], []).append(row)
    return out  # each user's rows in event order


def _push(env: Env, rows: list[dict[str, Any]]) -> None:
    from pipelines.materialize import load_repo, push

    feats = load_repo(env.repo, ["user_activity"]).plans[0].features
    keep = ["user_id", "event_timestamp", *feats]
    push(env.repo, "user_activity", [{k: r[k] for k in keep} for r in rows], force=True)


# ---------------------------------------------------------------- statistics


def test_training_statistics_written_and_engines_agree(env: Env, spark: Any) -> None:
    stats = load_statistics(stats_path(env.training_set))
    f = stats["features"]
    assert {"amount_z", "device", "device_idx", "user_spend_count_7d"} <= set(f)
    assert f["amount"]["count"] + f["amount"]["nulls"] == stats["rows"]
    assert (
        len(f["amount"]["quantiles"]) == 19
        and sum(f["amount"]["histogram"]["counts"]) == (f["amount"]["count"])
    )
    assert f["device"]["top_values"]["distinct"] == len(f["device"]["top_values"]["values"])
    assert f["user_spend_count_7d"]["top_values"]["exact"]
    import pyarrow.parquet as pq

    table = pq.read_table(env.training_set)
    assert table.num_rows <= 2000
    features = list(f)
    python = compute_statistics(table, features)
    beam = compute_statistics(table, features, engine="beam")
    spark_stats = compute_statistics(table, features, engine="spark", spark=spark)
    assert python["features"] == f
    assert beam["features"] == python["features"]
    assert spark_stats["features"] == python["features"]


# ---------------------------------------------------------------- consistency


def test_no_faults_every_feature_matches_exactly(env: Env, tmp_path: Path) -> None:
    serve(env, tmp_path / "logs", requests_for(env, env.users[CLEAN], 300, seed=1))
    s = _report(env, tmp_path / "logs", "clean")
    assert s.rows == 300
    assert s.exact_match_rate == 1.0
    for name, fc in s.report["features"].items():
        assert fc["exact_match_rate"] == 1.0, (name, fc["examples"][:2])
    assert sum(s.causes.values()) == 0
    assert not [b for b in s.breaches if b["check"] in ("jsd", "linf", "exact_match")
                and b["feature"] in ("amount", "amount_z", "amount_log", "device")]  # fmt: skip
    assert json.loads(s.json_path.read_text())["exact_match_rate"] == 1.0


def test_changed_transform_code_is_a_fingerprint_cause(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(env, tmp_path / "logs", requests_for(env, env.users[CLEAN], 100, seed=2))
    from feature_repo import feature_sets as fsm

    @transform(request_time=True)
    def amount_log(amount: Float64) -> Nullable[Float64]:
        return np.log1p(amount) * 1.001  # "fixed" after training and serving

    ts = [amount_log if t.name == "amount_log" else t for t in fsm.TRANSACTION_REQUEST.transforms]
    monkeypatch.setattr(fsm, "TRANSACTION_REQUEST", replace(fsm.TRANSACTION_REQUEST, transforms=ts))
    s = _report(env, tmp_path / "logs", "code")
    f = s.report["features"]
    assert f["amount_log"]["causes"] == {cause.TRANSFORM_FINGERPRINT: f["amount_log"]["mismatches"]}
    assert f["amount_log"]["mismatches"] >= 95  # log1p(0) * 1.001 == 0 still matches
    assert all(f[n]["exact_match_rate"] == 1.0 for n in f if n != "amount_log")
    assert any(b["feature"] == "amount_log" and b["check"] == "exact_match" for b in s.breaches)


def test_changed_code_a_transform_reaches_is_a_fingerprint_cause(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """device_idx calls the vocabulary's lookup (skewless code, not its own lines): a
    change there changes its fingerprint, stops the server and is attributed."""
    from serving.catalog import load_request_transforms
    from store.manifest import Manifest
    from transforms import ArtifactError
    from transforms.analyzers import VocabularyTable

    serve(env, tmp_path / "logs", requests_for(env, env.users[CLEAN], 100, seed=4))
    original = VocabularyTable.lookup

    def lookup(self: VocabularyTable, column: Any, null_index: int = -1) -> Any:
        return original(self, column, null_index) + 1  # a "fix" after training and serving

    monkeypatch.setattr(VocabularyTable, "lookup", lookup)
    spec = Manifest.load(env.repo).request_transforms["transaction_request"]
    with pytest.raises(ArtifactError, match="transform 'device_idx' fingerprint"):
        load_request_transforms(env.repo, spec)
    s = _report(env, tmp_path / "logs", "helper")
    f = s.report["features"]
    assert f["device_idx"]["mismatches"] == 100
    assert f["device_idx"]["causes"] == {cause.TRANSFORM_FINGERPRINT: 100}
    assert all(f[n]["exact_match_rate"] == 1.0 for n in f if n != "device_idx")


def test_statistics_of_integers_beyond_2_53_are_float64_not_an_error() -> None:
    """Ids and hashes as features: a nullable Int64 is exact within 2**53 only, so such a
    column is summarised as float64 (drift statistics), never a raw Arrow error."""
    table = pa.table(
        {"id": pa.array([2**60, None, 5, 2**62], pa.int64()), "n": pa.array([1, 2, None, 4])}
    )
    got = compute_statistics(table)["features"]
    assert got["id"]["type"] == "float64" and got["id"]["max"] == float(2**62)
    assert got["n"]["type"] == "int64" and got["n"]["max"] == 4


def test_stale_statistics_artifact_is_attributed_to_the_artifact(env: Env, tmp_path: Path) -> None:
    from pipelines.apply import apply
    from store.manifest import Manifest
    from transforms.artifact import StatisticsArtifact

    manifest = Manifest.load(env.repo)
    rt = manifest.request_transforms["transaction_request"]
    path = Path(rt.artifact_path)
    original = path.read_bytes()
    art = StatisticsArtifact.load(path)
    values = dict(art.values)
    values["mean(amount)"] = values["mean(amount)"] * 0.9  # statistics of an older run
    try:
        StatisticsArtifact(art.feature_set, values, art.engine).save(path)
        apply(env.repo, base=env.data)  # registers the stale artifact in Feast, and the manifest
        serve(env, tmp_path / "logs", requests_for(env, env.users[CLEAN], 100, seed=3))
    finally:
        path.write_bytes(original)
        apply(env.repo, base=env.data)
    assert Manifest.load(env.repo) == manifest
    s = _report(env, tmp_path / "logs", "stats")
    f = s.report["features"]
    assert f["amount_z"]["mismatches"] == 100
    assert f["amount_z"]["causes"] == {cause.STATISTICS_ARTIFACT: 100}
    assert all(f[n]["exact_match_rate"] == 1.0 for n in f if n != "amount_z")


def test_stopped_materialization_is_a_freshness_lag(env: Env, tmp_path: Path) -> None:
    users = env.users[FRESH]
    lagging = []
    for rows in _user_rows(env, users).values():
        recent = [r for r in rows if r["event_timestamp"] > env.now - timedelta(days=6)]
        older = [
            r
            for r in recent[:-1]
            if r["user_amount_mean_last_10"] != rows[-1]["user_amount_mean_last_10"]
        ]
        if older:
            lagging.append(older[-1])  # what Redis held before materialization stopped
    assert len(lagging) >= 5
    _push(env, lagging)
    lag_users = [r["user_id"] for r in lagging]
    serve(env, tmp_path / "logs", requests_for(env, lag_users, 60, seed=4))
    s = _report(env, tmp_path / "logs", "fresh")
    f = s.report["features"]
    assert f["user_amount_mean_last_10"]["mismatches"] == 60
    assert f["user_amount_mean_last_10"]["causes"] == {cause.FRESHNESS_LAG: 60}
    assert s.causes[cause.FRESHNESS_LAG] >= 60
    assert set(s.causes) >= {cause.FRESHNESS_LAG}
    assert not any(n for c, n in s.causes.items() if c not in (cause.FRESHNESS_LAG,) and n), (
        s.causes
    )
    assert all(e["lag_seconds"] > 0 for e in f["user_amount_mean_last_10"]["examples"])
    # today's server log (no __event_ts columns): inferred from an older offline row's value
    serve(env, tmp_path / "plain", requests_for(env, lag_users, 60, seed=4), extras=False)
    plain = _report(env, tmp_path / "plain", "fresh_plain")
    g = plain.report["features"]["user_amount_mean_last_10"]
    assert g["causes"] == {cause.FRESHNESS_LAG: 60}
    assert plain.report["attribution_notes"]["event_ts_logged"] is False
    assert plain.report["attribution_notes"]["inferred"][cause.FRESHNESS_LAG] >= 60


def test_expired_online_rows_are_a_ttl_cause(env: Env, tmp_path: Path) -> None:
    users = env.users[TTL]
    stale = []
    for rows in _user_rows(env, users).values():
        if rows[-1]["event_timestamp"] > env.now - timedelta(days=5):
            stale.append({**rows[-1], "event_timestamp": env.now - timedelta(days=8)})
    assert len(stale) >= 5
    _push(env, stale)
    serve(env, tmp_path / "logs", requests_for(env, [r["user_id"] for r in stale], 60, seed=5))
    s = _report(env, tmp_path / "logs", "ttl")
    f = s.report["features"]
    assert f["user_amount_mean_last_10"]["causes"] == {cause.TTL_EXPIRY: 60}
    # the request-time feature reading an expired input inherits the cause
    assert set(f["amount_vs_user_mean_7d"]["causes"]) <= {cause.TTL_EXPIRY}
    assert s.causes[cause.TTL_EXPIRY] >= 60 * 2  # both user_activity features


def test_missing_online_keys_are_a_materialization_gap(env: Env, tmp_path: Path) -> None:
    import redis

    from store import redis_layout as rl

    users = env.users[GAP]
    enc = rl.EntityKeyEncoder(env.project, ["user_id"], ["int64"])
    redis.Redis.from_url(env.redis_url).delete(*[enc.encode((u,)) for u in users])
    serve(env, tmp_path / "logs", requests_for(env, users, 60, seed=6))
    s = _report(env, tmp_path / "logs", "gap")
    f = s.report["features"]
    assert f["user_amount_mean_last_10"]["causes"] == {cause.MISSING_KEY: 60}
    assert f["user_amount_mean_last_10"]["missing"] == 60
    assert f["merchant_amount_mean_last_100"]["exact_match_rate"] == 1.0


def test_shifted_inputs_breach_drift_thresholds_and_fail_the_gate(env: Env, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.commands_skew import register

    rows = requests_for(env, env.users[CLEAN], 300, seed=7, amount_scale=8.0, new_device=0.3)
    serve(env, tmp_path / "logs", rows)
    s = _report(env, tmp_path / "logs", "drift")
    assert s.exact_match_rate == 1.0  # skew-free serving of drifted inputs
    breached = {(b["feature"], b["check"]) for b in s.breaches}
    assert {("amount", "jsd"), ("amount_log", "jsd"), ("amount_z", "jsd")} <= breached
    assert {("device", "linf"), ("device", "new_categories"), ("device", "oov_rate_jump")} <= (
        breached
    )
    assert ("amount", "out_of_range") in breached
    drift = s.report["drift"]
    assert next(c for c in drift["amount"]["checks"] if c["check"] == "jsd")["value"] > 0.3

    import typer

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "cli" / "report.html"
    args = ["skew-report", "--log", str(tmp_path / "logs"), "--training-set",
            str(env.training_set), "--repo", str(env.repo), "--out", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "BREACH amount jsd" in r.output
    assert json.loads((out.parent / "report.json").read_text())["ok"] is False
    bad = CliRunner().invoke(app, ["skew-report", "--log", str(tmp_path / "nope")])
    assert bad.exit_code == 2
    assert "skewless: error: --log" in bad.output


def test_report_renders_in_headless_chromium(env: Env, tmp_path: Path) -> None:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not on PATH (apt-get install -y chromium)")
    serve(env, tmp_path / "logs", requests_for(env, env.users[CLEAN], 50, seed=8, new_device=0.2))
    s = _report(env, tmp_path / "logs", "html")
    html = s.html_path.read_text()
    assert html.count("data:image/png;base64,") >= 10
    png = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        try:
            r = subprocess.run(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-sync", "--disable-background-networking", "--disable-dev-shm-usage",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                 "--enable-logging=stderr", "--v=0", "--window-size=1200,2000",
                 f"--screenshot={png}", f"file://{s.html_path}"],
                capture_output=True, text=True, timeout=90,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            # Seen on loaded 2-core machines: the browser itself hangs, even on an empty page.
            pytest.skip("chromium did not finish within 90 s on this machine (browser hang)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert png.exists() and png.stat().st_size > 10_000
    assert "Uncaught" not in r.stderr and "ERR_FILE_NOT_FOUND" not in r.stderr
