"""Benchmark: ``feast materialize`` (Feast SDK) vs skewless ``materialize`` on the same data.

    .venv/bin/python -m bench.materialize --rows 1000000 --entities 100000

Generates a Parquet file and a throwaway Feast repo in a temp dir, then materializes it
with Feast and with ours in ``--rounds`` alternating rounds (the project's keys cleared
before each; medians reported, each round printed), checks the Redis state after ours is
byte-identical to Feast's, times both again as an incremental run (Redis already holding
the first half of the window), and prints a markdown table. Uses a dedicated DB index
(``--db``) and only ever deletes keys ending with its own random project name.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.repos.driver_repo import build_repo, generate, snapshot, window
from bench.results import ROUNDS, Measure, write_json
from pipelines.materialize import clear_project, redis_client


def redis_floor(repo: Path, chunk: int = 5000) -> dict[str, float]:
    """Redis main-thread CPU seconds for pre-built pipelined payloads on new keys (no
    Parquet reading or encoding involved): the RESTOREs materialize sends, and for
    comparison the EXISTS (one per chunk of ``chunk`` keys) + HSET of the checked path.
    The keys must not exist yet; they are cleared between the two."""
    from pipelines.materialize import (
        RedisWriter,
        _exists_payload,
        _hset_payload,
        _window,
        clear_project,
        encode_chunks,
        load_repo,
        read_latest,
        redis_client,
    )

    target = load_repo(repo)
    plan = target.plans[0]
    table, _ = read_latest(plan, *_window(plan, *window()))
    chunks = list(encode_chunks(table, plan, target.project, chunk))
    writer = RedisWriter(target.redis_type, target.connection_string)
    assert writer.restore_limits is not None, "this Redis does not take RESTORE payloads"
    restores = [(bytes(enc.restores(0, *writer.restore_limits)), len(enc)) for enc in chunks]
    checked = [(_exists_payload(enc), 1) for enc in chunks]
    for enc in chunks:
        hsets, n_hsets = _hset_payload(enc, enc.commands(), None, None)
        checked.append((bytes(hsets), n_hsets))
    client = redis_client(target.connection_string)

    def used() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_user_main_thread"] + info["used_cpu_sys_main_thread"])

    def cpu_seconds(payloads: list[tuple[bytes, int]]) -> float:
        before = used()
        for payload, n_replies in payloads:
            writer.raw(payload, n_replies)
        return used() - before

    try:
        out = {"restore": cpu_seconds(restores)}
        clear_project(client, target.project)
        out["checked"] = cpu_seconds(checked)
    finally:
        writer.close()
    return out


def _incremental(
    args: argparse.Namespace, repo: Path, store: Any, client: Any, project: str, console: Any
) -> dict[str, float]:
    """Median seconds of the whole window written over Redis already holding the first
    half's latest rows (the second run of a daily job): most keys exist with an older
    event time, so both systems read every key's ``_ts`` before writing it. Each round
    prefills with ours (untimed), then times Feast, then prefills again and times ours."""
    from pipelines.materialize import materialize

    start, end = window()
    times: dict[str, list[float]] = {"feast": [], "skewless": []}
    for r in range(args.rounds):
        for name in ("feast", "skewless"):
            if name == "feast" and args.skip_feast:
                continue
            clear_project(client, project)
            materialize(repo, start, start + (end - start) / 2, show_progress=False,
                        record_interval=False)  # fmt: skip
            t0 = time.perf_counter()
            if name == "feast":
                store.materialize(start_date=start, end_date=end)
            else:
                materialize(repo, start, end, show_progress=False, record_interval=True)
            times[name].append(time.perf_counter() - t0)
        console.print(
            f"incremental round {r + 1}: "
            + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if v)
        )
    return {k: statistics.median(v) for k, v in times.items() if v}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--redis", default="127.0.0.1:6379", help="host:port")
    parser.add_argument("--db", type=int, default=13, help="dedicated Redis DB index")
    parser.add_argument("--skip-feast", action="store_true", help="time only ours")
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help="alternating Feast/ours rounds (medians reported)",
    )
    parser.add_argument("--json", help="also write the measurements here (for skewless bench)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure Redis's own CPU time on pre-built RESTORE and EXISTS/HSET payloads",
    )
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.markdown import Markdown

    from pipelines.materialize import materialize

    console = Console()
    conn = f"{args.redis},db={args.db}"
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-"))
    client = redis_client(conn)
    project = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        table = generate(args.rows, args.entities)
        store = build_repo(tmp / "repo", table, conn, project=project)
        start, end = window()
        rows: list[tuple[str, float]] = []
        feast_state = None
        times: dict[str, list[float]] = {"feast": [], "ours": []}
        for r in range(args.rounds):  # alternate, so drift in machine load hits both
            if not args.skip_feast:
                clear_project(client, project)
                t0 = time.perf_counter()
                store.materialize(start_date=start, end_date=end)
                times["feast"].append(time.perf_counter() - t0)
                if feast_state is None:
                    feast_state = snapshot(client, project)
            clear_project(client, project)
            t0 = time.perf_counter()
            report = materialize(
                tmp / "repo", start, end, show_progress=False, record_interval=True
            )
            times["ours"].append(time.perf_counter() - t0)
            console.print(
                f"round {r + 1}: "
                + (f"feast {times['feast'][-1]:.2f} s, " if times["feast"] else "")
                + f"skewless {times['ours'][-1]:.3f} s"
            )
        if times["feast"]:
            rows.append(("feast materialize (SDK), median", statistics.median(times["feast"])))
        rows.append(("skewless materialize, median", statistics.median(times["ours"])))
        t0 = time.perf_counter()
        report = materialize(
            tmp / "repo", start, end, verify=True, show_progress=False, record_interval=False
        )
        rows.append(("skewless rerun + verify (no-op writes)", time.perf_counter() - t0))
        ours = snapshot(client, project)
        same = "n/a" if feast_state is None else str(feast_state == ours)
        incremental = _incremental(args, tmp / "repo", store, client, project, console)
        if snapshot(client, project) != ours:
            raise SystemExit("the incremental run left a different state than a full one")
        for name, sec in incremental.items():
            rows.append((f"incremental, {name}, median", sec))
        if args.floor:
            clear_project(client, project)
            floor = redis_floor(tmp / "repo")
            rows.append(("Redis CPU alone: pre-built RESTOREs (what ours sends)", floor["restore"]))
            rows.append(("Redis CPU alone: EXISTS + HSET (checked path)", floor["checked"]))
            if snapshot(client, project) != ours:
                raise SystemExit("floor run wrote different bytes than materialize")
        base = rows[0][1]
        lines = [
            f"**{args.rows:,} rows, {args.entities:,} entities, {len(ours):,} keys written; "
            f"Redis identical to Feast's: {same}; verify lost={report.views[0].lost}**",
            "",
            "| run | seconds | rows/s | speed-up vs first |",
            "|---|---:|---:|---:|",
        ]
        for name, sec in rows:
            lines.append(f"| {name} | {sec:.2f} | {args.rows / sec:,.0f} | {base / sec:.1f}x |")
        feast_s = rows[0][1] if feast_state is not None else None
        ours_s = rows[1 if feast_state is not None else 0][1]
        write_json(
            [
                Measure(
                    "materialization",
                    f"{args.rows:,} rows -> Redis",
                    "rows/s",
                    args.rows / ours_s,
                    None if feast_s is None else args.rows / feast_s,
                    higher_is_better=True,
                ),
                Measure("materialization", "wall time", "s", ours_s, feast_s),
                Measure(
                    "materialization",
                    "incremental (most keys hold an older row): wall time",
                    "s",
                    incremental["skewless"],
                    incremental.get("feast"),
                ),
            ],
            args.json,
        )
        console.print(Markdown("\n".join(lines)))
        print("\n".join(lines))
        return 0 if same in ("True", "n/a") and report.ok else 1
    finally:
        clear_project(client, project)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
