"""Feast objects generated from the feature sets: one source of truth.

Entity feature sets become Entities + FileSources + FeatureViews over the batch
pipeline's Parquet output; request-time feature sets become OnDemandFeatureViews whose
Python UDF calls the *same* transform functions through the online engine; each model
version is a FeatureService tagged with the statistics artifact hash and the transform
fingerprints it was trained with.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from transforms.artifact import StatisticsArtifact
from transforms.feature_set import FeatureSet
from transforms.types import (
    BoolType,
    FieldType,
    Float64Type,
    Int64Type,
    StringType,
    TimestampType,
)

REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"
FEATURE_SETS_MODULE = "feature_repo.feature_sets"
MODEL_SERVICE = "fraud_model_v1"

# Tags the serving manifest is read from (pipelines.apply.manifest_from_registry).
ODFV_TAGS = (
    "skewless.feature_set",  # "module:attribute" of the FeatureSet the UDF runs
    "skewless.artifact_path",  # its frozen statistics artifact, relative to the repo or absolute
    "skewless.artifact_hash",
    "skewless.fingerprints",  # JSON: transform -> fingerprint
)
SERVICE_ARTIFACT_TAG = "skewless.artifact."  # + feature set name: artifact hash
SERVICE_FINGERPRINTS_TAG = "skewless.fingerprints."  # + feature set name: JSON fingerprints

# Feast dtype name -> value type as stored in Redis (Feast ValueType / codec name, the
# serving manifest's type names)
VALUE_TYPES = {
    "Int64": "int64",
    "Int32": "int32",
    "Float64": "double",
    "Float32": "float",
    "String": "string",
    "Bool": "bool",
    "UnixTimestamp": "unix_timestamp",
    "Bytes": "bytes",
}
# field type -> (Feast dtype name, value type)
FEAST_TYPES: dict[type[FieldType], tuple[str, str]] = {
    t: (name, VALUE_TYPES[name])
    for t, name in (
        (Int64Type, "Int64"),
        (Float64Type, "Float64"),
        (StringType, "String"),
        (BoolType, "Bool"),
        (TimestampType, "UnixTimestamp"),
    )
}


def write_feature_store_yaml(
    repo: Path,
    project: str,
    connection_string: str,
    *,
    registry: str | Path = "data/registry.db",
    redis_type: str = "redis",
    key_ttl_seconds: int | None = None,
) -> None:
    """feature_store.yaml of a Feast repo with the file offline store and a Redis online
    store (``redis_type`` ``redis`` or ``redis_cluster``), entity keys version 3."""
    import yaml

    from transforms.atomic import atomic_file

    online: dict[str, Any] = {"type": "redis", "connection_string": connection_string}
    if redis_type != "redis":
        online["redis_type"] = redis_type
    if key_ttl_seconds:
        online["key_ttl_seconds"] = key_ttl_seconds
    config = {
        "project": project,
        "registry": str(registry),
        "provider": "local",
        "offline_store": {"type": "file"},
        "online_store": online,
        "entity_key_serialization_version": 3,
    }
    with atomic_file(repo / "feature_store.yaml", "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)


def data_dir() -> Path:
    """Where the batch pipeline writes (``SKEWLESS_DATA``, default ``feature_repo/data``)."""
    return Path(os.environ.get("SKEWLESS_DATA", REPO_DIR / "data")).resolve()


def artifact_path(fs: FeatureSet, base: Path | None = None) -> Path:
    return (base or data_dir()) / "artifacts" / f"{fs.name}.json"


@lru_cache(maxsize=8)
def _engine(feature_set_name: str, path: str) -> Any:
    from feature_repo import feature_sets
    from transforms.engines.online import OnlineEngine

    fs = next(f for f in feature_sets.REQUEST_FEATURE_SETS if f.name == feature_set_name)
    return OnlineEngine(fs, StatisticsArtifact.load(path), request_time_only=True)


def request_udf(feature_set_name: str) -> Any:
    """A Feast python-mode UDF (dict of lists in, dict of lists out) for one feature set."""

    def udf(inputs: dict[str, Any]) -> dict[str, Any]:
        fs_engine = _engine(feature_set_name, str(artifact_path(_request_set(feature_set_name))))
        n = len(next(iter(inputs.values()))) if inputs else 0
        columns = {name: list(inputs[name]) for name in fs_engine.inputs}
        return fs_engine.runner.run_python_columns(columns, n)

    udf.__name__ = f"{feature_set_name}_udf"
    return udf


def _request_set(name: str) -> FeatureSet:
    from feature_repo import feature_sets

    return next(f for f in feature_sets.REQUEST_FEATURE_SETS if f.name == name)


def view_feature_owners() -> dict[str, str]:
    """Feature name -> entity feature set (view) that produces it."""
    from feature_repo import feature_sets

    return {t.name: fs.name for fs in feature_sets.ENTITY_FEATURE_SETS for t in fs.order}


def odfv_tags(ref: str, artifact: str, art: StatisticsArtifact, fs: FeatureSet) -> dict[str, str]:
    """Tags of an OnDemandFeatureView that runs feature set ``ref`` ("module:attribute")
    with the statistics artifact at ``artifact`` (see ``ODFV_TAGS``)."""
    return dict(
        zip(
            ODFV_TAGS,
            (ref, artifact, art.content_hash, json.dumps(fs.fingerprints(art), sort_keys=True)),
            strict=True,
        )
    )


def service_tags(art: StatisticsArtifact, fs: FeatureSet) -> dict[str, str]:
    """Tags of a FeatureService serving ``fs``: the artifact hash and fingerprints the
    model was trained with (the server refuses to start with others)."""
    return {
        SERVICE_ARTIFACT_TAG + fs.name: art.content_hash,
        SERVICE_FINGERPRINTS_TAG + fs.name: json.dumps(fs.fingerprints(art), sort_keys=True),
    }


def repo_objects(base: Path | None = None) -> dict[str, Any]:
    """Every Feast object of the repo by variable name (``definitions.py`` exports them)."""
    from feast import (
        Entity,
        FeatureService,
        FeatureView,
        Field,
        FileSource,
        RequestSource,
        ValueType,
    )
    from feast import types as ft
    from feast.data_format import ParquetFormat
    from feast.on_demand_feature_view import OnDemandFeatureView

    from feature_repo import feature_sets

    base = base or data_dir()
    objects: dict[str, Any] = {}
    entities: dict[str, Any] = {}
    views: dict[str, Any] = {}
    for fs in feature_sets.ENTITY_FEATURE_SETS:
        for key in fs.entities:
            name = key.removesuffix("_id")
            entities[key] = objects[f"entity_{name}"] = Entity(
                name=name, join_keys=[key], value_type=ValueType.INT64
            )
        source = FileSource(
            name=f"{fs.name}_source",
            path=str(base / "features" / fs.name),
            file_format=ParquetFormat(),
            timestamp_field=fs.event_timestamp,
            created_timestamp_column="created_timestamp",
        )
        views[fs.name] = objects[fs.name] = FeatureView(
            name=fs.name,
            entities=[entities[k] for k in fs.entities],
            ttl=timedelta(seconds=fs.ttl_seconds),
            schema=[
                Field(name=t.name, dtype=getattr(ft, FEAST_TYPES[t.output.type][0]))
                for t in fs.order
            ],
            source=source,
            online=True,
            description=fs.description,
            tags={"skewless.feature_set": fs.name},
        )
    owners = view_feature_owners()
    odfvs = []
    tags: dict[str, str] = {}
    for fs in feature_sets.REQUEST_FEATURE_SETS:
        path = artifact_path(fs, base)
        art = StatisticsArtifact.load(path)
        attr = next(k for k, v in vars(feature_sets).items() if v is fs)
        request_fields = [
            Field(name=name, dtype=getattr(ft, FEAST_TYPES[f.type][0]))
            for name, f in fs.inputs.items()
            if name not in owners
        ]
        sources: list[Any] = [RequestSource(name=f"{fs.name}_request", schema=request_fields)]
        by_view: dict[str, list[str]] = {}
        for name in fs.inputs:
            if name in owners:
                by_view.setdefault(owners[name], []).append(name)
        sources += [views[v][names] for v, names in sorted(by_view.items())]
        odfv = OnDemandFeatureView(
            name=fs.name,
            sources=sources,
            schema=[
                Field(name=t.name, dtype=getattr(ft, FEAST_TYPES[t.output.type][0]))
                for t in fs.select(request_time=True)
            ],
            mode="python",
            udf=request_udf(fs.name),
            udf_string=f"skewless request-time transforms of {fs.name}",
            description=fs.description,
            tags=odfv_tags(f"{FEATURE_SETS_MODULE}:{attr}", str(path), art, fs),
        )
        odfvs.append(odfv)
        objects[fs.name] = odfv
        tags.update(service_tags(art, fs))
    objects["fraud_model_v1"] = FeatureService(
        name=MODEL_SERVICE,
        features=[*views.values(), *odfvs],
        tags=tags,
        description="Card fraud model, version 1.",
    )
    return objects
