"""skewless transforms: write a feature once, run it in Spark, Beam and online.

The public surface: the ``transform`` decorator, ``FeatureSet``, field types, analyzers
and their helpers, the statistics artifact and the errors, each imported on first use, so
``import transforms.errors`` stays light. Engines live in ``transforms.engines`` and are
imported only by the code that needs them.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transforms._typing import (  # analyzers typed as the value the transform receives
        Count,
        Max,
        Mean,
        Min,
        NullCount,
        Quantiles,
        Std,
        Var,
        Vocabulary,
    )
    from transforms.aggregations import Aggregation, Window, WindowSet, aggregate
    from transforms.analyzers import VocabularyTable, bucketize, fingerprint64
    from transforms.artifact import StatisticsArtifact
    from transforms.errors import (
        ArtifactError,
        ConfigError,
        RequestError,
        SchemaError,
        SkewlessError,
        StoreError,
        StoreUnavailable,
        TransformError,
    )
    from transforms.feature_set import FeatureSet
    from transforms.runtime import FeatureSetRunner
    from transforms.transform import Transform, transform
    from transforms.types import Bool, Field, Float64, Int64, Nullable, String, Timestamp

# Each public name -> the module defining it, imported on first use (PEP 562): importing a
# light submodule (``transforms.errors``, which the storage layout and the server need)
# must not load numpy and pyarrow through this package's __init__.
_HOME = {
    **dict.fromkeys(
        (
            "Count",
            "Max",
            "Mean",
            "Min",
            "NullCount",
            "Quantiles",
            "Std",
            "Var",
            "Vocabulary",
            "VocabularyTable",
            "bucketize",
            "fingerprint64",
        ),
        "transforms.analyzers",
    ),
    **dict.fromkeys(("Aggregation", "Window", "WindowSet", "aggregate"), "transforms.aggregations"),
    "StatisticsArtifact": "transforms.artifact",
    **dict.fromkeys(
        (
            "ArtifactError",
            "ConfigError",
            "RequestError",
            "SchemaError",
            "SkewlessError",
            "StoreError",
            "StoreUnavailable",
            "TransformError",
        ),
        "transforms.errors",
    ),
    "FeatureSet": "transforms.feature_set",
    "FeatureSetRunner": "transforms.runtime",
    **dict.fromkeys(("Transform", "transform"), "transforms.transform"),
    **dict.fromkeys(
        ("Bool", "Field", "Float64", "Int64", "Nullable", "String", "Timestamp"),
        "transforms.types",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(ModuleType):
    """This package's module type. Importing the submodule ``transforms.transform`` binds it
    as the package's attribute ``transform``, which would hide the decorator of that name;
    the decorator is bound instead (what the eager imports of this package used to leave)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "transform" and isinstance(value, ModuleType):
            value = value.transform
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "Aggregation",
    "ArtifactError",
    "Bool",
    "ConfigError",
    "Count",
    "FeatureSet",
    "FeatureSetRunner",
    "Field",
    "Float64",
    "Int64",
    "Max",
    "Mean",
    "Min",
    "NullCount",
    "Nullable",
    "Quantiles",
    "RequestError",
    "SchemaError",
    "SkewlessError",
    "StatisticsArtifact",
    "Std",
    "StoreError",
    "StoreUnavailable",
    "String",
    "Timestamp",
    "Transform",
    "TransformError",
    "Var",
    "Vocabulary",
    "VocabularyTable",
    "Window",
    "WindowSet",
    "aggregate",
    "bucketize",
    "fingerprint64",
    "transform",
]
