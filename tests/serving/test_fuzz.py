"""The fuzz suite of ``bench/fuzz.py``, shorter: the deep-nesting body at every depth
1..2000, every raw HTTP mutation, slow clients and a few hundred hostile bodies against
the HTTP front on real Redis. No 5xx, no connection closed or reset before a complete
request was answered, no case left hanging past the idle timeout."""

from __future__ import annotations

import asyncio
import random

from bench import fuzz
from bench.repos.serving_repo import STATS_FEATURES, DemoRepo
from serving.config import ServeConfig
from tests.serving.test_http import running

TARGET = fuzz.Target(
    tuple(f"user_stats:{f}" for f in STATS_FEATURES), "user_id", "payments_v1", "request_amount"
)
IDLE_S = 3.0


def _run(demo: DemoRepo, redis_url: str, cases: list[fuzz.Case]) -> fuzz.Outcome:
    config = ServeConfig(repo=str(demo.path), redis_url=redis_url, keep_alive_s=IDLE_S)
    with running(config) as srv:
        outcome = asyncio.run(fuzz.run_cases(srv.port, cases, IDLE_S))
        metrics = srv.app.metrics.render().decode()
        errors = [line for line in metrics.splitlines() if 'code="5' in line]
        assert errors == [], errors
    return outcome


def test_deep_nesting_at_every_depth_is_4xx(demo: DemoRepo, redis_url: str) -> None:
    cases = fuzz.nesting_cases(TARGET, range(1, 2001))
    outcome = _run(demo, redis_url, cases)
    assert outcome.failures == []
    assert outcome.statuses[200] == 1  # depth 1 is a valid request
    assert sum(n for s, n in outcome.statuses.items() if s != 200) == 1999
    assert all(isinstance(s, int) and 400 <= s < 500 for s in outcome.statuses if s != 200)


def test_hostile_requests_are_answered_never_5xx_reset_or_hang(
    demo: DemoRepo, redis_url: str
) -> None:
    rng = random.Random(16)
    cases = fuzz.raw_cases(rng, TARGET) + fuzz.body_cases(rng, TARGET, 600)
    rng.shuffle(cases)
    outcome = _run(demo, redis_url, cases)
    assert outcome.failures == [], outcome.failures[:10]
    assert outcome.requests >= 850  # pipelined bodies, one answer each; raw cases
    assert not any(isinstance(s, int) and s >= 500 for s in outcome.statuses), outcome.statuses
    assert outcome.statuses[431] >= 5 and outcome.statuses[400] > 50, outcome.histogram()
