"""Loading a project's definition modules: the framework never imports a project by name
of its own; the user's modules are handed in (by module name, found on the project's
directory first, the way ``feast apply`` finds a repo's definitions)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from transforms.aggregations import WindowSet
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet

D = TypeVar("D", FeatureSet, WindowSet)


def import_definitions(module: str, root: str | Path | None = None) -> ModuleType:
    """Import ``module``, with the project directory ``root`` first on ``sys.path``."""
    if root is not None:
        where = Path(root).resolve()
        if str(where) not in sys.path:
            sys.path.insert(0, str(where))
        local = where / (module.replace(".", "/") + ".py")
        loaded = sys.modules.get(module)
        if (
            local.is_file()
            and loaded is not None
            and getattr(loaded, "__file__", None) != str(local)
        ):
            del sys.modules[module]  # another project's module of the same name
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SchemaError(f"definitions module '{module}' cannot be imported: {exc}") from None


def definitions_of(module: ModuleType, kind: type[D]) -> list[D]:
    """Every ``kind`` object (FeatureSet, WindowSet) a module defines at top level, in
    definition order, once each."""
    seen: dict[int, D] = {}
    for value in vars(module).values():
        if isinstance(value, kind):
            seen.setdefault(id(value), value)
    return list(seen.values())


def resolve_definition(ref: str, kind: type[D], root: str | Path | None = None) -> D:
    """The ``kind`` object named by ``"module:attribute"`` (what Feast's tags and the
    serving manifest record)."""
    module, _, attr = ref.partition(":")
    found = getattr(import_definitions(module, root), attr, None)
    if not isinstance(found, kind):
        raise SchemaError(f"{ref} is not a {kind.__name__}")
    return found


def definition_ref(obj: FeatureSet | WindowSet, modules: list[ModuleType]) -> str:
    """``"module:attribute"`` of ``obj`` among ``modules`` (inverse of resolve_definition)."""
    for module in modules:
        for attr, value in vars(module).items():
            if value is obj:
                return f"{module.__name__}:{attr}"
    what = "feature set" if isinstance(obj, FeatureSet) else "window set"
    raise SchemaError(f"{what} '{obj.name}' is not a top-level name of a definitions module")


def resolve_feature_set(ref: str, root: str | Path | None = None) -> FeatureSet:
    return resolve_definition(ref, FeatureSet, root)


def resolve_window_set(ref: str, root: str | Path | None = None) -> WindowSet:
    return resolve_definition(ref, WindowSet, root)


def feature_set_ref(fs: FeatureSet, modules: list[ModuleType]) -> str:
    return definition_ref(fs, modules)


def window_set_ref(ws: WindowSet, modules: list[ModuleType]) -> str:
    return definition_ref(ws, modules)
