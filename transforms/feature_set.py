"""A feature set: the transforms of one entity, their raw inputs and statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from transforms.analyzers import Analyzer
from transforms.artifact import StatisticsArtifact, canonical_json
from transforms.errors import ArtifactError, SchemaError
from transforms.transform import Transform
from transforms.types import BoolType, Field, Float64Type, Int64Type, StringType

_NUMERIC = (Float64Type, Int64Type, BoolType)


@dataclass(frozen=True)
class FeatureSet:
    """Transforms grouped by entity.

    ``entities`` maps join-key names to field types (``{"customer_id": Int64Type}``);
    ``event_timestamp`` names the UTC event time column carried through every engine.
    ``ttl_seconds`` is how long a computed value stays valid, offline and online.
    ``order_by`` makes it an *entity* feature set: every engine groups rows by the entity
    keys, sorts each group by these columns (event time, then a unique tie-break) and
    calls the transforms once per entity, so window aggregates see that entity's history.
    """

    name: str
    entities: dict[str, Any]
    transforms: Sequence[Transform]
    event_timestamp: str = "event_timestamp"
    ttl_seconds: int = 0
    order_by: tuple[str, ...] = ()
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in self.transforms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"feature set '{self.name}': transform names repeat: {dupes}")
        clash = set(names) & (set(self.entities) | {self.event_timestamp})
        if clash:
            raise SchemaError(f"feature set '{self.name}': outputs shadow keys: {sorted(clash)}")
        _ = self.order, self.analyzers  # validate now, not at first use

    # ------------------------------------------------------------ structure

    @cached_property
    def order(self) -> tuple[Transform, ...]:
        """Transforms in dependency order (a parameter named like a transform consumes it)."""
        by_name = {t.name: t for t in self.transforms}
        done: dict[str, Transform] = {}
        visiting: set[str] = set()

        def visit(t: Transform) -> None:
            if t.name in done:
                return
            if t.name in visiting:
                raise SchemaError(f"feature set '{self.name}': transform '{t.name}' is in a cycle")
            visiting.add(t.name)
            for f in t.inputs:
                dep = by_name.get(f.name)
                if dep is not None:
                    if dep.output.type is not f.type:
                        raise SchemaError(
                            f"transform '{t.name}': input '{f.name}' expects {f.type.name}, "
                            f"but transform '{dep.name}' outputs {dep.output.type.name}"
                        )
                    visit(dep)
            visiting.discard(t.name)
            done[t.name] = t

        for t in self.transforms:
            visit(t)
        return tuple(done.values())

    @cached_property
    def inputs(self) -> dict[str, Field]:
        """Raw input columns (not produced by another transform), by name."""
        outputs = {t.name for t in self.transforms}
        found: dict[str, Field] = {}
        for t in self.transforms:
            for f in t.inputs:
                if f.name in outputs:
                    continue
                seen = found.get(f.name)
                if seen is not None and seen.type is not f.type:
                    raise SchemaError(
                        f"feature set '{self.name}': input '{f.name}' is {seen.type.name} in one "
                        f"transform and {f.type.name} in transform '{t.name}'"
                    )
                if seen is None or f.nullable:
                    found[f.name] = f
        return found

    @cached_property
    def analyzers(self) -> dict[str, Analyzer]:
        """Every analyzer the transforms ask for, by key."""
        found: dict[str, Analyzer] = {}
        for t in self.transforms:
            for a in t.analyzers.values():
                f = self.inputs.get(a.column)
                if f is None:
                    raise SchemaError(
                        f"transform '{t.name}': analyzer {a.key()} reads '{a.column}', "
                        "which is not a raw input of the feature set"
                    )
                wanted = (StringType,) if a.family == "counts" else _NUMERIC
                if f.type not in wanted:
                    raise SchemaError(
                        f"transform '{t.name}': analyzer {a.key()} needs "
                        f"{'/'.join(w.name for w in wanted)}, '{a.column}' is {f.type.name}"
                    )
                found[a.key()] = a
        return found

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Columns an entity feature set needs non-null to place a row in an entity's
        history: its keys, then its ``order_by`` columns (none for a request-time set).
        Engines leave a row with a null here out of the output and count it (rule 22)."""
        if not self.order_by:
            return ()
        return tuple(dict.fromkeys((*self.entities, *self.order_by)))

    @cached_property
    def accumulator_slots(self) -> tuple[tuple[str, str], ...]:
        """(column, family) pairs: one accumulator serves every analyzer of a family."""
        return tuple(sorted({(a.column, a.family) for a in self.analyzers.values()}))

    def select(
        self, names: Iterable[str] | None = None, *, request_time: bool | None = None
    ) -> tuple[Transform, ...]:
        """Transforms in dependency order, filtered by name and/or by request-time flag."""
        wanted = None if names is None else set(names)
        return tuple(
            t
            for t in self.order
            if (wanted is None or t.name in wanted)
            and (request_time is None or t.request_time == request_time)
        )

    # ------------------------------------------------------------ identity

    def check_artifact(self, artifact: StatisticsArtifact) -> None:
        if artifact.feature_set != self.name:
            raise ArtifactError(
                f"artifact is for feature set '{artifact.feature_set}', not '{self.name}'"
            )
        missing = sorted(set(self.analyzers) - set(artifact.values))
        if missing:
            raise ArtifactError(f"feature set '{self.name}': artifact lacks {missing}")

    def fingerprints(self, artifact: StatisticsArtifact) -> dict[str, str]:
        """Per transform: sha256 of (code, declaration, statistics it reads)."""
        self.check_artifact(artifact)
        out: dict[str, str] = {}
        for t in self.order:
            body = {
                "code": t.code_hash,
                "name": t.name,
                "inputs": [f.to_json() for f in t.inputs],
                "output": t.output.to_json(),
                "request_time": t.request_time,
                "upstream": {f.name: out[f.name] for f in t.inputs if f.name in out},
                "statistics": {
                    p: [a.key(), artifact.values[a.key()]] for p, a in sorted(t.analyzers.items())
                },
            }
            out[t.name] = hashlib.sha256(canonical_json(body)).hexdigest()
        return out
