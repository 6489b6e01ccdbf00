"""A throwaway Feast repo for serving tests and ``bench.serving``: Parquet data, a Feast
Redis online store under a unique project, ``apply`` + ``materialize``, and the skewless
manifest that describes the same objects.

Views: ``user_stats`` (8 features of mixed types, ttl 7 days) and, when ``wide``,
``user_wide`` (50 features, no ttl). A pandas on-demand feature view ``payment_features``
runs the request-time feature set through the same transform functions, so Feast's own
server computes what ours does. Feast is imported inside functions only.
"""

from __future__ import annotations

import json
import os
import random
import sys
import textwrap
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.feast_objects import VALUE_TYPES
from store.redis_layout import feast_connection_string

STATS_FEATURES: dict[str, str] = {
    "avg_amount": "double",
    "txn_count": "int64",
    "country": "string",
    "is_premium": "bool",
    "risk_score": "float",
    "days_active": "int32",
    "refund_ratio": "double",
    "segment": "string",
}
WIDE_FEATURES: dict[str, str] = {f"w{i:02d}": ("double" if i % 3 else "int64") for i in range(50)}
STATS_TTL = timedelta(days=7)
FEATURE_SET_REF = "bench.repos.serving_features:FEATURES"
ARTIFACT_PATH = "artifacts/payments.json"  # relative to the repo
ODFV = "payment_features"

_FEAST_TYPE = {value_type: feast for feast, value_type in VALUE_TYPES.items()}
_ARROW_TYPE = {
    "double": pa.float64(),
    "int64": pa.int64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "float": pa.float32(),
    "int32": pa.int32(),
}


@dataclass(frozen=True)
class DemoRepo:
    path: Path
    project: str
    users: int  # user ids 0 .. users-1 have rows; ids >= users are missing
    expired: frozenset[int]  # users whose only row is older than the ttl
    connection_string: str


def _column(rng: np.random.Generator, kind: str, n: int, null_rate: float) -> pa.Array:
    if kind == "double":
        vals: list[Any] = np.round(rng.lognormal(3.5, 0.8, n), 6).tolist()
    elif kind == "float":
        vals = rng.random(n).astype(np.float32).tolist()
    elif kind == "int64":
        vals = rng.integers(-(2**40), 2**40, n).tolist()
    elif kind == "int32":
        vals = rng.integers(0, 5000, n).tolist()
    elif kind == "bool":
        vals = (rng.random(n) < 0.3).tolist()
    else:
        pool = ["DE", "FR", "US", "café", "日本", "", "a" * 150]
        vals = [pool[i] for i in rng.integers(0, len(pool), n).tolist()]
    for i in np.flatnonzero(rng.random(n) < null_rate).tolist():
        vals[i] = None
    return pa.array(vals, _ARROW_TYPE[kind])


def _write_source(
    path: Path, features: dict[str, str], ts: list[datetime], seed: int, null_rate: float
) -> None:
    rng = np.random.default_rng(seed)
    n = len(ts)
    cols: dict[str, pa.Array] = {"user_id": pa.array(np.arange(n, dtype=np.int64))}
    for name, kind in features.items():
        cols[name] = _column(rng, kind, n, null_rate)
    cols["event_timestamp"] = pa.array(ts, pa.timestamp("us", tz="UTC"))
    pq.write_table(pa.table(cols), path)


def _repo_py(
    wide: bool, data: Path, odfv_tags: dict[str, str], service_tags: dict[str, str]
) -> str:
    def fields(features: dict[str, str]) -> str:
        return ", ".join(f'Field(name="{k}", dtype={_FEAST_TYPE[v]})' for k, v in features.items())

    wide_src = ""
    if wide:
        wide_src = f"""
        wide_source = FileSource(path="{data / "user_wide.parquet"}",
                                 timestamp_field="event_timestamp")
        user_wide = FeatureView(name="user_wide", entities=[user], ttl=timedelta(0),
                                schema=[{fields(WIDE_FEATURES)}], source=wide_source, online=True)
        wide_service = FeatureService(name="wide_v1", features=[user_wide])
        """
    return textwrap.dedent(
        f"""
        from datetime import timedelta

        import pandas as pd
        from feast import (Entity, FeatureService, FeatureView, Field, FileSource,
                           RequestSource, ValueType)
        from feast.on_demand_feature_view import on_demand_feature_view
        from feast.types import Bool, Float32, Float64, Int32, Int64, String

        user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
        stats_source = FileSource(path="{data / "user_stats.parquet"}",
                                  timestamp_field="event_timestamp")
        user_stats = FeatureView(name="user_stats", entities=[user],
                                 ttl=timedelta(seconds={int(STATS_TTL.total_seconds())}),
                                 schema=[{fields(STATS_FEATURES)}], source=stats_source,
                                 online=True)
        payment_request = RequestSource(name="payment_request",
                                        schema=[Field(name="request_amount", dtype=Float64)])

        @on_demand_feature_view(
            sources=[user_stats, payment_request],
            schema=[Field(name="amount_vs_avg", dtype=Float64),
                    Field(name="request_amount_z", dtype=Float64)],
            mode="pandas",
            tags={odfv_tags!r},
        )
        def {ODFV}(inputs: pd.DataFrame) -> pd.DataFrame:
            from bench.repos.serving_features import feast_udf

            return feast_udf(inputs)

        stats_service = FeatureService(name="stats_v1", features=[user_stats])
        payments_service = FeatureService(name="payments_v1", features=[user_stats, {ODFV}],
                                          tags={service_tags!r})
        """
    ) + textwrap.dedent(wide_src)


