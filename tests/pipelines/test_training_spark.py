"""``get_training_set(engine=Engine("spark"))`` and ``skewless training-set --engine spark``
against the local join, bit for bit: same values, nulls, types, column and row order.

A throwaway Feast repo holds two views. ``acct`` has a composite (int64, string) key, a
2 h ttl, a source of two files with small row groups, event times on a 15 min grid (many
ties), created times that tie too or are null, null keys, and one feature of each kind a
view can hold (float64 with NaN and -0.0, float32, uint16 as Int32, int64 extremes, bool,
dictionary strings, bytes, nanosecond timestamps in Tokyo time). ``profile`` has a
large_string key, event times in ms in Paris time, no created column and no ttl, so its
ties are broken by file order alone. Entity rows sit on feature instants, on the ttl
boundary and a microsecond past it, on unknown keys, and repeat.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.feast_objects import write_feature_store_yaml
from pipelines.training_set import Engine, ViewStats, get_training_set
from tests.support import free_port
from transforms.errors import SchemaError

BASE = datetime(2025, 5, 1, tzinfo=UTC)
BASE_US = int(BASE.timestamp()) * 1_000_000
MIN_US = 60_000_000
HOUR_US = 60 * MIN_US
GRID = 15 * MIN_US
SLOTS = 48 * 4  # 48 hours of 15 min slots
TTL = timedelta(hours=2)
USERS = np.array([-5, 0, 7, 2**40, 123_456_789], dtype=np.int64)
MERCHANTS = ["m1", "ü-2", "", "m 4"]
CUSTOMERS = [f"c{i:02d}-é" for i in range(30)]
ACCT = ["spend", "ratio", "qty", "big", "flag", "note", "blob", "paid_at"]
REFS = [f"acct:{f}" for f in ACCT] + ["profile:tier", "profile:score"]
SPARK = Engine("spark")
# (user, merchant, slot past the random data): the winner of a full tie in event and created
# time is the row last in file order: across files, across row groups, and over a null
# created time that comes later in the file (a null created time loses)
TIES = {(7, "m1", SLOTS + 4): 2.0, (0, "ü-2", SLOTS + 8): 4.0, (-5, "", SLOTS + 12): 6.0}


def _ts(us: np.ndarray, unit: str = "us", tz: str = "UTC") -> pa.Array:
    scale = {"us": 1, "ms": 1000}[unit]
    return pa.array(np.asarray(us, dtype=np.int64) // scale).cast(pa.timestamp(unit, tz=tz))


def _acct_part(rng: np.random.Generator, n: int) -> pa.Table:
    ev = BASE_US + rng.integers(0, SLOTS, n) * GRID
    spend = rng.normal(size=n) * 100
    spend[rng.random(n) < 0.05] = np.nan
    spend[rng.random(n) < 0.05] = -0.0
    spend[:3] = [np.inf, -np.inf, np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]]
    big = rng.integers(-(2**62), 2**62, n)
    big[:2] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    notes = np.array(["", "ok", "ß∂ƒ", "x" * 40], dtype=object)[rng.integers(0, 4, n)]
    return pa.table(
        {
            "user_id": pa.array(USERS[rng.integers(0, len(USERS), n)], mask=rng.random(n) < 0.02),
            "merchant": pa.array(
                [MERCHANTS[i] for i in rng.integers(0, len(MERCHANTS), n)],
                mask=rng.random(n) < 0.02,
            ),
            "event_timestamp": _ts(ev),
            "created": pa.array(
                ev + rng.integers(0, 3, n) * 1_000_000, mask=rng.random(n) < 0.05
            ).cast(pa.timestamp("us", tz="UTC")),
            "spend": pa.array(spend, mask=rng.random(n) < 0.03),
            "ratio": pa.array(rng.random(n).astype(np.float32), mask=rng.random(n) < 0.03),
            "qty": pa.array(rng.integers(0, 65_536, n).astype(np.uint16)),
            "big": pa.array(big, mask=rng.random(n) < 0.03),
            "flag": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.03),
            "note": pa.array(notes.tolist(), mask=rng.random(n) < 0.03).dictionary_encode(),
            "blob": pa.array([bytes([i % 256, 0, 255]) for i in rng.integers(0, 999, n)]),
            "paid_at": pa.array(ev * 1000 + rng.integers(0, 999, n)).cast(
                pa.timestamp("ns", tz="Asia/Tokyo")
            ),
        }
    )


def _tie_rows(template: pa.Table, rows: list[tuple[int, str, int, int | None, float]]) -> pa.Table:
    """Rows (user, merchant, slot, created offset in µs or None, spend) shaped like
    ``template``, other features copied from its first row."""
    n = len(rows)
    ev = np.array([BASE_US + slot * GRID for _, _, slot, _, _ in rows])
    created = [
        None if c is None else int(e) + c for e, (_, _, _, c, _) in zip(ev, rows, strict=True)
    ]
    cols = {name: template.column(name).slice(0, 1).take(pa.array([0] * n)) for name in ACCT}
    cols["spend"] = pa.array([r[4] for r in rows])
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "merchant": pa.array([r[1] for r in rows]),
            "event_timestamp": _ts(ev),
            "created": pa.array(created, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            **cols,
        }
    ).cast(template.schema)


def _acct_files(rng: np.random.Generator) -> list[pa.Table]:
    a, b = _acct_part(rng, 1800), _acct_part(rng, 1800)
    t1, t2, t3 = SLOTS + 4, SLOTS + 8, SLOTS + 12
    a = pa.concat_tables(
        [a, _tie_rows(a, [(7, "m1", t1, 5, 1.0), (-5, "", t3, 5, 6.0), (0, "ü-2", t2, 5, 9.0)])]
    )
    b_head = _tie_rows(a, [(7, "m1", t1, 5, 2.0), (0, "ü-2", t2, 5, 3.0)])
    b_tail = _tie_rows(a, [(0, "ü-2", t2, 5, 4.0), (-5, "", t3, None, 5.0)])
    return [a, pa.concat_tables([b_head, b, b_tail])]  # b's ties sit in its first and last groups


def _profile(rng: np.random.Generator) -> pa.Table:
    n = 1200
    ev = BASE_US + rng.integers(0, SLOTS // 2, n) * 2 * GRID  # 30 min grid: ties of key+time
    score = rng.normal(size=n)
    score[rng.random(n) < 0.05] = np.nan
    return pa.table(
        {
            "customer": pa.array(
                [CUSTOMERS[i] for i in rng.integers(0, len(CUSTOMERS), n)], pa.large_string()
            ),
            "occurred_at": _ts(ev, "ms", "Europe/Paris"),
            "tier": pa.array(rng.choice(["gold", "silver", "bronze"], n).tolist()),
            "score": pa.array(score, mask=rng.random(n) < 0.03),
        }
    )


def _build_repo(root: Path, acct: list[pa.Table], profile: pa.Table) -> None:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

    (root / "data" / "acct").mkdir(parents=True)
    for i, part in enumerate(acct):
        pq.write_table(part, root / "data" / "acct" / f"part-{i}.parquet", row_group_size=400)
    pq.write_table(profile, root / "data" / "profile.parquet", row_group_size=250)
    write_feature_store_yaml(root, "skewless_tss", "127.0.0.1:6379")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant"], value_type=ValueType.STRING)
    customer = Entity(name="customer", join_keys=["customer"], value_type=ValueType.STRING)
    acct_src = FileSource(name="acct_src", path="data/acct", timestamp_field="event_timestamp",
                          created_timestamp_column="created")  # fmt: skip
    profile_src = FileSource(name="profile_src", path="data/profile.parquet",
                             timestamp_field="occurred_at")  # fmt: skip
    types = [Float64, Float32, Int32, Int64, Bool, String, Bytes, UnixTimestamp]
    acct_view = FeatureView(
        name="acct",
        entities=[user, merchant],
        ttl=TTL,
        schema=[Field(name="user_id", dtype=Int64), Field(name="merchant", dtype=String)]
        + [Field(name=f, dtype=t) for f, t in zip(ACCT, types, strict=True)],
        source=acct_src,
    )
    profile_view = FeatureView(
        name="profile",
        entities=[customer],
        ttl=timedelta(0),
        schema=[
            Field(name="customer", dtype=String),
            Field(name="tier", dtype=String),
            Field(name="score", dtype=Float64),
        ],  # fmt: skip
        source=profile_src,
    )
    FeatureStore(repo_path=str(root)).apply(
        [user, merchant, customer, acct_src, profile_src, acct_view, profile_view]
    )


def _entities(rng: np.random.Generator, acct: pa.Table) -> pa.Table:
    """Random rows, rows on feature instants and on the ttl boundary, the tie rows,
    unknown keys; then some rows again, all shuffled."""
    n = 900
    users = np.append(USERS, 999)
    merchants = [*MERCHANTS, "zz"]
    us = BASE_US + rng.integers(-3 * HOUR_US, (SLOTS // 4 + 3) * HOUR_US, n)
    valid = acct.filter(pc.is_valid(acct.column("user_id")))
    sample = valid.take(pa.array(rng.choice(valid.num_rows, 150, replace=False)))
    f_us = sample.column("event_timestamp").cast(pa.int64()).to_numpy()
    edges = np.concatenate([f_us, f_us + 2 * HOUR_US, f_us + 2 * HOUR_US + 1])
    tie_us = [BASE_US + slot * GRID + MIN_US for _, _, slot in TIES]
    su = sample.column("user_id").to_numpy(zero_copy_only=False)
    sm = sample.column("merchant").to_pylist()
    user = np.concatenate([users[rng.integers(0, len(users), n)], su, su, su, [k[0] for k in TIES]])
    merchant = [merchants[i] for i in rng.integers(0, len(merchants), n)]
    merchant += [m or "m1" for m in sm * 3] + [k[1] for k in TIES]
    times = np.concatenate([us, edges, tie_us]).astype(np.int64)
    m = len(times)
    customer = [(CUSTOMERS + ["nobody"])[i] for i in rng.integers(0, len(CUSTOMERS) + 1, m)]
    table = pa.table(
        {
            "user_id": pa.array(user.astype(np.int64)),
            "merchant": pa.array(merchant),
            "customer": pa.array(customer),
            "event_timestamp": _ts(times),
            "label": pa.array(rng.random(m)),
        }
    )
    table = pa.concat_tables([table, table.take(pa.array(rng.integers(0, m, 200)))])
    return table.take(pa.array(rng.permutation(table.num_rows)))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    acct = _acct_files(rng)
    root = tmp_path_factory.mktemp("spark_ts_repo")
    _build_repo(root, acct, _profile(rng))
    return {"path": root, "entities": _entities(rng, pa.concat_tables(acct))}


def assert_same_table(got: pa.Table, want: pa.Table) -> None:
    """Same schema (names, types, metadata) and the same bits in every column: floats are
    compared as their bit patterns, so NaN payloads and -0.0 count."""
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.num_rows == want.num_rows
    for name, a, b in zip(want.column_names, got.columns, want.columns, strict=True):
        if pa.types.is_floating(a.type):
            bits = {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[a.type.bit_width]
            a, b = (pa.chunked_array([c.combine_chunks().view(bits)]) for c in (a, b))
        assert a.equals(b), name


# ----------------------------------------------------------------- Python API


@pytest.mark.parametrize("strict", [True, False])
def test_spark_equals_local(repo: dict[str, Any], spark: Any, strict: bool) -> None:
    entities = repo["entities"]
    local_stats: list[ViewStats] = []
    spark_stats: list[ViewStats] = []
    want = get_training_set(repo["path"], entities, REFS, strict_before=strict, stats=local_stats)
    got = get_training_set(
        repo["path"], entities, REFS, strict_before=strict, stats=spark_stats, engine=SPARK
    )
    assert_same_table(got, want)
    assert spark_stats == local_stats
    # the data exercises every branch: hits, misses (no row, beyond ttl), the full ties
    (acct, profile) = local_stats
    assert 0 < acct.matched < entities.num_rows and 0 < profile.matched < entities.num_rows
    assert want.column("note").type == pa.string()  # dictionary decoded, as local
    rows = got.select(["user_id", "merchant", "event_timestamp", "spend"]).to_pylist()
    for (user, merchant, slot), spend in TIES.items():
        at = BASE + timedelta(microseconds=slot * GRID + MIN_US)
        hits = [r["spend"] for r in rows if (r["user_id"], r["merchant"], r["event_timestamp"])
                == (user, merchant, at)]  # fmt: skip
        assert hits == [spend], (user, merchant)


def test_spark_equals_local_for_other_key_types_and_full_names(
    repo: dict[str, Any], spark: Any
) -> None:
    """int32 for an int64 key, dictionary and large_string for string keys join the same."""
    base = repo["entities"]
    entities = (
        base.set_column(0, "user_id", base.column("user_id").cast(pa.int32(), safe=False))
        .set_column(1, "merchant", base.column("merchant").dictionary_encode())
        .set_column(2, "customer", base.column("customer").cast(pa.large_string()))
    )
    refs = ["profile:score", "acct:spend", "acct:paid_at"]
    want = get_training_set(repo["path"], entities, refs, full_feature_names=True)
    got = get_training_set(repo["path"], entities, refs, full_feature_names=True, engine=SPARK)
    assert want.column_names[-3:] == ["profile__score", "acct__spend", "acct__paid_at"]
    assert_same_table(got, want)


def test_spark_refuses_what_local_refuses(repo: dict[str, Any]) -> None:
    """The checks run before any engine: same errors, no Spark job; no rows, no Spark."""
    path, base = repo["path"], repo["entities"].slice(0, 4)
    nulls = base.set_column(0, "user_id", pa.array([None, 1, 2, 3], pa.int64()))
    for engine in (Engine(), SPARK):
        with pytest.raises(SchemaError, match="'user_id' has 1 null values"):
            get_training_set(path, nulls, REFS, engine=engine)
    empty = base.slice(0, 0)
    assert_same_table(
        get_training_set(path, empty, REFS, engine=SPARK), get_training_set(path, empty, REFS)
    )
    with pytest.raises(SchemaError, match=r"^--engine 'flink': expected one of local, spark$"):
        get_training_set(path, base, REFS, engine=Engine("flink"))
    with pytest.raises(SchemaError, match="--master 'local\\[2\\]' is only for --engine spark"):
        get_training_set(path, base, REFS, engine=Engine("local", "local[2]"))
    with pytest.raises(SchemaError, match="--master 'nowhere': expected local"):
        get_training_set(path, base, REFS, engine=Engine("spark", "nowhere"))


# ------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def served(repo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A manifest serving the features (no request-time transforms), the entity file,
    and the training set ``skewless training-set --engine local`` writes."""
    from store.manifest import Manifest, ServiceSpec

    Manifest(
        project="skewless_tss",
        entity_key_serialization_version=3,
        views={},
        request_transforms={},
        # int64 extremes are beyond what the training set's statistics read (2**53)
        services={"acct_v1": ServiceSpec("acct_v1", [r for r in REFS if r != "acct:big"])},
    ).save(repo["path"])
    work = tmp_path_factory.mktemp("spark_ts_cli")
    entities = work / "entities.parquet"
    pq.write_table(repo["entities"], entities)
    local = work / "local.parquet"
    res = _invoke(repo["path"], entities, local, "--engine", "local")
    assert res.exit_code == 0, res.output
    return {"repo": repo["path"], "entities": entities, "local": local}


