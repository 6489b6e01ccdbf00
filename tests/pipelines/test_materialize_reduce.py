"""The materializer's latest-row reduction against a pandas reference (no Redis, no Feast).

Feast's rule: within the window, the highest event time wins, then the highest created
time (a null created time ranks below every value), then the last row in file order.
The reduction may run in parts (by a hash of a single integer key) and during the scan
(bounded memory); neither may change which row wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.repos.driver_repo import generate, window
from pipelines import materialize as mat
from pipelines.materialize import reduce as mat_reduce

FEATURES = ["conv_rate", "trips", "city", "active"]
CODECS = ["double", "int64", "string", "bool"]


def _source(tmp_path: Path, keys: dict[str, pa.Array], rows: int, seed: int) -> Path:
    """generate()'s rows (ties, nulls, rows outside the window) with the join key columns
    ``keys`` and 5% null created times, written as a Parquet file of several row groups."""
    table = generate(rows, rows // 5, seed=seed).drop_columns(["driver_id"])
    created = table.column("created").combine_chunks()
    nulls = np.random.default_rng(seed).random(rows) < 0.05
    table = table.set_column(
        table.schema.get_field_index("created"),
        "created",
        pa.array(created.to_pylist(), created.type, mask=nulls),
    )
    for name, col in keys.items():
        table = table.append_column(name, col)
    path = tmp_path / "source.parquet"
    pq.write_table(table, path, row_group_size=rows // 4)
    return path


def _plan(path: Path, keys: dict[str, str]) -> mat.ViewPlan:
    return mat.ViewPlan(
        name="driver_stats",
        online_name="driver_stats",
        join_keys=list(keys),
        join_types=list(keys.values()),
        features=FEATURES,
        feature_types=CODECS,
        source_path=str(path),
        timestamp_field="event_timestamp",
        created_field="created",
        field_mapping={},
        ttl=None,
    )


def _reference(path: Path, keys: list[str]) -> pd.DataFrame:
    """Winners by a stable multi-key sort; ``_row`` is each winner's row in the file."""
    df = pq.read_table(path).to_pandas()
    df["_row"] = np.arange(len(df))
    start, end = (pd.Timestamp(t) for t in window())
    df = df[(df.event_timestamp >= start) & (df.event_timestamp <= end)]
    df = df.sort_values(
        ["event_timestamp", "created", "_row"],
        ascending=[False, False, False],
        na_position="last",
        kind="stable",
    )
    return df.drop_duplicates(keys, keep="first").sort_values("_row")


def _rows_of(table: pa.Table, source: Path) -> list[tuple]:
    """Winner rows as comparable tuples (NaN-safe), in the table's order."""
    cols = [table.column(c).to_pylist() for c in pq.read_schema(source).names]
    return [tuple("nan" if v != v else v for v in row) for row in zip(*cols, strict=True)]


@pytest.mark.parametrize(
    ("keys", "parts"),
    [
        ({"driver_id": "int64"}, 1),
        ({"driver_id": "int64"}, 8),
        ({"driver_id": "int64"}, 64),
        ({"driver_id": "int32"}, 8),
        ({"driver_id": "string"}, 8),
        ({"driver_id": "int64", "region": "string"}, 8),
    ],
)
def test_winners_match_reference(tmp_path: Path, keys: dict[str, str], parts: int) -> None:
    rows = 20_000
    rng = np.random.default_rng(11)
    ids = (rng.integers(0, 3_000, rows) - 1_000) * 7_919
    arrow = {
        "int64": pa.array(ids, pa.int64()),
        "int32": pa.array(ids // 7_919, pa.int32()),
        "string": pa.array([f"d{i}" for i in ids], pa.string()),
    }
    columns = {"driver_id": arrow[keys["driver_id"]]}
    if "region" in keys:
        columns["region"] = pa.array([f"r{i}" for i in rng.integers(0, 3, rows)])
    source = _source(tmp_path, columns, rows, seed=5)
    plan = _plan(source, keys)

    candidates, scanned = mat.scan_window(plan, *window())
    got = list(candidates.winners(parts))
    ref = _reference(source, list(keys))
    times = pq.read_table(source).column("event_timestamp").to_pandas()
    assert scanned == int(((times >= window()[0]) & (times <= window()[1])).sum())
    table = pa.concat_tables(got)
    assert table.num_rows == len(ref)
    expected = _rows_of(pq.read_table(source).take(ref["_row"].to_numpy()), source)
    assert sorted(_rows_of(table, source), key=repr) == sorted(expected, key=repr)
    if parts > 1 and keys == {"driver_id": "int64"}:
        assert len(got) == parts  # split by the key hash, every part non-empty here
    for part in got:  # each part keeps file order
        mine = _rows_of(part, source)
        members = set(map(repr, mine))
        assert mine == [r for r in expected if repr(r) in members]


def test_reduction_during_scan_keeps_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffer bound below the file size reduces batches as they arrive; same winners."""
    rows = 20_000
    ids = (np.random.default_rng(2).integers(0, 2_000, rows)) * 3
    source = _source(tmp_path, {"driver_id": pa.array(ids, pa.int64())}, rows, seed=8)
    plan = _plan(source, {"driver_id": "int64"})
    whole, _ = mat.read_latest(plan, *window())
    monkeypatch.setattr(mat_reduce, "_REDUCE_ROWS", 1_000)
    candidates, _ = mat.scan_window(plan, *window())
    assert candidates.table.num_rows < rows  # reduced during the scan
    streamed = pa.concat_tables(list(candidates.winners(8)))
    assert sorted(_rows_of(streamed, source), key=repr) == sorted(_rows_of(whole, source), key=repr)
