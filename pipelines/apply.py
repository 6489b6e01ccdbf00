"""``skewless apply``: register the feature sets in Feast and write the serving manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.feast_objects import (
    FEAST_TYPES,
    FEATURE_SETS_MODULE,
    MODEL_SERVICE,
    artifact_path,
    data_dir,
    repo_objects,
    view_feature_owners,
)
from serving.config import feast_connection_string
from serving.manifest import Manifest, RequestTransformSpec, ServiceSpec, ViewSpec
from transforms.artifact import StatisticsArtifact
from transforms.atomic import atomic_file
from transforms.errors import SchemaError


def configure_repo(repo: Path, redis_url: str | None, project: str | None = None) -> None:
    """Point feature_store.yaml at ``redis_url`` and/or rename the project (atomic rewrite)."""
    path = repo / "feature_store.yaml"
    config = yaml.safe_load(path.read_text())
    wanted = dict(config)
    if redis_url:
        online = dict(config["online_store"], connection_string=feast_connection_string(redis_url))
        wanted["online_store"] = online
    if project:
        wanted["project"] = project
    if wanted == config:
        return  # leave the file (and its formatting) alone
    config = wanted
    with atomic_file(path, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)


def build_manifest(project: str, connection: str, base: Path) -> Manifest:
    from feature_repo import feature_sets

    views = {
        fs.name: ViewSpec(
            name=fs.name,
            entities={k: FEAST_TYPES[t][1] for k, t in fs.entities.items()},
            features={t.name: FEAST_TYPES[t.output.type][1] for t in fs.order},
            ttl_seconds=fs.ttl_seconds,
        )
        for fs in feature_sets.ENTITY_FEATURE_SETS
    }
    owners = view_feature_owners()
    request: dict[str, RequestTransformSpec] = {}
    service_features = [f"{v}:{f}" for v, spec in views.items() for f in spec.features]
    hashes: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for fs in feature_sets.REQUEST_FEATURE_SETS:
        path = artifact_path(fs, base)
        art = StatisticsArtifact.load(path)
        fps = fs.fingerprints(art)
        attr = next(k for k, v in vars(feature_sets).items() if v is fs)
        request[fs.name] = RequestTransformSpec(
            name=fs.name,
            feature_set=f"{FEATURE_SETS_MODULE}:{attr}",
            artifact_path=str(path),
            artifact_hash=art.content_hash,
            fingerprints=fps,
            request_schema={n: f.type.name for n, f in fs.inputs.items() if n not in owners},
            view_inputs={n: f"{owners[n]}:{n}" for n in fs.inputs if n in owners},
        )
        service_features += [f"{fs.name}:{t.name}" for t in fs.select(request_time=True)]
        hashes[fs.name] = art.content_hash
        fingerprints.update(fps)
    services = {MODEL_SERVICE: ServiceSpec(MODEL_SERVICE, service_features, hashes, fingerprints)}
    return Manifest(
        project=project,
        entity_key_serialization_version=3,
        views=views,
        request_transforms=request,
        services=services,
        redis_connection_string=connection,
    )


def apply(
    repo: Path,
    redis_url: str | None = None,
    base: Path | None = None,
    project: str | None = None,
) -> Manifest:
    """Register every object in Feast (like ``feast apply``) and write the manifest."""
    repo = Path(repo).resolve()
    base = base or data_dir()
    for fs_path in (base / "features",):
        if not fs_path.exists():
            raise SchemaError(f"{fs_path} does not exist; run `skewless run` first")
    if redis_url or project:
        configure_repo(repo, redis_url, project)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    objects: dict[str, Any] = repo_objects(base)
    store.apply(list(objects.values()))
    connection = store.config.online_store.connection_string
    manifest = build_manifest(store.project, connection, base)
    manifest.save(repo)
    return manifest
