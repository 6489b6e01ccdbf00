"""Benchmark: ``feast materialize`` (Feast SDK) vs skewless ``materialize`` on the same data.

    .venv/bin/python -m bench.materialize --rows 1000000 --entities 100000

Generates a Parquet file and a throwaway Feast repo in a temp dir, then materializes it
with Feast and with ours in ``--rounds`` alternating rounds (the project's keys cleared
before each; medians reported, each round printed), checks the Redis state after ours is
byte-identical to Feast's, and prints a markdown table. Uses a dedicated DB index
(``--db``) and only ever deletes keys ending with its own random project name.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.results import Measure, write_json
from pipelines.materialize import clear_project, project_keys, redis_client

BASE = datetime(2024, 1, 1, tzinfo=UTC)
WINDOW_HOURS = 72  # rows are spread over [BASE - 6h, BASE + 78h]; the window is 72h
CITIES = ["Paris", "São Paulo", "東京", "", "New York", "Zürich", "🚕 town", "x" * 200]


def window() -> tuple[datetime, datetime]:
    """The materialization window used by the benchmark and the tests (inclusive)."""
    return BASE, BASE + timedelta(hours=WINDOW_HOURS)


def generate(rows: int, entities: int, seed: int = 0) -> pa.Table:
    """Driver stats with duplicates per entity, event-time ties broken by created time,
    rows outside the window, NaN/nulls, negative and large ids, unicode strings."""
    rng = np.random.default_rng(seed)
    pool = (np.arange(entities, dtype=np.int64) - entities // 3) * 1_000_003
    pool[-1] = 2**62 + 7
    ent = rng.integers(0, entities, rows)
    ent[: min(rows, entities)] = rng.permutation(entities)[: min(rows, entities)]
    hours = rng.integers(-6, WINDOW_HOURS + 7, rows)  # coarse: many event-time ties
    event_us = BASE.timestamp() * 1_000_000 + hours * 3_600_000_000
    created_us = event_us + rng.integers(0, 3_600_000_000, rows)
    conv = rng.random(rows)
    conv[rng.random(rows) < 0.02] = np.nan
    conv_mask = rng.random(rows) < 0.01
    trips = rng.integers(-(2**40), 2**40, rows)
    trips_mask = rng.random(rows) < 0.01
    city_idx = rng.integers(0, len(CITIES), rows)
    city = np.array(CITIES, dtype=object)[city_idx]
    city[rng.random(rows) < 0.01] = None
    active = rng.random(rows) < 0.5
    active_mask = rng.random(rows) < 0.01
    return pa.table(
        {
            "driver_id": pa.array(pool[ent]),
            "event_timestamp": pa.array(event_us.astype("int64"), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "created": pa.array(created_us.astype("int64"), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "conv_rate": pa.array(conv, mask=conv_mask),
            "trips": pa.array(trips, mask=trips_mask),
            "city": pa.array(city.tolist(), pa.string()),
            "active": pa.array(active, mask=active_mask),
        }
    )


def build_repo(
    repo: Path,
    table: pa.Table,
    connection_string: str,
    project: str | None = None,
    key_ttl_seconds: int | None = None,
    redis_type: str = "redis",
) -> Any:
    """Write feature_store.yaml + Parquet into ``repo`` and apply an Entity, a FileSource and
    a FeatureView with the Feast SDK; returns the FeatureStore. ``redis_type`` is Feast's
    online-store ``redis_type`` (``redis`` or ``redis_cluster``)."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String

    from pipelines.feast_objects import write_feature_store_yaml

    project = project or f"sk_{uuid.uuid4().hex[:10]}"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "data").mkdir(exist_ok=True)
    pq.write_table(table, repo / "data" / "driver_stats.parquet", row_group_size=200_000)
    write_feature_store_yaml(
        repo,
        project,
        connection_string,
        redis_type=redis_type,
        key_ttl_seconds=key_ttl_seconds,
    )
    store = FeatureStore(repo_path=str(repo))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    source = FileSource(
        name="driver_stats_source",
        path="data/driver_stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    view = FeatureView(
        name="driver_stats",
        entities=[driver],
        ttl=timedelta(days=2),
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="conv_rate", dtype=Float64),
            Field(name="trips", dtype=Int64),
            Field(name="city", dtype=String),
            Field(name="active", dtype=Bool),
        ],
        online=True,
        source=source,
    )
    store.apply([driver, source, view])
    return store


