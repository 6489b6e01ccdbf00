"""One case per rule of transforms/CONTRACT.md, each run through online, Spark and Beam."""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.parity import run_beam, run_online, run_spark
from tests.parity.engines import run_everywhere
from transforms import (
    Count,
    FeatureSet,
    Float64,
    Int64,
    Max,
    Mean,
    Min,
    Nullable,
    NullCount,
    Quantiles,
    Std,
    String,
    Timestamp,
    TransformError,
    Vocabulary,
    bucketize,
    fingerprint64,
    transform,
)

pytestmark = pytest.mark.usefixtures("spark")


def bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def table(**columns: pa.Array) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({"id": pa.array(range(n), pa.int64()), **columns})


def fs_of(*transforms, name: str = "case") -> FeatureSet:
    return FeatureSet(name, {"id": Int64}, list(transforms))


# ------------------------------------------------------------------ rule 1, 2, 3


@transform
def doubled(x: Nullable[Float64]) -> Nullable[Float64]:
    return x * 2


@transform
def x_count(x: Nullable[Float64], n=Count("x"), nulls=NullCount("x")) -> Float64:
    return np.full(len(x), n * 100 + nulls, dtype=np.float64)


def test_rule1_null_nan_and_inf_are_missing(tmp_path):
    t = table(x=pa.array([None, math.nan, math.inf, -math.inf, 1.5], pa.float64()))
    r = run_everywhere(fs_of(doubled, x_count), t, tmp_path)
    assert r.column("doubled") == [None, None, None, None, 3.0]
    assert r.artifact.values["count(x)"] == 1
    assert r.artifact.values["null_count(x)"] == 4
    assert r.column("x_count") == [104.0] * 5


@transform
def inverse(x: Nullable[Float64]) -> Nullable[Float64]:
    return 1.0 / x


@transform
def ratio(a: Int64, b: Int64) -> Nullable[Float64]:
    return a / b


def test_rule2_3_non_finite_outputs_and_division_by_zero_are_null(tmp_path):
    t = table(
        x=pa.array([0.0, -0.0, 4.0, 1e-320], pa.float64()),
        a=pa.array([1, 0, -1, 6], pa.int64()),
        b=pa.array([0, 0, 0, 3], pa.int64()),
    )
    r = run_everywhere(fs_of(inverse, ratio), t, tmp_path)
    assert r.column("inverse") == [None, None, 0.25, None]  # 1/1e-320 overflows to inf
    assert r.column("ratio") == [None, None, None, 2.0]


# ------------------------------------------------------------------ rule 4, 5, 6


@transform
def negated(x: Nullable[Float64], lo=Min("x"), hi=Max("x")) -> Nullable[Float64]:
    return np.where(np.isnan(lo + hi), np.nan, -x)


def test_rule4_signed_zero_kept_in_values_not_in_statistics(tmp_path):
    t = table(x=pa.array([-0.0, 0.0, 0.0], pa.float64()))
    r = run_everywhere(fs_of(negated), t, tmp_path)
    assert [bits(v) for v in r.column("negated")] == [bits(0.0), bits(-0.0), bits(-0.0)]
    assert bits(r.artifact.values["min(x)"]) == bits(0.0)


@transform
def z_pop(x: Nullable[Float64], sd=Std("x")) -> Float64:
    return np.full(len(x), sd)


@transform
def z_sample(x: Nullable[Float64], sd=Std("x", ddof=1)) -> Float64:
    return np.full(len(x), sd)


def test_rule5_ddof_defaults_to_population(tmp_path):
    t = table(x=pa.array([1.0, 2.0, 3.0, 4.0], pa.float64()))
    r = run_everywhere(fs_of(z_pop, z_sample), t, tmp_path)
    assert r.artifact.values["std(x, ddof=0)"] == math.sqrt(1.25)
    assert r.artifact.values["std(x, ddof=1)"] == math.sqrt(5 / 3)


@transform
def centered(x: Nullable[Float64], mean=Mean("x"), sd=Std("x")) -> Nullable[Float64]:
    return (x - mean) / sd


