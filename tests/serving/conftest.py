"""The Feast repo the serving tests read: applied and materialized by Feast itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.repos.serving_repo import DemoRepo, build


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[DemoRepo]:
    """400 users in ``user_stats`` (some expired), materialized into the test Redis."""
    repo = build(tmp_path_factory.mktemp("feast_repo"), redis_url, users=400)
    yield repo
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=b"*" + repo.project.encode(), count=1000))
    if keys:
        client.delete(*keys)  # only the keys this Feast project wrote
