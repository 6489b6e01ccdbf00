"""Helpers of the skew tests: a served-and-logged repo, requests, and the log columns the
skew report reads from the server's feature log (stripped again to test older logs)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from tests.support import EXAMPLE_DIR, EXAMPLE_FILES, example_project

MODEL_SERVICE = "fraud_model_v1"  # the example project's service

LOOP = asyncio.new_event_loop()


@dataclass
class Env:
    base: Path
    repo: Path
    data: Path
    project: str
    redis_url: str
    now: datetime
    training_set: Path
    users: list[int]
    merchants: list[int]
    amounts: list[float]
    devices: list[str]


def build_env(base: Path, redis_url: str) -> Env:
    """Generate 10 days of data, Beam features, apply, materialize up to now, training set."""
    from feature_repo.generate import generate
    from pipelines.apply import apply
    from pipelines.batch import run
    from pipelines.materialize import materialize
    from pipelines.training_data import build_training_set
    from pipelines.window_backfill import backfill_windows

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    generate(1500, base / "raw", seed=3, start=now - timedelta(days=10), days=10, progress=False)
    run("beam", example_project(), base / "data", input_dir=base / "raw")
    repo = base / "repo"
    repo.mkdir()
    for name in EXAMPLE_FILES:
        shutil.copy(EXAMPLE_DIR / name, repo / name)
    project = f"skew{uuid.uuid4().hex[:10]}"
    os.environ["SKEWLESS_DATA"] = str(base / "data")
    apply(repo, redis_url, base / "data", project=project)
    materialize(repo, now - timedelta(days=12), datetime.now(UTC), show_progress=False)
    backfill_windows(repo)  # the service's window features, as `skewless materialize` does
    txns = pq.read_table(base / "raw" / "transactions")
    entities = txns.select(
        ["txn_id", "user_id", "merchant_id", "event_timestamp", "amount", "device", "is_fraud"]
    )
    training_set = base / "training_set.parquet"
    build_training_set(repo, entities, training_set, MODEL_SERVICE)
    return Env(
        base=base,
        repo=repo,
        data=base / "data",
        project=project,
        redis_url=redis_url,
        now=now,
        training_set=training_set,
        users=sorted(set(txns.column("user_id").to_pylist())),
        merchants=sorted(set(txns.column("merchant_id").to_pylist())),
        amounts=txns.column("amount").to_pylist(),
        devices=[d for d in txns.column("device").to_pylist() if d is not None],
    )


def drop_project_keys(redis_url: str, project: str) -> None:
    import redis

    from store.window_state import clear_windows

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{project}".encode(), count=1000))
    if keys:
        client.delete(*keys)
    clear_windows(client, project)


# ---------------------------------------------------------------- log columns wanted


@contextmanager
def logging_extras(enabled: bool = True) -> Iterator[None]:
    """With ``enabled=False``, strip ``artifact_hashes`` and ``<feature>__event_ts`` from the
    files the FeatureLogger writes: the log format of a server that does not record them,
    so the report's inference paths are tested too."""
    from serving.feature_log import FeatureLogger

    if enabled:
        yield
        return
    original = FeatureLogger._write

    def write(self: Any, key: str, batch: list[tuple[int, Any]]) -> None:
        original(self, key, batch)
        path = self.files[-1]
        table = pq.read_table(path)
        keep = [
            c for c in table.column_names
            if c != "artifact_hashes" and not c.endswith("__event_ts")
        ]  # fmt: skip
        pq.write_table(table.select(keep), path)

    FeatureLogger._write = write  # type: ignore[method-assign]
    try:
        yield
    finally:
        FeatureLogger._write = original  # type: ignore[method-assign]


# ---------------------------------------------------------------- serving


def serve(
    env: Env, log_dir: Path, rows: list[dict[str, Any]], extras: bool = True, batch: int = 25
) -> None:
    """Send ``rows`` (user_id, merchant_id, amount, device) through the in-process server
    with feature logging on, then flush the log."""
    from serving.app import LookupApp
    from serving.config import ServeConfig

    with logging_extras(extras):
        app = LookupApp(
            ServeConfig(repo=str(env.repo), redis_url=env.redis_url, log_dir=str(log_dir))
        )
        try:
            for i in range(0, len(rows), batch):
                chunk = rows[i : i + batch]
                body = {"entities": {k: [r[k] for r in chunk] for k in chunk[0]}}
                LOOP.run_until_complete(app.lookup(orjson.dumps(body), MODEL_SERVICE))
        finally:
            LOOP.run_until_complete(app.shutdown())


def requests_for(
    env: Env, users: list[int], n: int, seed: int, amount_scale: float = 1.0,
    new_device: float = 0.0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Requests for ``users``, amounts and devices drawn from the training transactions."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        device = "smart_tv" if rng.random() < new_device else rng.choice(env.devices)
        out.append(
            {
                "user_id": rng.choice(users),
                "merchant_id": rng.choice(env.merchants),
                "amount": round(rng.choice(env.amounts) * amount_scale, 2),
                "device": device,
            }
        )
    return out