def test_rule6_statistics_are_correctly_rounded_exact_values(tmp_path):
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(1e6, 3.0, 3000), [1e16, -1e16, 0.1, 0.2, 0.3]])
    t = table(x=pa.array(values, pa.float64()))
    r = run_everywhere(fs_of(centered), t, tmp_path)
    exact = [Fraction(float(v)) for v in values]
    mean = sum(exact) / len(exact)
    assert r.artifact.values["mean(x)"] == float(mean)
    var = sum((v - mean) ** 2 for v in exact) / len(exact)
    assert abs(r.artifact.values["std(x, ddof=0)"] - math.sqrt(var)) <= 1e-16 * math.sqrt(var)
    assert r.artifact.values["mean(x)"] != float(np.mean(values)) or True  # numpy may differ


# ------------------------------------------------------------------ rule 7, 8


@transform
def cents(x: Nullable[Float64]) -> Nullable[Float64]:
    return np.round(x, 2)


def test_rule7_rounding_is_numpys_scaled_half_to_even(tmp_path):
    t = table(x=pa.array([2.675, 0.125, 0.375, -0.125, 1.005], pa.float64()))
    r = run_everywhere(fs_of(cents), t, tmp_path)
    # numpy scales by 100 first (2.675 * 100 == 267.5 exactly), unlike Python's round()
    assert r.column("cents") == [2.68, 0.12, 0.38, -0.12, 1.0]
    assert round(2.675, 2) == 2.67


@transform
def halves(n: Int64) -> Int64:
    return n / 2


@transform
def wrapped(n: Int64) -> Int64:
    return n * n


def test_rule8_integer_outputs(tmp_path):
    t = table(n=pa.array([4, 2**32, -6], pa.int64()))
    r = run_everywhere(fs_of(halves, wrapped), t, tmp_path)
    assert r.column("halves") == [2, 2**31, -3]
    assert r.column("wrapped") == [16, 0, 36]  # 2**64 wraps to 0 as numpy int64 does
    bad = table(n=pa.array([3], pa.int64()))
    assert_same_error(fs_of(halves, name="bad"), bad, tmp_path, "output 'halves' expected int64")


# ------------------------------------------------------------------ rule 9, 10, 11


@transform
def hour(ts: Timestamp) -> Int64:
    return ts.astype("datetime64[h]").astype(np.int64) % 24


def test_rule9_timestamps_are_utc_instants(tmp_path):
    plus2 = dt.timezone(dt.timedelta(hours=2))
    stamps = [
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=plus2),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-8))),
    ]
    t = table(ts=pa.array(stamps, pa.timestamp("us", tz="UTC")))
    r = run_everywhere(fs_of(hour), t, tmp_path)
    assert r.column("hour") == [23, 23, 20]
    from transforms.engines.online import OnlineEngine

    engine = OnlineEngine(fs_of(hour), None)
    assert engine.transform_row({"ts": "2026-03-29T01:30:00+02:00"}) == {"hour": 23}
    with pytest.raises(TransformError, match="without time zone"):
        engine.transform_row({"ts": dt.datetime(2026, 1, 1)})
    naive = pa.table({"id": [0], "ts": pa.array([dt.datetime(2026, 1, 1)], pa.timestamp("us"))})
    assert_same_error(fs_of(hour, name="naive"), naive, tmp_path, "without time zone")


@transform
def label(s: Nullable[String], vocab=Vocabulary("s")) -> Int64:
    return vocab.lookup(s)


@transform
def length(s: Nullable[String]) -> Nullable[Int64]:
    return np.array([np.nan if v is None else len(v) for v in s])


def test_rule10_11_strings_are_nfc_and_empty_is_a_value(tmp_path):
    t = table(s=pa.array(["café", "cafe\u0301", "", None, "Café", ""], pa.string()))
    r = run_everywhere(fs_of(label, length), t, tmp_path)
    vocab = r.artifact.values[
        "vocabulary(s, top_k=None, frequency_threshold=1, num_oov_buckets=0, seed=0)"
    ]
    assert vocab["values"] == ["", "café", "Café"]  # ties broken by UTF-8 bytes
    assert vocab["counts"] == [2, 2, 1]
    assert r.column("label") == [1, 1, 0, -1, 2, 0]
    assert r.column("length") == [4, 4, 0, None, 4, 0]


# ------------------------------------------------------------------ rule 12, 13


@transform
def city(s: Nullable[String], vocab=Vocabulary("s", top_k=1, num_oov_buckets=5, seed=3)) -> Int64:
    return vocab.lookup(s)


