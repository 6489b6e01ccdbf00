"""Seeded synthetic order lines with the awkward parts of real data: null customer ids,
exact duplicate rows, rows that share (key, time) with different values, minute-rounded
times, null prices and non-ASCII channels."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHANNELS = np.array(["app", "web", "store", "", "téléphone"], dtype=object)


@dataclass(frozen=True)
class Generated:
    rows: int
    out_dir: Path


def generate(
    rows: int, out_dir: Path, seed: int = 7, start: datetime | None = None, days: int = 30
) -> Generated:
    """Write ``rows`` order lines (plus ~5% duplicates) to ``out_dir/orders``."""
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    begin = start or now - timedelta(days=days)
    span_minutes = max(1, int((now - begin).total_seconds() // 60))
    customers = np.array([f"c{i:04d}" for i in range(max(20, rows // 40))], dtype=object)
    customer = customers[rng.zipf(1.6, rows) % len(customers)].astype(object)
    customer[rng.random(rows) < 0.01] = None
    minute = np.sort(rng.integers(0, span_minutes, rows))
    micros = int(begin.timestamp()) * 1_000_000 + minute * 60_000_000
    price = np.round(rng.lognormal(2.0, 0.6, rows), 2)
    table = pa.table(
        {
            "customer_id": pa.array(customer, pa.string()),
            "store_id": pa.array([f"s{i}" for i in rng.integers(1, 6, rows)]),
            "sku": pa.array(rng.integers(0, 40, rows) * 1_000_003 - 7, pa.int64()),
            "occurred_at": pa.array(micros, pa.timestamp("us", tz="UTC")),
            "quantity": pa.array(rng.integers(1, 6, rows), pa.int64()),
            "unit_price": pa.array(price, pa.float64(), mask=rng.random(rows) < 0.02),
            "channel": pa.array(CHANNELS[rng.integers(0, len(CHANNELS), rows)], pa.string()),
            "returned": pa.array((rng.random(rows) < 0.08 + 0.1 * (price > 15)).astype(np.int64)),
        }
    )
    twins = table.take(rng.choice(rows, rows // 50, replace=False))  # exact duplicates
    # same key and time, other values: at random, and at customers' latest instants
    ids = table.column("customer_id").to_pylist()
    latest = list({c: i for i, c in enumerate(ids) if c is not None}.values())
    at_latest = rng.choice(latest, min(len(latest) // 2, rows // 100), replace=False)
    clash = table.take(np.concatenate([rng.choice(rows, rows // 50, replace=False), at_latest]))
    clash = clash.set_column(
        clash.schema.get_field_index("quantity"),
        "quantity",
        pa.array(rng.integers(6, 9, clash.num_rows), pa.int64()),
    )
    table = pa.concat_tables([table, twins, clash]).sort_by("occurred_at")
    target = Path(out_dir) / "orders"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    pq.write_table(table, target / "part-0.parquet")
    return Generated(table.num_rows, target)
