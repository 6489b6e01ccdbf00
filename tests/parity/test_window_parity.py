"""``skewless parity --windows`` at a test size: the built-in window set on 50,000 generated
events (late, replayed, conflicting copies, nulls, one instant) and 5,000 queries through
the local reference, Spark, Beam and the online state in Redis, bit for bit; the comparison
itself finds each kind of difference; bad command-line values are one line and exit 2."""

from __future__ import annotations

import math
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipelines.window_parity import (
    ENGINES,
    WindowParityReport,
    _check_types,
    compare_tables,
    differing_rows,
    run_window_parity,
)
from pipelines.window_parity_cases import PARITY_WINDOWS, WindowParityData, window_parity_data

EVENTS, QUERIES = 50_000, 5_000


@pytest.fixture(scope="module")
def data() -> WindowParityData:
    return window_parity_data(EVENTS, QUERIES, seed=11)


@pytest.fixture(scope="module")
def report(
    data: WindowParityData, spark: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> WindowParityReport:
    return run_window_parity(
        data.events,
        data.queries,
        redis_url=redis_url,
        spark=spark,
        workdir=tmp_path_factory.mktemp("wparity"),
    )


def test_every_engine_agrees_bit_for_bit(report: WindowParityReport) -> None:
    assert report.events == EVENTS and report.queries == QUERIES
    assert report.features == len(PARITY_WINDOWS.features)
    assert report.total_mismatches == 0, report.examples[:10]
    assert set(report.mismatches) == {"spark", "beam", "online"}
    for engine in ENGINES:  # each engine ran and answered every query
        assert report.rows[engine] == QUERIES, engine
        assert report.tables[engine].num_rows == QUERIES, engine
        assert report.nonempty[engine] == report.nonempty["local"] > QUERIES // 2, engine
        assert report.seconds[engine] > 0, engine
    assert all(len(m) == report.features for m in report.mismatches.values())


def test_the_generator_reaches_every_hard_case(data: WindowParityData) -> None:
    cases = data.cases
    for name in ("replayed", "conflicting copies", "late (arrive >= 1h after)", "no event id"):
        assert cases[name] >= EVENTS // 200, name
    assert cases["no key or time"] >= 50 and cases["same instant"] >= EVENTS // 20
    assert cases["no amount (null, NaN, inf)"] >= EVENTS // 20
    assert data.events.column("ts").null_count and data.events.column("user").null_count
    assert data.events.column("store").null_count and data.events.column("units").null_count
    assert data.queries.column("at").null_count and data.queries.column("user").null_count
    again = window_parity_data(EVENTS, QUERIES, seed=11)  # seeded: the same rows, same bits
    for old, new in ((data.events, again.events), (data.queries, again.queries)):
        assert old.schema == new.schema
        assert all(not differing_rows(old[c], new[c]).size for c in old.column_names)


def test_the_answers_reach_the_corners(report: WindowParityReport) -> None:
    rows = report.tables["online"].to_pylist()
    names = [f.name for f in PARITY_WINDOWS.features]
    assert any(r["amount_sum_7d"] is None and r["amount_count_7d"] for r in rows)  # overflow
    assert any(r["qty_sum_7d"] is None and r["qty_count_7d"] for r in rows)  # beyond int64
    assert any(r["amount_count_1s"] for r in rows) and any(r["qty_distinct_10m"] > 1 for r in rows)
    last = [r["amount_last_1h"] for r in rows if r["amount_last_1h"] is not None]
    assert any(math.copysign(1.0, v) < 0 and v == 0 for v in last)  # -0.0 kept by last
    assert any(len(r["amount_last3_7d"]) == 3 for r in rows if r["amount_last3_7d"] is not None)
    assert any(
        r["merchant_distinct_7d"] < r["merchant_count_7d"] for r in rows if r["merchant_count_7d"]
    )
    assert any(r["units_count_10m"] and r["units_max_10m"] is not None for r in rows)
    assert any(isinstance(r["seen_last_10m"], datetime) for r in rows)
    unplaced = [r for r in rows if r["store"] is None or r["user"] is None or r["at"] is None]
    assert unplaced and all(r[n] is None for r in unplaced for n in names)  # rule 24
    assert any(r["amount_count_7d"] == 0 for r in rows if r["user"] and r["user"] < -(10**8))


# ------------------------------------------------------------------ the comparison itself

T = datetime(2024, 3, 1, tzinfo=UTC)


def _table(f: list[Any], lists: list[Any], s: list[Any], t: list[Any]) -> pa.Table:
    return pa.table(
        {
            "qid": pa.array(range(len(f)), pa.int64()),
            "f": pa.array(f, pa.float64()),
            "l": pa.array(lists, pa.list_(pa.float64())),
            "s": pa.array(s, pa.string()),
            "t": pa.array(t, pa.timestamp("us", tz="UTC")),
        }
    )


def test_compare_tables_finds_each_kind_of_difference() -> None:
    want = _table([0.0, 1.5, None, 2.0], [[1.0, -0.0], [], None, [3.0]], ["a", None, "é", ""],
                  [T, None, T, T])  # fmt: skip
    names = ["f", "l", "s", "t"]
    assert compare_tables(want, want, names, "x", []) == dict.fromkeys(names, 0)
    bits = struct.unpack("<Q", struct.pack("<d", 1.5))[0]
    nudged = struct.unpack("<d", struct.pack("<Q", bits + 1))[0]  # one bit away from 1.5
    got = _table([-0.0, nudged, 0.0, 2.0], [[1.0, 0.0], [None], [], [3.0, 3.0]],
                 ["a", "", "e\u0301", None], [T, T, T, T.replace(microsecond=1)])  # fmt: skip
    examples: list[str] = []
    out = compare_tables(want, got, names, "x", examples)
    assert out == {"f": 3, "l": 4, "s": 3, "t": 2}
    assert examples and all(e.startswith("x ") for e in examples)
    flagged = compare_tables(want, want, names, "x", [], {"s": [2]})
    assert flagged == {**dict.fromkeys(names, 0), "s": 1}
    short = want.slice(0, 3)
    assert compare_tables(want, short, names, "x", []) == dict.fromkeys(names, 4)


def test_online_answers_of_another_python_type_are_caught() -> None:
    assert _check_types([1.0, None, 1, True], pa.float64()) == [2, 3]
    assert _check_types([1, True, None, 2.0], pa.int64()) == [1, 3]
    assert _check_types([[1.0], [1], None, []], pa.list_(pa.float64())) == [1]
    assert _check_types([T, 0, None], pa.timestamp("us", tz="UTC")) == [1]


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--windows", "--events", "0"], "--events must be a positive number of rows, got 0"),
        (["--windows", "--queries", "-3"], "--queries must be a positive number of rows, got -3"),
        (["--windows", "--seed", "-1"], "--seed must be 0 or more, got -1"),
        (["--events", "10"], "--events, --queries and --seed go with --windows"),
        (
            ["--windows", "--rows", "10"],
            "--windows generates its own events: leave out --rows and --source-sample",
        ),
    ],
)
def test_bad_values_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "parity", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"skewless: error: {message}"]


