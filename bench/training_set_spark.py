"""Benchmark: ``get_training_set`` here vs on Spark (``engine=Engine("spark", master)``).

    .venv/bin/python -m bench.training_set_spark --entity-rows 100000 --feature-rows 1000000

Generates ``bench.training_set``'s data (one view, 6 features, int64 key) in a throwaway
Feast repo, joins it once locally, then on Spark: the session start, a first (cold) join
and a second one are timed apart. The two tables must be equal bit for bit.

Measured (2 cores, quiet machine; 100k x 1M, 20k entities, one 1M-row row group): local
0.46 s; Spark local[2]: session start 7.1 s, first join 16.5 s (JVM and Python workers
warming up), second join 4.6 s; equal bit for bit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.results import Measure, write_json
from bench.training_set import REFS, generate

AREA = "training set, local vs Spark"


def _same_bits(a: pa.Table, b: pa.Table) -> bool:
    if not a.schema.equals(b.schema, check_metadata=True):
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        if pa.types.is_floating(x.type):
            x, y = (c.combine_chunks().view(pa.int64()) for c in (x, y))
        if not x.equals(y):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entity-rows", type=int, default=100_000)
    parser.add_argument("--feature-rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--quick", action="store_true", help="10k x 100k rows, 2k entities")
    parser.add_argument("--json", help="also write the measurements here (for skewless bench)")
    args = parser.parse_args(argv)
    if args.quick:
        args.entity_rows, args.feature_rows, args.entities = 10_000, 100_000, 2_000

    from pipelines.spark_session import get_spark
    from pipelines.training_set import Engine, get_training_set

    root = Path(tempfile.mkdtemp(prefix="skewless-ts-spark-bench-"))
    try:
        generate(root, args.entity_rows, args.feature_rows, args.entities)
        entity = pq.read_table(root / "entities.parquet")
        get_training_set(root, entity.slice(0, 10), REFS)  # Feast registry loaded once
        t0 = time.perf_counter()
        local = get_training_set(root, entity, REFS)
        seconds = {"local": time.perf_counter() - t0}
        t0 = time.perf_counter()
        get_spark(args.master, "skewless-training-set")
        seconds["spark session start"] = time.perf_counter() - t0
        engine = Engine("spark", args.master)
        for run in ("spark, first join", "spark, second join"):
            t0 = time.perf_counter()
            spark = get_training_set(root, entity, REFS, engine=engine)
            seconds[run] = time.perf_counter() - t0
            if not _same_bits(spark, local):
                print(f"{run}: the Spark table differs from the local one", file=sys.stderr)
                return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    size = f"{args.entity_rows:,} x {args.feature_rows:,}"
    print(f"| {size} | engine | seconds |\n|---|---|---:|")
    for name, s in seconds.items():
        print(f"| | {name} ({args.master if 'spark' in name else 'this process'}) | {s:.2f} |")
    print(f"\nSpark == local bit for bit ({local.num_rows:,} rows)")
    write_json(
        [
            Measure(
                AREA,
                f"point-in-time join, {size} rows (equal bit for bit): "
                + (f"{name} ({args.master})" if "spark" in name else "this process"),
                "s",
                s,
            )
            for name, s in seconds.items()
        ],
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
