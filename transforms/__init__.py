"""skewless transforms: write a feature once, run it in Spark, Beam and online.

The public surface: the ``transform`` decorator, ``FeatureSet``, field types, analyzers
and their helpers, the statistics artifact and the errors. Engines live in
``transforms.engines`` and are imported only by the code that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # analyzers typed as the value the transform receives
    from transforms._typing import (
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
else:
    from transforms.analyzers import (
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

__all__ = [
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
    "bucketize",
    "fingerprint64",
    "transform",
]
