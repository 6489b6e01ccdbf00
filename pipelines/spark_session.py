"""One way to get a Spark session: worker Python pinned, UTC session zone, Arrow on."""

from __future__ import annotations

import os
import sys
from typing import Any


def get_spark(master: str = "local[*]", app_name: str = "skewless") -> Any:
    """Return (or reuse) a SparkSession configured the way every skewless job needs it.

    Workers run ``sys.executable`` so they find pyarrow; the session time zone is UTC
    because the portability contract defines every timestamp in UTC.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "4g")
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .getOrCreate()
    )
