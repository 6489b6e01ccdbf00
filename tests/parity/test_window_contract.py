"""Window aggregations as of a query time (CONTRACT rules 23-30): one case per rule and a
randomized case, each computed by the local reference (``WindowRunner.run_local``), Spark
(``apply_windows``) and Beam (``ComputeWindows``), compared bit for bit with each other and
with a brute-force oracle written here with exact fractions."""

from __future__ import annotations

import datetime as dt
import math
import pickle
import random
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms import Bool, Float64, Int64, String, WindowSet, aggregate
from transforms.types import Float64Type
from transforms.window_runtime import WindowRunner

pytestmark = pytest.mark.usefixtures("spark")

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
US = dt.timedelta(microseconds=1)
QUERY_TIME = "at"


def at(h: int = 0, m: int = 0, s: int = 0, us: int = 0, day: int = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=day, hours=h, minutes=m, seconds=s, microseconds=us)


# ------------------------------------------------------------------ definitions


def approved(ok: Bool | None) -> Bool | None:
    return ok


WINDOWS = ("1s", "10m", "1h", "7d")


@aggregate(ops=("count", "sum", "mean", "min", "max", "last", "last_k"), windows=WINDOWS, k=3)
def amount(amount: Float64 | None) -> Float64 | None:
    return amount


@aggregate(
    ops=("count", "sum", "mean", "min", "max", "distinct", "last"), windows=WINDOWS, where=approved
)
def qty(qty: Int64) -> Int64:
    return qty


@aggregate(ops=("count", "distinct", "last", "last_k"), windows=WINDOWS, k=2)
def merchant(merchant: String | None) -> String | None:
    return merchant


@aggregate(ops=("distinct", "last", "last_k"), windows=("1h",), k=2)
def flag(ok: Bool | None) -> Bool | None:
    return ok


RANDOM_AGGS = [amount, qty, merchant, flag]
BY_USER = WindowSet("by_user", {"user": Int64}, RANDOM_AGGS, event_timestamp="ts", event_id="eid")
BY_SHOP_USER = WindowSet(
    "by_shop_user",
    {"shop": String, "user": Int64},
    RANDOM_AGGS,
    event_timestamp="ts",
    event_id="eid",
)


@aggregate(
    ops=("count", "sum", "mean", "min", "max", "last", "last_k"), windows=("1h",), k=3, name="x"
)
def x_value(x: Float64 | None) -> Float64 | None:
    return x


@aggregate(
    ops=("count", "sum", "mean", "max", "distinct"), windows=("1h",), where=approved, name="n"
)
def n_value(n: Int64) -> Int64:
    return n


@aggregate(ops=("count", "distinct", "last", "last_k"), windows=("1h",), k=2, name="s")
def s_value(s: String | None) -> String | None:
    return s


RULES = WindowSet("rules", {"user": Int64}, [x_value, n_value, s_value], "ts", "eid")
RULES_NO_ID = WindowSet("rules_no_id", {"user": Int64}, [x_value, n_value, s_value], "ts")


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _nfc(v: str | None) -> str | None:
    return None if v is None else unicodedata.normalize("NFC", v)


# The oracle's own reading of each aggregation's value (rules 1, 10, 24).
VALUE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "amount": lambda r: _finite(r["amount"]),
    "qty": lambda r: r["qty"] if r["ok"] is True else None,
    "merchant": lambda r: _nfc(r["merchant"]),
    "flag": lambda r: r["ok"],
    "x": lambda r: _finite(r["x"]),
    "n": lambda r: r["n"] if r["ok"] is True else None,
    "s": lambda r: _nfc(r["s"]),
}


# ------------------------------------------------------------------ comparing bits


