"""The catalog of views, services and request transforms, and the request plans compiled
from it once per feature service or feature list."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import UnknownService, UnknownView, clip
from store import redis_layout as rl
from store.manifest import Manifest, RequestTransformSpec, ServiceSpec, ViewSpec, WindowSetSpec
from store.resp import hmget_parts
from store.window_layout import WindowLayout, checked_window_set
from transforms.errors import ArtifactError, RequestError, SchemaError

PLAN_CACHE_SIZE = 512


# ------------------------------------------------------------------ start-up checks


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class LoadedTransforms:
    """A request-time feature set, imported and bound to its verified artifact."""

    spec: RequestTransformSpec
    engine: Any  # transforms.engines.online.OnlineEngine
    outputs: tuple[str, ...]
    output_types: dict[str, str]  # output -> field type name ("float64", ...)
    fingerprints: dict[str, str]
    artifact_hash: str


def load_request_transforms(repo: Path, spec: RequestTransformSpec) -> LoadedTransforms:
    """Import the feature set, load its artifact and refuse any drift from the manifest.

    The artifact must hash to ``spec.artifact_hash`` (its content hash; the sha256 of the
    file bytes is accepted too) and every request-time transform's fingerprint (code,
    declaration, statistics) must equal the one registered, else ArtifactError.
    """
    from transforms.artifact import StatisticsArtifact
    from transforms.engines.online import OnlineEngine
    from transforms.modules import resolve_feature_set

    try:
        fs = resolve_feature_set(spec.feature_set, repo)
    except SchemaError as exc:
        raise ArtifactError(f"request transforms '{spec.name}': {exc}") from None
    path = repo / spec.artifact_path
    artifact = StatisticsArtifact.load(path)
    if spec.artifact_hash not in (artifact.content_hash, _file_sha256(path)):
        raise ArtifactError(
            f"request transforms '{spec.name}': artifact {path} hash "
            f"{artifact.content_hash[:12]} differs from the manifest's {spec.artifact_hash[:12]}; "
            "re-run `skewless apply` or restore the registered artifact"
        )
    engine = OnlineEngine(fs, artifact, request_time_only=True)
    computed = fs.fingerprints(artifact)
    for name in engine.outputs:
        want = spec.fingerprints.get(name)
        if want != computed[name]:
            raise ArtifactError(
                f"request transforms '{spec.name}': transform '{name}' fingerprint "
                f"{computed[name][:12]} differs from the manifest's {(want or 'none')[:12]}; "
                "the code or its statistics changed since `skewless apply`"
            )
    types = {f.name: f.type.name for f in engine.runner.outputs}
    return LoadedTransforms(
        spec,
        engine,
        engine.outputs,
        types,
        {n: computed[n] for n in engine.outputs},
        artifact.content_hash,
    )


class LoadedWindows:
    """A window set, imported from the project and checked against its manifest entry:
    its state layout (reads) and, built on first use, its event-value runner (pushes)."""

    def __init__(self, spec: WindowSetSpec, window_set: Any, layout: WindowLayout) -> None:
        self.spec = spec
        self.window_set = window_set
        self.layout = layout
        self._runner: Any = None

    @property
    def runner(self) -> Any:  # transforms.window_runtime.WindowRunner
        if self._runner is None:
            from transforms.window_runtime import WindowRunner

            self._runner = WindowRunner(self.window_set)
        return self._runner


def load_window_set(repo: Path, project: str, spec: WindowSetSpec) -> LoadedWindows:
    """The window set checked against its manifest entry (:func:`checked_window_set`)."""
    ws = checked_window_set(repo, spec)
    return LoadedWindows(spec, ws, WindowLayout(project, ws, spec.grace_micros))


# ------------------------------------------------------------------------ catalog


@dataclass
class Catalog:
    """The manifest plus loaded request transforms and window sets: everything plans are
    compiled from."""

    manifest: Manifest
    transforms: dict[str, LoadedTransforms]
    repo: Path
    windows: dict[str, LoadedWindows] = field(default_factory=dict)

    @classmethod
    def load(cls, repo: str | Path) -> Catalog:
        repo = Path(repo)
        manifest = Manifest.load(repo)
        loaded = {
            name: load_request_transforms(repo, spec)
            for name, spec in manifest.request_transforms.items()
        }
        for svc in manifest.services.values():
            _check_service(svc, loaded)
        windows = {
            name: load_window_set(repo, manifest.project, spec)
            for name, spec in manifest.window_sets.items()
        }
        return cls(manifest, loaded, repo, windows)


def _check_service(svc: ServiceSpec, loaded: Mapping[str, LoadedTransforms]) -> None:
    """A service's registered fingerprints / artifact hashes must match what was loaded."""
    by_output = {o: lt for lt in loaded.values() for o in lt.outputs}
    for name, fp in svc.fingerprints.items():
        lt = by_output.get(name)
        if lt is not None and lt.fingerprints[name] != fp:
            raise ArtifactError(
                f"feature service '{svc.name}': transform '{name}' fingerprint "
                f"{lt.fingerprints[name][:12]} differs from the registered {fp[:12]}"
            )
    hashes = {lt.engine.runner.feature_set.name: lt.artifact_hash for lt in loaded.values()}
    for fs_name, h in svc.artifact_hashes.items():
        if fs_name in hashes and hashes[fs_name] != h:
            raise ArtifactError(
                f"feature service '{svc.name}': artifact of '{fs_name}' hash "
                f"{hashes[fs_name][:12]} differs from the registered {h[:12]}"
            )


