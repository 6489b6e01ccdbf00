"""Drift and schema comparators: served values vs the training statistics.

* numeric features: Jensen-Shannon divergence (base 2, in [0, 1]) over the training
  quantile bins (``(-inf, q1), [q1, q2), ..., [q_last, inf)``), nulls left out;
* categorical features (strings, and integers with few distinct training values):
  L-infinity distance between the value frequencies;
* schema anomalies: missing / unexpected features, type changes, new categories,
  null-rate jumps, values outside the training [min, max], and a rising out-of-vocabulary
  rate for columns a ``Vocabulary`` analyzer reads.

Thresholds: :data:`DEFAULT_THRESHOLDS`, overridden per feature by an optional module-level
dict ``SKEW_THRESHOLDS`` in the project's definition modules (those of its request-time
feature sets), e.g.::

    SKEW_THRESHOLDS = {
        "*": {"jsd": 0.15},                  # every feature
        "amount": {"jsd": 0.05, "out_of_range": 0.01},
        "user_seconds_since_prev": {"jsd": None},   # None: never breach on this check
    }
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from store.manifest import Manifest
from transforms.errors import SchemaError

DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "exact_match": 0.99,  # minimum online/offline exact-match rate
    "jsd": 0.1,  # maximum Jensen-Shannon divergence (numeric)
    "linf": 0.1,  # maximum L-infinity distance (categorical)
    "null_rate_jump": 0.05,  # maximum rise of the null rate
    "out_of_range": 0.02,  # maximum share of values outside training [min, max]
    "new_categories": 0.02,  # maximum share of values never seen in training
    "oov_rate_jump": 0.02,  # maximum rise of the out-of-vocabulary rate
    "min_rows": 30,  # fewer served values: distribution checks are not judged
    "max_categories": 32,  # integers with at most this many training values are categorical
}
THRESHOLD_KEYS = frozenset(DEFAULT_THRESHOLDS)


def load_thresholds(manifest: Manifest, modules: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """``SKEW_THRESHOLDS`` of the feature-set modules, validated (feature -> overrides)."""
    from transforms.modules import import_definitions

    names = {*modules}
    names |= {rt.feature_set.partition(":")[0] for rt in manifest.request_transforms.values()}
    merged: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        try:
            module = import_definitions(name, manifest.root or None)
        except SchemaError:
            continue
        raw = getattr(module, "SKEW_THRESHOLDS", None)
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            raise SchemaError(f"{name}.SKEW_THRESHOLDS must be a dict of feature -> dict")
        for feature, overrides in raw.items():
            if not isinstance(overrides, Mapping):
                raise SchemaError(f"{name}.SKEW_THRESHOLDS[{feature!r}] must be a dict")
            unknown = sorted(set(overrides) - THRESHOLD_KEYS)
            if unknown:
                raise SchemaError(
                    f"{name}.SKEW_THRESHOLDS[{feature!r}]: unknown keys {unknown}; "
                    f"known: {sorted(THRESHOLD_KEYS)}"
                )
            merged.setdefault(feature, {}).update(overrides)
    return merged


def thresholds_for(feature: str, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(DEFAULT_THRESHOLDS)
    out.update(overrides.get("*", {}))
    out.update(overrides.get(feature, {}))
    return out


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JSD (base 2) of two count vectors; 0 when either is empty."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, min(1.0, (kl(p) + kl(q)) / 2))


def linf(p: Mapping[Any, int], q: Mapping[Any, int]) -> float:
    """max |p(v) - q(v)| over the union of values (frequencies)."""
    tp, tq = sum(p.values()), sum(q.values())
    if not tp or not tq:
        return 0.0
    return max(abs(p.get(v, 0) / tp - q.get(v, 0) / tq) for v in set(p) | set(q))


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1)


@dataclass
class Check:
    """One comparison of one feature against its threshold."""

    feature: str
    check: str  # jsd, linf, null_rate_jump, ...
    value: float | None
    threshold: float | None
    detail: str = ""

    @property
    def breached(self) -> bool:
        return (
            self.value is not None
            and self.threshold is not None
            and (self.value < self.threshold if self.check == "exact_match"
                 else self.value > self.threshold)
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "check": self.check,
            "value": self.value,
            "threshold": self.threshold,
            "breached": self.breached,
            "detail": self.detail,
        }


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # numeric, categorical, missing
    checks: list[Check] = field(default_factory=list)
    serving_counts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "checks": [c.to_json() for c in self.checks],
            "breached": any(c.breached for c in self.checks),
        }


def _null_rate(stats: Mapping[str, Any]) -> float:
    total = (stats.get("count") or 0) + (stats.get("nulls") or 0)
    return (stats.get("nulls") or 0) / total if total else 0.0


def _present(values: list[Any]) -> list[Any]:
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def compare_feature(
    feature: str,
    train: Mapping[str, Any],
    served_type: str,
    values: list[Any],
    thresholds: Mapping[str, Any],
    vocabulary: set[str] | None = None,
) -> FeatureDrift:
    """All checks of one feature: type, null rate, range, distribution, categories, OOV."""
    checks: list[Check] = []
    present = _present(values)
    n, n_all = len(present), len(values)
    if train["type"] != served_type:
        checks.append(Check(feature, "type_change", 1.0, 0.0,
                            f"training {train['type']}, served {served_type}"))  # fmt: skip
    served_null = (n_all - n) / n_all if n_all else 0.0
    jump = served_null - _null_rate(train)
    checks.append(Check(feature, "null_rate_jump", jump, thresholds["null_rate_jump"],
                        f"null rate {_null_rate(train):.3f} -> {served_null:.3f}"))  # fmt: skip
    top = train.get("top_values") or {}
    categorical = train["type"] == "string" or (
        bool(top) and top.get("exact") and top.get("distinct", 0) <= thresholds["max_categories"]
    )
    judged = n >= (thresholds["min_rows"] or 0)
    drift = FeatureDrift(feature, "categorical" if categorical else "numeric")
    if categorical:
        train_counts = dict(zip(top.get("values", []), top.get("counts", []), strict=True))
        serve_counts: dict[Any, int] = {}
        for v in present:
            serve_counts[v] = serve_counts.get(v, 0) + 1
        drift.serving_counts = {str(k): c for k, c in serve_counts.items()}
        complete = top.get("distinct", 0) <= len(train_counts)
        checks.append(Check(feature, "linf", linf(train_counts, serve_counts) if judged else None,
                            thresholds["linf"], f"{n} served values"))  # fmt: skip
        if complete and n:
            new = {v: c for v, c in serve_counts.items() if v not in train_counts}
            rate = sum(new.values()) / n
            names = ", ".join(repr(v) for v in sorted(new, key=str)[:5])
            checks.append(Check(feature, "new_categories", rate, thresholds["new_categories"],
                                f"{len(new)} new: {names}" if new else "none"))  # fmt: skip
    elif present and train["type"] != "string":
        x = np.asarray(present, dtype=np.float64)
        qh = train.get("quantile_histogram") or {}
        if qh.get("edges") is not None and qh.get("counts"):
            jsd = jensen_shannon(np.asarray(qh["counts"]), bin_counts(x, qh["edges"]))
            checks.append(Check(feature, "jsd", jsd if judged else None, thresholds["jsd"],
                                f"{len(qh['counts'])} training-quantile bins, {n} served"))  # fmt: skip
    if present and train.get("min") is not None and train["type"] != "string":
        x = np.asarray(present, dtype=np.float64)
        out = float(np.mean((x < train["min"]) | (x > train["max"])))
        checks.append(Check(feature, "out_of_range", out, thresholds["out_of_range"],
                            f"training range [{train['min']:.6g}, {train['max']:.6g}]"))  # fmt: skip
    if vocabulary is not None and n:
        serve_oov = sum(1 for v in present if v not in vocabulary) / n
        train_oov = 0.0
        if top.get("values"):
            total = sum(top["counts"])
            train_oov = sum(c for v, c in zip(top["values"], top["counts"], strict=True)
                            if v not in vocabulary) / total  # fmt: skip
        checks.append(Check(feature, "oov_rate_jump", serve_oov - train_oov,
                            thresholds["oov_rate_jump"],
                            f"OOV rate {train_oov:.3f} -> {serve_oov:.3f}"))  # fmt: skip
    drift.checks = checks
    return drift


def vocabularies(manifest: Manifest) -> dict[str, set[str]]:
    """Input column -> vocabulary of every ``Vocabulary`` analyzer of the request-time sets."""
    from transforms.analyzers import Vocabulary
    from transforms.artifact import StatisticsArtifact

    out: dict[str, set[str]] = {}
    for rt in manifest.request_transforms.values():
        fs = manifest.feature_set(rt)
        art = StatisticsArtifact.load(manifest.artifact_file(rt))
        for key, a in fs.analyzers.items():
            if isinstance(a, Vocabulary) and key in art.values:
                out.setdefault(a.column, set()).update(art.values[key]["values"])
    return out


def _arrow_type_name(t: Any) -> str:
    from pipelines.skew.statistics import column_type

    return column_type(t) or str(t)


def compare_all(
    training: Mapping[str, Any],
    served: Any,  # pa.Table of served values
    features: list[str],
    overrides: Mapping[str, Mapping[str, Any]],
    vocab: Mapping[str, set[str]],
) -> tuple[dict[str, FeatureDrift], list[Check]]:
    """Per-feature drift checks plus schema anomalies over the whole feature list."""
    train_feats = training["features"]
    drift: dict[str, FeatureDrift] = {}
    schema: list[Check] = []
    for name in features:
        th = thresholds_for(name, overrides)
        if name not in train_feats:
            schema.append(Check(name, "unexpected_feature", 1.0, 0.0,
                                "served but absent from the training statistics"))  # fmt: skip
            continue
        if name not in served.column_names:
            schema.append(Check(name, "missing_feature", 1.0, 0.0,
                                "in the training statistics but not served"))  # fmt: skip
            continue
        col = served.column(name)
        drift[name] = compare_feature(
            name, train_feats[name], _arrow_type_name(col.type), col.to_pylist(), th,
            vocab.get(name),
        )  # fmt: skip
    model_inputs = set(features)
    for name in train_feats:
        if name not in model_inputs and name not in served.column_names:
            schema.append(Check(name, "missing_feature", 1.0, 0.0,
                                "in the training statistics but not served"))  # fmt: skip
    return drift, schema
