"""Full-pass statistics (analyzers) and their mergeable accumulators.

A transform asks for a statistic by giving a parameter an analyzer as default value::

    @transform
    def amount_z(amount: Nullable[Float64], mean=Mean("amount"), std=Std("amount")) -> Nullable[Float64]:
        return (amount - mean) / std

The batch engines compute every analyzer of a feature set in one pass with the
accumulators below (``add`` a batch, ``merge`` partials, ``finish``); the frozen values
go into a :class:`~transforms.artifact.StatisticsArtifact` and are injected at run time.
Accumulators are exact integer or count structures, so merge order never changes a bit.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from transforms._columns import all_true
from transforms._exact import exact_mean, exact_std, exact_sums, exact_variance
from transforms.errors import ArtifactError

# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Analyzer:
    """A statistic over one raw input column, computed in a full pass by a batch engine."""

    column: str
    family: ClassVar[str]
    kind: ClassVar[str]

    def key(self) -> str:
        params = [f"{k}={v}" for k, v in self._params().items()]
        return f"{self.kind}({', '.join([self.column, *params])})"

    def _params(self) -> dict[str, Any]:
        return {}

    def finish(self, acc: Any) -> Any:
        """The JSON value stored in the artifact for this analyzer."""
        raise NotImplementedError

    def load(self, value: Any) -> Any:
        """The runtime value injected into the transform (float, table, array)."""
        return value


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Mean(Analyzer):
    family = "moments"
    kind = "mean"

    def finish(self, acc: MomentsAccumulator) -> float | None:
        return exact_mean(acc.s1, acc.count) if acc.count else None

    def load(self, value: Any) -> float:
        return _float_or_nan(value)


@dataclass(frozen=True)
class Var(Analyzer):
    """Variance with ``ddof`` (0 by default: population variance, as tf.Transform)."""

    ddof: int = 0
    family = "moments"
    kind = "var"

    def _params(self) -> dict[str, Any]:
        return {"ddof": self.ddof}

    def finish(self, acc: MomentsAccumulator) -> float | None:
        if acc.count - self.ddof <= 0:
            return None
        return exact_variance(acc.s1, acc.s2, acc.count, self.ddof)

    def load(self, value: Any) -> float:
        return _float_or_nan(value)


@dataclass(frozen=True)
class Std(Var):
    """Standard deviation: the correctly rounded square root of the exact variance."""

    kind = "std"

    def finish(self, acc: MomentsAccumulator) -> float | None:
        if acc.count - self.ddof <= 0:
            return None
        return exact_std(acc.s1, acc.s2, acc.count, self.ddof)


@dataclass(frozen=True)
class Min(Analyzer):
    family = "moments"
    kind = "min"

    def finish(self, acc: MomentsAccumulator) -> float | None:
        return acc.min

    def load(self, value: Any) -> float:
        return _float_or_nan(value)


@dataclass(frozen=True)
class Max(Analyzer):
    family = "moments"
    kind = "max"

    def finish(self, acc: MomentsAccumulator) -> float | None:
        return acc.max

    def load(self, value: Any) -> float:
        return _float_or_nan(value)


@dataclass(frozen=True)
class Count(Analyzer):
    """Number of present (non-null, non-NaN) values."""

    family = "moments"
    kind = "count"

    def finish(self, acc: MomentsAccumulator) -> int:
        return acc.count


@dataclass(frozen=True)
class NullCount(Analyzer):
    family = "moments"
    kind = "null_count"

    def finish(self, acc: MomentsAccumulator) -> int:
        return acc.nulls


@dataclass(frozen=True)
class Vocabulary(Analyzer):
    """Most frequent strings; values outside it go to ``num_oov_buckets`` hashed buckets.

    Order: count descending, then the value's UTF-8 bytes ascending (ties are stable in
    every engine). ``top_k`` None keeps all values seen ``frequency_threshold`` times.
    """

    top_k: int | None = None
    frequency_threshold: int = 1
    num_oov_buckets: int = 0
    seed: int = 0
    family = "counts"
    kind = "vocabulary"

    def _params(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "frequency_threshold": self.frequency_threshold,
            "num_oov_buckets": self.num_oov_buckets,
            "seed": self.seed,
        }

    def finish(self, acc: CountsAccumulator) -> dict[str, Any]:
        items = [(v, c) for v, c in acc.counts.items() if c >= self.frequency_threshold]
        items.sort(key=lambda vc: (-vc[1], vc[0].encode("utf-8")))
        if self.top_k is not None:
            items = items[: self.top_k]
        return {
            "values": [v for v, _ in items],
            "counts": [c for _, c in items],
            "num_oov_buckets": self.num_oov_buckets,
            "seed": self.seed,
        }

    def load(self, value: Any) -> VocabularyTable:
        return VocabularyTable(tuple(value["values"]), value["num_oov_buckets"], value["seed"])


@dataclass(frozen=True)
class Quantiles(Analyzer):
    """``num_buckets - 1`` boundaries at ranks ceil(i*n/num_buckets) (inverted CDF).

    Exact while the column has at most ``QuantileAccumulator.EXACT_DISTINCT`` distinct
    values; beyond, values are binned on their top 10 mantissa bits (relative error
    below 0.1%), still deterministic for any partitioning.
    """

    num_buckets: int = 10
    family = "quantiles"
    kind = "quantiles"

    def _params(self) -> dict[str, Any]:
        return {"num_buckets": self.num_buckets}

    def finish(self, acc: QuantileAccumulator) -> list[float]:
        return acc.boundaries(self.num_buckets)

    def load(self, value: Any) -> np.ndarray:
        return np.asarray(value, dtype=np.float64)


# ---------------------------------------------------------------- runtime helpers


def fingerprint64(value: str, seed: int = 0) -> int:
    """Portable 64-bit hash of a string: BLAKE2b over its UTF-8 bytes, seed as salt."""
    digest = hashlib.blake2b(
        value.encode("utf-8"), digest_size=8, salt=seed.to_bytes(16, "little", signed=False)
    ).digest()
    return int.from_bytes(digest, "little")


class VocabularyTable:
    """A frozen vocabulary: ``lookup`` maps strings to indices, OOV to hashed buckets."""

    __slots__ = ("values", "num_oov_buckets", "seed", "_index", "_value_set")

    def __init__(self, values: tuple[str, ...], num_oov_buckets: int, seed: int) -> None:
        self.values = values
        self.num_oov_buckets = num_oov_buckets
        self.seed = seed
        self._index = {v: i for i, v in enumerate(values)}
        self._value_set: pa.Array | None = None

    @property
    def size(self) -> int:
        """Number of distinct indices ``lookup`` can return (vocabulary + OOV buckets)."""
        return len(self.values) + self.num_oov_buckets

    def lookup(self, column: np.ndarray, null_index: int = -1) -> npt.NDArray[np.int64]:
        """Index of each string; OOV -> len(values) + hash % num_oov_buckets (or -1)."""
        if len(column) > 64:
            try:
                return self._lookup_arrow(column, null_index)
            except (pa.ArrowException, UnicodeError):
                pass  # e.g. lone surrogates: the per-value path gives the same answer or error
        index, oov = self._index, self._oov
        out = np.empty(len(column), dtype=np.int64)
        for i, v in enumerate(column.tolist()):
            if v is None:
                out[i] = null_index
                continue
            j = index.get(v)
            out[i] = oov(v) if j is None else j
        return out

    def _oov(self, value: str) -> int:
        if not self.num_oov_buckets:
            return -1
        return len(self.values) + fingerprint64(value, self.seed) % self.num_oov_buckets

    def _lookup_arrow(self, column: np.ndarray, null_index: int) -> npt.NDArray[np.int64]:
        # Batches: Arrow's hash lookup for known values, one hash per distinct unknown value.
        if self._value_set is None:
            self._value_set = pa.array(self.values, pa.string())
        strings = pa.array(column, type=pa.string(), from_pandas=False)
        found = pc.index_in(strings, value_set=self._value_set)
        out: npt.NDArray[np.int64] = (
            found.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False).copy()
        )
        unresolved = np.flatnonzero(found.is_null().to_numpy(zero_copy_only=False))
        if unresolved.size:
            cache: dict[str, int] = {}
            for i, v in zip(unresolved.tolist(), column[unresolved].tolist(), strict=True):
                if v is None:
                    out[i] = null_index
                else:
                    j = cache.get(v)
                    if j is None:
                        j = cache[v] = self._oov(v)
                    out[i] = j
        return out


def bucketize(column: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """Bucket index in [0, len(boundaries)] (a value equal to a boundary goes right);
    missing values give NaN, so declare the output ``Int64 | None``."""
    x = np.asarray(column, dtype=np.float64)
    idx = np.searchsorted(boundaries, x, side="right").astype(np.float64)
    missing = np.isnan(x)
    if not all_true(~missing):
        idx[missing] = np.nan
    return idx


# ---------------------------------------------------------------- accumulators


class MomentsAccumulator:
    """count, nulls, exact sums of x and x*x, min and max (-0.0 counted as 0.0)."""

    __slots__ = ("count", "nulls", "s1", "s2", "min", "max")

    def __init__(self) -> None:
        self.count = 0
        self.nulls = 0
        self.s1 = 0
        self.s2 = 0
        self.min: float | None = None
        self.max: float | None = None

    def add(self, column: np.ndarray) -> None:
        x = np.asarray(column, dtype=np.float64)
        present = ~np.isnan(x)
        values = x[present] + 0.0
        self.nulls += int(x.size - values.size)
        if not values.size:
            return
        self.count += int(values.size)
        s1, s2 = exact_sums(values)
        self.s1 += s1
        self.s2 += s2
        lo, hi = float(values.min()), float(values.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def merge(self, other: MomentsAccumulator) -> None:
        self.count += other.count
        self.nulls += other.nulls
        self.s1 += other.s1
        self.s2 += other.s2
        for attr, pick in (("min", min), ("max", max)):
            mine, theirs = getattr(self, attr), getattr(other, attr)
            setattr(
                self,
                attr,
                theirs if mine is None else mine if theirs is None else pick(mine, theirs),
            )


class CountsAccumulator:
    """Exact count of every distinct string."""

    __slots__ = ("counts", "nulls")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.nulls = 0

    def add(self, column: np.ndarray) -> None:
        values = column.tolist()
        present = [v for v in values if v is not None]
        self.nulls += len(values) - len(present)
        self.counts.update(present)

    def merge(self, other: CountsAccumulator) -> None:
        self.counts.update(other.counts)
        self.nulls += other.nulls


_SIGN_FLIP = np.int64(0x7FFF_FFFF_FFFF_FFFF)
_COARSE_BITS = 42  # keep 10 of 52 mantissa bits once a column has too many distinct values


def _sortable_keys(x: np.ndarray, coarse: bool) -> np.ndarray:
    bits = (x + 0.0).view(np.int64)
    if coarse:
        sign = bits < 0
        mag = (bits & _SIGN_FLIP) >> _COARSE_BITS << _COARSE_BITS
        bits = np.where(sign, mag | np.int64(-(2**63)), mag)
    return np.where(bits < 0, bits ^ _SIGN_FLIP, bits)


def _sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(keys, return_inverse=True)
    summed = np.zeros(len(uniq), dtype=np.int64)
    np.add.at(summed, inverse, counts)
    return uniq, summed


def key_values(keys: np.ndarray) -> np.ndarray:
    bits = np.where(keys < 0, keys ^ _SIGN_FLIP, keys)
    return bits.view(np.float64)


class QuantileAccumulator:
    """Counts per distinct value (exact), or per 10-mantissa-bit bin past a distinct cap."""

    EXACT_DISTINCT = 100_000
    __slots__ = ("keys", "counts", "coarse", "nulls")

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)
        self.coarse = False
        self.nulls = 0

    def _absorb(self, keys: np.ndarray, counts: np.ndarray, coarse: bool) -> None:
        if coarse and not self.coarse:
            self._coarsen()
        elif self.coarse and not coarse:
            keys = _sortable_keys(key_values(keys), True)
        all_keys = np.concatenate([self.keys, keys])
        all_counts = np.concatenate([self.counts, counts])
        self.keys, self.counts = _sum_by_key(all_keys, all_counts)
        if not self.coarse and len(self.keys) > self.EXACT_DISTINCT:
            self._coarsen()

    def _coarsen(self) -> None:
        keys = _sortable_keys(key_values(self.keys), True)
        self.keys, self.counts = _sum_by_key(keys, self.counts)
        self.coarse = True

    def add(self, column: np.ndarray) -> None:
        x = np.asarray(column, dtype=np.float64)
        values = x[~np.isnan(x)]
        self.nulls += int(x.size - values.size)
        if values.size:
            uniq, counts = np.unique(_sortable_keys(values, self.coarse), return_counts=True)
            self._absorb(uniq, counts.astype(np.int64), self.coarse)

    def merge(self, other: QuantileAccumulator) -> None:
        self.nulls += other.nulls
        if len(other.keys):
            self._absorb(other.keys, other.counts, other.coarse)

    def boundaries(self, num_buckets: int) -> list[float]:
        n = int(self.counts.sum())
        if n == 0 or num_buckets < 2:
            return []
        cum = np.cumsum(self.counts)
        ranks = [(i * n + num_buckets - 1) // num_buckets for i in range(1, num_buckets)]
        idx = np.searchsorted(cum, np.asarray(ranks, dtype=np.int64), side="left")
        values = key_values(self.keys[idx])
        return sorted({float(v) for v in values})


ACCUMULATORS: dict[str, type] = {
    "moments": MomentsAccumulator,
    "counts": CountsAccumulator,
    "quantiles": QuantileAccumulator,
}


def new_accumulator(family: str) -> Any:
    try:
        return ACCUMULATORS[family]()
    except KeyError:
        raise ArtifactError(f"unknown analyzer family {family!r}") from None