# -------------------------------------------------------------------------- plans


@dataclass
class KeyGroup:
    """Views sharing one join-key set: one Redis hash, one HMGET per entity."""

    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]
    encoder: rl.EntityKeyEncoder
    fields: list[bytes] = field(default_factory=list)
    views: list[ViewRead] = field(default_factory=list)
    # RESP bytes of "HMGET <key> <fields...>" around the key, built once per plan
    hmget_head: bytes = b""
    hmget_tail: bytes = b""


@dataclass
class ViewRead:
    view: ViewSpec
    offset: int  # position of this view's first field in the group's HMGET
    features: list[str]
    ttl_ns: int
    types: list[str] = field(default_factory=list)  # Feast value type per feature


WINDOW_INPUT = -1
"""A transform input wired as ``(WINDOW_INPUT, window read index, feature index)`` reads a
window feature as of the request time; ``(group, view, feature index)`` a view feature."""


@dataclass
class WindowRead:
    """The window features a plan reads of one window set (one ZRANGEBYSCORE per entity)."""

    windows: LoadedWindows
    features: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A compiled request shape (a feature service or a feature list)."""

    name: str  # the service, or "" for a feature list
    entity_names: list[str]  # join keys, output first
    groups: list[KeyGroup]
    # output columns after the entity keys: (name, kind, a, b)
    #   kind "view": a = (group index, view index), b = feature index
    #   kind "transform": a = transform set name, b = output name
    #   kind "window": a = index in ``windows``, b = feature name
    outputs: list[tuple[str, str, Any, Any]]
    transform_sets: list[tuple[LoadedTransforms, dict[str, tuple[int, int, int]]]]
    request_fields: dict[str, str]  # request field -> type name
    fingerprints: dict[str, str]
    artifact_hashes: dict[str, str]
    output_types: dict[str, str]  # output column -> type name (for logs)
    windows: list[WindowRead] = field(default_factory=list)  # read after the groups' HMGETs
    column_names: list[str] = field(init=False)  # every Result's names (shared)
    column_types: list[str] = field(init=False)  # per result column ("" for entity keys)

    def __post_init__(self) -> None:
        self.column_names = self.entity_names + [o[0] for o in self.outputs]
        outputs = [self.output_types.get(o[0], "") for o in self.outputs]
        self.column_types = [""] * len(self.entity_names) + outputs


def _split_ref(ref: str) -> tuple[str, str]:
    view, sep, feat = ref.partition(":")
    if not sep or not view or not feat:
        raise RequestError(f"feature reference '{clip(ref)}' is not 'view:feature'", "features")
    return view, feat


@dataclass
class _Resolved:
    """Feature references resolved against the catalog, in first-seen order."""

    view_feats: dict[str, list[str]] = field(default_factory=dict)  # view -> features to read
    outputs_spec: list[tuple[str, str, str]] = field(default_factory=list)  # kind, source, feat
    used_sets: dict[str, LoadedTransforms] = field(default_factory=dict)
    window_reads: dict[str, WindowRead] = field(default_factory=dict)

    def need(self, view: str, feat: str) -> None:
        feats = self.view_feats.setdefault(view, [])
        if feat not in feats:
            feats.append(feat)

    def need_window(self, catalog: Catalog, window_set: str, feat: str) -> None:
        wr = self.window_reads.get(window_set)
        if wr is None:
            wr = self.window_reads[window_set] = WindowRead(catalog.windows[window_set])
        if feat not in wr.features:
            wr.features.append(feat)


def _resolve_ref(catalog: Catalog, r: _Resolved, ref: str, view: str, feat: str) -> None:
    """Record one reference ``view:feat`` (RequestError if the view has no such feature)."""
    m = catalog.manifest
    if view in m.views:
        if feat not in m.views[view].features:
            raise RequestError(f"feature view '{view}' has no feature '{clip(feat)}'", clip(ref))
        r.need(view, feat)
        r.outputs_spec.append(("view", view, feat))
    elif view in catalog.transforms:
        lt = catalog.transforms[view]
        if feat not in lt.outputs:
            raise RequestError(
                f"on-demand feature view '{view}' has no feature '{clip(feat)}'", clip(ref)
            )
        r.used_sets[view] = lt
        r.outputs_spec.append(("transform", view, feat))
    elif view in catalog.windows:
        if feat not in catalog.windows[view].spec.features:
            raise RequestError(f"window set '{view}' has no feature '{clip(feat)}'", clip(ref))
        r.need_window(catalog, view, feat)
        r.outputs_spec.append(("window", view, feat))
    else:
        raise UnknownView(f"unknown feature view '{clip(view)}'", clip(ref))


def _resolve(catalog: Catalog, refs: Sequence[str]) -> _Resolved:
    """All references, duplicates dropped, plus the hidden view inputs of the transforms."""
    m = catalog.manifest
    r = _Resolved()
    seen: set[tuple[str, str]] = set()
    for ref in refs:
        if not isinstance(ref, str):
            raise RequestError("feature references must be strings", "features")
        view, feat = _split_ref(ref)
        if (view, feat) not in seen:
            seen.add((view, feat))
            _resolve_ref(catalog, r, ref, view, feat)
    # Hidden inputs of request-time transforms are read but not returned (as Feast drops them).
    for name in r.used_sets:
        for kind, v, f in m.transform_reads(name):
            if kind == "view":
                r.need(v, f)
            else:  # a window as of the request time
                r.need_window(catalog, v, f)
    return r


def _key_groups(
    m: Manifest, view_feats: dict[str, list[str]]
) -> tuple[list[KeyGroup], dict[str, tuple[int, int]]]:
    """Views grouped by join-key set (one HMGET per entity per group), and where each view
    sits: view -> (group index, view index in the group)."""
    groups: list[KeyGroup] = []
    where: dict[str, tuple[int, int]] = {}
    for view_name, feats in view_feats.items():
        spec = m.views[view_name]
        jk = tuple(spec.entities)
        group = next((g for g in groups if set(g.join_keys) == set(jk)), None)
        if group is None:
            types = tuple(spec.entities[k] for k in jk)
            group = KeyGroup(jk, types, rl.EntityKeyEncoder(m.project, jk, types))
            groups.append(group)
        offset = len(group.fields)
        group.fields.extend(rl.feature_field(view_name, f) for f in feats)
        group.fields.append(rl.timestamp_field(view_name))
        where[view_name] = (groups.index(group), len(group.views))
        group.views.append(
            ViewRead(
                spec,
                offset,
                feats,
                spec.ttl_seconds * 1_000_000_000,
                [spec.features[f] for f in feats],
            )
        )
    for g in groups:
        g.hmget_head, g.hmget_tail = hmget_parts(g.fields)
    return groups, where


def _entity_names(groups: list[KeyGroup], window_reads: Mapping[str, WindowRead]) -> list[str]:
    entity_names: list[str] = []
    key_sets = [g.join_keys for g in groups]
    key_sets += [wr.windows.layout.join_keys for wr in window_reads.values()]
    for join_keys in key_sets:
        for k in join_keys:
            if k not in entity_names:
                entity_names.append(k)
    return entity_names


def _outputs(
    catalog: Catalog,
    r: _Resolved,
    groups: list[KeyGroup],
    where: dict[str, tuple[int, int]],
    full_feature_names: bool,
) -> tuple[list[tuple[str, str, Any, Any]], dict[str, str]]:
    """The plan's outputs (name, kind, where to read, which feature) and their types."""
    window_index = {name: i for i, name in enumerate(r.window_reads)}
    outputs: list[tuple[str, str, Any, Any]] = []
    output_types: dict[str, str] = {}
    for kind, src, feat in r.outputs_spec:
        out_name = f"{src}__{feat}" if full_feature_names else feat
        if kind == "view":
            gi, vi = where[src]
            outputs.append((out_name, kind, (gi, vi), groups[gi].views[vi].features.index(feat)))
            output_types[out_name] = catalog.manifest.views[src].features[feat]
        elif kind == "window":
            outputs.append((out_name, kind, window_index[src], feat))
            output_types[out_name] = catalog.windows[src].spec.features[feat]
        else:
            outputs.append((out_name, kind, src, feat))
            output_types[out_name] = catalog.transforms[src].output_types[feat]
    return outputs, output_types


