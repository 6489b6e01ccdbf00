"""A throwaway skewless project serving one window set, and its raw events, for
``bench.windows``.

``build`` writes ``skewless.yaml`` (definitions: :mod:`bench.repos.window_features`),
``feature_store.yaml`` (the project name the server and ``skewless stream`` use) and the
serving manifest ``skewless apply`` would write for a project of window sets only
(:func:`pipelines.apply.with_window_sets`), so ``skewless serve --repo`` and
``skewless stream --repo`` run on it as on any project. ``events`` makes trips: each driver
gets a number of events drawn from a range, at times spread over a span ending at a given
instant, fares with about 1% nulls, unique trip ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

DEFINITIONS = "bench.repos.window_features"
PROJECT_YAML = f"""# bench.windows: one window set, fed by pushes and by the streaming job
definitions: [{DEFINITIONS}]
data_dir: data
sources:
  trips:
    path: sources/trips
    event_timestamp: pickup_at
    row_id: trip_id
    entities: {{driver_id: string}}
"""
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


def window_set() -> Any:
    from bench.repos.window_features import DRIVER_WINDOWS

    return DRIVER_WINDOWS


def build(root: Path, project: str, redis_host: str) -> Path:
    """The project directory ``root`` (created), its Feast project name ``project``."""
    from pipelines.apply import with_window_sets
    from pipelines.feast_objects import write_feature_store_yaml
    from pipelines.project import load_project
    from store.manifest import Manifest

    root.mkdir(parents=True, exist_ok=True)
    (root / "skewless.yaml").write_text(PROJECT_YAML)
    write_feature_store_yaml(root, project, redis_host)
    empty = Manifest(project, 3, {}, {}, {}, redis_connection_string=redis_host)
    with_window_sets(empty, load_project(root)).save(root)
    return root


def driver_ids(n: int, prefix: str = "d") -> list[str]:
    return [f"{prefix}{i:07d}" for i in range(n)]


def events(
    drivers: list[str],
    per_driver: tuple[int, int],
    end_us: int,
    span_us: int = DAY_US,
    seed: int = 0,
    first_trip: int = 0,
) -> pa.Table:
    """Trips of ``drivers``: between ``per_driver[0]`` and ``per_driver[1]`` each, in
    random order (times as :func:`trips`)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(per_driver[0], per_driver[1] + 1, len(drivers))
    owner = np.repeat(np.arange(len(drivers), dtype=np.int32), counts)
    return trips(rng.permutation(owner), drivers, end_us, span_us, rng, first_trip)


def uniform_events(
    n: int, drivers: list[str], end_us: int, span_us: int, seed: int = 0, first_trip: int = 0
) -> pa.Table:
    """``n`` trips, each of a driver drawn uniformly (the offline benchmark's log)."""
    rng = np.random.default_rng(seed)
    owner = rng.integers(0, len(drivers), n).astype(np.int32)
    return trips(owner, drivers, end_us, span_us, rng, first_trip)


def trips(
    owner: np.ndarray,
    drivers: list[str],
    end_us: int,
    span_us: int,
    rng: np.random.Generator,
    first_trip: int = 0,
) -> pa.Table:
    """One trip per entry of ``owner`` (an index into ``drivers``): a microsecond time
    uniform in ``[end_us - span_us, end_us)``, a fare (about 1% null), trip ids from
    ``first_trip`` on."""
    n = len(owner)
    keys = pa.DictionaryArray.from_arrays(pa.array(owner), pa.array(drivers, pa.string()))
    times = end_us - 1 - rng.integers(0, span_us, n)
    return pa.table(
        {
            "driver_id": keys.cast(pa.string()),
            "pickup_at": pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "trip_id": pa.array(np.arange(first_trip, first_trip + n, dtype=np.int64)),
            "fare": pa.array(np.round(rng.uniform(3.0, 80.0, n), 2), mask=rng.random(n) < 0.01),
        }
    )
