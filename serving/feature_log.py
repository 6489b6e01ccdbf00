"""Sampled, asynchronous feature logging to Parquet (what was served, for skew audits).

The request path only samples and does ``queue.put_nowait`` (never blocks, never raises:
a full queue drops the record and counts it). One writer thread turns records into one
row per entity: ``request_ts`` (UTC), ``service``, the entity keys, the request data, every
served value, ``<feature>__status``, ``<feature>__event_ts`` (event time of the served row
for view features; for window features the newest event the state held before the time
they were computed as of, which is ``window_ts``), the transform ``fingerprints`` and ``artifact_hashes`` (JSON), then writes
``<log-dir>/<service>/part-<utc time>-<pid>-<seq>.parquet`` via a temporary file and
``os.replace`` (readers never see half a file). Files roll when ``rows_per_file`` rows are
buffered or ``roll_seconds`` passed; ``close()`` flushes what is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.catalog import Plan
from serving.decode import STATUS_NAMES
from serving.lookup import Result
from serving.metrics import Metrics

_log = logging.getLogger("skewless.serving")

_ARROW_TYPES = {
    "int64": "int64",
    "int32": "int32",
    "double": "float64",
    "float64": "float64",
    "float": "float32",
    "string": "string",
    "bool": "bool_",
    "bytes": "binary",
}


def _plan_dir(plan: Plan) -> str:
    if plan.name:
        return plan.name
    digest = hashlib.sha1("\0".join(o[0] for o in plan.outputs).encode()).hexdigest()[:10]
    return f"features-{digest}"


class FeatureLogger:
    """Bounded queue + writer thread; ``offer`` is the only call on the request path."""

    def __init__(
        self,
        log_dir: str | Path,
        sample_rate: float,
        metrics: Metrics,
        max_queue: int = 10_000,
        rows_per_file: int = 50_000,
        roll_seconds: float = 60.0,
        entity_types: dict[str, str] | None = None,
        request_types: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(log_dir)
        self.sample_rate = sample_rate
        self.metrics = metrics
        self.queue: queue.Queue[tuple[int, Result] | None] = queue.Queue(max_queue)
        self.rows_per_file = rows_per_file
        self.roll_seconds = roll_seconds
        self.entity_types = entity_types or {}
        self.request_types = request_types or {}
        self.dropped = 0
        self.written_rows = 0
        self.files: list[Path] = []
        self._seq = 0
        self._rand = random.random
        self._thread = threading.Thread(target=self._run, name="skewless-feature-log", daemon=True)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def offer(self, result: Result) -> None:
        """Sample and enqueue; drops (and counts) when the queue is full. Never raises."""
        if self.sample_rate < 1.0 and self._rand() >= self.sample_rate:
            return
        try:
            self.queue.put_nowait((time.time_ns() // 1000, result))
        except queue.Full:
            self.dropped += 1
            self.metrics.log_dropped.inc()

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything queued and stop the writer (graceful shutdown)."""
        if not self._thread.is_alive():
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        buffers: dict[str, list[tuple[int, Result]]] = {}
        rows: dict[str, int] = {}
        started: dict[str, float] = {}
        stop = False
        while not stop:
            try:
                item = self.queue.get(timeout=min(1.0, self.roll_seconds))
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                stop = True
            elif item:
                key = _plan_dir(item[1].plan)
                buffers.setdefault(key, []).append(item)
                rows[key] = rows.get(key, 0) + item[1].n
                started.setdefault(key, time.monotonic())
            now = time.monotonic()
            for key in list(buffers):
                if (
                    stop
                    or rows[key] >= self.rows_per_file
                    or now - started[key] >= self.roll_seconds
                ):
                    batch = buffers.pop(key)
                    rows.pop(key)
                    started.pop(key)
                    try:
                        self._write(key, batch)
                    except Exception:  # a failed write loses the batch, never the server
                        _log.exception(
                            "feature log: writing %d records to %s failed", len(batch), key
                        )
                        self.dropped += len(batch)
                        self.metrics.log_dropped.inc(len(batch))

    def _arrow_types(self, plan: Plan, view_outputs: list[str]) -> dict[str, Any]:
        """Arrow type of each logged column whose declared type maps to one."""
        import pyarrow as pa

        types: dict[str, Any] = {
            "request_ts": pa.timestamp("us", tz="UTC"),
            "window_ts": pa.timestamp("us", tz="UTC"),
        }
        for name in view_outputs:
            types[f"{name}__event_ts"] = pa.timestamp("us", tz="UTC")
        for name, tn in {**self.entity_types, **self.request_types, **plan.output_types}.items():
            if tn in _ARROW_TYPES:
                types[name] = getattr(pa, _ARROW_TYPES[tn])()
            elif tn in ("timestamp", "unix_timestamp"):
                types[name] = pa.timestamp("us", tz="UTC")
        return types

    @staticmethod
    def _arrays(cols: dict[str, list[Any]], types: dict[str, Any]) -> dict[str, Any]:
        """Each column as an Arrow array of its type; as strings when the values don't fit."""
        import pyarrow as pa

        arrays = {}
        for name, values in cols.items():
            t = types.get(name)
            try:
                arrays[name] = pa.array(values, t) if t is not None else pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                arrays[name] = pa.array(
                    [None if v is None else str(v) for v in values], pa.string()
                )
        return arrays

    def _write(self, key: str, batch: list[tuple[int, Result]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = batch[0][1]
        plan = first.plan
        cols: dict[str, list[Any]] = {"request_ts": [], "service": []}
        for name in first.entities:
            cols[name] = []
        for name in first.request_data:
            cols.setdefault(name, [])
        out_names = [o[0] for o in plan.outputs]
        for name in out_names:
            cols[name] = []
            cols[f"{name}__status"] = []
        view_outputs = [o[0] for o in plan.outputs if o[1] in ("view", "window")]
        for name in view_outputs:
            cols[f"{name}__event_ts"] = []  # event time of the served row: freshness audits
        if plan.windows:
            cols["window_ts"] = []  # what window features were computed as of
        cols["fingerprints"] = []
        cols["artifact_hashes"] = []
        fp = json.dumps(plan.fingerprints, sort_keys=True)
        hashes = json.dumps(plan.artifact_hashes, sort_keys=True)
        service = plan.name or key
        n_ent = len(plan.entity_names)
        for ts_us, r in batch:
            n = r.n
            cols["request_ts"].extend([ts_us] * n)
            cols["service"].extend([service] * n)
            for name, values in r.entities.items():
                cols[name].extend(values)
            for name, values in r.request_data.items():
                cols[name].extend(values)
            for i, (name, out) in enumerate(zip(out_names, plan.outputs, strict=True), start=n_ent):
                cols[name].extend(r.values[i])
                cols[f"{name}__status"].extend(STATUS_NAMES[s] for s in r.statuses[i])
                if out[1] in ("view", "window"):
                    cols[f"{name}__event_ts"].extend(
                        None if (sec, nanos) == (0, 0) else sec * 1_000_000 + nanos // 1000
                        for sec, nanos in r.timestamps[i]
                    )
            if plan.windows:
                cols["window_ts"].extend([r.at_micros] * n)
            cols["fingerprints"].extend([fp] * n)
            cols["artifact_hashes"].extend([hashes] * n)
        table = pa.table(self._arrays(cols, self._arrow_types(plan, view_outputs)))
        folder = self.dir / key
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = folder / f"part-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
        tmp = folder / f".{final.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self.files.append(final)
        self.written_rows += table.num_rows
        self.metrics.log_rows.inc(table.num_rows)