def _check_collisions(names: list[str]) -> None:
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RequestError(
            f"feature names collide: {dupes}; set full_feature_names to true", "features"
        )


def _wire_transforms(
    r: _Resolved,
    groups: list[KeyGroup],
    where: dict[str, tuple[int, int]],
    outputs: list[tuple[str, str, Any, Any]],
) -> tuple[
    list[tuple[LoadedTransforms, dict[str, tuple[int, int, int]]]],
    dict[str, str],
    dict[str, str],
    dict[str, str],
]:
    """Each used transform set with its view inputs' positions; the request fields,
    fingerprints and artifact hashes of the plan."""
    transform_sets: list[tuple[LoadedTransforms, dict[str, tuple[int, int, int]]]] = []
    request_fields: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    hashes: dict[str, str] = {}
    window_index = {name: i for i, name in enumerate(r.window_reads)}
    for set_name, lt in r.used_sets.items():
        wiring: dict[str, tuple[int, int, int]] = {}
        for inp, src in lt.spec.view_inputs.items():
            v, f = _split_ref(src)
            gi, vi = where[v]
            wiring[inp] = (gi, vi, groups[gi].views[vi].features.index(f))
        for inp, src in lt.spec.window_inputs.items():
            v, f = _split_ref(src)
            wi = window_index[v]
            wiring[inp] = (WINDOW_INPUT, wi, r.window_reads[v].features.index(f))
        for inp in lt.engine.inputs:
            if inp not in wiring:
                request_fields[inp] = lt.spec.request_schema.get(inp, "float64")
        transform_sets.append((lt, wiring))
        wanted = {o[3] for o in outputs if o[1] == "transform" and o[2] == set_name}
        fingerprints.update({k: v for k, v in lt.fingerprints.items() if k in wanted})
        hashes[lt.engine.runner.feature_set.name] = lt.artifact_hash
    return transform_sets, request_fields, fingerprints, hashes


