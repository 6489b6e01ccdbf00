"""Run the lookup app under uvicorn (uvloop + httptools), after checking the repo.

The catalog is loaded once in the parent before uvicorn starts, so a drifted artifact or
fingerprint stops ``skewless serve`` with one line and exit code 2 instead of a crash loop
in the workers; each worker then builds its own app via :func:`serving.app.create_app`.
"""

from __future__ import annotations

import os
from dataclasses import replace

from serving.config import ENV_VAR, ServeConfig


def check(config: ServeConfig) -> None:
    """Load and verify the manifest and request transforms (raises SkewlessError)."""
    from serving.lookup import Catalog

    Catalog.load(config.repo)


def run(config: ServeConfig) -> None:
    import uvicorn

    config = replace(config, repo=os.path.abspath(config.repo))
    if config.log_dir:
        config = replace(config, log_dir=os.path.abspath(config.log_dir))
    if config.workers > 1:
        check(config)  # fail once, here, not in every worker
        os.environ[ENV_VAR] = config.to_env()
        target: object = "serving.app:create_app"
    else:
        from serving.app import LookupApp

        target = LookupApp(config)  # one process: build (and verify) the app once
    uvicorn.run(
        target,  # type: ignore[arg-type]
        factory=config.workers > 1,
        host=config.host,
        port=config.port,
        workers=config.workers if config.workers > 1 else None,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