def same(a: Any, b: Any) -> bool:
    """Equal values of the same Python type; floats by their 64-bit pattern."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_same_rows(want: list[dict[str, Any]], got: list[dict[str, Any]], what: str) -> None:
    assert len(want) == len(got), f"{what}: {len(got)} rows, expected {len(want)}"
    bad = [
        (i, name, w[name], g.get(name, "<missing>"))
        for i, (w, g) in enumerate(zip(want, got, strict=True))
        for name in w
        if not same(w[name], g.get(name, "<missing>"))
    ]
    assert not bad, f"{what}: {len(bad)} value(s) differ, e.g. (row, feature, want, got) {bad[:5]}"


# ------------------------------------------------------------------ the oracle


def _float_order(v: float) -> int:
    bits: int = struct.unpack("<q", struct.pack("<d", v))[0]
    return bits ^ 0x7FFF_FFFF_FFFF_FFFF if bits < 0 else bits


def _order_value(v: Any) -> tuple[Any, ...]:
    if v is None:
        return (0,)
    return (1, _float_order(v) if isinstance(v, float) else v)


def _micros(t: dt.datetime) -> int:
    return (t - EPOCH) // US


def oracle(ws: WindowSet, events: pa.Table, queries: pa.Table) -> list[dict[str, Any]]:
    """Every query row's features by scanning its entity's events for each window."""
    keys = list(ws.entities)
    names = sorted(a.name for a in ws.aggregations)
    entity: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for r in events.to_pylist():
        key = tuple(r[k] for k in keys)
        if None in key or r[ws.event_timestamp] is None:
            continue  # rule 24: no place
        eid = r[ws.event_id] if ws.event_id else None
        values = {a.name: VALUE[a.name](r) for a in ws.aggregations}
        order = (
            _micros(r[ws.event_timestamp]),
            _order_value(eid),
            *(_order_value(values[n]) for n in names),
        )
        entity.setdefault(key, []).append((order, eid, values))
    for evs in entity.values():
        evs.sort(key=lambda e: e[0])
        if ws.event_id:  # rule 27: the copy placed last is the event; no id, no duplicate
            last = {e[1]: i for i, e in enumerate(evs) if e[1] is not None}
            evs[:] = [e for i, e in enumerate(evs) if e[1] is None or last[e[1]] == i]
    windows = sorted({w for a in ws.aggregations for w in a.windows})
    plan = {
        (a.name, w): [f for f in a.features() if f.window == w]
        for a in ws.aggregations
        for w in a.windows
    }
    out = []
    for q in queries.to_pylist():
        key = tuple(q[k] for k in keys)
        if None in key or q[QUERY_TIME] is None:
            out.append({f.name: None for f in ws.features})
            continue
        t = _micros(q[QUERY_TIME])
        evs = entity.get(key, [])
        row: dict[str, Any] = {}
        for w in windows:
            inside = [e[2] for e in evs if t - w.micros <= e[0][0] < t]
            for a in ws.aggregations:
                if w in a.windows:
                    present = [v[a.name] for v in inside if v[a.name] is not None]
                    row.update(_ops(a, plan[a.name, w], present))
        out.append(row)
    return out


def _exact_sum(values: list[float]) -> Fraction:
    """The exact sum of floats: every double is a whole multiple of 2**-1074."""
    total = 0
    for v in values:
        num, den = v.as_integer_ratio()  # den is a power of two
        total += num << (1075 - den.bit_length())
    return Fraction(total, 1 << 1074)


def _ops(a: Any, features: list[Any], vals: list[Any]) -> dict[str, Any]:
    is_float = a.value.output.type is Float64Type
    exact: Fraction | int | None = None
    if "sum" in a.ops or "mean" in a.ops:
        exact = _exact_sum(vals) if is_float else sum(vals)
    out: dict[str, Any] = {}
    for f in features:
        op = f.op
        if op == "count":
            v: Any = len(vals)
        elif op == "sum":
            assert exact is not None
            if is_float:
                try:
                    v = float(exact) + 0.0
                except OverflowError:
                    v = None
            else:
                v = int(exact) if -(2**63) <= exact < 2**63 else None
        elif op == "mean":
            assert exact is not None
            v = float(Fraction(exact) / len(vals)) + 0.0 if vals else None
        elif op in ("min", "max"):
            v = (min if op == "min" else max)(vals) if vals else None
            v = v + 0.0 if isinstance(v, float) else v
        elif op == "last":
            v = vals[-1] if vals else None
        elif op == "last_k":
            v = vals[-f.k :][::-1]
        else:
            assert op == "distinct"
            v = len(set(vals))
        out[f.name] = v
    return out


# ------------------------------------------------------------------ the three engines


@dataclass
class Results:
    local: list[dict[str, Any]]
    spark: list[dict[str, Any]]
    beam: list[dict[str, Any]]
    oracle: list[dict[str, Any]] = field(default_factory=list)

    def engines(self) -> dict[str, list[dict[str, Any]]]:
        return {"local": self.local, "spark": self.spark, "beam": self.beam}


def run_engines(
    spark: Any, ws: WindowSet, events: pa.Table, queries: pa.Table, workdir: Path
) -> Results:
    """The local reference, Spark and Beam on the same rows; rows back in ``qid`` order."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.engines.beam import LOCAL_RUNNER, ComputeWindows
    from transforms.engines.spark import apply_windows

    runner = WindowRunner(ws)
    passthrough = ["qid", *ws.entities, QUERY_TIME]
    schema = runner.output_schema(queries.schema, QUERY_TIME, passthrough)
    local = runner.run_local(events, queries, QUERY_TIME, passthrough).sort_by("qid")

    workdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(events, workdir / "events.parquet")
    pq.write_table(queries, workdir / "queries.parquet")
    # Spark sees the events in the opposite order: arrival order changes nothing (27-29)
    reversed_events = events.take(pa.array(range(events.num_rows - 1, -1, -1), pa.int64()))
    pq.write_table(reversed_events, workdir / "events-reversed.parquet")
    events_df = spark.read.parquet(str(workdir / "events-reversed.parquet"))
    queries_df = spark.read.parquet(str(workdir / "queries.parquet"))
    spark_out = apply_windows(ws, events_df, queries_df, QUERY_TIME, passthrough).toArrow()

    dump = workdir / "beam.pickle"
    options = PipelineOptions(list(LOCAL_RUNNER))
    with beam.Pipeline(options=options) as p:
        ev = p | "Events" >> beam.io.ReadFromParquet(str(workdir / "events.parquet"))
        qs = p | "Queries" >> beam.io.ReadFromParquet(str(workdir / "queries.parquet"))
        _ = (
            {"events": ev, "queries": qs}
            | ComputeWindows(ws, events.schema, QUERY_TIME, passthrough, max_batch_size=2_000)
            | beam.combiners.ToList()
            | beam.Map(lambda rows: dump.write_bytes(pickle.dumps(rows)))
        )
    beam_out = pa.Table.from_pylist(pickle.loads(dump.read_bytes()), schema=schema)

    def rows(table: pa.Table) -> list[dict[str, Any]]:
        assert table.schema.names == schema.names
        return table.sort_by("qid").to_pylist()

    return Results(rows(local), rows(spark_out), rows(beam_out))


