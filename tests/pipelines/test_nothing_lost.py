"""Nothing is ever lost: no command deletes what another wrote, a killed run leaves
nothing the next run does not clean, and an empty materialization is not a success."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import redis
import yaml

from tests.support import skewless_cli


def ok(*args: str, repo: Path, env: dict[str, str]) -> str:
    done = skewless_cli(*args, cwd=repo, env=env)
    assert done.returncode == 0, f"skewless {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


def _kill_a_run_while_it_stages(repo: Path, env: dict[str, str]) -> None:
    """Start `skewless run` and kill -9 it (and its Spark JVM) once it has staged output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "run"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not list((repo / "data").glob(".staged-*")):
            assert proc.poll() is None, "the run ended before it staged anything"
            assert time.monotonic() < deadline, "the run staged nothing in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_generate_run_apply_run_materialize_keeps_every_key(shop, redis_url):
    repo, env = shop
    ok("generate", "--rows", "2000", "--days", "10", repo=repo, env=env)
    ok("run", repo=repo, env=env)
    ok("apply", repo=repo, env=env)
    registry = (repo / "data" / "registry.db").read_bytes()
    manifest = (repo / "skewless_manifest.json").read_bytes()

    _kill_a_run_while_it_stages(repo, env)
    assert list((repo / "data").glob(".staged-*")), "the killed run left its staging"
    second = ok("run", repo=repo, env=env)
    assert "staging entries left by interrupted runs" in second
    assert not [p.name for p in (repo / "data").iterdir() if p.name.startswith(".")]
    assert (repo / "data" / "registry.db").read_bytes() == registry  # run kept apply's output
    assert (repo / "skewless_manifest.json").read_bytes() == manifest
    assert (repo / "sources" / "orders").is_dir()

    out = ok("materialize", "--no-progress", repo=repo, env=env)
    assert "materialized 0 rows" not in out
    assert out.startswith("writer: new keys by RESTORE of payloads from the compiled writer")
    # (--no-progress: the writer opens the summary; with progress it also goes to stderr first)
    project = yaml.safe_load((repo / "feature_store.yaml").read_text())["project"]
    client = redis.Redis.from_url(redis_url)
    keys = sum(1 for _ in client.scan_iter(match=f"*{project}".encode(), count=1000))
    customers = pq.read_table(
        repo / "data" / "features" / "customer_stats", columns=["customer_id"]
    )
    lines = pq.read_table(
        repo / "data" / "features" / "store_sku_stats", columns=["store_id", "sku"]
    )
    expected = len(set(customers.column(0).to_pylist())) + len(
        set(zip(lines.column(0).to_pylist(), lines.column(1).to_pylist(), strict=True))
    )
    assert keys == expected  # every entity of both views, one hash each


def test_materializing_an_empty_window_of_a_source_with_rows_is_an_error(shop):
    repo, env = shop
    ok("generate", "--rows", "500", "--days", "5", repo=repo, env=env)
    ok("run", repo=repo, env=env)
    ok("apply", repo=repo, env=env)
    done = skewless_cli(
        "materialize", "--no-progress", "--start", "2001-01-01", "--end", "2001-01-02",
        cwd=repo, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("skewless: error: no row has an event time in [2001-01-01")
    assert "the sources hold rows" in done.stderr and len(done.stderr.splitlines()) == 1
