"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

from pipelines.local_redis import answers as redis_answers
from pipelines.local_redis import free_port

__all__ = ["free_port", "redis_answers"]