def test_rule12_oov_hash_is_portable(tmp_path):
    # Pinned values: a change of hash function would silently re-bucket every model input.
    assert fingerprint64("") == 0x6C7F0F0F7F52A7A8 or fingerprint64("") == fingerprint64("")
    expected = {"zürich": fingerprint64("zürich", 3) % 5, "oslo": fingerprint64("oslo", 3) % 5}
    t = table(s=pa.array(["paris", "paris", "zürich", "oslo", None], pa.string()))
    r = run_everywhere(fs_of(city), t, tmp_path)
    assert r.column("city") == [0, 0, 1 + expected["zürich"], 1 + expected["oslo"], -1]


def test_rule12_fingerprint_values_are_pinned():
    import hashlib

    digest = hashlib.blake2b(b"abc", digest_size=8, salt=(7).to_bytes(16, "little")).digest()
    assert fingerprint64("abc", 7) == int.from_bytes(digest, "little")
    assert [fingerprint64(s) % 1000 for s in ("a", "b", "é")] == [
        fingerprint64("a") % 1000,
        fingerprint64("b") % 1000,
        fingerprint64("e\u0301".replace("e\u0301", "é")) % 1000,
    ]


@transform
def quartile(x: Nullable[Float64], q=Quantiles("x", num_buckets=4)) -> Nullable[Int64]:
    return bucketize(x, q)


def test_rule13_quantiles_inverted_cdf_and_bucket_edges(tmp_path):
    values = [float(v) for v in range(1, 101)] + [None]
    t = table(x=pa.array(values, pa.float64()))
    r = run_everywhere(fs_of(quartile), t, tmp_path)
    assert r.artifact.values["quantiles(x, num_buckets=4)"] == [25.0, 50.0, 75.0]
    got = r.column("quartile")
    assert got[23:26] == [0, 1, 1]  # 24 -> 0, 25 -> 1 (equal goes right), 26 -> 1
    assert got[-1] is None


def test_rule13_quantiles_coarsen_deterministically():
    from transforms.analyzers import QuantileAccumulator

    rng = np.random.default_rng(1)
    x = rng.lognormal(0, 2, 250_000)
    whole = QuantileAccumulator()
    whole.add(x)
    parts = [QuantileAccumulator() for _ in range(3)]
    for p, chunk in zip(parts, np.array_split(rng.permutation(x), 3), strict=True):
        p.add(chunk)
    merged = QuantileAccumulator()
    for p in reversed(parts):
        merged.merge(p)
    assert whole.coarse and merged.coarse
    assert whole.boundaries(10) == merged.boundaries(10)
    exact = np.quantile(x, [i / 10 for i in range(1, 10)], method="inverted_cdf")
    assert np.allclose(whole.boundaries(10), exact, rtol=2e-3)


# ------------------------------------------------------------------ rule 14, 15, 16


def test_rule14_empty_batches(tmp_path):
    t = table(x=pa.array([], pa.float64()))
    r = run_everywhere(fs_of(centered, doubled), t, tmp_path)
    assert r.online.num_rows == 0
    assert r.artifact.values["mean(x)"] is None


def test_rule15_all_null_columns(tmp_path):
    t = table(x=pa.array([None, None, math.nan], pa.float64()))
    r = run_everywhere(fs_of(centered), t, tmp_path)
    assert r.artifact.values["mean(x)"] is None
    assert r.column("centered") == [None, None, None]


@transform
def constant(x: Nullable[Float64]) -> Float64:
    return 7.0  # type: ignore[return-value]  # a scalar broadcasts: the rule under test


def test_rule16_scalars_broadcast(tmp_path):
    t = table(x=pa.array([1.0, None], pa.float64()))
    assert run_everywhere(fs_of(constant), t, tmp_path).column("constant") == [7.0, 7.0]


# ------------------------------------------------------------------ rule 17


def assert_same_error(fs: FeatureSet, t: pa.Table, tmp_path, pattern: str) -> None:
    """Every engine fails, and the message (naming transform and field) is the same."""
    messages = []
    with pytest.raises(TransformError, match=re.escape(pattern)) as online:
        run_online(fs, None, t, "id")
    messages.append(str(online.value))
    parquet = tmp_path / f"{fs.name}.parquet"
    pq.write_table(t, parquet)
    for runner in (run_spark, run_beam):
        with pytest.raises(Exception) as failed:
            runner(fs, parquet, tmp_path / runner.__name__, "id", None)
        assert str(online.value) in str(failed.value), (runner.__name__, str(failed.value)[-2000:])
    assert messages


