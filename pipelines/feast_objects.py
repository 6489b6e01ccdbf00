"""Feast objects generated from the feature sets: one source of truth.

Entity feature sets become Entities + FileSources + FeatureViews over the batch
pipeline's Parquet output; request-time feature sets become OnDemandFeatureViews whose
Python UDF calls the *same* transform functions through the online engine; each model
version is a FeatureService tagged with the statistics artifact hash and the transform
fingerprints it was trained with.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipelines.project import Project
from transforms.artifact import StatisticsArtifact
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.types import (
    BoolType,
    FieldType,
    Float64Type,
    Int64Type,
    StringType,
    TimestampType,
)

# Tags the serving manifest is read from (pipelines.apply.manifest_from_registry).
ODFV_TAGS = (
    "skewless.feature_set",  # "module:attribute" of the FeatureSet the UDF runs
    "skewless.artifact_path",  # its frozen statistics artifact, relative to the repo or absolute
    "skewless.artifact_hash",
    "skewless.fingerprints",  # JSON: transform -> fingerprint
)
# JSON: transform input -> "window set:feature"; on the on-demand views of request-time
# sets that read window features (Feast cannot give them: the view refuses to compute)
WINDOW_INPUTS_TAG = "skewless.window_inputs"
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


def artifact_path(fs: FeatureSet, base: Path) -> Path:
    return base / "artifacts" / f"{fs.name}.json"


@lru_cache(maxsize=8)
def _engine(ref: str, root: str, path: str, artifact_hash: str, fingerprints: str) -> Any:
    """The online engine of ``ref`` with the artifact at ``path``, after checking that
    artifact and code are the registered ones (``feast serve`` loads this UDF from the
    registry long after ``skewless apply``: it must not compute with anything else)."""
    from transforms.engines.online import OnlineEngine
    from transforms.errors import ArtifactError
    from transforms.modules import resolve_feature_set

    fs = resolve_feature_set(ref, root)
    art = StatisticsArtifact.load(path)
    if art.content_hash != artifact_hash:
        raise ArtifactError(
            f"on-demand view of {ref}: the artifact at {path} has hash {art.content_hash[:12]}, "
            f"the registered one {artifact_hash[:12]}; run `skewless apply` (or restore it)"
        )
    registered = json.loads(fingerprints)
    for name, fp in fs.fingerprints(art).items():
        if name in registered and registered[name] != fp:
            raise ArtifactError(
                f"on-demand view of {ref}: transform '{name}' fingerprint {fp[:12]} differs "
                f"from the registered {registered[name][:12]}: its code changed since "
                "`skewless apply`"
            )
    return OnlineEngine(fs, art, request_time_only=True)


def request_udf(
    ref: str, root: Path, artifact: Path, artifact_hash: str, fingerprints: dict[str, str]
) -> Any:
    """A Feast python-mode UDF (dict of lists in, dict of lists out) running the
    request-time transforms of feature set ``ref`` ("module:attribute") with the
    registered artifact and code only."""
    registered = json.dumps(fingerprints, sort_keys=True)

    def udf(inputs: dict[str, Any]) -> dict[str, Any]:
        fs_engine = _engine(ref, str(root), str(artifact), artifact_hash, registered)
        n = len(next(iter(inputs.values()))) if inputs else 0
        columns = {name: list(inputs[name]) for name in fs_engine.inputs}
        return fs_engine.runner.run_python_columns(columns, n)

    udf.__name__ = f"{ref.partition(':')[2].lower()}_udf"
    return udf


def _request_udf(
    project: Project,
    fs: FeatureSet,
    path: Path,
    art: StatisticsArtifact,
    from_windows: dict[str, str],
) -> Any:
    """:func:`request_udf`, or for a set reading window features one that refuses
    (:func:`pipelines.feast_windows.refusing_udf`)."""
    if from_windows:
        from pipelines.feast_windows import refusing_udf

        outputs = {t.name: t.output.type.name for t in fs.select(request_time=True)}
        return refusing_udf(fs.name, sorted(set(from_windows.values())), outputs)
    return request_udf(project.ref(fs), project.root, path, art.content_hash, fs.fingerprints(art))


def view_feature_owners(project: Project) -> dict[str, str]:
    """Feature name -> entity feature set (view) that produces it."""
    return {t.name: fs.name for fs in project.entity_sets for t in fs.order}


def window_inputs(project: Project, fs: FeatureSet) -> dict[str, str]:
    """The inputs of request-time set ``fs`` that name a window feature of the project:
    input -> "window set:feature" (computed as of the request time, online and offline).
    A name that is both a view feature and a window feature is ambiguous: SchemaError."""
    owners = view_feature_owners(project)
    windows = {f.name: ws.name for ws in project.window_sets for f in ws.features}
    both = sorted(n for n in fs.inputs if n in owners and n in windows)
    if both:
        raise SchemaError(
            f"feature set '{fs.name}': inputs {both} name both a feature view's feature and "
            "a window feature; rename one"
        )
    return {n: f"{windows[n]}:{n}" for n in fs.inputs if n in windows}


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


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the project when inside it (a project moves as a directory)."""
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def repo_objects(project: Project, base: Path | None = None) -> dict[str, Any]:
    """Every Feast object of the project by variable name (``definitions.py`` exports
    them): the entity feature sets' Entities and FeatureViews over the batch output, the
    request-time sets' OnDemandFeatureViews, and the declared FeatureServices."""
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

    base = base or project.data_dir
    objects: dict[str, Any] = {}
    entities: dict[str, Any] = {}
    views: dict[str, Any] = {}
    for fs in project.entity_sets:
        source_cfg = project.config.sources[project.source_of(fs)]
        for key in fs.entities:
            if key in entities:
                continue
            name = key.removesuffix("_id")
            value_type = (
                ValueType.STRING if source_cfg.entities[key] == "string" else ValueType.INT64
            )
            entities[key] = objects[f"entity_{name}"] = Entity(
                name=name, join_keys=[key], value_type=value_type
            )
        source = FileSource(
            name=f"{fs.name}_source",
            path=str(base / "features" / fs.name),
            file_format=ParquetFormat(),
            timestamp_field=fs.event_timestamp,
            created_timestamp_column=source_cfg.created_timestamp or "",
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
    owners = view_feature_owners(project)
    odfvs: dict[str, Any] = {}
    tags: dict[str, dict[str, str]] = {}
    for fs in project.request_sets:
        path = artifact_path(fs, base)
        if not path.is_file():
            raise SchemaError(f"{path} does not exist; run `skewless run` first")
        art = StatisticsArtifact.load(path)
        ref = project.ref(fs)
        from_windows = window_inputs(project, fs)
        request_fields = [
            Field(name=name, dtype=getattr(ft, FEAST_TYPES[f.type][0]))
            for name, f in fs.inputs.items()
            if name not in owners and name not in from_windows
        ]
        sources: list[Any] = [RequestSource(name=f"{fs.name}_request", schema=request_fields)]
        by_view: dict[str, list[str]] = {}
        for name in fs.inputs:
            if name in owners:
                by_view.setdefault(owners[name], []).append(name)
        sources += [views[v][names] for v, names in sorted(by_view.items())]
        odfvs[fs.name] = objects[fs.name] = OnDemandFeatureView(
            name=fs.name,
            sources=sources,
            schema=[
                Field(name=t.name, dtype=getattr(ft, FEAST_TYPES[t.output.type][0]))
                for t in fs.select(request_time=True)
            ],
            mode="python",
            udf=_request_udf(project, fs, path, art, from_windows),
            udf_string=f"skewless request-time transforms of {fs.name}",
            description=fs.description,
            tags={
                **odfv_tags(ref, _relative(path, project.root), art, fs),
                **({WINDOW_INPUTS_TAG: json.dumps(from_windows)} if from_windows else {}),
            },
        )
        tags[fs.name] = service_tags(art, fs)
    from pipelines.feast_windows import window_view

    windows = {}
    for ws in project.window_sets:
        if ws.name in views or ws.name in odfvs:
            raise SchemaError(f"window set name '{ws.name}' is also a feature set name")
        windows[ws.name] = objects[ws.name] = window_view(ws, project.window_set_ref(ws))
    members = {**views, **odfvs, **windows}
    for name, svc in project.services.items():
        unknown = [f for f in svc.feature_sets if f not in members]
        if unknown:
            raise SchemaError(
                f"{project.root / 'skewless.yaml'}: field 'services.{name}.feature_sets': "
                f"unknown feature sets {unknown} (known: {sorted(members)})"
            )
        objects[name] = FeatureService(
            name=name,
            features=[members[f] for f in svc.feature_sets],
            tags={k: v for f in svc.feature_sets for k, v in tags.get(f, {}).items()},
            description=svc.description,
        )
    return objects
