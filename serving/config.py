"""Settings of ``skewless serve`` (also readable from one env var by the ASGI factory)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from store.redis_layout import feast_connection_string

ENV_VAR = "SKEWLESS_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    repo: str = "."
    host: str = "127.0.0.1"
    port: int = 6566
    workers: int = 1
    log_dir: str | None = None
    log_sample_rate: float = 1.0
    log_queue: int = 10_000
    log_rows_per_file: int = 50_000
    log_roll_seconds: float = 60.0
    max_entities: int = 1000
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 64 << 10  # request line + headers (431 above)
    max_headers: int = 100  # header fields per request (431 above)
    auth_token: str | None = None
    redis_timeout_ms: int = 250
    push_timeout_ms: int = 5000  # POST /push writes, on a connection of their own
    keep_alive_s: float = 30.0  # idle connections (or unfinished requests) closed after this
    redis_url: str | None = None  # overrides the manifest (REDIS_URL env var)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(ENV_VAR)
        return cls(**json.loads(raw)) if raw else cls()


def redis_connection(manifest_conn: str, override_url: str | None) -> str:
    """REDIS_URL (redis://host:port/db) wins over the manifest's Feast connection string."""
    url = override_url or os.environ.get("REDIS_URL")
    return feast_connection_string(url) if url else manifest_conn
