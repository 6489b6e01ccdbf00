"""pipelines.training_set against the real Feast SDK and an independent pandas oracle.

A throwaway Feast repo holds three FileSource views: ``user_stats`` (int64 key, ttl 1 day),
``merchant_stats`` (string key, ttl 6 hours, its own timestamp column names) and
``user_profile`` (ttl 0 = unlimited, no created column). Event times are hourly, so many
feature rows tie on event time and differ only in created time; entity rows include exact
hits on feature event times, unknown keys, rows before any data and beyond the ttl.
"""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.feast_objects import write_feature_store_yaml
from pipelines.training_set import get_training_set, write_training_set
from transforms.errors import SchemaError

BASE = datetime(2024, 3, 1, tzinfo=UTC)
HOURS = 240
TTL = {"user_stats": timedelta(days=1), "merchant_stats": timedelta(hours=6), "user_profile": None}
VIEW_FEATURES = {
    "user_stats": ["spend", "n_orders", "segment"],
    "merchant_stats": ["risk", "category"],
    "user_profile": ["tier"],
}
REFS = [f"{v}:{f}" for v, fs in VIEW_FEATURES.items() for f in fs]
USERS = np.arange(200, dtype=np.int64) * 7919 - 300_000
MERCHANTS = np.array([f"m-{i:03d}-ü" for i in range(50)], dtype=object)


def _us(hours: np.ndarray) -> np.ndarray:
    return int(BASE.timestamp()) * 1_000_000 + hours * 3_600_000_000


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64)).cast(pa.timestamp("us", tz="UTC"))


