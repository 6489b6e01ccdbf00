"""Loading a project's definition modules: the framework never imports a project by name
of its own; the user's modules are handed in (by module name, found on the project's
directory first, the way ``feast apply`` finds a repo's definitions)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from transforms.aggregations import WindowSet
from transforms.errors import SchemaError
from transforms.feature_set import FeatureSet


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


def feature_sets_of(module: ModuleType) -> list[FeatureSet]:
    """Every FeatureSet a module defines at top level, in definition order, once each."""
    seen: dict[int, FeatureSet] = {}
    for value in vars(module).values():
        if isinstance(value, FeatureSet):
            seen.setdefault(id(value), value)
    return list(seen.values())


def resolve_feature_set(ref: str, root: str | Path | None = None) -> FeatureSet:
    """The FeatureSet named by ``"module:attribute"`` (the tag Feast registers)."""
    module, _, attr = ref.partition(":")
    fs = getattr(import_definitions(module, root), attr, None)
    if not isinstance(fs, FeatureSet):
        raise SchemaError(f"{ref} is not a FeatureSet")
    return fs


def feature_set_ref(fs: FeatureSet, modules: list[ModuleType]) -> str:
    """``"module:attribute"`` of ``fs`` among ``modules`` (inverse of resolve_feature_set)."""
    for module in modules:
        for attr, value in vars(module).items():
            if value is fs:
                return f"{module.__name__}:{attr}"
    raise SchemaError(f"feature set '{fs.name}' is not a top-level name of a definitions module")


def window_sets_of(module: ModuleType) -> list[WindowSet]:
    """Every WindowSet a module defines at top level, in definition order, once each."""
    seen: dict[int, WindowSet] = {}
    for value in vars(module).values():
        if isinstance(value, WindowSet):
            seen.setdefault(id(value), value)
    return list(seen.values())


def resolve_window_set(ref: str, root: str | Path | None = None) -> WindowSet:
    """The WindowSet named by ``"module:attribute"`` (what the serving manifest records)."""
    module, _, attr = ref.partition(":")
    ws = getattr(import_definitions(module, root), attr, None)
    if not isinstance(ws, WindowSet):
        raise SchemaError(f"{ref} is not a WindowSet")
    return ws


def window_set_ref(ws: WindowSet, modules: list[ModuleType]) -> str:
    """``"module:attribute"`` of ``ws`` among ``modules`` (inverse of resolve_window_set)."""
    for module in modules:
        for attr, value in vars(module).items():
            if value is ws:
                return f"{module.__name__}:{attr}"
    raise SchemaError(f"window set '{ws.name}' is not a top-level name of a definitions module")