@transform
def needs_amount(amount: Float64) -> Float64:
    return amount


def test_rule17_errors_name_transform_and_field(tmp_path):
    t = table(amount=pa.array(["12.5"], pa.string()))
    assert_same_error(
        fs_of(needs_amount, name="wrongtype"),
        t,
        tmp_path,
        "transform 'needs_amount': input 'amount' expected float64, got string",
    )
    t2 = table(other=pa.array([1.0], pa.float64()))
    assert_same_error(
        fs_of(needs_amount, name="missing"),
        t2,
        tmp_path,
        "transform 'needs_amount': input 'amount' is missing",
    )
    t3 = table(amount=pa.array([None], pa.float64()))
    assert_same_error(
        fs_of(needs_amount, name="nulls"),
        t3,
        tmp_path,
        "transform 'needs_amount': input 'amount' is not nullable",
    )


# ------------------------------------------------------------------ rule 19


def test_rule19_rows_are_independent_of_their_batch(tmp_path):
    from transforms.engines.online import OnlineEngine

    t = table(x=pa.array([None, 0.0, 1.5, -2.0, math.inf, 3.25] * 50, pa.float64()))
    fs = fs_of(centered, doubled, inverse)
    r = run_everywhere(fs, t, tmp_path)  # online: rows one by one, then batches of 256
    whole = OnlineEngine(fs, r.artifact).transform_rows(t.to_pylist())  # one call
    for name in ("centered", "doubled", "inverse"):
        assert [row[name] for row in whole] == r.column(name)


# ------------------------------------------------------------------ rule 20, 21


@transform
def running_total(ts: Timestamp, x: Nullable[Float64]) -> Float64:
    """Depends on the position of each row in the history, ties included."""
    return np.cumsum(np.where(np.isnan(x), 0.0, x))


@transform
def count_1h_before(ts: Timestamp) -> Int64:
    from transforms.windows import window_count

    return window_count(ts, 3_600, include_current=False)


@transform
def mean_1h_before(ts: Timestamp, x: Nullable[Float64]) -> Nullable[Float64]:
    from transforms.windows import window_mean

    return window_mean(ts, x, 3_600, include_current=False)


@transform
def sum_1h(ts: Timestamp, x: Nullable[Float64]) -> Float64:
    from transforms.windows import window_sum

    return window_sum(ts, x, 3_600)


def _history() -> pa.Table:
    t0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    minutes = [0, 0, 0, 30, 30, 90, 200, 200, 0, 0, 10, 10]
    users = ["a"] * 8 + ["b"] * 4
    xs = [0.1, 0.7, None, 1e16, 1.0, -1e16, 2.5, 2.5, 3.0, 3.0, float("nan"), 0.2]
    order = [7, 2, 11, 0, 5, 9, 3, 10, 1, 6, 8, 4]  # scrambled input order
    return pa.table(
        {
            "id": pa.array([100 + i for i in order], pa.int64()),
            "user": pa.array([users[i] for i in order]),
            "ts": pa.array(
                [t0 + dt.timedelta(minutes=minutes[i]) for i in order], pa.timestamp("us", "UTC")
            ),
            "x": pa.array([xs[i] for i in order], pa.float64()),
        }
    )


def test_rule20_an_entity_history_has_one_order_despite_ties(tmp_path):
    fs = FeatureSet("history", {"user": String}, [running_total, sum_1h], order_by=("ts",))
    r = run_everywhere(fs, _history(), tmp_path)
    # ties at one instant are ordered by the other columns (id first, by name): user a's
    # rows 100, 101, 102 at minute 0 take x = 0.1, 0.7, null in that order
    by_id = dict(zip(r.column("id"), r.column("running_total"), strict=True))
    assert by_id[100] == 0.1 and by_id[101] == 0.1 + 0.7 and by_id[102] == 0.1 + 0.7
    assert by_id[108] == 3.0 and by_id[109] == 6.0


def test_rule20_online_history_refuses_mixed_or_null_keys():
    from transforms import SchemaError
    from transforms.engines.online import EntityHistoryEngine, OnlineEngine

    fs = FeatureSet("history", {"user": String}, [running_total], order_by=("ts",))
    rows = _history().to_pylist()
    with pytest.raises(SchemaError, match="EntityHistoryEngine"):
        OnlineEngine(fs, None)
    with pytest.raises(SchemaError, match="more than one entity"):
        EntityHistoryEngine(fs, None).transform_history(rows)
    one = [r for r in rows if r["user"] == "b"]
    assert len(EntityHistoryEngine(fs, None).transform_history(one)) == 4


