"""The definition API: declarations, feature-set validation, fingerprints, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from transforms import (
    ArtifactError,
    FeatureSet,
    Float64,
    Int64,
    Mean,
    Nullable,
    SchemaError,
    StatisticsArtifact,
    Std,
    String,
    Timestamp,
    TransformError,
    Vocabulary,
    transform,
)
from transforms.engines.online import OnlineEngine
from transforms.statistics import analyze_table


@transform
def amount_z(
    amount: Nullable[Float64], mean=Mean("amount"), std=Std("amount")
) -> Nullable[Float64]:
    """z-score."""
    return (amount - mean) / std


@transform
def amount_z_sq(amount_z: Nullable[Float64]) -> Nullable[Float64]:
    return amount_z * amount_z


@transform(request_time=True)
def over_mean(
    amount: Nullable[Float64], request_amount: Float64, mean=Mean("amount")
) -> Nullable[Float64]:
    return request_amount / mean


FS = FeatureSet("users", {"user_id": Int64}, [amount_z_sq, amount_z, over_mean])
DATA = pa.table({"user_id": [1, 2, 3, 4], "amount": [1.0, 2.0, 3.0, None]})


def test_transform_reads_its_declaration():
    assert amount_z.name == "amount_z"
    assert [(f.name, f.type, f.nullable) for f in amount_z.inputs] == [("amount", Float64, True)]
    assert amount_z.output.nullable and set(amount_z.analyzers) == {"mean", "std"}
    assert amount_z.description == "z-score."
    assert over_mean.request_time and not amount_z.request_time


def test_feature_set_orders_dependencies_and_lists_raw_inputs():
    assert [t.name for t in FS.order] == ["amount_z", "amount_z_sq", "over_mean"]
    assert set(FS.inputs) == {"amount", "request_amount"}
    assert sorted(FS.analyzers) == ["mean(amount)", "std(amount, ddof=0)"]
    assert [t.name for t in FS.select(request_time=True)] == ["over_mean"]


def test_undeclared_parameter_is_rejected_with_its_name():
    with pytest.raises(TransformError, match="parameter 'x' needs a field type"):

        @transform
        def bad(x) -> Float64:
            return x


def test_bad_return_annotation_is_rejected():
    with pytest.raises(TransformError, match="return annotation"):

        @transform
        def bad(x: Float64) -> float:
            return x  # type: ignore[return-value]  # the wrong annotation is the point


def test_conflicting_input_types_are_a_schema_error():
    @transform
    def as_text(amount: String) -> String:
        return amount

    with pytest.raises(SchemaError, match="input 'amount' is float64 in one transform and string"):
        FeatureSet("x", {"id": Int64}, [amount_z, as_text])


def test_analyzer_on_wrong_type_is_a_schema_error():
    @transform
    def idx(amount: Float64, v=Vocabulary("amount")) -> Int64:
        return v.lookup(amount)

    with pytest.raises(SchemaError, match="needs string, 'amount' is float64"):
        FeatureSet("x", {"id": Int64}, [idx])


def test_cycle_and_duplicate_names_are_rejected():
    with pytest.raises(SchemaError, match="repeat"):
        FeatureSet("x", {"id": Int64}, [amount_z, amount_z])


def test_runner_without_artifact_is_refused():
    with pytest.raises(TransformError, match="give it a statistics artifact"):
        OnlineEngine(FS, None)


def test_online_row_and_batch_agree_with_arrow_path():
    art = analyze_table(FS, DATA.append_column("request_amount", pa.array([1.0] * 4)))
    engine = OnlineEngine(FS, art)
    row = engine.transform_row({"amount": 3.0, "request_amount": 4.0})
    assert row["amount_z"] == (3.0 - 2.0) / np.sqrt(2 / 3)
    assert row["over_mean"] == 2.0
    rows = engine.transform_rows(
        [{"amount": 3.0, "request_amount": 4.0}, {"amount": None, "request_amount": 1.0}]
    )
    assert rows[0] == row and rows[1]["amount_z"] is None
    only_request = OnlineEngine(FS, art, request_time_only=True)
    assert only_request.outputs == ("over_mean",)
    with pytest.raises(TransformError, match="input 'request_amount' is missing") as missing:
        only_request.transform_row({"amount": 1.0})
    assert missing.value.field == "request_amount"
    with pytest.raises(TransformError, match="expected float64") as wrong:
        only_request.transform_row({"amount": 1.0, "request_amount": "4"})
    assert wrong.value.field == "request_amount"  # the column the caller must fix


def test_fingerprints_change_with_statistics_and_code():
    art1 = analyze_table(FS, DATA.append_column("request_amount", pa.array([1.0] * 4)))
    art2 = StatisticsArtifact("users", {**art1.values, "mean(amount)": 9.0})
    f1, f2 = FS.fingerprints(art1), FS.fingerprints(art2)
    assert f1["amount_z"] != f2["amount_z"]
    assert f1["amount_z_sq"] != f2["amount_z_sq"]  # consumes amount_z

    @transform
    def amount_z(
        amount: Nullable[Float64], mean=Mean("amount"), std=Std("amount")
    ) -> Nullable[Float64]:  # noqa: F811
        return (amount - mean) / std / 1.0

    other = FeatureSet("users", {"user_id": Int64}, [amount_z, amount_z_sq, over_mean])
    assert other.fingerprints(art1)["amount_z"] != f1["amount_z"]
    assert FS.fingerprints(art1) == f1  # stable


def test_artifact_round_trip_hash_and_corruption(tmp_path):
    art = analyze_table(FS, DATA.append_column("request_amount", pa.array([1.0] * 4)))
    path = art.save(tmp_path / "a" / "stats.json")
    loaded = StatisticsArtifact.load(path)
    assert loaded.values == art.values and loaded.content_hash == art.content_hash
    assert not list(path.parent.glob(".*"))  # no temp file left behind
    raw = json.loads(path.read_text())
    raw["values"]["mean(amount)"] = 1.5
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="does not match its values"):
        StatisticsArtifact.load(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        StatisticsArtifact.load(tmp_path / "missing.json")
    with pytest.raises(ArtifactError, match="is for feature set"):
        FS.check_artifact(StatisticsArtifact("other", art.values))
    with pytest.raises(ArtifactError, match="lacks"):
        FS.check_artifact(StatisticsArtifact("users", {}))


def test_exception_inside_a_transform_is_named():
    @transform
    def boom(amount: Float64) -> Float64:
        raise ValueError("nope")

    engine = OnlineEngine(FeatureSet("b", {"id": Int64}, [boom]), None)
    with pytest.raises(TransformError, match="transform 'boom' raised ValueError: nope"):
        engine.transform_row({"amount": 1.0})


def test_the_online_engine_refuses_an_entity_feature_set():
    from transforms.engines.online import OnlineEngine
    from transforms.windows import window_count

    @transform
    def n_24h(event_timestamp: Timestamp) -> Int64:
        return window_count(event_timestamp, 86_400)

    fs = FeatureSet("history", {"id": Int64}, [n_24h], order_by=("event_timestamp",))
    with pytest.raises(SchemaError, match="'history' is an entity feature set"):
        OnlineEngine(fs, None)
