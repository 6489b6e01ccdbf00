"""Settings of ``skewless serve`` (also readable from one env var by the ASGI factory)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

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
    keep_alive_s: float = 30.0  # idle connections (or unfinished requests) closed after this
    redis_url: str | None = None  # overrides the manifest (REDIS_URL env var)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(ENV_VAR)
        return cls(**json.loads(raw)) if raw else cls()


def feast_connection_string(redis_url: str) -> str:
    """``redis[s]://[user:password@]host:port[/db]`` -> Feast's connection string
    (``host:port[,db=N][,password=..][,username=..][,ssl=true]``); SchemaError naming
    REDIS_URL when the URL is not a Redis URL."""
    from urllib.parse import urlparse

    from transforms.errors import SchemaError

    u = urlparse(redis_url)
    if u.scheme not in ("redis", "rediss", "") or not u.hostname:
        raise SchemaError(f"REDIS_URL {redis_url!r} is not a redis://host:port[/db] URL")
    parts = [f"{u.hostname}:{u.port or 6379}"]
    db = (u.path or "/0").strip("/") or "0"
    if db != "0":
        parts.append(f"db={db}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.username:
        parts.append(f"username={u.username}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def redis_connection(manifest_conn: str, override_url: str | None) -> str:
    """REDIS_URL (redis://host:port/db) wins over the manifest's Feast connection string."""
    url = override_url or os.environ.get("REDIS_URL")
    return feast_connection_string(url) if url else manifest_conn