def _args(repo: Path, entities: Path, out: Path, *flags: str) -> list[str]:
    return ["training-set", "--repo", str(repo), "--entities", str(entities), "--out", str(out),
            *flags]  # fmt: skip


def _invoke(repo: Path, entities: Path, out: Path, *flags: str) -> Any:
    """``skewless training-set`` in this process (Spark: the test session, local[2])."""
    from typer.testing import CliRunner

    from cli.main import app

    return CliRunner().invoke(app, _args(repo, entities, out, *flags))


def _assert_same_file(got: Path, want: Path) -> None:
    assert_same_table(pq.read_table(got), pq.read_table(want))
    assert got.read_bytes() == want.read_bytes()
    stats = [json.loads(Path(f"{p}.stats.json").read_text()) for p in (got, want)]
    assert [s.pop("source") for s in stats] == [str(got), str(want)]
    assert stats[0] == stats[1]


def test_cli_spark_writes_the_local_parquet(
    served: dict[str, Path], spark: Any, tmp_path: Path
) -> None:
    out = tmp_path / "spark.parquet"
    flags = ["--engine", "spark", "--master", "local[2]"]
    res = _invoke(served["repo"], served["entities"], out, *flags)
    assert res.exit_code == 0, res.output
    _assert_same_file(out, served["local"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--engine", "flink"], "--engine must be local or spark, got 'flink'"),
        (["--master", "local[2]"], "--master is only for --engine spark, got --engine local"),
        (
            ["--engine", "spark", "--master", "sprak://h:1"],
            "--master 'sprak://h:1': expected local, local[N], local[*], spark://HOST:PORT, "
            "yarn or k8s://URL",
        ),
    ],
)
def test_cli_bad_engine_or_master_is_one_line_and_exit_2(
    flags: list[str], message: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    entities = tmp_path / "entities.parquet"
    pq.write_table(pa.table({"x": [1]}), entities)
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(
        app, ["training-set", "--entities", str(entities), "--out", str(out), *flags]
    )
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [f"skewless: error: {message}"]
    assert not out.exists()


# ------------------------------------------------------- a standalone cluster


@pytest.fixture()
def standalone_master(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Spark master and one worker (2 cores) on loopback, from the scripts pyspark ships;
    skips when they cannot start here."""
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("no Java to run a Spark master")
    port, ui, wport, wui = free_port(), free_port(), free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    logs = {name: tmp_path / f"{name}.log" for name in ("master", "worker")}
    args = {
        "master": ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                   "--port", str(port), "--webui-port", str(ui)],
        "worker": ["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                   "--host", "127.0.0.1", "--port", str(wport), "--webui-port", str(wui),
                   "--cores", "2", "--memory", "2g", "--work-dir", str(tmp_path / "work")],
    }  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("master", "worker"):
            with open(logs[name], "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [str(spark_class), *args[name]],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )  # fmt: skip
                )
        deadline = time.monotonic() + 90
        while "Successfully registered with master" not in logs["worker"].read_text():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.skip("standalone Spark did not start: " + logs["worker"].read_text()[-500:])
            time.sleep(0.25)  # polling a log file the worker appends to
        yield f"spark://127.0.0.1:{port}", env
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)


def test_standalone_cluster_writes_the_local_parquet(
    served: dict[str, Path], standalone_master: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    master, env = standalone_master
    out = tmp_path / "cluster.parquet"
    args = _args(served["repo"], served["entities"], out, "--engine", "spark", "--master", master)
    done = subprocess.run(  # a process of its own: this one's session is local[2]
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, timeout=600,
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_file(out, served["local"])
