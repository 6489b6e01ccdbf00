"""The completeness check: every expected key holds the view's event time, and a sample of
entities equals the offline latest rows field by field."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.materialize.encode import encode_chunks, encode_keys
from pipelines.materialize.plan import ViewPlan, _window, load_repo
from pipelines.materialize.redis_io import RedisWriter
from pipelines.materialize.reduce import read_latest
from pipelines.materialize.report import MaterializeReport, ViewReport
from store import redis_layout as rl


def verify(
    repo_path: str | Path,
    start: datetime | None,
    end: datetime,
    views: Sequence[str] | None = None,
    *,
    sample: int = 1000,
) -> MaterializeReport:
    """Completeness check of a past materialization: recompute the offline latest rows and
    compare them with Redis (key presence for all, values for a sample)."""
    t0 = time.perf_counter()
    target = load_repo(repo_path, views)
    writer = RedisWriter(target.redis_type, target.connection_string)
    report = MaterializeReport(start=start or end, end=end)
    try:
        for plan in target.plans:
            v0 = time.perf_counter()
            lo, hi = _window(plan, start, end)
            report.start = lo
            table, scanned = read_latest(plan, lo, hi)
            vr = ViewReport(view=plan.name, rows_scanned=scanned, expected=table.num_rows)
            _verify_view(writer, plan, target.project, table, sample, vr)
            vr.seconds = time.perf_counter() - v0
            report.views.append(vr)
    finally:
        writer.close()
    report.seconds = time.perf_counter() - t0
    return report


def _expected_python(value: Any, codec: str) -> Any:
    """Offline cell -> the Python value Feast's online read returns for it."""
    if value is None:
        return None
    if codec in ("double", "float"):
        f = float(value)
        if math.isnan(f):
            return None
        return float(np.float32(f)) if codec == "float" else f
    if codec == "unix_timestamp":
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            value = int(aware.timestamp())
        return datetime.fromtimestamp(int(value), tz=UTC)
    if codec == "string":
        return str(value)
    return value


def _verify_view(
    writer: RedisWriter,
    plan: ViewPlan,
    project: str,
    table: pa.Table,
    sample: int,
    vr: ViewReport,
) -> None:
    """Check that Redis holds the view's latest rows (``table``): the stored event time
    of every key, the values of a sample of entities."""
    ts_field = rl.timestamp_field(plan.online_name)
    present = 0
    newer: set[int] = set()
    lo = 0
    for enc in encode_chunks(table, plan, project):
        stored = writer.hget_many(enc.key_list(), ts_field)
        ours = zip(stored, enc.ts_values().to_pylist(), enc.ts_nanos, strict=True)
        for i, (raw, mine, nanos) in enumerate(ours, start=lo):
            if raw == mine:
                present += 1  # the very same Timestamp bytes
            elif raw:
                got = rl.decode_timestamp_nanos(raw)
                if got >= nanos:
                    present += 1
                    if got > nanos:
                        newer.add(i)
        lo += len(enc)
    vr.present = present
    n = table.num_rows
    picks = sorted(random.Random(0).sample(range(n), min(sample, n)))
    if not picks:
        return
    picked = table.take(picks)
    fields = [rl.feature_field(plan.online_name, f) for f in plan.features]
    stored_rows = writer.hmget_many(
        encode_keys(picked, plan, project).to_pylist(), fields + [ts_field]
    )
    for i, row, fetched in zip(picks, picked.to_pylist(), stored_rows, strict=True):
        vr.sampled += 1
        if i in newer:
            vr.superseded += 1
            continue
        if fetched[-1] is None:
            continue  # already counted as missing
        bad = []
        for j, (fname, codec) in enumerate(zip(plan.features, plan.feature_types, strict=True)):
            want = _expected_python(row[fname], codec)
            have = rl.decode_value(fetched[j])
            if want != have:
                bad.append(f"{fname}: offline {want!r} != redis {have!r}")
        if bad:
            keys = {k: row[k] for k in plan.join_keys}
            vr.mismatches.append(f"{keys}: " + "; ".join(bad))
        else:
            vr.verified += 1