@pytest.mark.parametrize("bad", [0, 3])
def test_the_command_prints_engine_by_mismatches_and_exits_1_on_any(
    bad: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table and the exit status, with the engines stood in for by a made-up report."""
    from typer.testing import CliRunner

    import pipelines.window_parity as wp
    from cli.main import app

    def fake_run(events: pa.Table, queries: pa.Table, **_: Any) -> WindowParityReport:
        names = [f.name for f in PARITY_WINDOWS.features]
        report = WindowParityReport(events.num_rows, queries.num_rows, len(names))
        for i, engine in enumerate(ENGINES):
            report.seconds[engine] = 1.0 + i
            report.rows[engine] = queries.num_rows
            report.nonempty[engine] = 7
            if engine != "local":
                report.mismatches[engine] = dict.fromkeys(names, 0)
        report.seconds.update({"online push": 0.5, "online reads": 0.25, "online answers": 2.0})
        report.mismatches["beam"]["amount_sum_1h"] = bad
        return report

    monkeypatch.setattr(wp, "run_window_parity", fake_run)
    done = CliRunner().invoke(app, ["parity", "--windows", "--events", "300", "--queries", "30"])
    assert done.exit_code == (1 if bad else 0), done.output
    assert "300 events, 30 queries" in done.output
    assert f"{bad} mismatches across local/spark/beam/online" in done.output
    assert "push 0.5 s, reads 0.2 s, answers 2.0 s" in done.output
    assert ("beam mismatches by feature: {'amount_sum_1h': 3}" in done.output) == bool(bad)