def build(
    root: Path, redis_url: str, users: int = 500, wide: bool = False, expired_every: int = 10
) -> DemoRepo:
    """Write data + repo into ``root``, ``feast apply`` and ``materialize`` it, save manifest.

    Every ``expired_every``-th user's row is 8-30 days old (beyond the 7-day ttl), the rest
    are 1 minute to 6 days old.
    """
    from feast import FeatureStore
    from feast.repo_operations import apply_total

    from bench.repos.serving_features import ARTIFACT, FEATURES
    from pipelines.apply import manifest_from_registry
    from pipelines.feast_objects import odfv_tags, service_tags, write_feature_store_yaml

    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    project = f"skewless_test_{uuid.uuid4().hex[:10]}"
    conn = feast_connection_string(redis_url)
    now = datetime.now(UTC).replace(microsecond=0)
    rng = np.random.default_rng(7)
    ages = rng.integers(60, 6 * 86_400, users)
    expired = {u for u in range(users) if u % expired_every == 3}
    for u in expired:
        ages[u] = int(rng.integers(8 * 86_400, 30 * 86_400))
    ts = [now - timedelta(seconds=int(a), microseconds=int(a) % 997) for a in ages.tolist()]
    _write_source(data / "user_stats.parquet", STATS_FEATURES, ts, 11, 0.05)
    if wide:
        _write_source(data / "user_wide.parquet", WIDE_FEATURES, ts, 12, 0.02)
    write_feature_store_yaml(root, project, conn, registry=data / "registry.db")
    # a unique module name: Feast imports repo files by name, and sys.modules caches them
    odfv = odfv_tags(FEATURE_SET_REF, ARTIFACT_PATH, ARTIFACT, FEATURES)
    (root / f"repo_{project}.py").write_text(
        _repo_py(wide, data, odfv, service_tags(ARTIFACT, FEATURES))
    )
    ARTIFACT.save(root / ARTIFACT_PATH)

    import importlib

    from feast.repo_config import load_repo_config

    importlib.invalidate_caches()  # the repo module was just written; path finders cache dirs

    # apply_total chdirs into the repo and imports its files relative to cwd: give it a path
    # entry for the repo, and restore cwd afterwards.
    cwd = os.getcwd()
    sys.path.insert(0, str(root))
    try:
        apply_total(
            load_repo_config(root, root / "feature_store.yaml"), root, skip_source_validation=True
        )
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
    store = FeatureStore(repo_path=str(root))
    store.materialize(start_date=now - timedelta(days=60), end_date=now + timedelta(seconds=1))
    manifest_from_registry(store).save(root)
    return DemoRepo(root, project, users, frozenset(expired), conn)


def malformed_bodies(rng: random.Random, n: int) -> list[bytes]:
    """Request bodies clients get wrong (broken, truncated or corrupted JSON, wrong shapes
    and types, unknown names) for /get-online-features; none may earn a 5xx."""
    refs = [f"user_stats:{f}" for f in STATS_FEATURES]
    valid = {"features": refs, "entities": {"user_id": [1, 2]}}
    shapes: list[Any] = [
        [],
        "x",
        None,
        1.5,
        {"features": "user_stats:txn_count", "entities": {"user_id": [1]}},
        {"features": [], "entities": {"user_id": [1]}},
        {"features": [1, 2], "entities": {"user_id": [1]}},
        {"features": ["user_stats"], "entities": {"user_id": [1]}},
        {"features": ["user_stats:nope"], "entities": {"user_id": [1]}},
        {"features": refs, "entities": {"user_id": "1"}},
        {"features": refs, "entities": {"user_id": ["1"]}},
        {"features": refs, "entities": {"user_id": [1.5]}},
        {"features": refs, "entities": {"user_id": [True]}},
        {"features": refs, "entities": {"user_id": [2**70]}},
        {"features": refs, "entities": {"user_id": [None]}},
        {"features": refs, "entities": {"user_id": [[1]]}},
        {"features": refs, "entities": {"user_id": [{"a": 1}]}},
        {"features": refs, "entities": {"user_id": []}},
        {"features": refs, "entities": {"user_id": [1], "other": [1, 2]}},
        {"features": refs, "entities": {}},
        {"features": refs},
        {"features": refs, "entities": {"user_id": [1]}, "full_feature_names": "yes"},
        {"feature_service": 5, "entities": {"user_id": [1]}},
        {"feature_service": "payments_v1", "entities": {"user_id": [1]}},
        {"feature_service": "payments_v1", "entities": {"user_id": [1], "request_amount": ["a"]}},
        {"feature_service": "nope", "entities": {"user_id": [1]}},
    ]
    raw = json.dumps(valid).encode()
    out = []
    for _ in range(n):
        pick = rng.random()
        if pick < 0.4:
            out.append(json.dumps(rng.choice(shapes)).encode())
        elif pick < 0.6:
            out.append(raw[: rng.randrange(len(raw))])  # truncated
        elif pick < 0.8:
            b = bytearray(raw)
            for _ in range(rng.randint(1, 5)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            out.append(bytes(b))
        else:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
    return out
