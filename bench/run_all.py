"""``skewless bench``: every benchmark, one after another, in one table against Feast.

Runs ``bench.transforms``, ``bench.materialize``, ``bench.training_set``,
``bench.training_set_spark`` (the point-in-time join here and on Spark),
``bench.serving``, ``bench.windows``, ``bench.fuzz`` and ``bench.soak`` (60 s; 10 s with
``--quick``) as separate processes (so one's memory and threads never colour another's
figures), on the same Redis, and prints one markdown table. The full run also
writes it to ``bench/RESULTS.md`` with a description of the machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from bench.results import ROUNDS, Measure, markdown, read_json

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def _scripts(quick: bool, redis_url: str) -> list[tuple[str, list[str]]]:
    u = urlparse(redis_url)
    host = f"{u.hostname}:{u.port or 6379}"
    return [
        ("transforms", ["bench.transforms", *(["--quick"] if quick else [])]),
        (
            "materialization",
            [
                "bench.materialize",
                "--redis",
                host,
                "--db",
                "13",
                *(["--rows", "200000", "--entities", "20000"] if quick else []),
            ],
        ),
        ("training set", ["bench.training_set", *(["--quick"] if quick else [])]),
        ("training set on Spark", ["bench.training_set_spark", *(["--quick"] if quick else [])]),
        (
            "online lookup",
            ["bench.serving", "--redis-url", redis_url, *(["--quick"] if quick else [])],
        ),
        ("windows", ["bench.windows", "--redis-url", redis_url, *(["--quick"] if quick else [])]),
        ("fuzz", ["bench.fuzz", "--redis-url", redis_url, *(["--quick"] if quick else [])]),
        ("soak", ["bench.soak", "--redis-url", redis_url, *(["--quick"] if quick else [])]),
    ]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    from importlib.metadata import version

    libs = ", ".join(
        f"{p} {version(p)}" for p in ("feast", "pyspark", "apache-beam", "pyarrow", "redis")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}){mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; {libs}"
    )


def run(quick: bool, redis_url: str, console: object | None = None) -> list[Measure]:
    from rich.console import Console

    out = console if isinstance(console, Console) else Console()
    measures: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="skewless-bench-") as tmp:
        for area, argv in _scripts(quick, redis_url):
            path = Path(tmp) / f"{argv[0]}.json"
            out.rule(f"[bold]{area}")
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", *argv, "--json", str(path)],
                env={**os.environ, "REDIS_URL": redis_url},
                text=True,
            )
            out.print(f"[dim]{area}: {time.perf_counter() - t0:.0f}s, exit {done.returncode}[/]")
            if path.exists():
                measures += read_json(path)
            else:
                out.print(f"[red]{area}: no measurements (exit {done.returncode})[/]")
    return measures


def main(quick: bool = False) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    from pipelines.local_redis import redis_for_run

    console = Console()
    with redis_for_run() as redis_url:
        measures = run(quick, redis_url, console)
    table = markdown(measures)
    console.rule("[bold]skewless vs Feast")
    console.print(Markdown(table))
    print(table)
    if not quick:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        RESULTS.write_text(
            f"# Benchmark results\n\n{stamp}, `skewless bench` (one run, same data and Redis "
            "for both systems; materialization and online-lookup figures are medians of "
            f"{ROUNDS} rounds alternating Feast and skewless).\n\nMachine: {machine()}\n\n{table}\n"
        )
        console.print(f"written to {RESULTS}")
    return 0 if measures else 1
