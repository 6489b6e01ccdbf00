"""The ``@transform`` decorator: a plain, typed Python function over columns.

The function name is the output, annotated parameters are input columns, parameters
whose default is an analyzer receive the frozen statistic. Nothing here knows an engine.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transforms.analyzers import Analyzer
from transforms.errors import TransformError
from transforms.types import Field, field_from_annotation


@dataclass(frozen=True)
class Transform:
    """One feature: ``fn`` maps input columns (and frozen statistics) to one output column."""

    name: str
    fn: Callable[..., Any]
    inputs: tuple[Field, ...]
    output: Field
    analyzers: dict[str, Analyzer] = field(default_factory=dict)
    request_time: bool = False
    description: str = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    @property
    def code_hash(self) -> str:
        """sha256 over every line the function depends on: its source, the project and
        skewless functions, classes and module-level values it reaches, and the versions
        of the third-party packages it calls (:mod:`transforms.code_closure`)."""
        from transforms.code_closure import closure_hash

        return closure_hash(self.fn)


def transform(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    request_time: bool = False,
    description: str | None = None,
) -> Any:
    """Declare a transform. Use bare (``@transform``) or with options
    (``@transform(request_time=True)`` for features computed at request time)."""

    def build(f: Callable[..., Any]) -> Transform:
        return _build(f, name or f.__name__, request_time, description)

    return build(fn) if fn is not None else build


def _build(
    fn: Callable[..., Any], name: str, request_time: bool, description: str | None
) -> Transform:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an unresolvable annotation is a definition bug worth naming
        raise TransformError(f"transform '{name}': cannot read its annotations: {exc}") from None
    inputs: list[Field] = []
    analyzers: dict[str, Analyzer] = {}
    for param in inspect.signature(fn).parameters.values():
        if isinstance(param.default, Analyzer):
            analyzers[param.name] = param.default
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TransformError(f"transform '{name}': *args/**kwargs are not supported")
        f = field_from_annotation(param.name, hints.get(param.name))
        if f is None:
            raise TransformError(
                f"transform '{name}': parameter '{param.name}' needs a field type annotation "
                "(Float64, Int64, Bool, String, Timestamp, optionally '| None') "
                "or an analyzer default such as Mean('column')"
            )
        inputs.append(f)
    output = field_from_annotation(name, hints.get("return"))
    if output is None:
        raise TransformError(
            f"transform '{name}': the return annotation must be a field type such as Float64"
        )
    doc = description if description is not None else inspect.getdoc(fn) or ""
    return Transform(name, fn, tuple(inputs), output, analyzers, request_time, doc)
