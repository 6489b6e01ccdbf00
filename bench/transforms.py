"""Benchmark of the transform core (not a test): ``python -m bench.transforms``.

* online: one row through a 5-transform feature set, per call (median, p99 over many);
* batched: rows/s on one core through the Arrow path;
* Spark: ``mapInArrow`` with the same functions vs the same features hand-written in
  native Spark SQL, on the same DataFrame in the same run (ratio).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from bench.results import Measure, write_json
from pipelines.parity_cases import (
    amount_bucket,
    amount_log1p,
    amount_per_item,
    amount_z,
    category_idx,
)
from transforms import FeatureSet, Int64
from transforms.engines.online import OnlineEngine
from transforms.runtime import FeatureSetRunner
from transforms.statistics import analyze_table

# Five transforms of the parity feature set: z-score, log1p, vocabulary + OOV, quantile
# bucket, ratio with division by zero.
BENCH_FEATURES = FeatureSet(
    "bench",
    {"row_id": Int64},
    [amount_z, amount_log1p, category_idx, amount_bucket, amount_per_item],
)


def make_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cats = np.array([f"cat-{i}" for i in range(80)], dtype=object)
    return pa.table(
        {
            "row_id": np.arange(rows, dtype=np.int64),
            "amount": rng.lognormal(3, 1, rows),
            "category": pa.array(cats[np.minimum(rng.zipf(1.3, rows), 80) - 1]),
            "items": rng.integers(1, 6, rows),
        }
    )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bench_online(engine: OnlineEngine, calls: int) -> dict[str, float]:
    row = {"amount": 42.5, "category": "cat-3", "items": 2}
    for _ in range(2000):
        engine.transform_row(row)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        engine.transform_row(row)
        samples.append((clock() - t0) / 1000)
    return {"median_us": statistics.median(samples), "p99_us": percentile(samples, 99)}


def bench_batched(runner: FeatureSetRunner, table: pa.Table, repeats: int = 5) -> float:
    batches = table.to_batches(max_chunksize=100_000)
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            runner.run_arrow(b, ["row_id"])
        best.append(table.num_rows / (time.perf_counter() - t0))
    return statistics.median(best)


def native_sql(df: Any, values: dict[str, Any]) -> Any:
    """The same five features hand-written in Spark SQL expressions."""
    from pyspark.sql import functions as F

    analyzers = {a.kind: a for t in BENCH_FEATURES.order for a in t.analyzers.values()}
    mean, std = values[analyzers["mean"].key()], values[analyzers["std"].key()]
    vocab = values[analyzers["vocabulary"].key()]
    bounds = values[analyzers["quantiles"].key()]
    oov = vocab["num_oov_buckets"]
    mapping = F.create_map(
        *[x for i, v in enumerate(vocab["values"]) for x in (F.lit(v), F.lit(i))]
    )
    n_vocab = len(vocab["values"])
    amount = F.col("amount")
    return df.select(
        "row_id",
        ((amount - F.lit(mean)) / F.lit(std)).alias("amount_z"),
        F.when(amount > -1, F.log1p(amount)).alias("amount_log"),
        F.coalesce(
            F.element_at(mapping, F.col("category")),
            F.lit(n_vocab) + F.pmod(F.xxhash64("category"), F.lit(oov)),
        ).alias("category_idx"),
        F.size(F.filter(F.array(*[F.lit(b) for b in bounds]), lambda b: b <= amount)).alias(
            "amount_bucket"
        ),
        F.when(F.col("items") != 0, amount / F.col("items")).alias("amount_per_item"),
    )


def bench_spark(table: pa.Table, art: Any, repeats: int) -> dict[str, float]:
    from pipelines.spark_session import get_spark
    from transforms.engines import spark as spark_engine

    spark = get_spark("local[2]")
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.createDataFrame(table).repartition(4).cache()
    df.count()
    ours = spark_engine.apply_transforms(df, BENCH_FEATURES, art, passthrough=["row_id"])
    native = native_sql(df, art.values)
    timings: dict[str, list[float]] = {"skewless": [], "native": []}
    for _ in range(repeats):
        for name, frame in (("native", native), ("skewless", ours)):
            t0 = time.perf_counter()
            frame.write.format("noop").mode("overwrite").save()
            timings[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in timings.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--json", help="also write the measurements here (for skewless bench)")
    args = parser.parse_args(argv)
    rows = 200_000 if args.quick else args.rows
    calls = 5_000 if args.quick else args.calls
    console = Console()
    table = make_table(rows)
    art = analyze_table(BENCH_FEATURES, table)
    online = bench_online(OnlineEngine(BENCH_FEATURES, art), calls)
    batched = bench_batched(FeatureSetRunner(BENCH_FEATURES, art), table)
    out = Table(title=f"skewless transform core, 5 transforms, {rows:,} rows")
    out.add_column("path")
    out.add_column("measure")
    out.add_column("value", justify="right")
    out.add_column("target", justify="right")
    out.add_row("online, 1 row", "median per call", f"{online['median_us']:.1f} µs", "≤ 20 µs")
    out.add_row("online, 1 row", "p99 per call", f"{online['p99_us']:.1f} µs", "")
    out.add_row("batched (Arrow), 1 core", "rows/s", f"{batched:,.0f}", "≥ 1,000,000")
    measures = [
        Measure("transforms", "online, 1 row, 5 transforms (median)", "µs", online["median_us"]),
        Measure(
            "transforms", "batched Arrow path, 1 core", "rows/s", batched, higher_is_better=True
        ),
    ]
    if not args.no_spark:
        spark = bench_spark(table, art, 3 if args.quick else 5)
        measures.append(
            Measure(
                "transforms",
                "Spark mapInArrow / native Spark SQL",
                "x",
                spark["skewless"] / spark["native"],
            )
        )
        out.add_row("Spark mapInArrow", "seconds (median)", f"{spark['skewless']:.2f}", "")
        out.add_row("Spark native SQL", "seconds (median)", f"{spark['native']:.2f}", "")
        out.add_row(
            "Spark ratio",
            "skewless / native",
            f"{spark['skewless'] / spark['native']:.2f}x",
            "≤ 2x",
        )
    console.print(out)
    write_json(measures, args.json)


if __name__ == "__main__":
    main()
