"""The data generator: determinism, schema, integrity, label signal, atomic writes, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from cli.commands_generate import register
from feature_repo import generate as gen
from feature_repo.generate import generate
from tests.support import EXAMPLE_DIR
from transforms.errors import SkewlessError

TS = pa.timestamp("us", tz="UTC")
SMALL = 20_000
CHUNK = 7_000  # three transaction files for SMALL rows


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _txns(root: Path) -> pa.Table:
    return ds.dataset(root / "transactions", format="parquet").to_table()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "raw"
    generate(SMALL, out, seed=11, progress=False, chunk_rows=CHUNK)
    return out


def test_same_seed_gives_identical_bytes(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "raw"
    generate(SMALL, again, seed=11, progress=False, chunk_rows=CHUNK)
    assert _files(again) == _files(small)


def test_different_seed_gives_different_data(small: Path, tmp_path: Path) -> None:
    other = tmp_path / "raw"
    generate(SMALL, other, seed=12, progress=False, chunk_rows=CHUNK)
    a, b = _txns(small), _txns(other)
    assert a.num_rows == b.num_rows == SMALL
    assert not np.array_equal(a["amount"].to_numpy(), b["amount"].to_numpy())
    assert not np.array_equal(a["user_id"].to_numpy(), b["user_id"].to_numpy())


def test_layout_and_schema(small: Path) -> None:
    assert sorted(p.name for p in (small / "transactions").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    users = pq.read_table(small / "users")
    merchants = pq.read_table(small / "merchants")
    assert users.schema == pa.schema(
        [
            ("user_id", pa.int64()),
            ("signup_ts", TS),
            ("home_country", pa.string()),
            ("segment", pa.string()),
        ]
    )
    assert merchants.schema == pa.schema(
        [("merchant_id", pa.int64()), ("category", pa.string()), ("country", pa.string())]
    )
    assert _txns(small).schema == pa.schema(
        [
            ("txn_id", pa.int64()),
            ("user_id", pa.int64()),
            ("merchant_id", pa.int64()),
            ("amount", pa.float64()),
            ("currency_country", pa.string()),
            ("device", pa.string()),
            ("event_timestamp", TS),
            ("created_timestamp", TS),
            ("is_fraud", pa.bool_()),
        ]
    )
    assert users.num_rows == SMALL // 50 and merchants.num_rows == gen.MIN_MERCHANTS
    assert len(set(merchants["category"].to_pylist())) == 20
    for table in (users, merchants, _txns(small)):
        assert all(col.null_count == 0 for col in table.columns)


def test_manifest(small: Path) -> None:
    manifest = json.loads((small / "_manifest.json").read_text())
    t = _txns(small)
    assert manifest["seed"] == 11 and manifest["rows"] == SMALL
    assert manifest["counts"]["transactions"] == SMALL
    assert manifest["counts"]["users"] == SMALL // 50
    assert manifest["counts"]["transaction_files"] == 3
    assert manifest["counts"]["fraud"] == t["is_fraud"].to_numpy().sum()
    assert manifest["fraud_rate"] == pytest.approx(manifest["counts"]["fraud"] / SMALL)
    assert manifest["schema"]["transactions"]["event_timestamp"] == "timestamp[us, tz=UTC]"
    assert manifest["faults"] == []


def test_timestamps_are_utc_ordered_and_in_window(small: Path) -> None:
    start, end = gen.DEFAULT_START, gen.DEFAULT_START + timedelta(days=30)
    previous_max = None
    for part in sorted((small / "transactions").iterdir()):
        t = pq.read_table(part).to_pandas()
        assert str(t["event_timestamp"].dt.tz) == "UTC"
        ev, cr = t["event_timestamp"], t["created_timestamp"]
        assert ev.is_monotonic_increasing
        assert (cr > ev).all() and ((cr - ev) < pd.Timedelta(hours=1)).all()
        assert ev.min() >= start and ev.max() < end
        if previous_max is not None:  # files are consecutive time slices (bursts spill a bit)
            assert ev.min() > previous_max - pd.Timedelta(hours=2)
        previous_max = ev.max()
    users = pq.read_table(small / "users").to_pandas()
    assert (users["signup_ts"] < start).all()


def test_daily_seasonality(small: Path) -> None:
    hours = _txns(small).to_pandas()["event_timestamp"].dt.hour.value_counts()
    assert hours[12] > 5 * hours[3]


def test_ids_unique_and_referential_integrity(small: Path) -> None:
    t = _txns(small)
    txn_id = t["txn_id"].to_numpy()
    assert len(np.unique(txn_id)) == len(txn_id)
    users = set(pq.read_table(small / "users")["user_id"].to_pylist())
    merchants = set(pq.read_table(small / "merchants")["merchant_id"].to_pylist())
    assert set(t["user_id"].to_pylist()) <= users
    assert set(t["merchant_id"].to_pylist()) <= merchants
    assert set(t["device"].to_pylist()) <= {"web", "ios", "android", "pos"}
    assert (t["amount"].to_numpy() > 0).all()


def test_fraud_rate_in_range(small: Path) -> None:
    rate = _txns(small)["is_fraud"].to_numpy().mean()
    assert 0.008 <= rate <= 0.03


def test_velocity_raises_fraud(small: Path) -> None:
    t = _txns(small).to_pandas().sort_values(["user_id", "event_timestamp"])
    gap = t.groupby("user_id")["event_timestamp"].diff()
    fast = gap < pd.Timedelta(minutes=5)
    assert t.loc[fast, "is_fraud"].mean() > 5 * t.loc[~fast, "is_fraud"].mean()


def test_label_has_signal(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    out = tmp_path / "raw"
    generate(200_000, out, seed=3, progress=False)
    t = _txns(out).to_pandas()
    users = pq.read_table(out / "users").to_pandas()
    t = t.merge(users[["user_id", "home_country"]], on="user_id")
    ratio = t["amount"] / t.groupby("user_id")["amount"].transform("median")
    features = np.column_stack(
        [np.log(ratio), (t["currency_country"] != t["home_country"]).astype(float)]
    )
    label = t["is_fraud"].to_numpy()
    train = t["txn_id"].to_numpy() % 2 == 0
    model = LogisticRegression().fit(features[train], label[train])
    auc = roc_auc_score(label[~train], model.predict_proba(features[~train])[:, 1])
    assert auc > 0.7, auc


def test_failure_midway_keeps_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    real = gen._make_chunk

    def failing(chunk: int, *args: object, **kwargs: object) -> dict[str, np.ndarray]:
        if chunk == 1:
            raise RuntimeError("disk on fire")
        return real(chunk, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gen, "_make_chunk", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        generate(3_000, out, progress=False, chunk_rows=1_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no temp dir left behind
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_success_replaces_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    report = generate(500, out, progress=False)
    assert not (out / "stale.txt").exists() and (out / "_manifest.json").exists()
    assert report.rows == 500 and report.users == gen.MIN_USERS and report.files == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 0}, "rows must be positive"),
        ({"rows": 10, "days": 0}, "days must be positive"),
        ({"rows": 10, "start": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"rows": 10, "inject_faults": ["gremlins"]}, "unknown faults"),
    ],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SkewlessError, match=message):
        generate(out_dir=tmp_path / "raw", progress=False, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "raw").exists()


def test_start_and_days_shift_the_window(tmp_path: Path) -> None:
    start = datetime(2023, 6, 1, 12, tzinfo=UTC)
    generate(2_000, tmp_path / "raw", start=start, days=2, progress=False)
    ev = _txns(tmp_path / "raw").to_pandas()["event_timestamp"]
    assert ev.min() >= start and ev.max() < start + timedelta(days=2)


def test_injected_faults(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    faults = ["null_user_id", "naive_timestamps", "duplicate_events", "late_arrivals"]
    generate(20_000, out, progress=False, inject_faults=faults, fault_rate=0.01)
    t = _txns(out)
    assert t.schema.field("event_timestamp").type == pa.timestamp("us")
    assert 50 < t["user_id"].null_count < 400
    df = t.to_pandas()
    dups = df[df.duplicated("txn_id", keep=False)]
    assert 100 < len(dups) // 2 < 400
    assert (dups.groupby("txn_id")["event_timestamp"].nunique() == 1).all()
    late = df["created_timestamp"] - df["event_timestamp"] > pd.Timedelta(hours=2)
    assert 100 < late.sum() < 400
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["faults"] == sorted(faults)
    assert manifest["counts"]["transactions"] == t.num_rows > 20_000


def _cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root so that ``generate`` stays a named subcommand."""

    register(app)
    return app


