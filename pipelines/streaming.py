"""Fresh by streaming: events appended to a log reach the online window state through a
Spark Structured Streaming job.

The log is a Redis stream or a NATS JetStream stream (:mod:`pipelines.event_logs`): one
entry per raw event, its columns as JSON. :class:`EventLogSource` is a Spark Python data
source over it: an offset is an entry's offset in the log, a micro-batch is the range
``(previous end, end]`` (at most ``maxEventsPerBatch`` events), and a batch re-read after a
failure is the same range, so it holds the same events.

Each micro-batch goes to :meth:`store.window_state.WindowState.push` for every window set
of the project: the set's value functions (the one executor), then the idempotent ZADDs
of the window state. Spark records a batch's end offset in the checkpoint before running
it and its commit after; a job killed in between re-runs the batch on restart, which
writes members already there (no double count: CONTRACT rule 27). The result is
exactly-once in effect: the state after a kill and a restart equals a clean run's.

Freshness (entry append time -> written to the state) is measured per event and kept in
``<checkpoint>/freshness.json`` (latest batch) for reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows

from pipelines.event_logs import EventLog, open_log
from transforms.errors import ConfigError

SOURCE_NAME = "skewless_event_log"


@dataclass(frozen=True)
class _Range(InputPartition):
    start: str  # exclusive
    end: str  # inclusive


class _StreamReader(DataSourceStreamReader):
    def __init__(self, options: Mapping[str, str]) -> None:
        self.url = options.get("url") or "redis://127.0.0.1:6379/0"
        self.stream = options.get("stream") or ""
        if not self.stream:
            raise ConfigError("option 'stream' (the stream of raw events) is required")
        self.max_events = int(options.get("maxEventsPerBatch", "50000"))
        self.parts = int(options.get("readPartitions", "2"))  # one per core of local[2]
        self.subject = options.get("subject") or None  # a JetStream subject filter
        self._log: EventLog | None = None

    @property
    def log(self) -> EventLog:
        if self._log is None:
            self._log = open_log(self.url, self.stream, self.subject)
        return self._log

    def initialOffset(self) -> dict[str, str]:  # noqa: N802 - Spark's interface
        return {"id": self.log.initial()}

    def getDefaultReadLimit(self) -> Any:  # noqa: N802 - Spark's interface
        return ReadMaxRows(self.max_events)

    def latestOffset(self, start: dict[str, str], limit: Any) -> dict[str, str]:  # noqa: N802
        if isinstance(limit, ReadAllAvailable):
            last = self.log.last()
            return {"id": last} if last is not None else start
        count = getattr(limit, "max_rows", self.max_events)
        return {"id": self.log.end_after(start["id"], count)}

    def partitions(self, start: dict[str, str], end: dict[str, str]) -> Sequence[_Range]:
        if start["id"] == end["id"]:
            return []
        return [_Range(a, b) for a, b in self.log.split(start["id"], end["id"], self.parts)]

    def read(self, partition: InputPartition) -> Iterator[tuple[str, int, str]]:
        assert isinstance(partition, _Range)
        log = open_log(self.url, self.stream, self.subject)
        try:
            for offset, ms, event in log.read(partition.start, partition.end):
                yield offset, ms, event.decode()
        finally:
            log.close()

    def commit(self, end: dict[str, str]) -> None:
        """The log is the user's: nothing is trimmed or acknowledged."""

    def stop(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class EventLogSource(DataSource):
    """``spark.readStream.format("skewless_event_log").option("url", url)
    .option("stream", name)``: a Redis stream (``redis://`` URL) or a NATS JetStream
    stream (``nats://``); columns ``id`` (the entry's offset), ``appended_ms`` (its append
    time) and ``event`` (JSON)."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return "id string, appended_ms long, event string"

    def streamReader(self, schema: Any) -> _StreamReader:  # noqa: N802 - Spark's interface
        del schema
        return _StreamReader(self.options)


@dataclass
class StreamReport:
    batches: int = 0
    events: int = 0
    placed: int = 0
    freshness_ms: list[float] = field(default_factory=list)  # per event of the last batches


def run_stream(  # noqa: PLR0913 (the stream command's options, keyword-only past checkpoint)
    repo: str | Path,
    stream: str,
    checkpoint: str | Path,
    *,
    redis_url: str,
    log_url: str | None = None,
    subject: str | None = None,
    window_sets: Sequence[str] | None = None,
    available_now: bool = False,
    trigger_ms: int = 100,
    max_events: int = 50_000,
    master: str = "local[2]",
    on_batch: Callable[[int, int, StreamReport, dict[str, float]], None] | None = None,
) -> StreamReport:
    """Run the streaming job for the project at ``repo`` until stopped (or, with
    ``available_now``, until the events appended before the start are written). The
    events are read from ``stream`` in the log at ``log_url`` (a Redis stream, by default
    in the online store's Redis, or NATS JetStream for a ``nats://`` URL, its messages
    on ``subject`` when given); the window state is written to ``redis_url``. ``on_batch(batch id, events, report, lag summary)``
    is called after each micro-batch is written (the command prints progress with it)."""
    import redis

    from pipelines.project import load_project
    from pipelines.spark_session import get_spark
    from store.window_state import WindowState

    project = load_project(repo)
    sets = [ws for ws in project.window_sets if window_sets is None or ws.name in window_sets]
    if not sets:
        raise ConfigError(f"{repo}: no window set to stream (known: {[w.name for w in project.window_sets]})")  # fmt: skip
    source_url = log_url or redis_url
    log = open_log(source_url, stream, subject)
    try:
        last = log.last()  # before Spark starts: a log that cannot be read fails fast
    except BaseException:
        log.close()
        raise
    target = last if available_now else None
    states = [WindowState(feast_project(Path(repo)), ws) for ws in sets]
    client = redis.Redis.from_url(redis_url)
    report = StreamReport()
    ckpt = Path(checkpoint)
    ckpt.mkdir(parents=True, exist_ok=True)

    def write_batch(batch: Any, batch_id: int) -> None:
        table = batch.toArrow()
        if not table.num_rows:
            return
        rows = [orjson.loads(e) for e in table.column("event").to_pylist()]
        for state in states:
            report.placed += state.push(client, rows)
        now_ms = time.time() * 1000
        lags = [now_ms - ms for ms in table.column("appended_ms").to_pylist()]
        report.batches += 1
        report.events += len(rows)
        report.freshness_ms = lags[-10_000:]
        lag = _summary(lags)
        (ckpt / "freshness.json").write_text(
            json.dumps({"batch": batch_id, "events": len(rows), "lag_ms": lag})
        )
        if on_batch is not None:
            on_batch(batch_id, len(rows), report, lag)

    spark = get_spark(master, "skewless-stream")
    spark.dataSource.register(EventLogSource)
    events = (
        spark.readStream.format(SOURCE_NAME)
        .option("url", source_url)
        .option("stream", stream)
        .option("maxEventsPerBatch", str(max_events))
        .option("subject", subject or "")
        .load()
    )
    writer = events.writeStream.foreachBatch(write_batch).option(
        "checkpointLocation", str(ckpt / "spark")
    )
    query = writer.trigger(processingTime=f"{trigger_ms} milliseconds").start()
    # Catch-up: Spark runs a Python source under Trigger.AvailableNow as one batch (only
    # the batch a crash left uncommitted, after a restart), so the job polls instead and
    # stops once a committed batch ends at the log's last entry of the start.
    try:
        while query.isActive:
            query.awaitTermination(0.2)
            if available_now and (target is None or _done(log, query.lastProgress, target)):
                break
    finally:
        if query.isActive:
            query.stop()
        log.close()
    return report


def _done(log: EventLog, progress: Any, target: str) -> bool:
    """Whether the last finished batch ended at or past ``target``."""
    if not progress:
        return False
    for source in progress.get("sources", []):
        end = source.get("endOffset")
        if isinstance(end, str):
            end = json.loads(end)
        if isinstance(end, dict) and "id" in end and log.order(str(end["id"])) >= log.order(target):
            return True
    return False


def feast_project(repo: Path) -> str:
    """The project name in the repo's feature_store.yaml (the one the server reads)."""
    path = repo / "feature_store.yaml"
    try:
        name = yaml.safe_load(path.read_text()).get("project")
    except (OSError, AttributeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the project name: {exc}") from None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: field 'project' is missing")
    return name


def _summary(lags: Sequence[float]) -> dict[str, float]:
    ordered = sorted(lags)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": ordered[-1]}
