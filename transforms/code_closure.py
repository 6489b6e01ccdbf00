"""Every line a transform depends on, for its fingerprint (rule 18 of the contract).

Starting from the transform's function, the closure follows the global names its code
reads (and names read as attributes of modules it reaches): functions and classes of the
project and of skewless itself are followed and recorded by their source text,
module-level values by a bounded, deterministic description, and third-party modules by
their distribution's version (their code is not hashed line by line).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

_FRAMEWORK = ("transforms",)  # skewless code a transform calls: followed, never "third party"
_LIBRARY_DIRS = tuple(
    str(Path(p).resolve())
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)
_MAX_VALUE = 4096  # characters of a value's description kept (longer ones are hashed)


def closure_hash(fn: Callable[..., Any]) -> str:
    """sha256 over :func:`code_closure` (sorted): any reached change changes it."""
    h = hashlib.sha256()
    for name, text in sorted(code_closure(fn).items()):
        h.update(name.encode())
        h.update(b"\0")
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


def code_closure(fn: Callable[..., Any]) -> dict[str, str]:
    """``{"module:qualname": source, "module:NAME": value, "package": "version", ...}``
    for ``fn`` and everything of the project or of skewless it reaches."""
    out: dict[str, str] = {}
    queue: list[Any] = [_unwrap(fn)]
    seen: set[int] = set()
    while queue:
        obj = queue.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            out[_name(obj)] = _source(obj)
            for value in _reached(obj):
                if isinstance(value, _Constant):
                    out[value.key] = describe_value(value.value)
                else:
                    _visit(value, out, queue)
        elif inspect.isclass(obj):
            out[_name(obj)] = _source(obj)
            for member in vars(obj).values():
                if isinstance(member, classmethod | staticmethod):
                    member = member.__func__
                member = _unwrap(member)
                if isinstance(member, types.FunctionType):
                    queue.append(member)
    return out


def _visit(value: Any, out: dict[str, str], queue: list[Any]) -> None:
    value = _unwrap(value)
    if isinstance(value, types.ModuleType):
        if not _followed(value.__name__):
            _record_package(value.__name__, out)
        return
    module = getattr(value, "__module__", None)
    if isinstance(value, types.FunctionType) or inspect.isclass(value):
        if isinstance(module, str) and _followed(module):
            queue.append(value)
        elif isinstance(module, str):
            _record_package(module, out)
        return
    if isinstance(value, types.BuiltinFunctionType | np.ufunc):
        if isinstance(module, str):
            _record_package(module, out)


def _reached(fn: types.FunctionType) -> Iterator[Any]:
    """Values ``fn``'s code can read: globals by name, module attributes by name, the
    contents of its closure cells and its default arguments."""
    names = set(_code_names(fn.__code__))
    g = fn.__globals__
    for name in sorted(names):
        if name in g:
            value = g[name]
            yield value
            if not callable(value) and not isinstance(value, types.ModuleType):
                yield _Constant(f"{g.get('__name__', '?')}:{name}", value)
            if isinstance(value, types.ModuleType):
                for attr in sorted(names):
                    sub = getattr(value, attr, None)
                    if sub is not None and not isinstance(sub, types.ModuleType):
                        yield sub
                        if not callable(sub) and _followed(value.__name__):
                            yield _Constant(f"{value.__name__}:{attr}", sub)
    for cell in fn.__closure__ or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        yield content
        if not callable(content):
            yield _Constant(f"{_name(fn)}:<closure>", content)
    for default in fn.__defaults__ or ():
        yield _Constant(f"{_name(fn)}:<default>", default)
        yield type(default)  # an analyzer's class: the code that loads and applies it


class _Constant:
    """A module-level value (or closure cell, or default) as a closure entry."""

    def __init__(self, key: str, value: Any) -> None:
        self.key, self.value = key, value


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _unwrap(obj: Any) -> Any:
    fn = getattr(obj, "fn", None)  # a Transform: its function
    if fn is not None and callable(fn) and type(obj).__name__ == "Transform":
        obj = fn
    if isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.unwrap(obj) if callable(obj) else obj


def _followed(module: str) -> bool:
    """Code of the project or of skewless's own transforms package (not third party)."""
    top = module.partition(".")[0]
    if top in _FRAMEWORK:
        return True
    if top in sys.stdlib_module_names or top == "builtins":
        return False
    mod = sys.modules.get(module)
    path = getattr(mod, "__file__", None)
    if not path:
        return False
    resolved = str(Path(path).resolve())
    return not resolved.startswith(_LIBRARY_DIRS)


def _record_package(module: str, out: dict[str, str]) -> None:
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        out[f"python:{top}"] = f"{sys.version_info.major}.{sys.version_info.minor}"
        return
    try:
        out[f"package:{top}"] = metadata.version(top)
    except metadata.PackageNotFoundError:
        dists = metadata.packages_distributions().get(top, [])
        out[f"package:{top}"] = ",".join(f"{d}=={metadata.version(d)}" for d in sorted(dists))


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _source(obj: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return code.co_code.hex() if code is not None else type(obj).__name__


def describe_value(value: Any) -> str:
    """A deterministic, bounded description of a module-level value."""
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return f"ndarray {value.dtype} {value.shape} {digest}"
    if isinstance(value, dict):
        text = repr(sorted(((repr(k), describe_value(v)) for k, v in value.items())))
    elif isinstance(value, set | frozenset):
        text = repr(sorted(repr(v) for v in value))
    else:
        text = repr(value)
    if " at 0x" in text:  # an object without a stable repr: its type is what we can say
        text = f"<{type(value).__module__}.{type(value).__qualname__}>"
    if len(text) > _MAX_VALUE:
        text = f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    return text
