"""Fixtures of the pipeline tests: a copy of the second example project per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipelines.feast_objects import write_feature_store_yaml
from store.redis_layout import feast_connection_string

SHOP = Path(__file__).resolve().parent.parent / "projects" / "shop"


@pytest.fixture()
def shop(tmp_path: Path, redis_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    name = f"shop{uuid.uuid4().hex[:10]}"
    repo = tmp_path / "shop"
    shutil.copytree(SHOP, repo, ignore=shutil.ignore_patterns("__pycache__", "data", "sources"))
    write_feature_store_yaml(repo, name, feast_connection_string(redis_url))
    (repo / ".feastignore").write_text("data/\nsources/\n")
    env = {**os.environ, "REDIS_URL": redis_url}
    env.pop("SKEWLESS_DATA", None)
    yield repo, env
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{name}".encode(), count=1000))
    if keys:
        client.delete(*keys)
