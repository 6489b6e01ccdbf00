"""Analyzer accumulators: exact, and independent of how the data is split."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from transforms._exact import SHIFT, exact_mean, exact_std, exact_sums, exact_variance
from transforms.analyzers import (
    CountsAccumulator,
    MomentsAccumulator,
    Quantiles,
    Vocabulary,
)


@pytest.mark.parametrize("seed", range(8))
def test_exact_sums_equal_rational_sums(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10.0 ** rng.integers(-300, 300), rng.integers(1, 3000))
    s1, s2 = exact_sums(x)
    assert Fraction(s1, 2**SHIFT) == sum(Fraction(float(v)) for v in x)
    assert Fraction(s2, 2 ** (2 * SHIFT)) == sum(Fraction(float(v)) ** 2 for v in x)


def test_extremes_and_subnormals_are_exact():
    x = np.array([1e308, 1e308, -1e308, 5e-324, -5e-324, 2.2250738585072014e-308, 0.0])
    s1, _ = exact_sums(x)
    assert Fraction(s1, 2**SHIFT) == sum(Fraction(float(v)) for v in x)
    assert exact_variance(*exact_sums(np.array([1e308, -1e308])), 2, 0) is None  # overflow


def test_mean_std_are_correctly_rounded():
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.normal(rng.uniform(-1e3, 1e3), rng.uniform(1e-3, 1e3), rng.integers(2, 200))
        s1, s2 = exact_sums(x)
        f = [Fraction(float(v)) for v in x]
        mean = sum(f) / len(f)
        assert exact_mean(s1, len(x)) == float(mean)
        var = sum((v - mean) ** 2 for v in f) / len(f)
        assert exact_variance(s1, s2, len(x), 0) == float(var)
        sd = exact_std(s1, s2, len(x), 0)
        # correctly rounded sqrt: the true value lies within half an ulp
        lo, hi = Fraction(math.nextafter(sd, 0)), Fraction(math.nextafter(sd, math.inf))
        assert ((Fraction(sd) + lo) / 2) ** 2 <= var <= ((Fraction(sd) + hi) / 2) ** 2


def test_moments_merge_in_any_order_gives_identical_state():
    rng = np.random.default_rng(9)
    x = rng.lognormal(2, 3, 100_000)
    x[rng.random(x.size) < 0.1] = np.nan
    whole = MomentsAccumulator()
    whole.add(x)
    for parts in (2, 7, 31):
        pieces = np.array_split(rng.permutation(x), parts)
        accs = []
        for p in pieces:
            a = MomentsAccumulator()
            a.add(p)
            accs.append(a)
        merged = MomentsAccumulator()
        for a in reversed(accs):
            merged.merge(a)
        assert (merged.count, merged.nulls, merged.s1, merged.s2, merged.min, merged.max) == (
            whole.count,
            whole.nulls,
            whole.s1,
            whole.s2,
            whole.min,
            whole.max,
        )


def test_vocabulary_order_threshold_and_top_k():
    acc = CountsAccumulator()
    acc.add(np.array(["b", "a", "b", "c", "a", None, "d"], dtype=object))
    assert Vocabulary("s").finish(acc)["values"] == ["a", "b", "c", "d"]
    assert Vocabulary("s", frequency_threshold=2).finish(acc)["values"] == ["a", "b"]
    out = Vocabulary("s", top_k=3, num_oov_buckets=2).finish(acc)
    assert out["values"] == ["a", "b", "c"] and out["counts"] == [2, 2, 1]
    assert acc.nulls == 1
    table = Vocabulary("s", top_k=3, num_oov_buckets=2).load(out)
    idx = table.lookup(np.array(["a", "zzz", None, "c"], dtype=object))
    assert idx[0] == 0 and idx[3] == 2 and idx[2] == -1 and idx[1] in (3, 4)
    assert table.size == 5


def test_quantile_boundaries_match_numpy_inverted_cdf():
    from transforms.analyzers import QuantileAccumulator

    rng = np.random.default_rng(2)
    x = np.round(rng.normal(0, 5, 20_000), 2)
    acc = QuantileAccumulator()
    acc.add(x)
    assert not acc.coarse
    expected = np.quantile(x, [i / 7 for i in range(1, 7)], method="inverted_cdf")
    assert Quantiles("x", 7).finish(acc) == sorted(set(expected.tolist()))
