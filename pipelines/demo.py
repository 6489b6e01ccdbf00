"""``skewless demo``: the whole promise, end to end, with the time of every step.

generate raw events -> batch features (Spark or Beam) -> feast apply -> materialize into
Redis -> point-in-time training set -> train a model -> start the lookup server -> score
real requests through it -> skew report over the logged requests.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from pipelines.local_redis import free_port, redis_for_run
from transforms.errors import SkewlessError, StoreUnavailable

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "feature_repo"  # the example project
MODEL_SERVICE = "fraud_model_v1"
LABEL = "is_fraud"
DEVICES = ("ios", "android", "web", "pos")


@dataclass
class DemoResult:
    steps: dict[str, float] = field(default_factory=dict)
    auc: float = 0.0
    served: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    exact_match: float | None = None


class Steps:
    """Runs named steps, printing what each did and how long it took."""

    def __init__(self, console: Console, result: DemoResult) -> None:
        self.console = console
        self.result = result

    def run(self, name: str, fn: Callable[[], str]) -> None:
        self.console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        with self.console.status(name):
            summary = fn()
        seconds = time.perf_counter() - t0
        self.result.steps[name] = seconds
        self.console.print(f"[green]✓[/] {summary}  [dim]({seconds:.1f}s)[/]")


def model_columns(features: list[str]) -> list[str]:
    return [f.split(":")[1] for f in features]


def train(table: pa.Table, columns: list[str]) -> tuple[Any, float]:
    """Gradient boosting on the service's features; AUC on the last 20% in event time."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    order = pc.sort_indices(table, [("event_timestamp", "ascending")])
    table = table.take(order)
    x = np.column_stack(
        [table.column(c).to_numpy(zero_copy_only=False).astype(float) for c in columns]
    )
    y = table.column(LABEL).to_numpy(zero_copy_only=False).astype(int)
    cut = int(len(y) * 0.8)
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=0)
    model.fit(x[:cut], y[:cut])
    auc = float(roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1]))
    return model, auc


