"""A skewless project: a directory the user owns, like a Feast repo.

It holds ``feature_store.yaml`` (Feast's), the user's definition modules and
``skewless.yaml``, the one declaration of the project's raw sources, data directory and
feature services. That file is validated with pydantic: a bad field is one SchemaError
naming the file, the field and the problem. The definitions are imported from the project
directory (handed in, never imported by the framework under a name of its own).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from transforms.aggregations import WindowSet
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet
from transforms.modules import (
    D,
    definitions_of,
    feature_set_ref,
    import_definitions,
    window_set_ref,
)

PROJECT_FILE = "skewless.yaml"
KEY_TYPES: dict[str, pa.DataType] = {"int64": pa.int64(), "string": pa.string()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """One raw source: where its Parquet lives and which columns place a row."""

    path: str = Field(description="Parquet file, directory or glob; relative to the project")
    event_timestamp: str = "event_timestamp"
    created_timestamp: str | None = None
    row_id: str | None = Field(
        None, description="unique row id: the tie-break of rows at the same event time"
    )
    entities: dict[str, Literal["int64", "string"]] = Field(min_length=1)


class ServiceConfig(_Strict):
    feature_sets: list[str] = Field(min_length=1)
    description: str = ""


class DemoConfig(_Strict):
    """What ``skewless demo`` needs beyond the chain: the service a model is trained on and
    the label column of the source (no label: the demo serves and reports, trains nothing)."""

    service: str | None = None
    label: str | None = None


class ProjectConfig(_Strict):
    definitions: list[str] = Field(min_length=1, description="modules defining FeatureSets")
    data_dir: str = "data"
    sources: dict[str, SourceConfig] = Field(min_length=1)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    generator: str | None = Field(
        None,
        description="module:function writing synthetic sources, called as "
        "fn(rows, out_dir, seed=, start=, days=) and writing out_dir/<source>/",
    )
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @field_validator("generator")
    @classmethod
    def _function_ref(cls, value: str | None) -> str | None:
        if value is not None:
            module, _, attr = value.partition(":")
            names = [*module.split("."), attr]
            if not all(part.isidentifier() for part in names):
                raise ValueError(f"'{value}' is not module:function (e.g. data_gen:generate)")
        return value

    @field_validator("definitions")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for name in value:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"'{name}' is not a module name (e.g. features or pkg.features)")
        return value


def _describe(exc: ValidationError, path: Path) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{path}: field '{where}': {err['msg']}{more}"


class Project:
    """A loaded project: its declaration, its feature sets and where its data lives."""

    def __init__(self, root: Path, config: ProjectConfig) -> None:
        self.root = root
        self.config = config

    # ------------------------------------------------------------ where things are

    @property
    def data_dir(self) -> Path:
        """The project's data directory (``SKEWLESS_DATA`` overrides it)."""
        override = os.environ.get("SKEWLESS_DATA")
        return Path(override).resolve() if override else (self.root / self.config.data_dir)

    def source_path(self, name: str) -> str:
        """A source's location: a path relative to the project, or a filesystem URI."""
        path = self.config.sources[name].path
        if "://" in path:
            return path
        return str((self.root / path).resolve())

    # ------------------------------------------------------------ definitions

    @cached_property
    def modules(self) -> list[ModuleType]:
        return [import_definitions(m, self.root) for m in self.config.definitions]

    @cached_property
    def feature_sets(self) -> list[FeatureSet]:
        found = self._named(FeatureSet, "feature set")
        if not found:
            raise SchemaError(
                f"{self.root / PROJECT_FILE}: the definitions {self.config.definitions} "
                "define no FeatureSet"
            )
        for fs in found.values():
            self._check(fs)
        return list(found.values())

    @cached_property
    def window_sets(self) -> list[WindowSet]:
        """The WindowSets of the definition modules (served from the online window state)."""
        return list(self._named(WindowSet, "window set").values())

    def _named(self, kind: type[D], what: str) -> dict[str, D]:
        """The definition modules' objects of ``kind`` by name (a name defined twice is an
        error)."""
        found: dict[str, D] = {}
        for module in self.modules:
            for obj in definitions_of(module, kind):
                if found.setdefault(obj.name, obj) is not obj:
                    raise SchemaError(f"{what} name '{obj.name}' is defined twice")
        return found

    def window_set_ref(self, ws: WindowSet) -> str:
        """``module:attribute`` of a window set (what the serving manifest records)."""
        return window_set_ref(ws, self.modules)

    @property
    def entity_sets(self) -> tuple[FeatureSet, ...]:
        return tuple(fs for fs in self.feature_sets if fs.order_by)

    @property
    def request_sets(self) -> tuple[FeatureSet, ...]:
        return tuple(fs for fs in self.feature_sets if not fs.order_by)

    def feature_set(self, name: str) -> FeatureSet:
        for fs in self.feature_sets:
            if fs.name == name:
                return fs
        raise SchemaError(f"no feature set '{name}' in {self.config.definitions}")

    def definition(self, name: str) -> FeatureSet | WindowSet:
        """The feature set or window set called ``name``."""
        for ws in self.window_sets:
            if ws.name == name:
                return ws
        return self.feature_set(name)

    def ref(self, fs: FeatureSet) -> str:
        """``module:attribute`` of a feature set (what Feast's tags record)."""
        return feature_set_ref(fs, self.modules)

    def source_of(self, fs: FeatureSet | WindowSet) -> str:
        """The source a feature set or window set reads: its ``source`` tag, or the only
        source."""
        name = fs.tags.get("source")
        if name is None:
            if len(self.config.sources) != 1:
                raise SchemaError(
                    f"feature set '{fs.name}': the project has several sources "
                    f"({', '.join(self.config.sources)}); name one with tags={{'source': ...}}"
                )
            return next(iter(self.config.sources))
        if name not in self.config.sources:
            raise SchemaError(
                f"feature set '{fs.name}': source '{name}' is not declared in {PROJECT_FILE}"
            )
        return name

    def _check(self, fs: FeatureSet) -> None:
        src = self.config.sources[self.source_of(fs)]
        where = f"feature set '{fs.name}'"
        if fs.event_timestamp != src.event_timestamp:
            raise SchemaError(
                f"{where}: event_timestamp '{fs.event_timestamp}' is not its source's "
                f"event-time column '{src.event_timestamp}'"
            )
        for key in fs.entities:
            if fs.order_by and key not in src.entities:
                raise SchemaError(f"{where}: entity key '{key}' is not a key of its source")

    def generator(self) -> Callable[..., Any]:
        """The project's declared source generator (``generator: module:function``)."""
        ref = self.config.generator
        if ref is None:
            raise SchemaError(
                f"{self.root / PROJECT_FILE}: no 'generator' is declared "
                "(module:function writing synthetic sources)"
            )
        module, _, attr = ref.partition(":")
        fn = getattr(import_definitions(module, self.root), attr, None)
        if not callable(fn):
            raise SchemaError(f"{self.root / PROJECT_FILE}: generator '{ref}' is not a function")
        return fn

    # ------------------------------------------------------------ services

    @property
    def services(self) -> dict[str, ServiceConfig]:
        """Declared feature services; by default one named after the project directory,
        serving every feature set."""
        if self.config.services:
            return dict(self.config.services)
        return {
            self.root.name.replace("-", "_"): ServiceConfig(
                feature_sets=[fs.name for fs in self.feature_sets]
            )
        }


def load_project(root: str | Path) -> Project:
    """Read and validate ``root/skewless.yaml`` (SchemaError naming file and field)."""
    root = Path(root).resolve()
    path = root / PROJECT_FILE
    if not path.is_file():
        raise SchemaError(f"{path} does not exist; `skewless init DIR` creates a project")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise SchemaError(f"{path}: expected a mapping of fields at the top level")
    try:
        config = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(_describe(exc, path)) from None
    return Project(root, config)
