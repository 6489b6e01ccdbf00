"""What to materialize: view plans read from the Feast registry, the Parquet source
opened and checked against them, and the window of event times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from pipelines.feast_objects import VALUE_TYPES
from store import redis_layout as rl
from transforms.errors import ConfigError, SchemaError, StoreUnavailable


@dataclass
class ViewPlan:
    """Everything needed to materialize one view, read once from the Feast registry."""

    name: str  # Feast FeatureView name
    online_name: str  # name used in Redis fields (versioned when versioning is on)
    join_keys: list[str]
    join_types: list[str]
    features: list[str]
    feature_types: list[str]
    source_path: str
    timestamp_field: str
    created_field: str | None
    field_mapping: dict[str, str]
    ttl: timedelta | None
    feast_view: Any = None


@dataclass
class RepoTarget:
    """Project, Redis settings and view plans of one Feast repo."""

    store: Any
    project: str
    redis_type: str
    connection_string: str
    key_ttl_seconds: int | None
    skip_dedup: bool
    plans: list[ViewPlan]


def load_repo(repo_path: str | Path, views: Sequence[str] | None = None) -> RepoTarget:
    """Read the Feast registry of ``repo_path`` into plans (imports the Feast SDK)."""
    from feast import FeatureStore
    from feast.infra.offline_stores.file_source import FileSource
    from feast.infra.online_stores.helpers import compute_versioned_name

    try:
        store = FeatureStore(repo_path=str(repo_path))
    except Exception as exc:  # Feast raises many types for a bad repo
        raise ConfigError(f"cannot load Feast repo at {repo_path}: {exc}") from exc
    cfg = store.config
    online = cfg.online_store
    if getattr(online, "type", None) != "redis":
        raise ConfigError(f"online_store of {repo_path} is {online.type!r}, not redis")
    if cfg.entity_key_serialization_version != rl.ENTITY_KEY_VERSION:
        raise ConfigError("only entity_key_serialization_version 3 is supported")
    redis_type = str(getattr(online.redis_type, "value", online.redis_type))
    if redis_type not in ("redis", "redis_cluster"):
        raise ConfigError(f"redis_type {redis_type!r} is not supported (redis, redis_cluster)")
    versioning = bool(cfg.registry.enable_online_feature_view_versioning)

    all_views = {fv.name: fv for fv in store.list_feature_views()}
    wanted = list(views) if views else sorted(all_views)
    unknown = [v for v in wanted if v not in all_views]
    if unknown:
        raise ConfigError(f"unknown feature view(s) {unknown}; known: {sorted(all_views)}")
    plans = []
    for name in wanted:
        fv = all_views[name]
        src = fv.batch_source
        if not isinstance(src, FileSource):
            raise SchemaError(f"view {name}: batch source is {type(src).__name__}, not FileSource")
        path = FileSource.get_uri_for_file_path(repo_path=cfg.repo_path, uri=src.path)
        plans.append(
            ViewPlan(
                name=name,
                online_name=compute_versioned_name(fv, versioning),
                join_keys=[c.name for c in fv.entity_columns],
                join_types=[_codec_type(name, c.name, c.dtype) for c in fv.entity_columns],
                features=[f.name for f in fv.features],
                feature_types=[_codec_type(name, f.name, f.dtype) for f in fv.features],
                source_path=str(path),
                timestamp_field=src.timestamp_field,
                created_field=src.created_timestamp_column or None,
                field_mapping=dict(src.field_mapping or {}),
                ttl=fv.ttl if fv.ttl else None,
                feast_view=fv,
            )
        )
    return RepoTarget(
        store=store,
        project=cfg.project,
        redis_type=redis_type,
        connection_string=online.connection_string,
        key_ttl_seconds=online.key_ttl_seconds,
        skip_dedup=bool(getattr(online, "skip_dedup", False)),
        plans=plans,
    )


def _codec_type(view: str, column: str, dtype: Any) -> str:
    codec = VALUE_TYPES.get(str(dtype))
    if codec is None:
        raise SchemaError(
            f"view {view}: column {column!r} has type {dtype}, not a supported scalar"
        )
    return codec


def arrow_ok(codec: str, t: pa.DataType) -> bool:
    """Can an Arrow column of type ``t`` feed a feature of codec type ``codec``?"""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if codec == "int64":
        return pa.types.is_integer(t) and t != pa.uint64()
    if codec == "int32":
        return t in (pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16())
    if codec == "double":
        return pa.types.is_floating(t) or pa.types.is_integer(t)
    if codec == "float":
        return pa.types.is_floating(t)
    if codec == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if codec == "bytes":
        return pa.types.is_binary(t) or pa.types.is_large_binary(t)
    if codec == "bool":
        return pa.types.is_boolean(t)
    if codec == "unix_timestamp":
        return pa.types.is_timestamp(t) or pa.types.is_integer(t)
    return False


def open_source(plan: ViewPlan) -> tuple[ds.Dataset, dict[str, str]]:
    """Open the Parquet source and check its schema; returns (dataset, out name -> file col)."""
    try:
        dataset = ds.dataset(plan.source_path, format="parquet")
    except (FileNotFoundError, OSError) as exc:
        raise StoreUnavailable(f"offline Parquet {plan.source_path} unreadable: {exc}") from exc
    schema = dataset.schema
    inverse = {v: k for k, v in plan.field_mapping.items()}  # feature name -> file column
    cols: dict[str, str] = {}

    def need(name: str) -> pa.DataType:
        col = inverse.get(name, name)
        if col not in schema.names:
            raise SchemaError(
                f"view {plan.name}: column {col!r} missing from {plan.source_path} "
                f"(has {schema.names})"
            )
        cols[name] = col
        return schema.field(col).type

    for name in (plan.timestamp_field, plan.created_field):
        if name is None:
            continue
        t = need(name)
        if not pa.types.is_timestamp(t):
            raise SchemaError(f"view {plan.name}: column {name!r} is {t}, expected a timestamp")
    for name, codec in zip(
        plan.join_keys + plan.features, plan.join_types + plan.feature_types, strict=True
    ):
        t = need(name)
        if not arrow_ok(codec, t):
            raise SchemaError(
                f"view {plan.name}: column {name!r} in {plan.source_path} is {t}, "
                f"incompatible with the FeatureView type {codec}"
            )
    return dataset, cols


def _valid(col: pa.Array) -> np.ndarray:
    if col.null_count == 0:
        return np.ones(len(col), dtype=bool)
    return np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _numpy(col: pa.Array, fill: Any) -> np.ndarray:
    """The column's values as numpy, nulls replaced by ``fill`` (no copy when no null)."""
    return (col.fill_null(fill) if col.null_count else col).to_numpy(zero_copy_only=False)


def _window(plan: ViewPlan, start: datetime | None, end: datetime) -> tuple[datetime, datetime]:
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    if start is None:
        # a view without ttl never expires: every row counts (Feast's incremental
        # materialization starts a year back then, a TODO of theirs)
        start = datetime(1970, 1, 1, tzinfo=UTC) if plan.ttl is None else end - plan.ttl
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    if start > end:
        raise ConfigError(f"start {start} is after end {end}")
    return start, end
