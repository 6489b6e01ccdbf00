"""``skewless demo --repo DIR``: the whole promise on a project, with the time of each step.

generate sources (the project's declared generator, when it has one) -> batch features
(Spark or Beam) -> feast apply -> materialize into Redis -> point-in-time training set ->
train a model (when the project names a label) -> start the lookup server -> send requests
made from the project's own rows -> skew report over the logged requests. ``fault``
injects one kind of fault on purpose, so the report can be seen catching it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from rich.console import Console

from pipelines.local_redis import free_port, redis_for_run
from transforms.errors import SchemaError, StoreError, StoreUnavailable

FAULTS = ("drift", "missing-keys", "stale-artifact")
_FAULT_SHARE = 0.2  # requests hit by missing-keys


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
        self.console.rule(f"[bold]{len(self.result.steps) + 1}. {name}")
        t0 = time.perf_counter()
        with self.console.status(name):
            summary = fn()
        seconds = time.perf_counter() - t0
        self.result.steps[name] = seconds
        self.console.print(f"[green]✓[/] {summary}  [dim]({seconds:.1f}s)[/]")


def model_columns(features: list[str], table: pa.Table) -> list[str]:
    """The service's numeric features, by their training-set column names."""
    names = [f.split(":")[1] for f in features]
    return [
        n
        for n in names
        if n in table.schema.names
        and (
            pa.types.is_integer(table.schema.field(n).type)
            or pa.types.is_floating(table.schema.field(n).type)
            or pa.types.is_boolean(table.schema.field(n).type)
        )
    ]