def test_cli_generates_and_summarises(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _cli_app(),
        [
            "generate",
            "--repo",
            str(EXAMPLE_DIR),
            "--rows",
            "1000",
            "--out",
            str(tmp_path / "raw"),
            "--seed",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"generated 1,000 rows -> {tmp_path / 'raw'}" in result.stdout
    assert json.loads((tmp_path / "raw" / "_manifest.json").read_text())["seed"] == 5


def test_cli_default_out_is_the_first_sources_directory(tmp_path: Path) -> None:
    """Without --out the project's generator writes beside its first source."""
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "skewless.yaml").write_text(
        "definitions: [defs]\n"
        "generator: gen_default_out:make\n"
        "sources:\n"
        "  events: {path: data/raw/events, entities: {k: int64}}\n"
    )
    (repo / "gen_default_out.py").write_text(
        "from pathlib import Path\n\n"
        "def make(rows, out_dir, seed=0, start=None, days=1):\n"
        "    (Path(out_dir) / 'events').mkdir(parents=True)\n"
        "    (Path(out_dir) / 'events' / 'args').write_text(f'{rows} {seed} {days}')\n"
    )
    result = CliRunner().invoke(
        _cli_app(), ["generate", "--repo", str(repo), "--rows", "10", "--days", "2"]
    )
    assert result.exit_code == 0, result.output
    out = (repo / "data" / "raw").resolve()
    assert (out / "events" / "args").read_text() == "10 7 2"
    assert result.stdout.strip() == f"generated -> {out}"


def test_cli_project_without_generator(tmp_path: Path) -> None:
    (tmp_path / "skewless.yaml").write_text(
        "definitions: [defs]\nsources:\n  events: {path: data/events, entities: {k: int64}}\n"
    )
    result = CliRunner().invoke(_cli_app(), ["generate", "--repo", str(tmp_path), "--rows", "10"])
    assert result.exit_code == 2
    assert result.stderr.startswith("skewless: error: ")
    assert "no 'generator' is declared" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["zero_rows", "negative_rows", "file_out", "zero_days"])
def test_cli_bad_arguments(tmp_path: Path, case: str) -> None:
    target = tmp_path / "raw"
    rows, days = "10", "30"
    if case == "zero_rows":
        rows = "0"
    elif case == "negative_rows":
        rows = "-5"
    elif case == "zero_days":
        days = "0"
    else:
        target.write_text("not a directory")
    result = CliRunner().invoke(
        _cli_app(),
        ["generate", "--repo", str(EXAMPLE_DIR), "--rows", rows, "--out", str(target)]
        + ["--days", days],
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("skewless: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert case == "file_out" or not target.exists()
