"""Benchmark: `feast serve` (the real Feast CLI) vs `skewless serve` on the same Redis data.

One run builds a throwaway Feast repo (bench.repos.serving_repo, wide view included),
materializes it with Feast, starts both servers with the same number of worker processes
(``--workers``, default 1; ``feast serve --workers`` / ``skewless serve --workers``) on free
loopback ports and drives them with wrk (C, Lua script cycling through precomputed POST
bodies; see bench._load) or, when wrk is not installed, a minimal keep-alive asyncio client
(a note is printed; that client competes with the servers for CPU). Measured for each server
in the same run: requests/s at 16 connections and p50/p99 at 1 connection for 1 entity x 8
features; the same plus 2 request-time transforms (Feast: a pandas on-demand feature view,
mode="pandas", calling the same functions); 100 entities x 50 features. Each load figure is
the median of ``--rounds`` rounds that alternate the two servers. Then a parity pass: random
requests to our endpoint against the Feast SDK's get_online_features plus the same
transforms through OnlineEngine.

    .venv/bin/python -m bench.serving [--quick] [--workers N] [--seconds S] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._load import free_port, http_request, roundtrip, run_load, wait_http, wrk_path
from bench.results import ROUNDS, Measure, write_json

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


# ---------------------------------------------------------------------- scenarios


@dataclass
class Row:
    scenario: str
    metric: str
    feast: float
    ours: float
    higher_is_better: bool

    @property
    def ratio(self) -> float:
        return self.ours / self.feast if self.higher_is_better else self.feast / self.ours


def _bodies(kind: str, users: int, rng: random.Random, n: int) -> list[dict[str, Any]]:
    from bench.repos.serving_repo import STATS_FEATURES

    out = []
    for _ in range(n):
        if kind == "stats":
            out.append(
                {
                    "features": [f"user_stats:{f}" for f in STATS_FEATURES],
                    "entities": {"user_id": [rng.randrange(users)]},
                }
            )
        elif kind == "transforms":
            out.append(
                {
                    "feature_service": "payments_v1",
                    "entities": {
                        "user_id": [rng.randrange(users)],
                        "request_amount": [round(rng.uniform(1, 200), 2)],
                    },
                }
            )
        else:
            out.append(
                {
                    "feature_service": "wide_v1",
                    "entities": {"user_id": [rng.randrange(users) for _ in range(100)]},
                }
            )
    return out


def parity(port: int, repo: Any, n_requests: int, rng: random.Random) -> tuple[int, int, int]:
    """(requests, values compared, mismatches): our endpoint vs Feast SDK + OnlineEngine."""
    from feast import FeatureStore

    from bench.repos.serving_features import ARTIFACT, FEATURES
    from bench.repos.serving_repo import STATS_FEATURES
    from transforms.engines.online import OnlineEngine

    bodies: list[dict[str, Any]] = []
    for _ in range(n_requests):
        k = rng.randint(1, 3)
        bodies.append(
            {
                "feature_service": "payments_v1",
                "entities": {
                    "user_id": [rng.randrange(repo.users + repo.users // 20) for _ in range(k)],
                    "request_amount": [
                        None if rng.random() < 0.05 else round(rng.uniform(0, 300), 3)
                        for _ in range(k)
                    ],
                },
            }
        )

    async def fetch_all() -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{}] * len(bodies)

        async def conn(offset: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(offset, len(bodies), 16):
                status, payload = await roundtrip(
                    reader, writer, http_request("/get-online-features", bodies[i])
                )
                assert status == 200, payload
                results[i] = json.loads(payload)
            writer.close()

        await asyncio.gather(*(conn(k) for k in range(16)))
        return results

    answers = asyncio.run(fetch_all())
    ids = [u for b in bodies for u in b["entities"]["user_id"]]
    amounts = [a for b in bodies for a in b["entities"]["request_amount"]]
    store = FeatureStore(repo_path=str(repo.path))
    refs = [f"user_stats:{f}" for f in STATS_FEATURES]
    expected: dict[str, list[Any]] = {f: [] for f in STATS_FEATURES}
    for s in range(0, len(ids), 2000):
        part = store.get_online_features(
            features=refs, entity_rows=[{"user_id": u} for u in ids[s : s + 2000]]
        ).to_dict()
        for f in STATS_FEATURES:
            expected[f].extend(part[f])
    for f in STATS_FEATURES:  # what a point-in-time join would give: stale/missing -> null
        expected[f] = [
            None if (u in repo.expired or u >= repo.users) else v
            for u, v in zip(ids, expected[f], strict=True)
        ]
    engine = OnlineEngine(FEATURES, ARTIFACT, request_time_only=True)
    rows = [
        {"request_amount": a, "avg_amount": x, "txn_count": t}
        for a, x, t in zip(amounts, expected["avg_amount"], expected["txn_count"], strict=True)
    ]
    for out, vals in engine.runner.run_python_columns(
        {k: [r[k] for r in rows] for k in engine.inputs}, len(rows)
    ).items():
        expected[out] = vals
    compared = mismatches = 0
    pos = 0
    for ans in answers:
        names = ans["metadata"]["feature_names"]
        n = len(ans["results"][0]["values"])
        for name, res in zip(names, ans["results"], strict=True):
            if name == "user_id":
                continue
            for e in range(n):
                got, want = res["values"][e], expected[name][pos + e]
                compared += 1
                same = got == want or (
                    isinstance(got, float)
                    and isinstance(want, float)
                    and math.isnan(got)
                    and math.isnan(want)
                )
                mismatches += not same or type(got) is not type(want)
        pos += n
    return n_requests, compared, mismatches


def count_5xx(port: int, bodies: list[bytes]) -> tuple[int, int]:
    """(answers of 5xx, answers of 4xx) to malformed bodies, one keep-alive connection
    (reopened whenever the server closes it)."""
    import http.client

    five = four = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for body in bodies:
        for attempt in (0, 1):
            try:
                conn.request(
                    "POST",
                    "/get-online-features",
                    body=body,
                    headers={"Content-Type": "application/json"},
                )
                resp = conn.getresponse()
                resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                if attempt:
                    raise
        five += resp.status >= 500
        four += 400 <= resp.status < 500
    conn.close()
    return five, four


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer users and requests")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--workers", type=int, default=1, help="worker processes of EACH server")
    ap.add_argument("--seconds", type=float, default=0, help="seconds per load run")
    ap.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help="alternating Feast/ours rounds (medians reported)",
    )
    ap.add_argument("--python-client", action="store_true", help="do not use wrk")
    ap.add_argument("--json", help="also write the measurements here (for skewless bench)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from bench.repos.serving_repo import build, malformed_bodies

    console = Console()
    users = 2000 if args.quick else 10_000
    secs = args.seconds or (2.0 if args.quick else 5.0)
    use_wrk = wrk_path() is not None and not args.python_client
    n_parity = 2000 if args.quick else 10_000
    rng = random.Random(42)
    tmp = Path(tempfile.mkdtemp(prefix="skewless-bench-serving-"))
    procs: list[subprocess.Popen[bytes]] = []
    repo = None
    try:
        with console.status("building and materializing the Feast repo (Feast SDK)"):
            t0 = time.monotonic()
            repo = build(tmp / "repo", args.redis_url, users=users, wide=True)
            console.print(
                f"repo: {users} users, 2 views, materialized by Feast in {time.monotonic() - t0:.1f}s"
            )
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": args.redis_url}
        feast_port, our_port = free_port(), free_port()
        feast_bin = str(Path(PY).parent / "feast")
        procs.append(
            subprocess.Popen(
                [
                    feast_bin,
                    "-c",
                    str(repo.path),
                    "serve",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(feast_port),
                    "--no-access-log",
                    "--max-requests",
                    "1000000000",
                    "--workers",
                    str(args.workers),
                ],
                cwd=repo.path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "feast_serve.log", "wb"),  # noqa: SIM115
            )
        )
        feast_up = wait_http(feast_port, "/health", 120, procs[0])
        serve = (
            "import typer\nfrom cli.commands_serve import register\napp = typer.Typer()\n"
            "app.callback()(lambda: None)\nregister(app)\napp()\n"
        )
        procs.append(
            subprocess.Popen(
                [
                    PY,
                    "-c",
                    serve,
                    "serve",
                    "--repo",
                    str(repo.path),
                    "--port",
                    str(our_port),
                    "--max-entities",
                    "1000",
                    "--workers",
                    str(args.workers),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "skewless_serve.log", "wb"),  # noqa: SIM115
            )
        )
        our_up = wait_http(our_port, "/health", 30, procs[1])
        console.print(f"start-up: feast serve {feast_up:.2f}s, skewless serve {our_up:.2f}s")
        console.print(
            f"{args.workers} worker process(es) per server; load generator: "
            + (
                "wrk"
                if use_wrk
                else "Python asyncio client (wrk not found: apt-get install wrk for numbers "
                "less bounded by the client's CPU)"
            )
            + f", {secs:.0f} s per run, {args.rounds} alternating rounds (medians)"
        )
        rows: list[Row] = [Row("start-up", "s to first /health", feast_up, our_up, False)]
        path = "/get-online-features"

        def measure(label: str, bodies: list[dict[str, Any]], conns: list[int]) -> None:
            """Rounds alternate Feast and ours (drift in machine load hits both); each
            figure is the median over rounds."""
            for c in conns:
                runs: dict[str, list[Any]] = {"feast": [], "ours": []}
                for r in range(args.rounds):
                    with console.status(f"{label}: {c} connection(s), round {r + 1}"):
                        runs["feast"].append(run_load(feast_port, path, bodies, c, secs, use_wrk))
                        runs["ours"].append(run_load(our_port, path, bodies, c, secs, use_wrk))

                def med(who: str, attr: str, runs: dict[str, list[Any]] = runs) -> float:
                    return float(statistics.median(getattr(x, attr) for x in runs[who]))

                if c > 1:
                    rows.append(
                        Row(
                            label,
                            f"req/s @{c} conns",
                            med("feast", "rps"),
                            med("ours", "rps"),
                            True,
                        )
                    )
                    console.print(
                        f"{label} @{c}: rounds feast "
                        + ", ".join(f"{x.rps:,.0f}" for x in runs["feast"])
                        + " / ours "
                        + ", ".join(f"{x.rps:,.0f}" for x in runs["ours"])
                        + " req/s"
                    )
                else:
                    for q in ("p50", "p99"):
                        a = f"{q}_ms"
                        rows.append(
                            Row(label, f"{q} ms @1 conn", med("feast", a), med("ours", a), False)
                        )

        measure("1 entity x 8 features", _bodies("stats", users, rng, 500), [16, 1])
        measure(
            "+ 2 request-time transforms (Feast: pandas ODFV)",
            _bodies("transforms", users, rng, 500),
            [16, 1],
        )
        measure("100 entities x 50 features", _bodies("wide", users, rng, 50), [1])
        with console.status(f"parity: {n_parity} random requests"):
            n_req, compared, bad = parity(our_port, repo, n_parity, rng)
        with console.status("1,000 malformed request bodies to each server"):
            malformed = malformed_bodies(random.Random(11), 1000)
            feast_5xx, feast_4xx = count_5xx(feast_port, malformed)
            our_5xx, our_4xx = count_5xx(our_port, malformed)
        table = Table(
            title=f"feast serve vs skewless serve, {args.workers} worker(s) each "
            "(same Redis, same machine, loopback)"
        )
        for col in ("scenario", "metric", "feast serve", "skewless serve", "skewless advantage"):
            table.add_column(col, justify="left" if col in ("scenario", "metric") else "right")
        for r in rows:
            fmt = "{:,.0f}" if r.higher_is_better else "{:.2f}"
            table.add_row(
                r.scenario, r.metric, fmt.format(r.feast), fmt.format(r.ours), f"{r.ratio:.1f}x"
            )
        console.print(table)
        measures = [
            Measure(
                "online lookup",
                f"{r.scenario}: {r.metric}",
                "req/s" if r.higher_is_better else ("s" if r.scenario == "start-up" else "ms"),
                r.ours,
                r.feast,
                r.higher_is_better,
            )
            for r in rows
        ]
        measures.append(
            Measure("online lookup", f"parity mismatches in {n_req:,} requests", "count", bad)
        )
        measures.append(
            Measure(
                "online lookup",
                f"5xx answers to {len(malformed):,} malformed bodies",
                "count",
                our_5xx,
                feast_5xx,
            )
        )
        write_json(measures, args.json)
        console.print(
            f"parity: {n_req:,} random requests, {compared:,} values compared with Feast SDK "
            f"get_online_features + OnlineEngine: {bad} mismatches"
        )
        console.print(
            f"{len(malformed):,} malformed bodies: feast serve {feast_5xx} x 5xx, "
            f"{feast_4xx} x 4xx; skewless serve {our_5xx} x 5xx, {our_4xx} x 4xx"
        )
        print(
            "\n| scenario | metric | feast serve | skewless serve | advantage |\n|---|---|---:|---:|---:|"
        )
        for r in rows:
            fmt = "{:,.0f}" if r.higher_is_better else "{:.2f}"
            print(
                f"| {r.scenario} | {r.metric} | {fmt.format(r.feast)} | {fmt.format(r.ours)} | {r.ratio:.1f}x |"
            )
        if bad or our_5xx:
            sys.exit(1)
    except Exception:
        for log in ("feast_serve.log", "skewless_serve.log"):
            if (tmp / log).exists():
                console.print(f"--- {log}\n" + (tmp / log).read_text()[-3000:])
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        if repo is not None:
            import redis

            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=b"*" + repo.project.encode(), count=5000))
            for s in range(0, len(keys), 5000):
                client.delete(*keys[s : s + 5000])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