def train(table: pa.Table, columns: list[str], label: str, timestamp: str) -> tuple[Any, float]:
    """Gradient boosting on the service's features; AUC on the last 20% in event time."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    order = pc.sort_indices(table, [(timestamp, "ascending")])
    table = table.take(order)
    x = np.column_stack(
        [table.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False) for c in columns]
    )
    y = table.column(label).to_numpy(zero_copy_only=False).astype(int)
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


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _request_bodies(
    rows: pa.Table, keys: list[str], fields: list[str], n: int, fault: str | None, at: datetime
) -> list[dict[str, Any]]:
    """``n`` requests, each one of the project's own rows (its keys and request fields), so
    traffic follows the training distribution; ``drift`` scales numeric fields by 3. Each
    asks as of ``at``, the end of the generated events: served at the wall clock instead,
    the windows would lose the minutes since the top of the hour and the drift checks
    would depend on when the demo runs."""
    rng = np.random.default_rng(11)
    picks = rng.integers(0, rows.num_rows, n) if rows.num_rows else np.array([], np.int64)
    sample = rows.select([*keys, *fields]).take(picks).to_pylist()
    bodies = []
    for row in sample:
        if fault == "drift":
            for f in fields:
                v = row[f]
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    row[f] = type(v)(v * 3)
        entities = {c: [_json_value(v)] for c, v in row.items()}
        bodies.append({"entities": entities, "request_time": at.isoformat()})
    return bodies


@dataclass
class DemoPlan:
    """What the demo runs on: the project, its service, the source rows it trains on and
    sends as requests, and the columns that place them."""

    repo: Path
    service: str
    source: str
    timestamp: str
    keys: list[str]
    label: str | None


def plan_demo(repo: Path) -> DemoPlan:
    from pipelines.project import load_project

    project = load_project(repo)
    cfg = project.config.demo
    services = project.services
    service = cfg.service or (next(iter(services)) if len(services) == 1 else None)
    if service is None or service not in services:
        raise SchemaError(
            f"{project.root / 'skewless.yaml'}: field 'demo.service': name one of "
            f"{', '.join(services)}"
        )
    source = project.source_of(project.definition(services[service].feature_sets[0]))
    src = project.config.sources[source]
    return DemoPlan(
        repo=project.root,
        service=service,
        source=source,
        timestamp=src.event_timestamp,
        keys=list(src.entities),
        label=cfg.label,
    )


def demo(
    repo: Path,
    engine: str = "spark",
    rows: int = 200_000,
    days: int = 30,
    requests: int = 500,
    fault: str | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run the whole chain on the project at ``repo``; ``fault`` is one of ``FAULTS``."""
    if fault is not None and fault not in FAULTS:
        raise SchemaError(f"--fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    run = _DemoRun(Path(repo), engine, rows, days, requests, fault, console or Console())
    with redis_for_run() as redis_url:
        os.environ["REDIS_URL"] = redis_url
        run.redis_url = redis_url
        run.run()
    total = sum(run.result.steps.values())
    run.console.rule("[bold]done")
    run.console.print(f"total {total:.1f}s")
    return run.result


class _DemoRun:
    """One demo run: the steps of the chain, sharing what earlier steps produced."""

    def __init__(
        self,
        repo: Path,
        engine: str,
        rows: int,
        days: int,
        requests: int,
        fault: str | None,
        console: Console,
    ) -> None:
        from pipelines.project import load_project

        self.engine, self.rows, self.days, self.requests = engine, rows, days, requests
        self.fault, self.console = fault, console
        self.result = DemoResult()
        self.plan = plan_demo(repo)
        self.repo = self.plan.repo
        self.project = load_project(self.repo)
        self.base = self.project.data_dir
        self.source_path = Path(self.project.source_path(self.plan.source))
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.start = now - timedelta(days=days)
        self.state: dict[str, Any] = {}
        self.redis_url = ""

    def run(self) -> None:
        steps = Steps(self.console, self.result)
        plan = self.plan
        self.console.print(f"project: {self.repo}   Redis: {self.redis_url}   data: {self.base}")
        if self.project.config.generator is not None:
            steps.run("generate sources", self.generate_step)
        steps.run(f"batch features ({self.engine})", self.batch_step)
        steps.run("register in Feast", self.apply_step)
        steps.run("materialize into Redis", self.materialize_step)
        steps.run("point-in-time training set", self.training_step)
        if plan.label is not None:
            steps.run("train model", self.model_step)
        steps.run("serve requests" + (" and score them" if plan.label else ""), self.serve_step)
        if self.fault == "stale-artifact":
            steps.run("fault: stale artifact", self.stale_artifact_step)
        steps.run("skew report", skew_step(self.repo, self.base, self.state, self.result))

    def generate_step(self) -> str:
        out = self.source_path.parent
        report = self.project.generator()(self.rows, out, seed=7, start=self.start, days=self.days)
        n = getattr(report, "rows", self.rows)
        return f"{n:,} rows of synthetic sources -> {out}"

    def batch_step(self) -> str:
        from pipelines.batch import run

        r = run(self.engine, self.project, self.base)
        return f"{self.engine}: {r.rows_in:,} rows in, {r.rows_quarantined:,} quarantined, " + (
            ", ".join(f"{v} {n:,} rows" for v, n in sorted(r.rows_out.items()))
        )

    def apply_step(self) -> str:
        from pipelines.apply import apply

        m = apply(self.repo, self.redis_url)
        self.state["manifest"] = m
        return (
            f"feast apply: {len(m.views)} views, {len(m.request_transforms)} on-demand "
            f"views, service {self.plan.service}"
        )

    def materialize_step(self) -> str:
        from pipelines.materialize import materialize, reset_online_project

        removed = reset_online_project(self.repo)  # the data may be regenerated: start clean
        r = materialize(self.repo, None, datetime.now(UTC), verify=True, show_progress=False)
        if not r.ok:
            raise StoreError("materialization verification found lost entities")
        written = sum(v.written for v in r.views)
        events = self.backfill_windows()
        if self.fault == "missing-keys":
            self.state["deleted"] = _delete_some_keys(
                self.state["manifest"], self.placed_rows(), self.redis_url
            )
        return (
            f"{removed:,} keys of the previous run removed, {r.rows_scanned:,} rows "
            f"scanned, {written:,} entity keys written, verified"
            + (f"; {events:,} events backfilled into the window state" if events else "")
            + (
                f"; fault: {self.state['deleted']:,} keys deleted"
                if self.fault == "missing-keys"
                else ""
            )
        )

    def backfill_windows(self) -> int:
        """Every window set's source into the online window state (what `skewless
        materialize` does; the demo's stand-in for `skewless stream` over the event log)."""
        from pipelines.window_backfill import backfill_windows

        return sum(backfill_windows(self.repo).values())

    def placed_rows(self) -> pa.Table:
        """The source's rows with every key present (read once; the training entity
        rows and the requests come from them)."""
        if "rows" not in self.state:
            raw = ds.dataset(str(self.source_path), format="parquet").to_table()
            placed = np.ones(raw.num_rows, dtype=bool)
            for k in self.plan.keys:
                placed &= raw.column(k).is_valid().to_numpy(zero_copy_only=False)
            self.state["rows"] = raw.filter(pa.array(placed))
        rows: pa.Table = self.state["rows"]
        return rows

    def training_step(self) -> str:
        from pipelines.training_data import build_training_set

        entities = self.placed_rows()
        out = self.base / "training_set.parquet"
        table = build_training_set(
            self.repo, entities, out, self.plan.service, timestamp_column=self.plan.timestamp
        )
        self.state["training"] = table
        return f"{entities.num_rows:,} entity rows in, {table.num_rows:,} rows out -> {out}"

    def model_step(self) -> str:
        assert self.plan.label is not None
        table = self.state["training"]
        columns = model_columns(self.state["manifest"].services[self.plan.service].features, table)
        model, auc = train(table, columns, self.plan.label, self.plan.timestamp)
        self.state["model"], self.state["columns"] = model, columns
        self.result.auc = auc
        (self.base / "model.pkl").write_bytes(pickle.dumps((model, columns)))
        return f"HistGradientBoosting on {len(columns)} features: validation AUC {auc:.3f}"

    def serve_step(self) -> str:
        import httpx

        manifest = self.state["manifest"]
        fields = sorted(
            {
                f
                for spec in manifest.request_transforms.values()
                for f in spec.request_schema
                if f in self.state["rows"].schema.names and f not in self.plan.keys
            }
        )
        bodies = _request_bodies(
            self.state["rows"],
            self.plan.keys,
            fields,
            self.requests,
            self.fault,
            self.start + timedelta(days=self.days),
        )
        # a directory of this run's own: logs of the project's server are never touched
        log_dir = self.base / "logs" / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
        latencies: list[float] = []
        scores: list[float] = []
        model, columns = self.state.get("model"), self.state.get("columns", [])
        with (
            lookup_server(self.repo, self.redis_url, log_dir) as url,
            httpx.Client(base_url=url) as http,
        ):
            for body in bodies:
                t0 = time.perf_counter()
                response = http.post(f"/v1/features/{self.plan.service}", json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                response.raise_for_status()
                if model is not None:
                    features = response.json()["features"]
                    vector = [
                        np.nan if features[c][0] is None else float(features[c][0]) for c in columns
                    ]
                    scores.append(float(model.predict_proba(np.array([vector]))[0, 1]))
        self.result.served = len(bodies)
        self.result.latency_ms = {
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99)),
        }
        self.state["log_dir"] = log_dir
        scored = f", mean score {np.mean(scores):.3f}" if scores else ""
        return (
            f"{len(bodies)} requests{' (drifted on purpose)' if self.fault == 'drift' else ''}, "
            f"HTTP round trip p50 {self.result.latency_ms['p50']:.2f} ms, "
            f"p99 {self.result.latency_ms['p99']:.2f} ms{scored}"
        )

    def stale_artifact_step(self) -> str:
        from pipelines.apply import apply
        from transforms.statistics import analyze_table

        # statistics recomputed on other data (the older half of the rows) after the
        # requests were served, and registered: the logs no longer match the artifact
        rows = self.state["rows"].sort_by(self.plan.timestamp)
        half = rows.slice(0, rows.num_rows // 2)
        for fs in self.project.request_sets:
            if fs.analyzers and {a.column for a in fs.analyzers.values()} <= set(half.schema.names):
                analyze_table(fs, half).save(self.base / "artifacts" / f"{fs.name}.json")
        apply(self.repo, self.redis_url)
        return "request-time statistics recomputed on the older half of the rows, applied"


def _delete_some_keys(manifest: Any, rows: pa.Table, redis_url: str) -> int:
    """The missing-keys fault: delete the online hash of every ``1/_FAULT_SHARE``-th entity
    of each view, keys built from the entities themselves (Feast's layout), so nothing of
    another project is ever touched."""
    import redis

    from store.redis_layout import EntityKeyEncoder

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    for view in manifest.views.values():
        keys = list(view.entities)
        if not set(keys) <= set(rows.schema.names):
            continue
        columns = (rows.column(k).to_pylist() for k in keys)
        entities = sorted({e for e in zip(*columns, strict=True) if None not in e})
        encoder = EntityKeyEncoder(manifest.project, keys, [view.entities[k] for k in keys])
        doomed = [encoder.encode(e) for e in entities[:: int(1 / _FAULT_SHARE)]]
        for i in range(0, len(doomed), 10_000):
            deleted += cast(int, client.delete(*doomed[i : i + 10_000]))  # sync client
    return deleted


def skew_step(
    repo: Path, base: Path, state: dict[str, Any], result: DemoResult
) -> Callable[[], str]:
    """The skew report over the logged requests."""

    def run_report() -> str:
        from pipelines.skew.report import build_report

        summary = build_report(
            repo=repo,
            log_dir=state["log_dir"],
            training_set=base / "training_set.parquet",
            out=base / "skew_report.html",
        )
        result.exact_match = summary.exact_match_rate
        causes = ", ".join(f"{c} {n}" for c, n in summary.causes.items() if n) or "none"
        breaches = "; ".join(f"{b['feature']} {b['check']}" for b in summary.breaches[:5])
        return (
            f"online/offline exact match {summary.exact_match_rate:.2%} over {summary.rows} "
            f"logged rows; mismatch causes: {causes}; {len(summary.breaches)} drift/schema "
            f"checks over threshold{': ' + breaches if breaches else ''} "
            f"-> {base / 'skew_report.html'}"
        )

    return run_report