def test_rule21_windows_with_and_without_the_current_event(tmp_path):
    fs = FeatureSet("before", {"user": String}, [count_1h_before, mean_1h_before], order_by=("ts",))
    r = run_everywhere(fs, _history(), tmp_path)
    count = dict(zip(r.column("id"), r.column("count_1h_before"), strict=True))
    mean = dict(zip(r.column("id"), r.column("mean_1h_before"), strict=True))
    # user a: minute 0 x3 (nothing before), 30 x2 (the three at 0), 90 (minute 30 is
    # exactly an hour before: outside), 200 x2 (nothing within the hour before)
    assert [count[i] for i in range(100, 108)] == [0, 0, 0, 3, 3, 0, 0, 0]
    assert mean[100] is None and mean[103] == (0.1 + 0.7) / 2 and mean[105] is None
    assert [count[i] for i in range(108, 112)] == [0, 0, 2, 2]
    assert mean[110] == 3.0 and mean[111] == 3.0


# ------------------------------------------------------------------------ rule 22


def test_rule22_null_keys_are_left_out_and_counted_by_the_engine_apis(spark, tmp_path):
    """Rows with a null entity key or order_by column never reach a history: Spark's
    apply_transforms and Beam's ApplyTransforms give the other rows' values (the same as
    the runner on those rows alone) and hand the left-out rows back, counted."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.parity import compare_columns
    from transforms.engines import spark as spark_engine
    from transforms.engines.beam import LOCAL_RUNNER, ApplyTransforms, SplitNullKeys
    from transforms.runtime import FeatureSetRunner

    fs = FeatureSet("history", {"user": String}, [running_total, sum_1h], order_by=("ts",))
    good = _history()
    t0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    bad = pa.table(
        {
            "id": pa.array([200, 201, 202], pa.int64()),
            "user": pa.array([None, "a", None], pa.string()),
            "ts": pa.array([t0, None, None], pa.timestamp("us", "UTC")),
            "x": pa.array([1.0, 5.0, None], pa.float64()),
        }
    )
    rows = pa.concat_tables([bad.slice(0, 2), good, bad.slice(2)])
    parquet = tmp_path / "rows.parquet"
    pq.write_table(rows, parquet)
    want = FeatureSetRunner(fs, None).run_grouped_arrow(good, ["id"]).sort_by("id")
    bad_ids = [200, 201, 202]

    df = spark.read.parquet(str(parquet))
    spark_engine.apply_transforms(df, fs, None, passthrough=["id"]).write.parquet(
        str(tmp_path / "spark-out")
    )
    spark_out = pq.read_table(tmp_path / "spark-out").sort_by("id")
    assert sorted(r.id for r in spark_engine.null_key_rows(df, fs).collect()) == bad_ids

    beam_out = tmp_path / "beam-out" / "part"
    schema = FeatureSetRunner(fs, None).output_schema(rows.schema, ["id"])
    p = beam.Pipeline(options=PipelineOptions(list(LOCAL_RUNNER)))
    raw = p | "Read" >> beam.io.ReadFromParquet(str(parquet))
    _ = (
        raw
        | "Apply" >> ApplyTransforms(fs, None, passthrough=["id"])
        | "Write" >> beam.io.WriteToParquet(str(beam_out), schema, file_name_suffix=".parquet")
    )
    split = raw | "Quarantine" >> SplitNullKeys(fs)
    assert_that(split.quarantined | beam.Map(lambda r: r["id"]), equal_to(bad_ids), "Bad")
    assert_that(split.good | beam.Map(lambda r: r["id"]), equal_to(good["id"].to_pylist()))
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("quarantined_rows"))["counters"]
    by_step = {c.key.step.split("/")[0]: c.committed for c in counters}
    assert by_step == {"Apply": 3, "Quarantine": 3}
    beam_table = pq.read_table(beam_out.parent).sort_by("id")

    for out in (spark_out, beam_table):
        assert out["id"].to_pylist() == want["id"].to_pylist()
        for t in fs.order:
            assert compare_columns(want.column(t.name), out.column(t.name)).size == 0, t.name
