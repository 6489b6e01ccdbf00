"""``skewless serve``: the online lookup server (serving/), Feast-compatible and native API.

Exit code 2 with one ``skewless: error:`` line when the manifest is missing or a
request-time feature set's artifact hash or transform fingerprints drifted from it.
"""

from __future__ import annotations

import typer

from cli.errors import fail, guarded


def serve_command(
    repo: str = typer.Option(
        ".", "--repo", "-c", help="The project (skewless_manifest.json); default: here"
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="bind address"),
    port: int = typer.Option(6566, "--port", help="TCP port"),
    workers: int = typer.Option(1, "--workers", help="worker processes (forked, sharing the port)"),
    log_dir: str | None = typer.Option(None, "--log-dir", help="write sampled feature logs here"),
    log_sample_rate: float = typer.Option(
        1.0, "--log-sample-rate", help="fraction of requests logged"
    ),
    max_entities: int = typer.Option(1000, "--max-entities", help="entities per request"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="request body limit"),
    auth_token: str | None = typer.Option(
        None, "--auth-token", envvar="SKEWLESS_AUTH_TOKEN", help="require 'Authorization: Bearer'"
    ),
    redis_timeout_ms: int = typer.Option(250, "--redis-timeout-ms", help="Redis read timeout"),
    keep_alive: float = typer.Option(
        30.0, "--keep-alive", help="seconds before an idle connection is closed"
    ),
) -> None:
    """Serve feature vectors from Redis with request-time transforms (REDIS_URL overrides)."""
    import os

    if not 0.0 <= log_sample_rate <= 1.0:
        fail("--log-sample-rate must be between 0 and 1")
    if workers < 1 or max_entities < 1 or redis_timeout_ms < 1 or max_body_bytes < 1:
        fail("--workers, --max-entities, --max-body-bytes and --redis-timeout-ms must be positive")
    if keep_alive <= 0:
        fail("--keep-alive must be positive")
    from serving.config import ServeConfig
    from serving.server import run

    config = ServeConfig(
        repo=repo,
        host=host,
        port=port,
        workers=workers,
        log_dir=log_dir,
        log_sample_rate=log_sample_rate,
        max_entities=max_entities,
        max_body_bytes=max_body_bytes,
        auth_token=auth_token,
        redis_timeout_ms=redis_timeout_ms,
        keep_alive_s=keep_alive,
        redis_url=os.environ.get("REDIS_URL"),
    )
    guarded(run)(config)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the skewless CLI app."""
    app.command("serve")(serve_command)