def check(results: Results, oracle_rows: list[dict[str, Any]]) -> None:
    assert_same_rows(oracle_rows, results.local, "local reference vs oracle")
    for engine in ("spark", "beam"):
        assert_same_rows(results.local, getattr(results, engine), f"{engine} vs local")


# ------------------------------------------------------------------ rules 23-30, one case each


@dataclass
class Case:
    """Events (user 1 unless given) and queries of one rule with the values expected."""

    events: list[dict[str, Any]]
    queries: list[dict[str, Any]]  # "user" (default 1), "at"
    expected: list[dict[str, Any]]  # per query: the features it checks
    no_id: bool = False


EVENT_DEFAULTS = {"user": 1, "x": None, "n": 0, "ok": True, "s": None}
EVENTS_SCHEMA = pa.schema(
    [
        ("user", pa.int64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("eid", pa.int64()),
        ("x", pa.float64()),
        ("n", pa.int64()),
        ("ok", pa.bool_()),
        ("s", pa.string()),
    ]
)
QUERIES_SCHEMA = pa.schema(
    [("qid", pa.int64()), ("user", pa.int64()), (QUERY_TIME, pa.timestamp("us", tz="UTC"))]
)
EMPTY: dict[str, Any] = {
    "x_count_1h": 0,
    "x_sum_1h": 0.0,
    "x_mean_1h": None,
    "x_min_1h": None,
    "x_max_1h": None,
    "x_last_1h": None,
    "x_last3_1h": [],
    "n_count_1h": 0,
    "n_sum_1h": 0,
    "n_mean_1h": None,
    "n_max_1h": None,
    "n_distinct_1h": 0,
    "s_count_1h": 0,
    "s_distinct_1h": 0,
    "s_last_1h": None,
    "s_last2_1h": [],
}
ALL_NULL = dict.fromkeys(EMPTY)


def ev(ts: dt.datetime | None, **values: Any) -> dict[str, Any]:
    return {**EVENT_DEFAULTS, "ts": ts, **values}


def q(t: dt.datetime | None, user: int | None = 1) -> dict[str, Any]:
    return {"user": user, QUERY_TIME: t}


def naive_sum(values: Sequence[float]) -> float:
    total = 0.0
    for v in values:
        total += v
    return total


CASES: dict[str, Case] = {
    "rule23_window_ends_just_before_the_query": Case(
        [ev(at(10), x=1.0), ev(at(10, 30), x=2.0), ev(at(11), x=4.0)],
        [q(at(10)), q(at(11)), q(at(11, us=1)), q(at(12)), q(at(12, us=1)), q(at(15))],
        [
            {"x_count_1h": 0, "x_sum_1h": 0.0},  # the event at the query's instant is unseen
            {"x_count_1h": 2, "x_sum_1h": 3.0},  # 10:00 is exactly 1h old: inside
            {"x_count_1h": 2, "x_sum_1h": 6.0},  # now 11:00 is seen, 10:00 is too old
            {"x_count_1h": 1, "x_sum_1h": 4.0},
            {"x_count_1h": 0, "x_sum_1h": 0.0},
            {"x_count_1h": 0, "x_last_1h": None},  # the window moves with the query
        ],
    ),
    "rule24_missing_values_filters_and_rows_without_a_place": Case(
        [
            ev(at(10), x=1.0, n=5),
            ev(at(10, 1), x=None, n=7, ok=False),
            ev(at(10, 2), x=math.nan, n=9, ok=None),
            ev(at(10, 3), x=math.inf, n=11),
            ev(at(10, 4), x=-math.inf, n=5),
            ev(at(10, 5), x=3.0, n=2, ok=False),
            ev(at(10, 6), x=100.0, n=100, user=None),  # no entity
            ev(None, x=100.0, n=100),  # no event time
        ],
        [q(at(11)), q(None), q(at(11), user=None)],
        [
            {
                "x_count_1h": 2,
                "x_sum_1h": 4.0,
                "x_mean_1h": 2.0,
                "x_last_1h": 3.0,
                "x_last3_1h": [3.0, 1.0],
                "n_count_1h": 3,
                "n_sum_1h": 21,
                "n_mean_1h": 7.0,
                "n_distinct_1h": 2,
            },
            ALL_NULL,  # a query row without a time or a key has no place: all null
            ALL_NULL,
        ],
    ),
    "rule25_empty_windows": Case(
        [ev(at(10), x=2.0, n=3, s="a")],
        [q(at(9)), q(at(10), user=2), q(at(10)), q(at(11, us=1))],
        [EMPTY, EMPTY, EMPTY, EMPTY],
    ),
    "rule26_exact_arithmetic": Case(
        [
            ev(at(10), x=1e16),
            ev(at(10, 1), x=1.0),
            ev(at(10, 2), x=-1e16),
            ev(at(10), user=2, x=1.7e308, n=2**62),
            ev(at(10, 1), user=2, x=1.7e308, n=2**62),
            ev(at(10), user=3, x=-0.0, n=2**62),
            ev(at(10, 1), user=3, x=-0.0, n=2**62),
            ev(at(10, 2), user=3, x=-0.0, n=-(2**62)),
        ],
        [q(at(11)), q(at(11), user=2), q(at(11), user=3)],
        [
            {"x_sum_1h": 1.0, "x_mean_1h": 1 / 3, "x_min_1h": -1e16, "x_max_1h": 1e16},
            {"x_sum_1h": None, "x_mean_1h": 1.7e308, "n_sum_1h": None, "n_mean_1h": 2.0**62},
            {
                "x_sum_1h": 0.0,
                "x_mean_1h": 0.0,
                "x_min_1h": 0.0,
                "x_max_1h": 0.0,
                "x_last_1h": -0.0,  # a value is kept as it is (rule 4)
                "n_sum_1h": 2**62,
                "n_mean_1h": float(Fraction(2**62, 3)),
                "n_max_1h": 2**62,
            },
        ],
    ),
    "rule27_duplicates_by_event_id": Case(
        [
            ev(at(10), eid=1, x=1.0),
            ev(at(10, 10), eid=2, x=5.0),  # a conflicting copy: the one placed last counts
            ev(at(10, 20), eid=3, x=3.0),
            ev(at(10), eid=1, x=1.0),  # a replay
            ev(at(10, 10), eid=2, x=2.0),
            ev(at(10, 15), eid=3, x=7.0),  # an earlier copy of event 3
            ev(at(10, 30), eid=None, x=4.0),  # no id: never a duplicate
            ev(at(10, 30), eid=None, x=4.0),
        ],
        [q(at(10, 16)), q(at(11))],
        [
            {"x_count_1h": 2, "x_sum_1h": 6.0, "x_last_1h": 5.0},
            {"x_count_1h": 5, "x_sum_1h": 17.0, "x_last3_1h": [4.0, 4.0, 3.0]},
        ],
    ),
    "rule27_without_event_id_every_row_counts": Case(
        [ev(at(10), x=1.0), ev(at(10), x=1.0), ev(at(10, 5), x=2.0, eid=9), ev(at(10, 5), x=2.0)],
        [q(at(11))],
        [{"x_count_1h": 4, "x_sum_1h": 6.0, "x_last3_1h": [2.0, 2.0, 1.0]}],
        no_id=True,
    ),
    "rule28_late_events": Case(
        [
            ev(at(10), x=1.0),
            ev(at(10, 5), x=2.0),
            ev(at(10, 10), x=3.0),
            ev(at(9, 59, 59), x=10.0),  # arrives last, happened first
            ev(at(10, day=-2), x=100.0),
        ],
        [q(at(10)), q(at(10, 30)), q(at(10, day=-1))],
        [
            {"x_count_1h": 1, "x_sum_1h": 10.0, "x_last_1h": 10.0},
            {"x_count_1h": 4, "x_sum_1h": 16.0, "x_last_1h": 3.0},
            {"x_count_1h": 0},
        ],
    ),
    "rule29_same_instant_by_event_id": Case(
        [
            ev(at(10), eid=3, x=3.0, s="c"),
            ev(at(10), eid=1, x=1.0, s="z"),
            ev(at(10), eid=2, x=2.0, s=None),
            ev(at(10), eid=0, x=9.0, s="y"),
        ],
        [q(at(10, 1))],
        [{"x_last_1h": 3.0, "x_last3_1h": [3.0, 2.0, 1.0], "s_last2_1h": ["c", "z"]}],
    ),
    "rule29_same_instant_by_values_in_aggregation_name_order": Case(
        [
            ev(at(10), x=0.0),  # -0.0 is placed before 0.0
            ev(at(10), x=-0.0),
            ev(at(10), x=None),
            ev(at(10), user=2, n=2, x=1.0),  # n orders before s and x
            ev(at(10), user=2, n=1, x=9.0),
            ev(at(10), user=3, s="b", x=1.0),
            ev(at(10), user=3, s="a", x=2.0),
            ev(at(10), user=3, s=None, x=3.0),
        ],
        [q(at(11)), q(at(11), user=2), q(at(11), user=3)],
        [
            {"x_last_1h": 0.0, "x_last3_1h": [0.0, -0.0]},
            {"x_last_1h": 1.0, "x_last3_1h": [1.0, 9.0]},
            {"x_last_1h": 1.0, "x_last3_1h": [1.0, 2.0, 3.0], "s_last2_1h": ["b", "a"]},
        ],
        no_id=True,
    ),
    "rule30_distinct_counts_are_exact": Case(
        [
            ev(at(10), s="caf\u00e9", n=1),
            ev(at(10, 1), s="", n=1),
            ev(at(10, 2), s="Caf\u00e9", n=2),
            ev(at(10, 3), s=None, n=3, ok=False),
            ev(at(10, 4), s="cafe\u0301", n=2**62),
        ],
        [q(at(11))],
        [
            {
                "s_count_1h": 4,
                "s_distinct_1h": 3,
                "s_last_1h": "caf\u00e9",  # NFC (rule 10)
                "n_distinct_1h": 3,
            }
        ],
    ),
}


def _case_tables(no_id: bool) -> tuple[pa.Table, pa.Table, dict[str, list[int]]]:
    """Every case of one window set in one table, each case's users kept apart."""
    events: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []
    qids: dict[str, list[int]] = {}
    eid = 1000
    for number, (name, case) in enumerate(CASES.items()):
        if case.no_id != no_id:
            continue
        offset = 100 * (number + 1)
        for e in case.events:
            eid += 1
            row = {"eid": eid, **e}
            row["user"] = None if row["user"] is None else row["user"] + offset
            events.append(row)
        qids[name] = []
        for qr in case.queries:
            qid = len(queries)
            qids[name].append(qid)
            user = None if qr["user"] is None else qr["user"] + offset
            queries.append({"qid": qid, "user": user, QUERY_TIME: qr[QUERY_TIME]})
    return (
        pa.Table.from_pylist(events, schema=EVENTS_SCHEMA),
        pa.Table.from_pylist(queries, schema=QUERIES_SCHEMA),
        qids,
    )


@pytest.fixture(scope="module")
def rule_runs(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Any]:
    """Each window set's cases through all three engines at once (one Spark job, one Beam
    pipeline), checked against the oracle."""
    runs = {}
    for no_id, ws in ((False, RULES), (True, RULES_NO_ID)):
        events, queries, qids = _case_tables(no_id)
        results = run_engines(spark, ws, events, queries, tmp_path_factory.mktemp(ws.name))
        results.oracle = oracle(ws, events, queries)
        runs[no_id] = (results, qids)
    return runs


@pytest.mark.parametrize("name", list(CASES))
def test_rule(name: str, rule_runs: dict[bool, Any]) -> None:
    case = CASES[name]
    results, qids = rule_runs[case.no_id]
    rows = qids[name]
    assert_same_rows(
        [results.oracle[i] for i in rows], [results.local[i] for i in rows], "local vs oracle"
    )
    for engine, out in results.engines().items():
        assert_same_rows(case.expected, [out[i] for i in rows], f"{name}: {engine}")


def test_rule26_the_exact_sum_is_not_the_naive_one() -> None:
    assert naive_sum([1e16, 1.0, -1e16]) == 0.0  # what the exact sum (1.0) avoids


@pytest.mark.parametrize("seed", range(4))
def test_rule26_both_exact_sum_paths_give_the_rational_sum(seed: int) -> None:
    """Long slices are summed by peeling ``math.fsum`` remainders, short ones (and sums
    whose partials overflow) by the integer loop: both equal the sum in fractions, over
    subnormals, the largest doubles, wide exponent ranges and cancellation."""
    from transforms._exact import SHIFT
    from transforms.window_rows import _fsum_parts, _integer_sum, exact_sum

    rng = random.Random(seed)
    specials = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]

    def value() -> float:
        r = rng.random()
        if r < 0.1:
            return rng.choice(specials) * rng.choice([1.0, -1.0])
        if r < 0.5:
            return rng.uniform(-1e6, 1e6)
        return rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-320, 300)

    peeled = 0
    for _ in range(400):
        values = [value() for _ in range(rng.randint(1, 200))]
        if rng.random() < 0.3:  # cancellation: the sum is far below its terms
            values += [-v for v in values[: len(values) // 2]]
            rng.shuffle(values)
        want = sum(map(Fraction, values)) * (1 << SHIFT)
        assert want.denominator == 1
        assert exact_sum(values) == _integer_sum(values) == want.numerator
        peeled += _fsum_parts(values) is not None
    assert peeled > 50  # the fsum path was taken, not only its fallback


# ------------------------------------------------------------------ a randomized case

SHOPS = ["north", "south", "Z\u00fcrich", "Zu\u0308rich", ""]
MERCHANTS = [
    "caf\u00e9",
    "cafe\u0301",
    "Caf\u00e9",
    "",
    "bar",
    "baz",
    None,
    "\u65e5\u672c",
    "\ufb01",
]


def _amount(rng: random.Random) -> float | None:
    r = rng.random()
    if r < 0.08:
        return None
    if r < 0.10:
        return math.nan
    if r < 0.11:
        return rng.choice([math.inf, -math.inf])
    if r < 0.16:
        return -0.0
    if r < 0.20:
        return 0.0
    if r < 0.24:
        return rng.choice([1e300, 1.7e308, -1.7e308, 5e-324, 1e16, -1e16])
    if r < 0.30:
        return rng.choice([0.1, 0.2, 0.3, 1.0, 2.5])
    return rng.uniform(-1e6, 1e6)


def _qty(rng: random.Random) -> int:
    if rng.random() < 0.04:
        return rng.choice([1, -1]) * (2**62 + rng.randint(-1000, 1000))
    return rng.randint(-50, 50)


def random_case(composite: bool, seed: int) -> tuple[WindowSet, pa.Table, pa.Table]:
    """>= 20,000 events over 200 entities with every hard case, and 5,000 queries."""
    rng = random.Random(seed)
    entities: list[tuple[Any, ...]]
    if composite:
        entities = [(shop, u) for shop in SHOPS for u in range(40)]
        keys = ["shop", "user"]
    else:
        entities = [(u,) for u in range(200)]
        keys = ["user"]
    ws = BY_SHOP_USER if composite else BY_USER
    span = 14 * 86400 * 10**6
    step = {"1s": 10**6, "10m": 600 * 10**6, "1h": 3600 * 10**6, "7d": 7 * 86400 * 10**6}
    instants: dict[tuple[Any, ...], list[int]] = {}
    for e in entities:  # few instants per entity: many events share one; some w apart
        base = [rng.randrange(span) for _ in range(25)]
        near = [t + rng.choice([1, -1, 0]) + rng.choice(list(step.values())) for t in base[:10]]
        instants[e] = base + near

    def stamp(micros: int) -> dt.datetime:
        return T0 + dt.timedelta(microseconds=micros)

    rows: list[dict[str, Any]] = []
    for i in range(20_000):
        e = rng.choice(entities)
        rows.append(
            {
                **dict(zip(keys, e, strict=True)),
                "ts": stamp(rng.choice(instants[e])),
                "eid": i if rng.random() > 0.01 else None,
                "amount": _amount(rng),
                "qty": _qty(rng),
                "ok": rng.choice([True, True, True, False, None]),
                "merchant": rng.choice(MERCHANTS),
            }
        )
    for _ in range(600):  # exact replays of an event (same id)
        rows.insert(rng.randrange(len(rows)), dict(rng.choice(rows)))
    for _ in range(600):  # conflicting copies: same id, other values (some at another time)
        copy = dict(rng.choice(rows))
        copy["amount"], copy["qty"], copy["merchant"] = _amount(rng), _qty(rng), "copy"
        if rng.random() < 0.3 and copy["ts"] is not None:
            copy["ts"] += dt.timedelta(seconds=rng.choice([-1, 1, 3600]))
        rows.insert(rng.randrange(len(rows)), copy)
    for row in rng.sample(rows, 300):  # rows without a place
        row[rng.choice([*keys, "ts"])] = None
    for _ in range(400):  # late events: arrive last, happened long before their neighbours
        late = dict(rng.choice(rows[:20_000]))
        if late["ts"] is not None:
            late["ts"] -= dt.timedelta(days=rng.randint(1, 6), seconds=rng.randint(0, 86400))
        late["eid"] = rng.randrange(10**9, 2 * 10**9)
        rows.append(late)

    schema = pa.schema(
        [
            *([("shop", pa.string())] if composite else []),
            ("user", pa.int64()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("eid", pa.int64()),
            ("amount", pa.float64()),
            ("qty", pa.int64()),
            ("ok", pa.bool_()),
            ("merchant", pa.string()),
        ]
    )
    events = pa.Table.from_pylist(rows, schema=schema)

    placed = [r for r in rows if r["ts"] is not None]
    queries: list[dict[str, Any]] = []
    for qid in range(5_000):
        r = rng.random()
        src = rng.choice(placed)
        key = [src[k] for k in keys]
        if r < 0.2:  # at an event's instant
            t: dt.datetime | None = src["ts"]
        elif r < 0.5:  # exactly w after an event, or a microsecond either side
            t = src["ts"] + dt.timedelta(microseconds=rng.choice(list(step.values())))
            t += rng.choice([dt.timedelta(0), dt.timedelta(0), US, -US])
        elif r < 0.55:  # before any event
            t = T0 - dt.timedelta(days=rng.randint(0, 30), microseconds=1)
        elif r < 0.60:  # a key without events
            key = [*key[:-1], 10_000 + rng.randrange(50)]
            t = stamp(rng.randrange(span))
        elif r < 0.62:  # a key or a time missing
            t = stamp(rng.randrange(span))
            if rng.random() < 0.7:
                key[rng.randrange(len(key))] = None
            else:
                t = None
        else:
            t = stamp(rng.randrange(-span // 10, span + span // 10))
        queries.append({"qid": qid, **dict(zip(keys, key, strict=True)), QUERY_TIME: t})
    qschema = pa.schema(
        [
            ("qid", pa.int64()),
            *[schema.field(k) for k in keys],
            (QUERY_TIME, schema.field("ts").type),
        ]
    )
    return ws, events, pa.Table.from_pylist(queries, schema=qschema)


@pytest.mark.parametrize("composite", [False, True], ids=["int64_key", "string_int64_key"])
def test_random_events_local_spark_beam_and_oracle_agree(
    composite: bool, spark: Any, tmp_path: Path
) -> None:
    ws, events, queries = random_case(composite, seed=23 + composite)
    assert events.num_rows >= 20_000 and queries.num_rows >= 5_000
    results = run_engines(spark, ws, events, queries, tmp_path)
    check(results, oracle(ws, events, queries))
    # the case does reach the corners it is meant to reach
    local = results.local
    assert any(r["amount_sum_7d"] is None and r["amount_count_7d"] for r in local)
    assert any(r["qty_sum_7d"] is None and r["qty_count_7d"] for r in local)
    assert any(r["amount_count_1s"] for r in local)
    assert any(r["amount_last_1h"] is not None and same(r["amount_last_1h"], -0.0) for r in local)
    assert sum(all(r[f.name] is None for f in ws.features) for r in local) >= 50