@contextmanager
def lookup_server(repo: Path, redis_url: str, log_dir: Path) -> Iterator[str]:
    """``skewless serve`` as a subprocess on a free port; stopped (logs flushed) on exit."""
    import httpx

    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            "--repo",
            str(repo),
            "--port",
            str(port),
            "--log-dir",
            str(log_dir),
            "--log-sample-rate",
            "1.0",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise StoreUnavailable(
                    f"lookup server exited: {proc.stderr.read()[-500:] if proc.stderr else ''}"
                )
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StoreUnavailable("lookup server did not become ready in 30 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def demo(
    engine: str = "spark",
    rows: int = 200_000,
    days: int = 30,
    requests: int = 500,
    console: Console | None = None,
) -> DemoResult:
    console = console or Console()
    result = DemoResult()
    steps = Steps(console, result)
    from pipelines.project import load_project

    repo = EXAMPLE_DIR
    project = load_project(repo)
    base = project.data_dir
    raw = Path(project.source_path("transactions")).parent
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=days)
    state: dict[str, Any] = {}

    with redis_for_run() as redis_url:
        os.environ["REDIS_URL"] = redis_url
        console.print(f"Redis: {redis_url}   data: {base}")

        def generate_step() -> str:
            from pipelines.generate import generate

            r = generate(rows, raw, seed=7, start=start, days=days, progress=False)
            return f"{r.rows:,} transactions, {r.users:,} users, {r.merchants:,} merchants ({r.fraud_rate:.2%} fraud) -> {raw}"

        def batch_step() -> str:
            from pipelines.batch import run

            r = run(engine, project, base, input_dir=raw)
            return f"{engine}: " + ", ".join(
                f"{v} {n:,} rows" for v, n in sorted(r.rows_out.items())
            )

        def apply_step() -> str:
            from pipelines.apply import apply

            m = apply(repo, redis_url, base)
            state["manifest"] = m
            return f"feast apply: {len(m.views)} views, {len(m.request_transforms)} on-demand view, service {MODEL_SERVICE}"

        def materialize_step() -> str:
            from pipelines.materialize import materialize, reset_online_project

            removed = reset_online_project(repo)  # the data was regenerated: start clean
            r = materialize(
                repo, start - timedelta(days=1), datetime.now(UTC), verify=True, show_progress=False
            )
            if not r.ok:
                raise SkewlessError("materialization verification found lost entities")
            written = sum(v.written for v in r.views)
            return (
                f"{removed:,} keys of the previous run removed, {r.rows_scanned:,} rows scanned, "
                f"{written:,} entity keys written, verified"
            )

        def training_step() -> str:
            from pipelines.training_data import build_training_set

            entities = pq.read_table(raw / "transactions").select(
                ["txn_id", "user_id", "merchant_id", "event_timestamp", "amount", "device", LABEL]
            )
            out = base / "training_set.parquet"
            table = build_training_set(repo, entities, out, MODEL_SERVICE)
            state["training"] = table
            return f"{entities.num_rows:,} entity rows in, {table.num_rows:,} rows out -> {out}"

        def model_step() -> str:
            columns = model_columns(state["manifest"].services[MODEL_SERVICE].features)
            model, auc = train(state["training"], columns)
            state["model"], state["columns"] = model, columns
            result.auc = auc
            (base / "model.pkl").write_bytes(pickle.dumps((model, columns)))
            return f"HistGradientBoosting on {len(columns)} features: validation AUC {auc:.3f}"

        def serve_step() -> str:
            import httpx

            log_dir = base / "logs"
            rng = random.Random(11)
            table = state["training"]
            users = table.column("user_id").to_pylist()
            merchants = table.column("merchant_id").to_pylist()
            latencies: list[float] = []
            scores: list[float] = []
            with lookup_server(repo, redis_url, log_dir) as url, httpx.Client(base_url=url) as http:
                for _ in range(requests):
                    body = {
                        "entities": {
                            "user_id": [rng.choice(users)],
                            "merchant_id": [rng.choice(merchants)],
                            "amount": [round(rng.lognormvariate(3.5, 1.0), 2)],
                            "device": [rng.choice(DEVICES)],
                        }
                    }
                    t0 = time.perf_counter()
                    response = http.post(f"/v1/features/{MODEL_SERVICE}", json=body)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                    features = response.json()["features"]
                    vector = [
                        [
                            np.nan if features[c][0] is None else float(features[c][0])
                            for c in state["columns"]
                        ]
                    ]
                    scores.append(float(state["model"].predict_proba(np.array(vector))[0, 1]))
            result.served = len(scores)
            result.latency_ms = {
                "p50": float(np.percentile(latencies, 50)),
                "p99": float(np.percentile(latencies, 99)),
            }
            state["log_dir"] = log_dir
            return (
                f"{len(scores)} requests scored, HTTP round trip p50 {result.latency_ms['p50']:.2f} ms, "
                f"p99 {result.latency_ms['p99']:.2f} ms, mean fraud score {np.mean(scores):.3f}"
            )

        steps.run("1. generate raw events", generate_step)
        steps.run(f"2. batch features ({engine})", batch_step)
        steps.run("3. register in Feast", apply_step)
        steps.run("4. materialize into Redis", materialize_step)
        steps.run("5. point-in-time training set", training_step)
        steps.run("6. train model", model_step)
        steps.run("7. serve and score requests", serve_step)
        report_step = skew_step(repo, base, state, result)
        if report_step is not None:
            steps.run("8. skew report", report_step)
    total = sum(result.steps.values())
    console.rule("[bold]done")
    console.print(f"total {total:.1f}s")
    return result


def skew_step(
    repo: Path, base: Path, state: dict[str, Any], result: DemoResult
) -> Callable[[], str] | None:
    """The skew report over the logged requests (None while the skew package is absent)."""
    try:
        from pipelines.skew import report as skew_report  # noqa: F401
    except ImportError:
        return None

    def run_report() -> str:
        from pipelines.skew.report import build_report

        summary = build_report(
            repo=repo,
            log_dir=state["log_dir"],
            training_set=base / "training_set.parquet",
            out=base / "skew_report.html",
        )
        result.exact_match = summary.exact_match_rate
        causes = sum(summary.causes.values())
        return (
            f"online/offline exact match {summary.exact_match_rate:.2%} over {summary.rows} "
            f"logged rows, {causes} attributed mismatches, {len(summary.breaches)} drift/schema "
            f"checks over threshold -> {base / 'skew_report.html'}"
        )

    return run_report
