"""``skewless apply``: register the feature sets in Feast and write the serving manifest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from pipelines.feast_objects import (
    FEAST_TYPES,
    ODFV_TAGS,
    SERVICE_ARTIFACT_TAG,
    SERVICE_FINGERPRINTS_TAG,
    VALUE_TYPES,
    WINDOW_INPUTS_TAG,
    repo_objects,
)
from pipelines.feast_windows import WINDOW_SET_TAG
from pipelines.project import Project, load_project
from store.manifest import Manifest, RequestTransformSpec, ServiceSpec, ViewSpec
from store.redis_layout import feast_connection_string
from store.window_layout import window_set_spec
from transforms.atomic import atomic_file
from transforms.errors import SchemaError
from transforms.modules import resolve_feature_set


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


_REQUEST_TYPES = {name: t.name for t, (name, _) in FEAST_TYPES.items()}  # Feast -> field type


def _feast_type(field: Any, where: str, request: bool = False) -> str:
    """The manifest's type name of a Feast field: its Redis value type, or for request data
    the transform field type."""
    got = (_REQUEST_TYPES if request else VALUE_TYPES).get(str(field.dtype))
    if got is None:
        raise SchemaError(f"{where}: Feast type {field.dtype} of '{field.name}' is not served")
    return got


def manifest_from_registry(store: Any) -> Manifest:
    """The serving manifest of a Feast repo, read back from its registry after apply: every
    FeatureView (entity and feature types, ttl), every FeatureService with its features in
    Feast's order and the artifact hashes and fingerprints it is tagged with, and each
    OnDemandFeatureView tagged with ``ODFV_TAGS``. A service using an untagged one is an
    error (SchemaError naming both): its transforms are not ours to run. What the server
    checks at start-up is thus what Feast registered, whoever wrote the repo."""
    views = {
        fv.name: ViewSpec(
            name=fv.name,
            entities={c.name: _feast_type(c, fv.name) for c in fv.entity_columns},
            features={f.name: _feast_type(f, fv.name) for f in fv.features},
            ttl_seconds=int(fv.ttl.total_seconds()) if fv.ttl else 0,
        )
        for fv in store.list_feature_views()
    }
    request: dict[str, RequestTransformSpec] = {}
    untagged: dict[str, list[str]] = {}  # ODFV -> the tags it lacks
    for odfv in store.list_on_demand_feature_views():
        tags = odfv.tags
        if WINDOW_SET_TAG in tags:
            continue  # a window set (pipelines.feast_windows): with_window_sets adds it
        missing = [t for t in ODFV_TAGS if t not in tags]
        if missing:
            untagged[odfv.name] = missing
            continue
        ref = tags["skewless.feature_set"]
        inputs = resolve_feature_set(ref, store.repo_path).inputs
        request_schema = {
            f.name: _feast_type(f, odfv.name, request=True)
            for src in odfv.source_request_sources.values()
            for f in src.schema
            if f.name in inputs
        }
        view_inputs = {
            f.name: f"{proj.name}:{f.name}"
            for proj in odfv.source_feature_view_projections.values()
            for f in proj.features
            if f.name in inputs
        }
        request[odfv.name] = RequestTransformSpec(
            name=odfv.name,
            feature_set=ref,
            artifact_path=tags["skewless.artifact_path"],
            artifact_hash=tags["skewless.artifact_hash"],
            fingerprints=json.loads(tags["skewless.fingerprints"]),
            request_schema=request_schema,
            view_inputs=view_inputs,
            window_inputs=json.loads(tags.get(WINDOW_INPUTS_TAG, "{}")),
        )
    services = {}
    for svc in store.list_feature_services():
        fingerprints: dict[str, str] = {}
        hashes: dict[str, str] = {}
        for key, value in sorted(svc.tags.items()):
            if key.startswith(SERVICE_ARTIFACT_TAG):
                hashes[key.removeprefix(SERVICE_ARTIFACT_TAG)] = value
            elif key.startswith(SERVICE_FINGERPRINTS_TAG):
                fingerprints.update(json.loads(value))
        for p in svc.feature_view_projections:
            if p.name in untagged:
                raise SchemaError(
                    f"feature service '{svc.name}': on-demand feature view '{p.name}' lacks "
                    f"the tags {', '.join(untagged[p.name])}; skewless serves the request-time "
                    "transforms of its feature sets only (see pipelines.feast_objects.odfv_tags)"
                )
        refs = [f"{p.name}:{f.name}" for p in svc.feature_view_projections for f in p.features]
        services[svc.name] = ServiceSpec(svc.name, refs, hashes, fingerprints)
    return Manifest(
        project=store.project,
        entity_key_serialization_version=store.config.entity_key_serialization_version,
        views=views,
        request_transforms=request,
        services=services,
        redis_connection_string=store.config.online_store.connection_string,
    )


def _sources_read(project: Project, base: Path | None) -> dict[str, str]:
    """Where each source was read from by the batch run whose output is ``base`` (its
    ``_run.json``; ``skewless run --input`` relocates them), else where it is declared."""
    out = {name: project.source_path(name) for name in project.config.sources}
    run = (base / "_run.json") if base is not None else None
    if run is not None and run.is_file():
        try:
            out.update(json.loads(run.read_text()).get("sources", {}))
        except (json.JSONDecodeError, AttributeError):
            pass  # an unreadable run report: the declared paths
    return out


def with_window_sets(manifest: Manifest, project: Project, base: Path | None = None) -> Manifest:
    """The manifest plus the project's WindowSets (not Feast objects: the server reads
    their features from the online window state, :mod:`store.window_state`), each with
    the path of its raw events (those the batch run at ``base`` read)."""
    paths = _sources_read(project, base)
    specs = {
        ws.name: dataclasses.replace(
            window_set_spec(ws, project.window_set_ref(ws)),
            source=paths[project.source_of(ws)],
        )
        for ws in project.window_sets
    }
    clash = sorted(set(specs) & (set(manifest.views) | set(manifest.request_transforms)))
    if clash:
        raise SchemaError(f"window set names {clash} are also feature view names")
    for rt in manifest.request_transforms.values():
        for inp, ref in rt.window_inputs.items():
            ws, _, feat = ref.partition(":")
            if ws not in specs or feat not in specs[ws].features:
                raise SchemaError(
                    f"request-time set '{rt.name}': input '{inp}' reads window feature {ref}, "
                    "which the project does not define; run `skewless apply` again"
                )
    for svc in manifest.services.values():
        unknown = sorted(
            {
                ref.partition(":")[0]
                for ref in svc.features
                if ref.partition(":")[0] not in specs
                and ref.partition(":")[0] not in manifest.views
                and ref.partition(":")[0] not in manifest.request_transforms
            }
        )
        if unknown:
            raise SchemaError(
                f"feature service '{svc.name}' reads {unknown}, which the project defines "
                "neither as feature sets nor as window sets"
            )
    return dataclasses.replace(manifest, window_sets=specs)


def apply(
    repo: Path,
    redis_url: str | None = None,
    base: Path | None = None,
    project: str | None = None,
) -> Manifest:
    """Register the project's objects in Feast (like ``feast apply``) and write the
    manifest. A directory without ``skewless.yaml`` is a hand-written Feast repo: its
    registry (after ``feast apply``) is read back as it is, views carrying our tags."""
    repo = Path(repo).resolve()
    if not (repo / "feature_store.yaml").is_file():
        raise SchemaError(f"{repo} has no feature_store.yaml (not a Feast repo)")
    if redis_url or project:
        configure_repo(repo, redis_url, project)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    skewless_project: Project | None = None
    if (repo / "skewless.yaml").is_file():
        skewless_project = load_project(repo)
        base = base or skewless_project.data_dir
        if not (base / "features").exists():
            raise SchemaError(f"{base / 'features'} does not exist; run `skewless run` first")
        objects: dict[str, Any] = repo_objects(skewless_project, base)
        store.apply(list(objects.values()))
    manifest = manifest_from_registry(store)
    if skewless_project is not None:
        manifest = with_window_sets(manifest, skewless_project, base)
    manifest.save(repo)
    return Manifest.load(repo)
