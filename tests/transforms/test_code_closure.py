"""Fingerprints cover every line a transform depends on (rule 18): its helpers, the
module-level values it reads, the skewless code it calls; third parties by version."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from transforms import StatisticsArtifact
from transforms.code_closure import code_closure
from transforms.modules import import_definitions

HELPERS = """
FACTOR = 2.0


def scale(x):
    return x * FACTOR


def unused(x):
    return x + 1
"""

FEATS = """
import numpy as np

from helpers import scale
from transforms import FeatureSet, Float64, Int64, Nullable, String, Timestamp, Vocabulary
from transforms import transform
from transforms.windows import window_count

LIMIT = 10


@transform(request_time=True)
def scaled(x: Float64) -> Float64:
    return np.minimum(scale(x), LIMIT)


@transform(request_time=True)
def city_idx(city: Nullable[String], vocab=Vocabulary("city")) -> Int64:
    return vocab.lookup(city)


@transform
def count_1h(ts: Timestamp) -> Int64:
    return window_count(ts, 3600)


REQUEST = FeatureSet("request", {"k": Int64}, [scaled, city_idx])
HISTORY = FeatureSet("history", {"k": Int64}, [count_1h], order_by=("ts",))
"""


def _load(root: Path, helpers: str = HELPERS, feats: str = FEATS):
    (root / "helpers.py").write_text(textwrap.dedent(helpers))
    (root / "feats.py").write_text(textwrap.dedent(feats))
    for name in ("helpers", "feats"):
        sys.modules.pop(name, None)
    return import_definitions("feats", root)


@pytest.fixture()
def root(tmp_path: Path):
    yield tmp_path
    for name in ("helpers", "feats"):
        sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def _fingerprints(module) -> dict[str, str]:
    art = StatisticsArtifact("request", {a: ["a"] for a in module.REQUEST.analyzers})
    return {**module.REQUEST.fingerprints(art), **module.HISTORY.fingerprints(ART_EMPTY)}


ART_EMPTY = StatisticsArtifact("history", {})


def test_the_closure_holds_helpers_constants_framework_code_and_versions(root):
    m = _load(root)
    closure = code_closure(m.scaled.fn)
    assert "helpers:scale" in closure and "helpers:FACTOR" in closure
    assert closure["feats:LIMIT"] == "10"
    assert "helpers:unused" not in closure  # not reached
    assert closure["package:numpy"]  # third party: by version
    assert "transforms.windows:_bounds" in code_closure(m.count_1h.fn)
    assert "transforms.analyzers:VocabularyTable" in code_closure(m.city_idx.fn)


def test_editing_a_helper_a_constant_or_a_window_function_changes_the_fingerprint(
    root, monkeypatch: pytest.MonkeyPatch
):
    before = _fingerprints(_load(root))
    assert _fingerprints(_load(root)) == before  # stable

    edited = _fingerprints(_load(root, HELPERS.replace("x * FACTOR", "x * FACTOR + 0")))
    assert edited["scaled"] != before["scaled"]
    assert edited["count_1h"] == before["count_1h"]

    constant = _fingerprints(_load(root, HELPERS.replace("FACTOR = 2.0", "FACTOR = 3.0")))
    assert constant["scaled"] != before["scaled"]
    limit = _fingerprints(_load(root, feats=FEATS.replace("LIMIT = 10", "LIMIT = 11")))
    assert limit["scaled"] != before["scaled"]

    unused = _fingerprints(_load(root, HELPERS.replace("x + 1", "x + 2")))
    assert unused == before  # a change the transforms never reach

    import transforms.windows as windows

    original = windows._bounds

    def _bounds(ts, seconds, include_current=True):  # a "fixed" window boundary
        lo, hi = original(ts, seconds, include_current)
        return lo, hi

    monkeypatch.setattr(windows, "_bounds", _bounds)
    window = _fingerprints(_load(root))
    assert window["count_1h"] != before["count_1h"]
    assert window["scaled"] == before["scaled"]
