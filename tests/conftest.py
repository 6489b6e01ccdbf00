"""Session-wide fixtures: one real Redis (REDIS_URL or a private server), one Spark session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipelines.local_redis import answers, private_redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: REDIS_URL when it answers, else a private redis-server on a free port."""
    url = os.environ.get("REDIS_URL")
    if url and answers(url):
        yield url
        return
    with private_redis() as private:
        yield private


@pytest.fixture()
def redis_prefix() -> str:
    """A key prefix unique to one test, so tests never touch data they did not write."""
    import uuid

    return f"skewless-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole run (start-up costs seconds)."""
    from pipelines.spark_session import get_spark

    session = get_spark("local[2]")
    yield session
    session.stop()
