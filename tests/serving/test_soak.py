"""``bench/soak.py``, short: a few seconds at a low rate against a real ``skewless serve``
process on the test Redis. Every request is answered (no 5xx, reset or timeout), RSS is
sampled every second and stays within the bench's own bound."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import soak
from bench.fuzz import Target
from bench.repos.serving_repo import STATS_FEATURES, DemoRepo

TARGET = Target(
    tuple(f"user_stats:{f}" for f in STATS_FEATURES), "user_id", "payments_v1", "request_amount"
)


def test_a_short_soak_answers_every_request_and_samples_rss(
    demo: DemoRepo, redis_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with soak.serving_process(demo.path, redis_url, log) as (port, proc):
        result = asyncio.run(
            soak.soak(port, proc.pid, TARGET, demo.users, rate=40, seconds=4, warmup_s=1,
                      connections=2, hostile_share=0.1)
        )  # fmt: skip
        assert proc.poll() is None
    assert result.failures() == []
    assert result.errors == {} and result.fives == 0
    assert sum(result.statuses.values()) == result.sent == 200  # 40 req/s for 5 s
    assert result.statuses[200] > 0 and any(400 <= s < 500 for s in result.statuses)
    assert len(result.rss_after_warmup) >= 4 and all(s.mib > 0 for s in result.rss)
    assert "Traceback" not in log.read_text(errors="replace")
