"""What every part of ``bench.windows`` shares: the sizes of a run, the run's project, Redis
and server, and a small blocking HTTP client."""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bench._load import free_port, wait_http

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
WINDOW_SET = "driver_windows"


@dataclass(frozen=True)
class Sizes:
    """How much each part measures (``FULL``; ``--quick`` is a tenth; ``--scale`` shrinks
    either further for development runs)."""

    drivers: int = 10_000  # entities in the lookup state
    per_driver: tuple[int, int] = (100, 200)  # events of each in the state
    seconds: float = 5.0  # per load run
    rounds: int = 3  # load runs per figure (medians)
    parity: int = 1_000  # requests compared, served vs pandas
    push_events: int = 1_000_000  # Python push()
    http_push_events: int = 300_000  # POST /push, 1,000 per body
    stream_events: int = 1_000_000  # skewless stream --available-now
    fresh_pushes: int = 1_000  # /push freshness samples
    fresh_stream_seconds: float = 30.0  # streaming freshness: events at 10/s for this long
    offline_events: int = 10_000_000
    offline_queries: int = 1_000_000


FULL = Sizes()
QUICK = Sizes(
    drivers=2_000,
    seconds=2.0,
    rounds=1,
    parity=300,
    push_events=200_000,
    http_push_events=50_000,
    stream_events=100_000,
    fresh_pushes=200,
    fresh_stream_seconds=10.0,
    offline_events=1_000_000,
    offline_queries=100_000,
)


def scaled(sizes: Sizes, scale: float) -> Sizes:
    """Every count times ``scale`` (at least a handful), durations and rounds unchanged."""
    if scale == 1.0:
        return sizes

    def n(v: int, least: int = 10) -> int:
        return max(least, int(v * scale))

    return replace(
        sizes,
        drivers=n(sizes.drivers),
        parity=n(sizes.parity),
        push_events=n(sizes.push_events, 10_000),
        http_push_events=n(sizes.http_push_events, 2_000),
        stream_events=n(sizes.stream_events, 1_000),
        fresh_pushes=n(sizes.fresh_pushes, 20),
        offline_events=n(sizes.offline_events, 1_000),
        offline_queries=n(sizes.offline_queries, 100),
    )


@dataclass
class WindowRun:
    """One run's project (its own name: only its keys are written and deleted), Redis and
    lookup server."""

    root: Path  # the project directory
    tmp: Path
    project: str
    redis_url: str
    sizes: Sizes
    end_us: int  # the lookup state's events end just before this instant
    client: Any = None  # redis.Redis
    port: int = 0  # skewless serve's
    feast_port: int = 0  # feast serve's
    server: subprocess.Popen[bytes] | None = None  # skewless serve
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)  # every server started
    streams: list[Any] = field(default_factory=list)  # event logs to delete at the end
    nats_url: str | None = None  # also stream from NATS JetStream here

    @property
    def window_set(self) -> Any:
        from bench.repos.windows_repo import window_set

        return window_set()

    @property
    def feast_project(self) -> str:
        """The Feast repo's project (its keys end with this name, and no window key does)."""
        return f"{self.project}_feast"

    @property
    def redis_host(self) -> str:
        u = urlparse(self.redis_url)
        return f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"

    @property
    def refs(self) -> list[str]:
        return [f"{WINDOW_SET}:{f.name}" for f in self.window_set.features]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": self.redis_url}

    def start_server(self) -> float:
        """``skewless serve`` on a free port; seconds until /health answers."""
        self.port = free_port()
        self.server = self.launch(
            [PY, "-m", "cli.main", "serve", "--repo", str(self.root), "--port", str(self.port)],
            ROOT,
            "serve.log",
        )
        return wait_http(self.port, "/health", 60, self.server)

    def launch(self, argv: list[str], cwd: Path, log_name: str) -> subprocess.Popen[bytes]:
        """A server process of this run (stopped by :meth:`stop_servers`), its output in
        ``tmp/log_name``."""
        log = open(self.tmp / log_name, "wb")  # noqa: SIM115 - the server's, closed with it
        proc = subprocess.Popen(argv, cwd=cwd, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        self.servers.append(proc)
        return proc

    def stop_servers(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.servers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def server_logs(self) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}\n"
            for p in sorted(self.tmp.glob("*.log"))
        )

    def server_cpu(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        if self.server is None:
            return 0.0
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Http:
    """One keep-alive connection to the lookup server; ``send`` and ``answer`` apart so a
    request can be in flight while another connection polls."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, path: str, body: dict[str, Any]) -> None:
        self.conn.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )

    def answer(self) -> Any:
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:300]!r}")
        return json.loads(payload)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.send(path, body)
        return self.answer()

    def close(self) -> None:
        self.conn.close()


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds of durations in seconds (nearest rank)."""
    ordered = sorted(seconds)
    n = len(ordered)
    return ordered[n // 2] * 1000, ordered[min(n - 1, int(n * 0.99))] * 1000


def median(values: list[float]) -> float:
    return float(statistics.median(values))
