"""Bad input on the command line: one line on stderr, exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def skewless(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--engine", "flink"], "--engine must be spark or beam, got 'flink'"),
        (
            ["run", "--repo", "feature_repo", "--input", "/nonexistent"],
            "source 'transactions': no data at /nonexistent/transactions",
        ),
        (
            ["training-set", "--entities", "/nonexistent.parquet", "--out", "/tmp/x.parquet"],
            "--entities /nonexistent.parquet does not exist",
        ),
        (["demo", "--rows", "0"], "--rows, --days and --requests must be positive"),
        (
            ["stream", "--repo", "feature_repo", "--stream", "e", "--log-url", "kafka://h:9092"],
            "log URL 'kafka://h:9092': scheme 'kafka' is neither redis:// nor nats://",
        ),
        (
            [
                "stream",
                "--repo",
                "feature_repo",
                "--stream",
                "e",
                "--log-url",
                "nats://127.0.0.1:1",
            ],
            "NATS at nats://127.0.0.1:1 cannot be reached",
        ),
        (
            ["stream", "--repo", "feature_repo", "--stream", "e", "--subject", "trips.*"],
            "a subject filter applies to NATS JetStream only (--log-url nats://)",
        ),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, message):
    done = skewless(*args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"skewless: error: {message}"]
    assert "Traceback" not in done.stderr


def test_training_set_on_a_non_parquet_file(tmp_path):
    bad = tmp_path / "entities.parquet"
    bad.write_text("user_id,event_timestamp\n1,2024-01-01\n")
    done = skewless("training-set", "--entities", str(bad), "--out", str(tmp_path / "o.parquet"))
    assert done.returncode == 2
    assert done.stderr.startswith("skewless: error: --entities")
    assert len(done.stderr.strip().splitlines()) == 1
