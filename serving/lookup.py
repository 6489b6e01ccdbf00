"""Online lookups: request -> plan -> one pipelined Redis round trip -> decoded, TTL-checked
values -> request-time transforms.

Everything the request path needs is resolved once, per feature service or feature list,
into a :class:`Plan` (hashed field names, entity-key encoders, decoders, transform input
wiring); a request then only encodes keys, sends one HMGET per entity (all views that share
the entity's join keys live in the same Redis hash, as Feast stores them) in one pipeline,
and decodes with :mod:`serving.redis_layout`. No Feast, pandas or protobuf.

Statuses (Feast's ``FieldStatus`` numbers) and where they differ from Feast's server, on
purpose, to match offline retrieval:

* ``PRESENT`` (1): a value was stored and is within the view's ttl;
* ``NULL_VALUE`` (2): the entity's row exists but this value is null (Feast says PRESENT);
* ``NOT_FOUND`` (3): the entity has no row for the view (Feast says PRESENT with null);
* ``OUTSIDE_MAX_AGE`` (4): the row is older than the view's ttl relative to now, so the
  value is null, as a point-in-time join would give (Feast's server returns the stale value).

Request-time transform outputs are PRESENT or NULL_VALUE; their inputs from views are null
unless PRESENT, exactly what the offline join feeds the same transforms.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving import redis_layout as rl
from serving.errors import (
    InvalidBody,
    MissingRequestData,
    TooManyEntities,
    UnknownService,
    UnknownView,
    clip,
    describe,
)
from serving.manifest import Manifest, RequestTransformSpec, ServiceSpec, ViewSpec
from serving.redis_client import RedisPipeline, hmget_parts
from transforms.errors import (
    ArtifactError,
    RequestError,
    SchemaError,
    SkewlessError,
    TransformError,
)

PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = 1, 2, 3, 4
STATUS_NAMES = ("INVALID", "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE")
EPOCH_TS = (0, 0)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_INT_KEY_RANGES = {
    "int64": (_INT64_MIN, _INT64_MAX),
    "unix_timestamp": (_INT64_MIN, _INT64_MAX),
    "int32": (-(1 << 31), (1 << 31) - 1),
}
_EXACT_FLOAT = float(1 << 53)  # beyond, a JSON number may already have lost digits
PLAN_CACHE_SIZE = 512
_I64 = struct.Struct("<q")

# Request field type names (manifest) -> a check of one JSON value.
_REQUEST_CHECKS: dict[str, Any] = {
    "float64": lambda v: type(v) is float or type(v) is int,
    "int64": lambda v: type(v) is int and _INT64_MIN <= v <= _INT64_MAX,
    "string": lambda v: type(v) is str,
    "bool": lambda v: type(v) is bool,
    "timestamp": lambda v: type(v) is str,
}


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


# ------------------------------------------------------------------------ catalog


@dataclass
class Catalog:
    """The manifest plus loaded request transforms: everything plans are compiled from."""

    manifest: Manifest
    transforms: dict[str, LoadedTransforms]
    repo: Path

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
        return cls(manifest, loaded, repo)


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


@dataclass
class Plan:
    """A compiled request shape (a feature service or a feature list)."""

    name: str  # the service, or "" for a feature list
    entity_names: list[str]  # join keys, output first
    groups: list[KeyGroup]
    # output columns after the entity keys: (name, kind, a, b)
    #   kind "view": a = (group index, view index), b = feature index
    #   kind "transform": a = transform set name, b = output name
    outputs: list[tuple[str, str, Any, Any]]
    transform_sets: list[tuple[LoadedTransforms, dict[str, tuple[int, int, int]]]]
    request_fields: dict[str, str]  # request field -> type name
    fingerprints: dict[str, str]
    artifact_hashes: dict[str, str]
    output_types: dict[str, str]  # output column -> type name (for logs)
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


def compile_plan(
    catalog: Catalog, refs: Sequence[str], full_feature_names: bool, name: str = ""
) -> Plan:
    """Resolve feature references against the manifest into a Plan (RequestError if unknown)."""
    m = catalog.manifest
    view_feats: dict[str, list[str]] = {}  # view -> features to read, in first-seen order
    outputs_spec: list[tuple[str, str, str]] = []  # (kind, view/transform set, feature)
    used_sets: dict[str, LoadedTransforms] = {}

    def need(view: str, feat: str) -> None:
        feats = view_feats.setdefault(view, [])
        if feat not in feats:
            feats.append(feat)

    seen: set[tuple[str, str]] = set()
    for ref in refs:
        if not isinstance(ref, str):
            raise RequestError("feature references must be strings", "features")
        view, feat = _split_ref(ref)
        if (view, feat) in seen:
            continue
        seen.add((view, feat))
        if view in m.views:
            if feat not in m.views[view].features:
                raise RequestError(
                    f"feature view '{view}' has no feature '{clip(feat)}'", clip(ref)
                )
            need(view, feat)
            outputs_spec.append(("view", view, feat))
        elif view in catalog.transforms:
            lt = catalog.transforms[view]
            if feat not in lt.outputs:
                raise RequestError(
                    f"on-demand feature view '{view}' has no feature '{clip(feat)}'", clip(ref)
                )
            used_sets[view] = lt
            outputs_spec.append(("transform", view, feat))
        else:
            raise UnknownView(f"unknown feature view '{clip(view)}'", clip(ref))
    # Hidden inputs of request-time transforms are read but not returned (as Feast drops them).
    for lt in used_sets.values():
        for inp, src in lt.spec.view_inputs.items():
            v, f = _split_ref(src)
            if v not in m.views or f not in m.views[v].features:
                raise ArtifactError(f"'{lt.spec.name}': input {inp} reads unknown {src}")
            need(v, f)

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
    entity_names: list[str] = []
    for g in groups:
        for k in g.join_keys:
            if k not in entity_names:
                entity_names.append(k)

    outputs: list[tuple[str, str, Any, Any]] = []
    output_types: dict[str, str] = {}
    for kind, src, feat in outputs_spec:
        out_name = f"{src}__{feat}" if full_feature_names else feat
        if kind == "view":
            gi, vi = where[src]
            outputs.append((out_name, kind, (gi, vi), groups[gi].views[vi].features.index(feat)))
            output_types[out_name] = m.views[src].features[feat]
        else:
            outputs.append((out_name, kind, src, feat))
            output_types[out_name] = catalog.transforms[src].output_types[feat]
    names = entity_names + [o[0] for o in outputs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RequestError(
            f"feature names collide: {dupes}; set full_feature_names to true", "features"
        )

    transform_sets = []
    request_fields: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for set_name, lt in used_sets.items():
        wiring: dict[str, tuple[int, int, int]] = {}
        for inp, src in lt.spec.view_inputs.items():
            v, f = _split_ref(src)
            gi, vi = where[v]
            wiring[inp] = (gi, vi, groups[gi].views[vi].features.index(f))
        for inp in lt.engine.inputs:
            if inp not in wiring:
                request_fields[inp] = lt.spec.request_schema.get(inp, "float64")
        transform_sets.append((lt, wiring))
        wanted = {o[3] for o in outputs if o[1] == "transform" and o[2] == set_name}
        fingerprints.update({k: v for k, v in lt.fingerprints.items() if k in wanted})
        hashes[lt.engine.runner.feature_set.name] = lt.artifact_hash
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


# ------------------------------------------------------------------------ results


@dataclass
class Result:
    """Columns of one lookup, entity keys first; timestamps as (seconds, nanos)."""

    plan: Plan
    n: int
    names: list[str]
    values: list[list[Any]]
    statuses: list[list[int]]
    timestamps: list[list[tuple[int, int]]]
    request_data: dict[str, list[Any]]
    entities: dict[str, list[Any]]


def parse_entities(
    plan: Plan, entities: Any, max_entities: int
) -> tuple[int, dict[str, list[Any]]]:
    """Validate the ``entities`` object (join keys + request data); return n and columns.

    Join-key columns come back as the view's key type: int keys sent as a string Python's
    ``int`` parses or as an integral float (as Feast's server accepts them) become ints,
    exactly or not at all (RequestError naming the key and both types)."""
    if not isinstance(entities, dict):
        raise InvalidBody("'entities' must be an object of equal-length lists", "entities")
    n = -1
    for k, v in entities.items():
        if not isinstance(v, list):
            raise InvalidBody(f"entities['{clip(k)}'] must be a list, got {describe(v)}", clip(k))
        if n == -1:
            n = len(v)
        elif len(v) != n:
            raise RequestError(
                "all entity and request-data lists must have the same length", clip(k)
            )
    if n <= 0:
        raise RequestError("no entities given", "entities")
    if n > max_entities:
        raise TooManyEntities(f"{n} entities exceed the limit of {max_entities}", "entities")
    for k in plan.entity_names:
        if k not in entities:
            raise RequestError(f"missing entity key '{k}'", k)
    for g in plan.groups:
        for k, t in zip(g.join_keys, g.key_types, strict=True):
            entities[k] = key_column(k, t, entities[k])
    for k, type_name in plan.request_fields.items():
        col = entities.get(k)
        if col is None:
            raise MissingRequestData(f"missing request data field '{k}'", k)
        check = _REQUEST_CHECKS.get(type_name)
        if check is not None:
            for v in col:
                if v is not None and not check(v):
                    raise RequestError(
                        f"request data '{k}' expects {type_name}, got {describe(v)}", k
                    )
    return n, entities


def key_column(key: str, type_name: str, col: list[Any]) -> list[Any]:
    """An entity-key column as the declared key type (``col`` itself when it already is);
    RequestError naming the key, the type and the offending value otherwise."""
    bounds = _INT_KEY_RANGES.get(type_name)
    if bounds is not None:
        lo, hi = bounds
        # one C-level pass each: all exact ints (bool excluded), then the range
        if all(type(v) is int for v in col) and lo <= min(col) and max(col) <= hi:
            return col
        return [_exact_int(key, type_name, v, lo, hi) for v in col]
    if type_name == "string":
        if not all(type(v) is str for v in col):
            bad = next(v for v in col if type(v) is not str)
            raise _wrong_key(key, type_name, bad)
        return col
    if not all(isinstance(v, str | bytes) for v in col):
        raise _wrong_key(key, type_name, next(v for v in col if not isinstance(v, str | bytes)))
    return col


def _exact_int(key: str, type_name: str, v: Any, lo: int, hi: int) -> int:
    """``v`` as the integer it denotes exactly: an int, a string Python's ``int`` parses
    (as Feast does: sign, spaces, leading zeros, ``_``), or a float with no fraction within
    2**53 (larger floats may already have lost digits in the JSON parser)."""
    t = type(v)
    if t is int:
        out = v
    elif t is str:
        try:
            out = int(v)
        except ValueError:
            raise _wrong_key(key, type_name, v, "not an integer") from None
    elif t is float:
        if not (v.is_integer() and -_EXACT_FLOAT <= v <= _EXACT_FLOAT):
            raise _wrong_key(key, type_name, v, "not an exact integer")
        out = int(v)
    else:
        raise _wrong_key(key, type_name, v)
    if not lo <= out <= hi:
        raise _wrong_key(key, type_name, v, f"outside the {type_name} range")
    return out


def _wrong_key(key: str, type_name: str, v: Any, why: str = "") -> RequestError:
    detail = f" ({why})" if why else ""
    return RequestError(f"entity key '{key}' expects {type_name}, got {describe(v)}{detail}", key)


def encode_keys(group: KeyGroup, entities: Mapping[str, list[Any]], n: int) -> list[bytes]:
    """Redis keys of the group's entities, whose key columns :func:`parse_entities` has
    checked and converted to the key types."""
    cols = [entities[k] for k in group.join_keys]
    if len(cols) == 1:
        fixed = group.encoder.fixed_int64()
        if fixed is not None:
            prefix, suffix = fixed
            pack = _I64.pack
            return [prefix + pack(v) + suffix for v in cols[0]]
        enc = group.encoder.encode
        return [enc((v,)) for v in cols[0]]
    enc = group.encoder.encode
    return [enc(vals) for vals in zip(*cols, strict=True)]


_TS_CACHE: dict[bytes, tuple[int, int]] = {}
_TS_CACHE_MAX = 200_000
_ALL_PRESENT: dict[int, list[int]] = {}


def _all_present(n: int) -> list[int]:
    """A shared, never mutated [PRESENT] * n (lets the JSON encoder reuse its name list)."""
    col = _ALL_PRESENT.get(n)
    if col is None:
        if len(_ALL_PRESENT) > 4096:
            _ALL_PRESENT.clear()
        col = _ALL_PRESENT[n] = [PRESENT] * n
    return col


def _decode_ts(raw: bytes) -> tuple[int, int]:
    ts = _TS_CACHE.get(raw)
    if ts is None:
        if len(_TS_CACHE) >= _TS_CACHE_MAX:
            _TS_CACHE.clear()
        ts = _TS_CACHE[raw] = rl.decode_timestamp(raw)
    return ts


Decoded = list[list[tuple[list[list[Any]], list[list[int]], list[tuple[int, int]]]]]
"""Per key group, per view: (values per feature, statuses per feature, ts per entity)."""


def decode(
    plan: Plan,
    n: int,
    replies: list[list[list[bytes | None]]],
    entities: dict[str, list[Any]],
    now_ns: int | None = None,
) -> Result:
    """Decode HMGET replies (per group, per entity) into columns, then run transforms.

    One entity is decoded value by value; more are columnar: each group's replies are transposed once (``zip(*rows)``), every feature
    column is decoded by type in one call (:func:`serving.redis_layout.decode_column`), and
    the per-entity work is only the row timestamp / ttl check. Statuses of a column without
    nulls or missing rows are one shared all-PRESENT list.
    """
    decoded = decode_views(plan, n, replies, time.time_ns() if now_ns is None else now_ns)
    (transformed,) = run_transforms(plan, [(n, decoded, entities)])
    return assemble(plan, n, decoded, transformed, entities)


def decode_many(
    plan: Plan,
    lookups: Sequence[tuple[int, list[list[list[bytes | None]]], dict[str, list[Any]]]],
    now_ns: int | None = None,
) -> list[Result | TransformError]:
    """:func:`decode` of several lookups of one plan, ``(n, replies, entities)`` each,
    whose Redis replies arrived together: the views are decoded per lookup, the request-time
    transforms run once over all their rows (transforms are row-independent, rule 19 of
    transforms/CONTRACT.md, so each row gets the value it gets alone). If that fails, the
    transforms run per lookup, so a lookup whose own inputs make a transform fail gets its
    TransformError and the others are unaffected. Any other error propagates."""
    now = time.time_ns() if now_ns is None else now_ns
    parts = [(n, decode_views(plan, n, replies, now), ent) for n, replies, ent in lookups]
    outs: list[Transformed | TransformError]
    try:
        outs = list(run_transforms(plan, parts))
    except TransformError:  # find whose rows fail: run each lookup alone
        outs = []
        for part in parts:
            try:
                outs.extend(run_transforms(plan, [part]))
            except TransformError as exc:
                outs.append(exc)
    results: list[Result | TransformError] = []
    for (n, dec, entities), out in zip(parts, outs, strict=True):
        results.append(
            out if isinstance(out, TransformError) else assemble(plan, n, dec, out, entities)
        )
    return results


def decode_views(
    plan: Plan, n: int, replies: list[list[list[bytes | None]]], now_ns: int
) -> Decoded:
    """The view columns of one lookup, with statuses (NOT_FOUND, NULL_VALUE, TTL)."""
    if n == 1:
        return _decode_views_one(plan, replies, now_ns)
    return _decode_views_columns(plan, n, replies, now_ns)


def _decode_views_columns(
    plan: Plan, n: int, replies: list[list[list[bytes | None]]], now_ns: int
) -> Decoded:
    """:func:`decode_views` column by column (see :func:`decode`)."""
    decode_column = rl.decode_column
    present = _all_present(n)
    decoded: Decoded = []
    for gi, group in enumerate(plan.groups):
        per_view = []
        cols = list(zip(*replies[gi], strict=True))
        for vr in group.views:
            nf = len(vr.features)
            off = vr.offset
            ttl = vr.ttl_ns
            tss: list[tuple[int, int]] = [EPOCH_TS] * n
            dead: list[tuple[int, int]] = []  # (entity, status) of missing / expired rows
            for e, raw_ts in enumerate(cols[off + nf]):
                if raw_ts is None:
                    dead.append((e, NOT_FOUND))  # entity has no row for this view
                    continue
                ts = tss[e] = _decode_ts(raw_ts)
                if ttl and now_ns - (ts[0] * 1_000_000_000 + ts[1]) > ttl:
                    dead.append((e, OUTSIDE_MAX_AGE))
            vals: list[list[Any]] = []
            stats: list[list[int]] = []
            for f, type_name in enumerate(vr.types):
                raws = cols[off + f]
                col = decode_column(raws, type_name)
                if dead or None in col:
                    st = [PRESENT] * n
                    if None in col:
                        for e, v in enumerate(col):
                            if v is None:  # never written: NOT_FOUND; written as null
                                st[e] = NOT_FOUND if raws[e] is None else NULL_VALUE
                    for e, s in dead:
                        col[e] = None
                        st[e] = s
                    stats.append(st)
                else:
                    stats.append(present)
                vals.append(col)
            per_view.append((vals, stats, tss))
        decoded.append(per_view)
    return decoded


_ONE = {status: [status] for status in (NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE)}


def _decode_views_one(plan: Plan, replies: list[list[list[bytes | None]]], now_ns: int) -> Decoded:
    """:func:`decode_views` of a single entity (most online requests), value by value with
    no column set-up; the same values and statuses. Status lists are shared constants
    (never mutated), like the all-PRESENT list of the general path."""
    decode_value = rl.decode_value
    present = _all_present(1)
    decoded: Decoded = []
    for gi, group in enumerate(plan.groups):
        row = replies[gi][0]
        per_view = []
        for vr in group.views:
            off = vr.offset
            nf = len(vr.features)
            raw_ts = row[off + nf]
            if raw_ts is None:
                dead = NOT_FOUND  # entity has no row for this view
                tss = [EPOCH_TS]
            else:
                ts = _decode_ts(raw_ts)
                tss = [ts]
                ttl = vr.ttl_ns
                expired = ttl and now_ns - (ts[0] * 1_000_000_000 + ts[1]) > ttl
                dead = OUTSIDE_MAX_AGE if expired else 0
            if dead:
                per_view.append(([[None] for _ in range(nf)], [_ONE[dead]] * nf, tss))
                continue
            vals: list[list[Any]] = []
            stats: list[list[int]] = []
            for raw in row[off : off + nf]:
                v = decode_value(raw)
                vals.append([v])
                if v is not None:
                    stats.append(present)
                else:  # never written: NOT_FOUND; written as null
                    stats.append(_ONE[NOT_FOUND if raw is None else NULL_VALUE])
            per_view.append((vals, stats, tss))
        decoded.append(per_view)
    return decoded


def _transform_inputs(
    wiring: dict[str, tuple[int, int, int]],
    inputs: Sequence[str],
    decoded: Decoded,
    entities: dict[str, list[Any]],
) -> dict[str, list[Any]]:
    """One transform set's input columns: request data, or decoded view features."""
    out: dict[str, list[Any]] = {}
    for inp in inputs:
        w = wiring.get(inp)
        if w is None:
            out[inp] = entities[inp]
        else:
            gi, vi, fi = w
            out[inp] = decoded[gi][vi][0][fi]
    return out


def _run_set(lt: LoadedTransforms, inputs: dict[str, list[Any]], n: int) -> dict[str, list[Any]]:
    try:
        return lt.engine.runner.run_python_columns(inputs, n)
    except TransformError:
        raise
    except SkewlessError as exc:
        raise TransformError(str(exc)) from None


Transformed = dict[tuple[str, str], list[Any]]
"""(transform set, output name) -> output column of one lookup."""


def run_transforms(
    plan: Plan, parts: Sequence[tuple[int, Decoded, dict[str, list[Any]]]]
) -> list[Transformed]:
    """The request-time transforms of lookups ``(n, decoded views, entity columns)``, one
    call per transform set over all their rows: input columns concatenated, outputs cut
    back at the lookups' boundaries (rows are independent of their batch)."""
    outs: list[Transformed] = [{} for _ in parts]
    sizes = [n for n, _, _ in parts]
    for lt, wiring in plan.transform_sets:
        per = [_transform_inputs(wiring, lt.engine.inputs, dec, ent) for _, dec, ent in parts]
        joined = {inp: [v for cols in per for v in cols[inp]] for inp in lt.engine.inputs}
        for name, col in _run_set(lt, joined, sum(sizes)).items():
            lo = 0
            for out, size in zip(outs, sizes, strict=True):
                out[(lt.spec.name, name)] = col[lo : lo + size]
                lo += size
    return outs


def assemble(
    plan: Plan,
    n: int,
    decoded: Decoded,
    transformed: Transformed,
    entities: dict[str, list[Any]],
) -> Result:
    """The Result of one lookup: entity keys, then the plan's outputs in order."""
    values: list[list[Any]] = [entities[k] for k in plan.entity_names]
    present = _all_present(n)  # shared, never mutated
    statuses: list[list[int]] = [present for _ in plan.entity_names]
    epoch = [EPOCH_TS] * n
    timestamps: list[list[tuple[int, int]]] = [epoch for _ in plan.entity_names]
    for _, kind, a, b in plan.outputs:
        if kind == "view":
            vals, stats, tss = decoded[a[0]][a[1]]
            values.append(vals[b])
            statuses.append(stats[b])
            timestamps.append(tss)
        else:
            col = transformed[(a, b)]
            values.append(col)
            if None in col:
                statuses.append([NULL_VALUE if v is None else PRESENT for v in col])
            else:
                statuses.append(present)
            timestamps.append(epoch)
    request_data = {k: entities[k] for k in plan.request_fields}
    ent = {k: entities[k] for k in plan.entity_names}
    return Result(plan, n, plan.column_names, values, statuses, timestamps, request_data, ent)


# ---------------------------------------------------------------------- Redis reads


class RedisReader:
    """All HMGETs of a request in one pipelined write over a shared connection
    (:mod:`serving.redis_client`); commands are the plan's prebuilt RESP bytes plus keys."""

    def __init__(self, connection_string: str, timeout_s: float) -> None:
        nodes, params = rl.parse_connection_string(connection_string)
        host, port = nodes[0] if nodes else ("127.0.0.1", 6379)
        self.client = RedisPipeline(
            host,
            port,
            timeout_s,
            db=int(params.get("db", 0) or 0),
            password=params.get("password"),
            username=params.get("username"),
            ssl=bool(params.get("ssl", False)),
        )
        self.timeout_s = timeout_s

    def submit(self, plan: Plan, keys: list[list[bytes]]) -> asyncio.Future[list[Any]]:
        """Send every HMGET of a request in one write; the future resolves to the replies,
        group after group, one per entity (:func:`split_replies` regroups them), or fails
        as :meth:`RedisPipeline.submit` does."""
        parts: list[bytes] = []
        count = 0
        for g, gkeys in zip(plan.groups, keys, strict=True):
            parts.append(_hmget_many(g.hmget_head, g.hmget_tail, gkeys))
            count += len(gkeys)
        return self.client.submit(parts[0] if len(parts) == 1 else b"".join(parts), count)

    def submit_ping(self) -> asyncio.Future[bool]:
        """A future resolving to whether Redis answers PING (never fails)."""
        return self.client.submit_ping()

    async def close(self) -> None:
        await self.client.close()


def split_replies(flat: list[Any], n: int) -> list[list[Any]]:
    """Flat replies (every group has one key per entity) -> replies per group."""
    if len(flat) == n:
        return [flat]
    return [flat[i : i + n] for i in range(0, len(flat), n)]


def _hmget_many(head: bytes, tail: bytes, keys: list[bytes]) -> bytes:
    """RESP of one HMGET per key; one C-level join when the keys share a length."""
    if not keys:
        return b""
    size = len(keys[0])
    if all(len(k) == size for k in keys):
        prefix = head + b"$%d\r\n" % size
        suffix = b"\r\n" + tail
        return prefix + (suffix + prefix).join(keys) + suffix
    return b"".join(head + b"$%d\r\n%b\r\n" % (len(k), k) + tail for k in keys)