def compile_plan(
    catalog: Catalog, refs: Sequence[str], full_feature_names: bool, name: str = ""
) -> Plan:
    """Resolve feature references against the manifest into a Plan (RequestError if unknown)."""
    r = _resolve(catalog, refs)
    groups, where = _key_groups(catalog.manifest, r.view_feats)
    entity_names = _entity_names(groups, r.window_reads)
    outputs, output_types = _outputs(catalog, r, groups, where, full_feature_names)
    _check_collisions(entity_names + [o[0] for o in outputs])
    transform_sets, request_fields, fingerprints, hashes = _wire_transforms(
        r, groups, where, outputs
    )
    return Plan(
        name,
        entity_names,
        groups,
        outputs,
        transform_sets,
        request_fields,
        fingerprints,
        hashes,
        output_types,
        list(r.window_reads.values()),
    )


class PlanCache:
    """Plans by (service or feature tuple, full_feature_names), bounded."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._plans: dict[Any, Plan] = {}

    def for_service(self, service: str, full_feature_names: bool) -> Plan:
        key = ("svc", service, full_feature_names)
        plan = self._plans.get(key)
        if plan is None:
            svc = self.catalog.manifest.services.get(service)
            if svc is None:
                raise UnknownService(
                    f"unknown feature service '{clip(service)}'", "feature_service"
                )
            plan = compile_plan(self.catalog, svc.features, full_feature_names, service)
            self._store(key, plan)
        return plan

    def for_features(self, refs: Any, full_feature_names: bool) -> Plan:
        if not isinstance(refs, list) or not refs:
            raise RequestError(
                "give 'features' (a non-empty list) or 'feature_service'", "features"
            )
        key = (
            ("refs", tuple(refs), full_feature_names) if all(type(r) is str for r in refs) else None
        )
        plan = self._plans.get(key) if key is not None else None
        if plan is None:
            plan = compile_plan(self.catalog, refs, full_feature_names)
            if key is not None:
                self._store(key, plan)
        return plan

    def _store(self, key: Any, plan: Plan) -> None:
        if len(self._plans) >= PLAN_CACHE_SIZE:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