def _feature_tables(rng: np.random.Generator) -> dict[str, pa.Table]:
    n = 3000
    hours = rng.integers(0, HOURS, n)
    ev = _us(hours)
    # created strictly unique: ties on event time never tie on created time
    created = ev + rng.permutation(n).astype(np.int64) * 1_000 + 1
    spend = rng.random(n) * 100
    spend[rng.random(n) < 0.03] = np.nan
    users = pa.table(
        {
            "user_id": pa.array(USERS[rng.integers(0, len(USERS), n)]),
            "event_timestamp": _ts(ev),
            "created": _ts(created),
            "spend": pa.array(spend, mask=rng.random(n) < 0.02),
            "n_orders": pa.array(rng.integers(0, 1000, n), mask=rng.random(n) < 0.05),
            "segment": pa.array(rng.choice(["a", "b", "ç", ""], n).tolist()),
        }
    )
    m = 1500
    ev = _us(rng.integers(0, HOURS, m))
    merchants = pa.table(
        {
            "merchant": pa.array(MERCHANTS[rng.integers(0, len(MERCHANTS), m)].tolist()),
            "ts": _ts(ev),
            "created_ts": _ts(ev + rng.permutation(m).astype(np.int64) * 1_000 + 1),
            "risk": pa.array(rng.normal(size=m)),
            "category": pa.array(
                np.array(["food", "travel", None], dtype=object)[rng.integers(0, 3, m)].tolist()
            ),
        }
    )
    p = 300
    # distinct (user, hour) pairs: without a created column Feast's tie order is undefined
    pairs = rng.choice(len(USERS) * HOURS, p, replace=False)
    profile = pa.table(
        {
            "user_id": pa.array(USERS[pairs // HOURS]),
            "event_timestamp": _ts(_us(pairs % HOURS)),
            "tier": pa.array(rng.choice(["gold", "silver"], p).tolist()),
        }
    )
    return {"user_stats": users, "merchant_stats": merchants, "user_profile": profile}


def _build_repo(repo: Path, tables: dict[str, pa.Table]) -> Any:
    from feast import (
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        FileSource,
        ValueType,
    )
    from feast.types import Float64, Int64, String

    (repo / "data").mkdir(parents=True)
    for name, table in tables.items():
        pq.write_table(table, repo / "data" / f"{name}.parquet", row_group_size=700)
    write_feature_store_yaml(repo, "skewless_ts", "127.0.0.1:6379")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant"], value_type=ValueType.STRING)
    src = {
        "user_stats": FileSource(
            name="user_stats_src",
            path="data/user_stats.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
        "merchant_stats": FileSource(
            name="merchant_stats_src",
            path="data/merchant_stats.parquet",
            timestamp_field="ts",
            created_timestamp_column="created_ts",
        ),
        "user_profile": FileSource(
            name="user_profile_src",
            path="data/user_profile.parquet",
            timestamp_field="event_timestamp",
        ),
    }
    types = {"spend": Float64, "n_orders": Int64, "segment": String, "risk": Float64,
             "category": String, "tier": String}  # fmt: skip
    views = []
    for name, feats in VIEW_FEATURES.items():
        ent, key, key_type = (
            (merchant, "merchant", String) if name == "merchant_stats" else (user, "user_id", Int64)
        )
        views.append(
            FeatureView(
                name=name,
                entities=[ent],
                ttl=TTL[name] or timedelta(0),
                schema=[Field(name=key, dtype=key_type)]
                + [Field(name=f, dtype=types[f]) for f in feats],
                source=src[name],
            )
        )
    service = FeatureService(
        name="training_v1", features=[views[0][["spend", "segment"]], views[1], views[2]]
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, merchant, *src.values(), *views, service])
    return store


def _entities(rng: np.random.Generator, n: int, duplicates: bool) -> pd.DataFrame:
    users = np.append(USERS, [424242, -1])  # two unknown users
    merchants = np.append(MERCHANTS, ["nobody"])
    # unique microsecond times from 2 days before the data to 2 days after
    span_us = (HOURS + 96) * 3_600_000_000
    us = _us(np.full(n, -48)) + rng.choice(span_us, n, replace=False)
    hits = rng.choice(HOURS, min(n // 10, HOURS), replace=False)  # exact feature times
    us[: len(hits)] = _us(hits)
    df = pd.DataFrame(
        {
            "user_id": users[rng.integers(0, len(users), n)],
            "merchant": merchants[rng.integers(0, len(merchants), n)],
            "event_timestamp": pd.to_datetime(us, unit="us", utc=True),
            "label": rng.random(n),
        }
    )
    if duplicates:
        df = pd.concat([df, df.iloc[rng.integers(0, n, n // 5)]], ignore_index=True)
        df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    return df


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    tables = _feature_tables(rng)
    path = tmp_path_factory.mktemp("ts_repo")
    store = _build_repo(path, tables)
    return {"path": path, "store": store, "tables": tables, "rng": rng}


# ---------------------------------------------------------------------- comparison


def _norm(v: Any) -> Any:
    """Missing (None/NaN) -> None; numbers -> float, so Feast's int->float upcast compares."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool | str):
        return v
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    return v


def _rows(table: pa.Table | pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    df = table.to_pandas() if isinstance(table, pa.Table) else table
    data = [df[c].astype(object).tolist() for c in columns]
    return [tuple(_norm(v) for v in row) for row in zip(*data, strict=True)]


def _oracle(
    entity: pd.DataFrame, tables: dict[str, pa.Table], strict: bool = False, ties: bool = False
) -> pd.DataFrame:
    """Independent reference: pandas.merge_asof per view + the ttl rule, input order kept.

    ``ties`` adds a boolean ``__tie_<view>`` column: the winning row shares its event time
    with another row of the same key (only the created time decides).
    """
    out = entity.reset_index(drop=True).copy()
    out["__row"] = np.arange(len(out))
    left = out.sort_values("event_timestamp", kind="stable")
    meta = {
        "user_stats": ("user_id", "event_timestamp", "created"),
        "merchant_stats": ("merchant", "ts", "created_ts"),
        "user_profile": ("user_id", "event_timestamp", None),
    }
    for view, feats in VIEW_FEATURES.items():
        key, ts, created = meta[view]
        right = tables[view].to_pandas()
        right = right.rename(columns={ts: "__fts"})[[key, "__fts"] + ([created] if created else [])
                                                    + feats]  # fmt: skip
        right = right.sort_values(["__fts"] + ([created] if created else []), kind="stable")
        right[key] = right[key].astype(left[key].dtype)
        right["__fts"] = right["__fts"].astype(left["event_timestamp"].dtype)
        merged = pd.merge_asof(
            left,
            right.drop(columns=[created] if created else []),
            left_on="event_timestamp",
            right_on="__fts",
            by=key,
            direction="backward",
            allow_exact_matches=not strict,
        )
        if TTL[view]:
            stale = merged["__fts"] < merged["event_timestamp"] - TTL[view]
            for f in feats:
                merged[f] = merged[f].astype(object).where(~stale, None)
        if ties:
            sizes = right.groupby([key, "__fts"]).size().rename(f"__tie_{view}").reset_index()
            merged = merged.merge(sizes, on=[key, "__fts"], how="left")
            merged[f"__tie_{view}"] = merged[f"__tie_{view}"].fillna(0) > 1
        left = merged.drop(columns=["__fts"])
    return left.sort_values("__row").drop(columns="__row").reset_index(drop=True)


# ---------------------------------------------------------------------------- tests


def test_equals_feast_get_historical_features(repo: dict[str, Any]) -> None:
    """Same values as Feast on every row Feast returns, with two measured Feast defects:

    * Feast's file store drops an entity row outright when a view has rows for its key but
      none inside [entity_ts - ttl, entity_ts] (the ttl filter removes the whole left-join
      group); we keep the row with nulls for that view;
    * on event-time ties Feast sorts by created time and then by event time with pandas'
      unstable quicksort, so its tie-break on created time is arbitrary; we (and the
      merge_asof oracle) take the greatest created time. Tied winners are skipped here.
    """
    entity = _entities(repo["rng"], 2000, duplicates=False)
    ours = get_training_set(repo["path"], entity, REFS, strict_before=False)  # as Feast
    assert ours.num_rows == len(entity)
    feats = [f for fs in VIEW_FEATURES.values() for f in fs]
    assert ours.column_names == list(entity.columns) + feats
    feast = repo["store"].get_historical_features(entity_df=entity, features=REFS).to_arrow()
    keys = ["user_id", "merchant", "event_timestamp"]
    feast_rows = dict(zip(_rows(feast, keys), _rows(feast, feats), strict=True))
    oracle = _oracle(entity, repo["tables"], ties=True)
    tied = {v: oracle[f"__tie_{v}"].to_numpy() for v in VIEW_FEATURES}
    compared = skipped = dropped = 0
    for i, (key, row) in enumerate(zip(_rows(ours, keys), _rows(ours, feats), strict=True)):
        got = feast_rows.get(key)
        at = 0
        for view, fs in VIEW_FEATURES.items():
            mine = row[at : at + len(fs)]
            if got is None:
                pass
            elif tied[view][i]:
                skipped += 1
            else:
                assert got[at : at + len(fs)] == mine, (key, view)
                compared += 1
            at += len(fs)
        if got is None:  # Feast dropped it: some view had rows for the key, none in range
            dropped += 1
            assert any(
                all(v is None for v in row[a : a + len(fs)])
                for a, fs in zip((0, 3, 5), VIEW_FEATURES.values(), strict=True)
            ), key
    assert feast.num_rows + dropped == len(entity)
    assert compared > 600 and skipped < compared / 5
    # the data really exercises every branch
    assert sum(r[0] is not None for r in _rows(ours, feats)) > 300
    assert sum(all(v is None for v in r[:3]) for r in _rows(ours, feats)) > 100


def test_feature_service_full_names_like_feast(repo: dict[str, Any]) -> None:
    """A feature service resolves to its projections, named like Feast's full names."""
    entity = _entities(repo["rng"], 400, duplicates=False)
    service = repo["store"].get_feature_service("training_v1")
    ours = get_training_set(repo["path"], entity, "training_v1", full_feature_names=True)
    feast = (
        repo["store"]
        .get_historical_features(entity_df=entity, features=service, full_feature_names=True)
        .to_arrow()
    )
    assert ours.column_names == feast.column_names
    refs = ["user_stats:spend", "user_stats:segment", "merchant_stats:risk",
            "merchant_stats:category", "user_profile:tier"]  # fmt: skip
    plain = get_training_set(repo["path"], entity, refs)
    assert plain.column_names[len(entity.columns) :] == [r.split(":")[1] for r in refs]
    renamed = plain.rename_columns(ours.column_names)
    assert renamed.schema.remove_metadata() == ours.schema.remove_metadata()
    assert _rows(renamed, ours.column_names) == _rows(ours, ours.column_names)  # NaN-safe


@pytest.mark.parametrize("strict", [False, True])
def test_matches_merge_asof_oracle_with_duplicates(repo: dict[str, Any], strict: bool) -> None:
    entity = _entities(repo["rng"], 3000, duplicates=True)
    assert entity.duplicated(["user_id", "merchant", "event_timestamp"]).sum() > 100
    ours = get_training_set(
        repo["path"], pa.Table.from_pandas(entity, preserve_index=False), REFS,
        strict_before=strict,
    )  # fmt: skip
    assert ours.num_rows == len(entity)  # rows in == rows out
    want = _oracle(entity, repo["tables"], strict=strict)
    cols = list(want.columns)
    assert _rows(ours, cols) == _rows(want, cols)  # same order: the input order


def test_strict_before_excludes_same_instant(repo: dict[str, Any]) -> None:
    users = repo["tables"]["user_stats"].to_pandas()
    row = users.sort_values(["event_timestamp", "created"]).iloc[len(users) // 2]
    same = users[(users.user_id == row.user_id) & (users.event_timestamp == row.event_timestamp)]
    winner = same.sort_values("created").iloc[-1]
    entity = pd.DataFrame(
        {"user_id": [row.user_id], "event_timestamp": [row.event_timestamp.to_pydatetime()]}
    )
    got = get_training_set(
        repo["path"], entity, ["user_stats:spend", "user_stats:segment"], strict_before=False
    )
    assert got.column("segment")[0].as_py() == winner.segment  # latest created of the tie
    strict = get_training_set(repo["path"], entity, ["user_stats:segment"])  # the default
    before = users[
        (users.user_id == row.user_id)
        & (users.event_timestamp < row.event_timestamp)
        & (users.event_timestamp >= row.event_timestamp - TTL["user_stats"])
    ]
    want = (
        before.sort_values(["event_timestamp", "created"]).segment.iloc[-1] if len(before) else None
    )
    assert strict.column("segment")[0].as_py() == want


def _good_entities() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([int(USERS[0]), int(USERS[1])]),
            "event_timestamp": pa.array([BASE, BASE], pa.timestamp("us", tz="UTC")),
        }
    )


def test_bad_input_names_the_column(repo: dict[str, Any]) -> None:
    path, refs = repo["path"], ["user_stats:spend"]
    good = _good_entities()
    assert get_training_set(path, good, refs).num_rows == 2
    with pytest.raises(SchemaError, match="'user_id'"):
        get_training_set(path, good.drop_columns(["user_id"]), refs)
    with pytest.raises(SchemaError, match="'when'"):
        get_training_set(path, good, refs, timestamp_column="when")
    naive = good.set_column(1, "event_timestamp", pa.array([BASE.replace(tzinfo=None)] * 2))
    with pytest.raises(SchemaError, match="'event_timestamp'.*without time zone"):
        get_training_set(path, naive, refs)
    nulls = good.set_column(0, "user_id", pa.array([None, None], pa.int64()))
    with pytest.raises(SchemaError, match="'user_id' has 2 null"):
        get_training_set(path, nulls, refs)
    with pytest.raises(SchemaError, match="'merchant'"):
        get_training_set(path, good, ["merchant_stats:risk"])
    with pytest.raises(SchemaError, match="nope"):
        get_training_set(path, good, ["user_stats:nope"])
    with pytest.raises(SchemaError, match="collision"):
        get_training_set(path, good.append_column("merchant", pa.array(["a", "b"])),
                         ["user_stats:spend", "user_stats:spend"])  # fmt: skip


def test_write_training_set_is_atomic_with_metadata(repo: dict[str, Any], tmp_path: Path) -> None:
    table = get_training_set(repo["path"], _good_entities(), ["user_stats:spend"])
    out = write_training_set(table, tmp_path / "sets" / "train.parquet",
                             {"skewless.artifact_hash": "abc123"})  # fmt: skip
    back = pq.read_table(out)
    meta = back.schema.metadata
    assert meta[b"skewless.artifact_hash"] == b"abc123"
    assert meta[b"skewless.features"] == b'["user_stats:spend"]'
    assert back.equals(table.replace_schema_metadata(None).cast(back.schema))
    assert [p.name for p in out.parent.iterdir()] == ["train.parquet"]  # no temp left
    with pytest.raises(SchemaError):
        write_training_set(table, tmp_path / "x.parquet", {"k": 1})  # type: ignore[dict-item]
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("key_bits", [62, 30])  # 30 forces the ranked-time fallback
def test_multi_key_as_of_against_brute_force(
    monkeypatch: pytest.MonkeyPatch, key_bits: int
) -> None:
    """Two-column (int64, string) keys through KeyCoder + as_of vs a plain Python loop."""
    import pipelines.point_in_time as ts

    monkeypatch.setattr(ts, "_KEY_BITS", key_bits)
    rng = np.random.default_rng(3)
    a_vals, b_vals = np.array([5, -2, 2**40, 9]), np.array(["x", "y", "ü", ""], dtype=object)
    nf, ne = 400, 300
    fa, fb = a_vals[rng.integers(0, 4, nf)], b_vals[rng.integers(0, 4, nf)]
    f_ts = rng.integers(0, 50, nf).astype(np.int64) * 10**9 + rng.integers(0, 3, nf)
    f_cr = rng.permutation(nf).astype(np.int64)
    ea, eb = a_vals[rng.integers(0, 3, ne)], b_vals[rng.integers(0, 3, ne)]  # some unseen
    e_ts = rng.integers(-5, 55, ne).astype(np.int64) * 10**9
    coder = ts.KeyCoder(
        [pa.chunked_array([pa.array(ea)]), pa.chunked_array([pa.array(eb.tolist())])],
        [pa.int64(), pa.string()],
    )
    codes = coder.encode([pa.array(fa), pa.array(fb.tolist())])
    keep = codes >= 0
    ttl = timedelta(seconds=20)
    for strict in (False, True):
        scan = ts.KeyScan(codes[keep], f_ts[keep], f_cr[keep], None, nf)
        got = ts.as_of(scan, coder.entity_codes, e_ts, coder.size, ttl, strict)
        rows = np.flatnonzero(keep)
        for i in range(ne):
            cands = [
                j
                for j in range(nf)
                if fa[j] == ea[i] and fb[j] == eb[i]
                and (f_ts[j] < e_ts[i] if strict else f_ts[j] <= e_ts[i])
            ]  # fmt: skip
            best = max(cands, key=lambda j: (f_ts[j], f_cr[j]), default=None)
            if best is not None and f_ts[best] < e_ts[i] - 20 * 10**9:
                best = None
            assert (None if got[i] < 0 else rows[got[i]]) == best, (i, strict)


# ------------------------------------------------------------------ entity key types


def test_a_key_of_another_kind_than_the_view_names_the_key(repo: dict[str, Any]) -> None:
    """A string key for an int64 view (or the reverse) is an error, not all-null features."""
    path = repo["path"]
    as_string = _good_entities().set_column(0, "user_id", pa.array([str(USERS[0]), "7"]))
    with pytest.raises(SchemaError) as err:
        get_training_set(path, as_string, ["user_stats:spend"])
    assert str(err.value) == (
        "entity_df: key 'user_id' is string, the view 'user_stats' keys it as int64"
    )
    as_int = _good_entities().append_column("merchant", pa.array([1, 2], pa.int64()))
    with pytest.raises(SchemaError) as err:
        get_training_set(path, as_int, ["merchant_stats:risk"])
    assert str(err.value) == (
        "entity_df: key 'merchant' is int64, the view 'merchant_stats' keys it as string"
    )
    with pytest.raises(SchemaError, match="key 'user_id' is double"):
        get_training_set(path, as_string.set_column(0, "user_id", pa.array([1.0, 2.0])),
                         ["user_stats:spend"])  # fmt: skip


def test_integer_widths_and_large_strings_still_join(repo: dict[str, Any]) -> None:
    """int32 for an int64 key and large_string / dictionary for a string key are the same
    keys, cast exactly."""
    entity = _entities(repo["rng"], 300, duplicates=False)
    base = pa.Table.from_pandas(entity, preserve_index=False)
    refs = ["user_stats:spend", "user_stats:segment", "merchant_stats:risk"]
    want = get_training_set(repo["path"], base, refs)
    assert want.column("spend").null_count < want.num_rows
    variants = [
        base.set_column(0, "user_id", base.column("user_id").cast(pa.int32())),
        base.set_column(1, "merchant", base.column("merchant").cast(pa.large_string())),
        base.set_column(1, "merchant", base.column("merchant").dictionary_encode()),
    ]
    names = ["spend", "segment", "risk"]
    for table in variants:
        got = get_training_set(repo["path"], table, refs)
        assert _rows(got, names) == _rows(want, names)  # NaN-safe


@pytest.fixture(scope="module")
def served(repo: dict[str, Any]) -> Path:
    """The Feast repo with a skewless manifest serving two user_stats features, so the
    ``skewless training-set`` command runs on it (no request-time transforms)."""
    from store.manifest import Manifest, ServiceSpec

    features = ["user_stats:spend", "user_stats:segment"]
    Manifest(
        project="skewless_ts",
        entity_key_serialization_version=3,
        views={},
        request_transforms={},
        services={"user_v1": ServiceSpec("user_v1", features)},
    ).save(repo["path"])
    return Path(repo["path"])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_key_of_another_kind_is_one_line_and_exit_2(served: Path, tmp_path: Path) -> None:
    entities = tmp_path / "entities.parquet"
    pq.write_table(_good_entities().set_column(0, "user_id", pa.array(["a", "b"])), entities)
    out = tmp_path / "train.parquet"
    done = _cli("training-set", "--repo", str(served), "--entities", str(entities),
                "--out", str(out))  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "skewless: error: entity_df: key 'user_id' is string, "
        "the view 'user_stats' keys it as int64"
    ]
    assert not out.exists()


def _exact_hits(repo: dict[str, Any]) -> pa.Table:
    """Entity rows at the very instant of user_stats rows: a strictly-before join misses
    that row, an inclusive one takes it."""
    users = repo["tables"]["user_stats"].to_pandas()
    rows = users.drop_duplicates(["user_id", "event_timestamp"]).iloc[::40]
    entity = pd.DataFrame(
        {"user_id": rows.user_id.to_numpy(), "event_timestamp": rows.event_timestamp.to_numpy()}
    )
    return pa.Table.from_pandas(entity, preserve_index=False)


def test_cli_and_python_default_to_strictly_before(
    repo: dict[str, Any], served: Path, tmp_path: Path
) -> None:
    """One default everywhere: a feature row at exactly the request time does not join in
    get_training_set, build_training_set or `skewless training-set`; the inclusive variant
    is one argument away in each and joins it."""
    from pipelines.training_data import build_training_set

    entity = _exact_hits(repo)
    entities = tmp_path / "entities.parquet"
    pq.write_table(entity, entities)
    names = ["spend", "segment"]
    refs = [f"user_stats:{n}" for n in names]
    strict = _rows(get_training_set(served, entity, refs), names)
    inclusive = _rows(get_training_set(served, entity, refs, strict_before=False), names)
    differ = sum(a != b for a, b in zip(strict, inclusive, strict=True))
    assert differ > entity.num_rows // 2  # the rows really sit on a feature row's instant
    assert _rows(build_training_set(served, entity, tmp_path / "py.parquet", "user_v1"),
                 names) == strict  # fmt: skip
    for flags, want in (([], strict), (["--inclusive"], inclusive)):
        out = tmp_path / f"cli{len(flags)}.parquet"
        done = _cli("training-set", "--repo", str(served), "--entities", str(entities),
                    "--out", str(out), *flags)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        table = pq.read_table(out)
        assert _rows(table, names) == want, flags
        strict_meta = table.schema.metadata[b"skewless.strict_before"]
        assert strict_meta == (b"false" if flags else b"true")
