# mypy: disable-error-code="empty-body"
"""What type checkers see for analyzer declarations: the value the transform receives.

``mean=Mean("amount")`` is an analyzer object at run time, replaced by the frozen float
before the function is called; like ``dataclasses.field()`` the factory is typed as
returning what the parameter will hold, so transform bodies type-check.
"""

from __future__ import annotations

import numpy as np

from transforms.analyzers import VocabularyTable


def Mean(column: str) -> float: ...  # noqa: N802 - mirrors the analyzer class name
def Var(column: str, ddof: int = 0) -> float: ...  # noqa: N802
def Std(column: str, ddof: int = 0) -> float: ...  # noqa: N802
def Min(column: str) -> float: ...  # noqa: N802
def Max(column: str) -> float: ...  # noqa: N802
def Count(column: str) -> int: ...  # noqa: N802
def NullCount(column: str) -> int: ...  # noqa: N802
def Vocabulary(  # noqa: N802
    column: str,
    top_k: int | None = None,
    frequency_threshold: int = 1,
    num_oov_buckets: int = 0,
    seed: int = 0,
) -> VocabularyTable: ...
def Quantiles(column: str, num_buckets: int = 10) -> np.ndarray: ...  # noqa: N802