def snapshot(client: Any, project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the project, for byte-for-byte comparison."""
    keys = project_keys(client, project)
    out: dict[bytes, dict[bytes, bytes]] = {}
    for i in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for k in keys[i : i + 5000]:
            pipe.hgetall(k)
        for k, h in zip(keys[i : i + 5000], pipe.execute(), strict=True):
            out[k] = h
    return out


def redis_floor(repo: Path, chunk: int = 5000) -> tuple[float, float]:
    """Seconds Redis alone needs for our exact commands on new keys: (one EXISTS per chunk
    of ``chunk`` keys, HSET of every key), sent as pre-built pipelined payloads on one
    connection, with no Parquet reading or encoding in the timing. The keys must not exist
    yet."""
    from pipelines.materialize import (
        RedisWriter,
        _exists_payload,
        _hset_payload,
        _window,
        encode_chunks,
        load_repo,
        read_latest,
    )

    target = load_repo(repo)
    plan = target.plans[0]
    table, _ = read_latest(plan, *_window(plan, *window()))
    chunks = list(encode_chunks(table, plan, target.project, chunk))
    reads = [_exists_payload(enc) for enc in chunks]
    hsets = [_hset_payload(enc, enc.bodies(), None, None) for enc in chunks]
    writer = RedisWriter(target.redis_type, target.connection_string)
    try:
        t0 = time.perf_counter()
        for read in reads:
            writer._raw(read, 1)
        t1 = time.perf_counter()
        for payload, n_replies in hsets:
            writer._raw(bytes(payload), n_replies)
        t2 = time.perf_counter()
    finally:
        writer.close()
    return t1 - t0, t2 - t1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--redis", default="127.0.0.1:6379", help="host:port")
    parser.add_argument("--db", type=int, default=13, help="dedicated Redis DB index")
    parser.add_argument("--skip-feast", action="store_true", help="time only ours")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating Feast/ours rounds (medians reported)"
    )
    parser.add_argument("--json", help="also write the measurements here (for skewless bench)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time Redis alone on the same pre-built EXISTS/HSET payload (a lower bound)",
    )
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.markdown import Markdown

    from pipelines.materialize import materialize

    console = Console()
    conn = f"{args.redis},db={args.db}"
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-"))
    client = redis_client(conn)
    project = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        table = generate(args.rows, args.entities)
        store = build_repo(tmp / "repo", table, conn, project=project)
        start, end = window()
        rows: list[tuple[str, float]] = []
        feast_state = None
        times: dict[str, list[float]] = {"feast": [], "ours": []}
        for r in range(args.rounds):  # alternate, so drift in machine load hits both
            if not args.skip_feast:
                clear_project(client, project)
                t0 = time.perf_counter()
                store.materialize(start_date=start, end_date=end)
                times["feast"].append(time.perf_counter() - t0)
                if feast_state is None:
                    feast_state = snapshot(client, project)
            clear_project(client, project)
            t0 = time.perf_counter()
            report = materialize(
                tmp / "repo", start, end, show_progress=False, record_interval=True
            )
            times["ours"].append(time.perf_counter() - t0)
            console.print(
                f"round {r + 1}: "
                + (f"feast {times['feast'][-1]:.2f} s, " if times["feast"] else "")
                + f"skewless {times['ours'][-1]:.3f} s"
            )
        if times["feast"]:
            rows.append(("feast materialize (SDK), median", statistics.median(times["feast"])))
        rows.append(("skewless materialize, median", statistics.median(times["ours"])))
        t0 = time.perf_counter()
        report = materialize(
            tmp / "repo", start, end, verify=True, show_progress=False, record_interval=False
        )
        rows.append(("skewless rerun + verify (no-op writes)", time.perf_counter() - t0))
        ours = snapshot(client, project)
        same = "n/a" if feast_state is None else str(feast_state == ours)
        if args.floor:
            clear_project(client, project)
            exists_s, hset_s = redis_floor(tmp / "repo")
            rows.append(("Redis floor: pre-built EXISTS payload only", exists_s))
            rows.append(("Redis floor: pre-built HSET payload only", hset_s))
            rows.append(("Redis floor: EXISTS + HSET", exists_s + hset_s))
            if snapshot(client, project) != ours:
                raise SystemExit("floor run wrote different bytes than materialize")
        base = rows[0][1]
        lines = [
            f"**{args.rows:,} rows, {args.entities:,} entities, {len(ours):,} keys written; "
            f"Redis identical to Feast's: {same}; verify lost={report.views[0].lost}**",
            "",
            "| run | seconds | rows/s | speed-up vs first |",
            "|---|---:|---:|---:|",
        ]
        for name, sec in rows:
            lines.append(f"| {name} | {sec:.2f} | {args.rows / sec:,.0f} | {base / sec:.1f}x |")
        feast_s = rows[0][1] if feast_state is not None else None
        ours_s = rows[1 if feast_state is not None else 0][1]
        write_json(
            [
                Measure(
                    "materialization",
                    f"{args.rows:,} rows -> Redis",
                    "rows/s",
                    args.rows / ours_s,
                    None if feast_s is None else args.rows / feast_s,
                    higher_is_better=True,
                ),
                Measure("materialization", "wall time", "s", ours_s, feast_s),
            ],
            args.json,
        )
        console.print(Markdown("\n".join(lines)))
        print("\n".join(lines))
        return 0 if same in ("True", "n/a") and report.ok else 1
    finally:
        clear_project(client, project)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
