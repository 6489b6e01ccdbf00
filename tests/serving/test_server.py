"""The lookup server against Feast itself: a throwaway Feast repo applied and materialized
into the test Redis by Feast, then our app (in-process through ASGI, and as a real
``skewless serve`` process). The HTTP front itself is tested in test_http.py."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx
import pyarrow.parquet as pq
import pytest

from bench.repos.serving_repo import STATS_FEATURES, DemoRepo
from serving.app import LookupApp
from serving.config import ServeConfig
from store.manifest import Manifest
from tests.support import free_port, start_redis_server
from transforms.errors import TransformError

ROOT = Path(__file__).resolve().parents[2]
STATS_REFS = [f"user_stats:{f}" for f in STATS_FEATURES]


@pytest.fixture(scope="module")
def feast_store(demo: DemoRepo) -> Any:
    from feast import FeatureStore

    return FeatureStore(repo_path=str(demo.path))


def _config(demo: DemoRepo, redis_url: str, **kw: Any) -> ServeConfig:
    return ServeConfig(repo=str(demo.path), redis_url=redis_url, **kw)


LOOP = asyncio.new_event_loop()  # one loop, as in a server: redis.asyncio pools are per loop


def _run(coro: Any) -> Any:
    return LOOP.run_until_complete(coro)


def _post(
    app: LookupApp, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return await c.post(path, content=content, headers=headers or {})

    return _run(go())


def _get(app: LookupApp, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get(path)

    return _run(go())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def test_values_match_feast_plus_transforms(
    demo: DemoRepo, feast_store: Any, redis_url: str
) -> None:
    from bench.repos.serving_features import ARTIFACT, FEATURES
    from transforms.engines.online import OnlineEngine

    rng = random.Random(5)
    ids = [rng.randrange(0, demo.users + 50) for _ in range(300)]  # ~1/9 missing
    amounts: list[float | None] = [
        None if i % 17 == 0 else round(rng.uniform(0, 200), 3) for i in range(len(ids))
    ]
    app = LookupApp(_config(demo, redis_url, max_entities=1000))
    r = _post(
        app,
        "/get-online-features",
        {"feature_service": "payments_v1", "entities": {"user_id": ids, "request_amount": amounts}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    names = body["metadata"]["feature_names"]
    cols = {n: res for n, res in zip(names, body["results"], strict=True)}
    assert names[0] == "user_id" and cols["user_id"]["values"] == ids

    feast = feast_store.get_online_features(
        features=STATS_REFS, entity_rows=[{"user_id": i} for i in ids]
    )
    expected = feast.to_dict()
    from feast.feature_server_utils import convert_response_to_dict

    feast_json = convert_response_to_dict(feast.proto)
    feast_ts = dict(
        zip(feast_json["metadata"]["feature_names"], feast_json["results"], strict=True)
    )
    masked: dict[str, list[Any]] = {}
    for feat in STATS_FEATURES:
        got = cols[feat]
        masked[feat] = []
        for e, uid in enumerate(ids):
            want = expected[feat][e]
            if uid >= demo.users:
                assert got["statuses"][e] == "NOT_FOUND" and got["values"][e] is None
                assert got["event_timestamps"][e] == "1970-01-01T00:00:00Z"
                masked[feat].append(None)
            elif uid in demo.expired:
                assert got["statuses"][e] == "OUTSIDE_MAX_AGE" and got["values"][e] is None
                masked[feat].append(None)
            else:
                assert _same(got["values"][e], want), (feat, uid, got["values"][e], want)
                assert got["statuses"][e] == ("NULL_VALUE" if want is None else "PRESENT")
                assert got["event_timestamps"][e] == feast_ts[feat]["event_timestamps"][e]
                masked[feat].append(want)
    engine = OnlineEngine(FEATURES, ARTIFACT, request_time_only=True)
    rows = [
        {
            "request_amount": amounts[e],
            "avg_amount": masked["avg_amount"][e],
            "txn_count": masked["txn_count"][e],
        }
        for e in range(len(ids))
    ]
    want_t = engine.transform_rows(rows)
    for out in ("amount_vs_avg", "request_amount_z"):
        got_vals = cols[out]["values"]
        assert all(_same(g, w[out]) for g, w in zip(got_vals, want_t, strict=True)), out
        assert cols[out]["statuses"] == ["NULL_VALUE" if v is None else "PRESENT" for v in got_vals]

    # The native endpoint serves the same values, with fingerprints.
    r2 = _post(
        app, "/v1/features/payments_v1", {"entities": {"user_id": ids, "request_amount": amounts}}
    )
    assert r2.status_code == 200
    nat = r2.json()
    for n in names:
        assert nat["features"][n] == cols[n]["values"]
    assert nat["fingerprints"] == FEATURES.fingerprints(ARTIFACT)
    assert nat["statuses"]["avg_amount"] == cols["avg_amount"]["statuses"]
    metrics = _get(app, "/metrics").text
    assert 'skewless_feature_values_total{status="NOT_FOUND"}' in metrics
    _run(app.shutdown())


def test_feature_list_and_full_names_match_feast_shape(
    demo: DemoRepo, feast_store: Any, redis_url: str
) -> None:
    from feast.feature_server_utils import convert_response_to_dict

    refs = ["user_stats:country", "user_stats:risk_score", "user_stats:is_premium"]
    ids = [u for u in range(40) if u not in demo.expired]
    app = LookupApp(_config(demo, redis_url))
    r = _post(
        app,
        "/get-online-features",
        {"features": refs, "entities": {"user_id": ids}, "full_feature_names": True},
    )
    want = convert_response_to_dict(
        feast_store.get_online_features(
            features=refs, entity_rows=[{"user_id": i} for i in ids], full_feature_names=True
        ).proto
    )
    got = r.json()
    # Feast orders a view's features by set iteration (varies per process); clients read
    # metadata.feature_names. We keep request order, entity keys first, as Feast does.
    names = got["metadata"]["feature_names"]
    assert names == ["user_id"] + [f"user_stats__{r.split(':')[1]}" for r in refs]
    assert sorted(names) == sorted(want["metadata"]["feature_names"])
    by_name = dict(zip(want["metadata"]["feature_names"], want["results"], strict=True))
    for name, g in zip(names, got["results"], strict=True):
        w = by_name[name]
        assert g["values"] == w["values"] and g["event_timestamps"] == w["event_timestamps"]
        # Feast says PRESENT for a stored null; we say NULL_VALUE
        assert [
            s if v is not None else "PRESENT"
            for s, v in zip(g["statuses"], g["values"], strict=True)
        ] == w["statuses"]
    _run(app.shutdown())


BAD = [
    (b"{not json", 422),  # 422, 404: the statuses of Feast's server (README)
    (b"[1, 2]", 422),
    ({"feature_service": "nope", "entities": {"user_id": [1]}}, 404),
    ({"features": ["user_stats:nope"], "entities": {"user_id": [1]}}, 400),
    ({"features": ["ghost:avg_amount"], "entities": {"user_id": [1]}}, 404),
    ({"features": ["no_colon"], "entities": {"user_id": [1]}}, 400),
    ({"features": [], "entities": {"user_id": [1]}}, 400),
    ({"features": ["user_stats:avg_amount"], "entities": {"other": [1]}}, 400),
    ({"features": ["user_stats:avg_amount"], "entities": {"user_id": ["1.5"]}}, 400),
    ({"features": ["user_stats:avg_amount"], "entities": {"user_id": [True]}}, 400),
    ({"features": ["user_stats:avg_amount"], "entities": {"user_id": [2**70]}}, 400),
    ({"features": ["user_stats:avg_amount"], "entities": {"user_id": 1}}, 422),
    ({"features": ["user_stats:avg_amount"], "entities": {"user_id": []}}, 400),
    ({"features": ["user_stats:avg_amount"], "entities": []}, 422),
    ({"feature_service": "payments_v1", "entities": {"user_id": [1]}}, 404),
    (
        {"feature_service": "payments_v1", "entities": {"user_id": [1], "request_amount": ["x"]}},
        400,
    ),
    (
        {
            "feature_service": "payments_v1",
            "entities": {"user_id": [1, 2], "request_amount": [1.0]},
        },
        400,
    ),
    ({"feature_service": 5, "entities": {"user_id": [1]}}, 422),
    (
        {
            "features": ["user_stats:avg_amount"],
            "entities": {"user_id": [1]},
            "full_feature_names": "maybe",
        },
        422,
    ),
    ({"features": ["user_stats:avg_amount"], "entities": {"user_id": list(range(11))}}, 413),
    (
        {"features": ["user_stats:avg_amount"], "entities": {"user_id": [1], "pad": ["x" * 5000]}},
        413,
    ),
]


def test_bad_input_is_4xx_json(demo: DemoRepo, redis_url: str) -> None:
    app = LookupApp(_config(demo, redis_url, max_entities=10, max_body_bytes=4096))
    for body, code in BAD:
        r = _post(app, "/get-online-features", body)
        assert r.status_code == code, (body, r.status_code, r.text)
        data = r.json()
        assert set(data) == {"error", "field"} and data["error"], body
    r = _post(app, "/v1/features/nope", {"entities": {"user_id": [1]}})
    assert r.status_code == 404 and r.json()["field"] == "feature_service"
    assert _post(app, "/nowhere", {}).status_code == 404
    assert _get(app, "/get-online-features").status_code == 405
    assert _get(app, "/openapi.json").json()["paths"]["/get-online-features"]
    _run(app.shutdown())


def test_replies_answered_together_match_one_by_one(
    demo: DemoRepo, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests whose Redis replies arrive together run their request-time transforms as
    one batch (LookupApp.complete_many, as the HTTP front does): every response is
    byte-identical to answering the request alone, and a request whose own inputs make a
    transform fail gets its 422 while the rest of the batch is unaffected."""
    app = LookupApp(_config(demo, redis_url))
    rng = random.Random(7)
    bodies: list[dict[str, Any]] = []
    for _ in range(40):  # unknown users (NOT_FOUND), expired ones, null request data
        users = [rng.randrange(demo.users + 20) for _ in range(rng.choice([1, 1, 3]))]
        amounts = [rng.choice([None, round(rng.uniform(1, 300), 2)]) for _ in users]
        body = {"entities": {"user_id": users, "request_amount": amounts}}
        bodies.append({"feature_service": "payments_v1", **body})
    bodies.insert(5, {"features": STATS_REFS, "entities": {"user_id": [1, 2]}})

    def answer(batched: bool) -> list[tuple[int, bytes, bytes]]:
        async def go() -> list[tuple[int, bytes, bytes]]:
            pending = [
                app.handle("POST", "/get-online-features", None, json.dumps(b).encode())
                for b in bodies
            ]
            await asyncio.gather(*(p.future for p in pending))  # type: ignore[union-attr]
            if batched:
                return app.complete_many(pending)  # type: ignore[arg-type]
            return [p.complete() for p in pending]  # type: ignore[union-attr]

        return _run(go())

    alone = answer(False)
    assert all(status == 200 for status, _, _ in alone)
    assert answer(True) == alone

    ((loaded, _),) = app.plans.for_service("payments_v1", False).transform_sets
    runner = loaded.engine.runner
    real = runner.run_python_columns

    def picky(columns: dict[str, list[Any]], n: int) -> dict[str, list[Any]]:
        if 13.13 in columns["request_amount"]:
            raise TransformError("request_amount 13.13 refused", "request_amount")
        return real(columns, n)

    monkeypatch.setattr(runner, "run_python_columns", picky)
    bodies[8]["entities"]["request_amount"][0] = 13.13
    together = answer(True)
    status, _, payload = together[8]
    assert status == 422 and json.loads(payload)["field"] == "request_amount"
    assert together[:8] + together[9:] == alone[:8] + alone[9:]
    _run(app.shutdown())


def test_single_entity_decode_equals_columnar_decode(demo: DemoRepo, redis_url: str) -> None:
    """The one-entity fast path of decode_views gives the columnar path's values and
    statuses for present, null, missing and expired rows."""
    from serving.decode import _decode_views_columns, _decode_views_one
    from serving.lookup import split_replies

    app = LookupApp(_config(demo, redis_url))
    rng = random.Random(3)
    users = [rng.randrange(demo.users + 40) for _ in range(300)] + sorted(demo.expired)
    now = time.time_ns()
    seen: set[int] = set()

    async def lookup(body: dict[str, Any]) -> Any:
        pending = app.handle("POST", "/get-online-features", None, json.dumps(body).encode())
        assert not isinstance(pending, tuple), pending
        await pending.future
        return pending

    for user in users:
        for body in (
            {
                "feature_service": "payments_v1",
                "entities": {"user_id": [user], "request_amount": [1.0]},
            },
            {"features": STATS_REFS, "entities": {"user_id": [user]}},
        ):
            pending = _run(lookup(body))
            plan, replies = pending.lookup.plan, split_replies(pending.future.result(), 1)
            fast = _decode_views_one(plan, replies, now)
            assert fast == _decode_views_columns(plan, 1, replies, now), (body, user)
            seen.update(s[0] for view in fast for _, stats, _ in view for s in stats)
    assert seen == {1, 2, 3, 4}  # PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE all met
    _run(app.shutdown())


def test_manifest_is_read_back_from_the_feast_registry(demo: DemoRepo) -> None:
    """The demo repo is a hand-written Feast repo (a pandas ODFV, tagged services); its
    serving manifest comes from Feast's registry (pipelines.apply.manifest_from_registry)."""
    from bench.repos.serving_features import ARTIFACT, FEATURES

    m = Manifest.load(demo.path)
    view = m.views["user_stats"]
    assert view.entities == {"user_id": "int64"} and view.features == STATS_FEATURES
    assert view.ttl_seconds == 7 * 86_400
    rt = m.request_transforms["payment_features"]
    assert rt.feature_set == "bench.repos.serving_features:FEATURES"
    assert rt.request_schema == {"request_amount": "float64"}
    assert rt.view_inputs == {  # only what the transforms read, not the whole view
        "avg_amount": "user_stats:avg_amount",
        "txn_count": "user_stats:txn_count",
    }
    assert rt.artifact_hash == ARTIFACT.content_hash
    service = m.services["payments_v1"]
    assert service.features == STATS_REFS + [
        "payment_features:amount_vs_avg",
        "payment_features:request_amount_z",
    ]
    assert service.artifact_hashes == {"payments": ARTIFACT.content_hash}
    assert service.fingerprints == rt.fingerprints == FEATURES.fingerprints(ARTIFACT)
    assert m.services["stats_v1"].artifact_hashes == {}


def test_bearer_token(demo: DemoRepo, redis_url: str) -> None:
    app = LookupApp(_config(demo, redis_url, auth_token="s3cret"))
    body = {"features": ["user_stats:avg_amount"], "entities": {"user_id": [1]}}
    assert _post(app, "/get-online-features", body).status_code == 401
    assert (
        _post(app, "/get-online-features", body, {"authorization": "Bearer nope"}).status_code
        == 401
    )
    assert (
        _post(app, "/get-online-features", body, {"authorization": "Bearer s3cret"}).status_code
        == 200
    )
    assert _get(app, "/health").status_code == 200  # probes need no token
    _run(app.shutdown())


def test_feature_log_parquet(demo: DemoRepo, redis_url: str, tmp_path: Path) -> None:
    app = LookupApp(_config(demo, redis_url, log_dir=str(tmp_path / "logs"), log_rows_per_file=5))
    requests = [([1, 2, 999], [10.0, None, 3.5]), ([4], [7.25]), ([5, 6], [1.0, 2.0])]
    for ids, amounts in requests:
        r = _post(
            app,
            "/get-online-features",
            {
                "feature_service": "payments_v1",
                "entities": {"user_id": ids, "request_amount": amounts},
            },
        )
        assert r.status_code == 200
    _run(app.shutdown())  # graceful shutdown flushes the queue
    files = sorted((tmp_path / "logs" / "payments_v1").glob("part-*.parquet"))
    assert files and not list((tmp_path / "logs").rglob(".*.tmp"))
    table = (
        pq.read_table(files).to_pylist()
        if len(files) == 1
        else [row for f in files for row in pq.read_table(f).to_pylist()]
    )
    assert [row["user_id"] for row in table] == [1, 2, 999, 4, 5, 6]
    assert [row["request_amount"] for row in table] == [10.0, None, 3.5, 7.25, 1.0, 2.0]
    assert table[2]["avg_amount__status"] == "NOT_FOUND" and table[2]["avg_amount"] is None
    assert set(json.loads(table[0]["fingerprints"])) == {"amount_vs_avg", "request_amount_z"}
    assert str(pq.read_schema(files[0]).field("request_ts").type) == "timestamp[us, tz=UTC]"
    assert app.metrics.log_rows._value.get() == 6


def test_log_sampling_and_full_queue_never_fail(
    demo: DemoRepo, redis_url: str, tmp_path: Path
) -> None:
    app = LookupApp(_config(demo, redis_url, log_dir=str(tmp_path), log_sample_rate=0.0))
    assert (
        _post(
            app, "/get-online-features", {"features": STATS_REFS, "entities": {"user_id": [1]}}
        ).status_code
        == 200
    )
    _run(app.shutdown())
    assert not list(tmp_path.rglob("*.parquet"))
    app = LookupApp(_config(demo, redis_url, log_dir=str(tmp_path), log_queue=1))
    assert app.logger is not None
    app.logger.queue.put_nowait(None)  # the writer stops: the queue fills, requests go on
    app.logger._thread.join(5)
    for _ in range(3):
        r = _post(
            app, "/get-online-features", {"features": STATS_REFS, "entities": {"user_id": [1]}}
        )
        assert r.status_code == 200
    assert app.logger.dropped >= 2
    _run(app.shutdown())


def _copy_repo(demo: DemoRepo, dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(demo.path / "skewless_manifest.json", dest)
    shutil.copytree(demo.path / "artifacts", dest / "artifacts")
    return dest


def test_refuses_drifted_artifact_or_fingerprint(demo: DemoRepo, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from transforms.errors import ArtifactError

    for case, edit in [
        ("hash", lambda rt: replace(rt, artifact_hash="0" * 64)),
        (
            "fingerprint",
            lambda rt: replace(rt, fingerprints={**rt.fingerprints, "amount_vs_avg": "f" * 64}),
        ),
    ]:
        repo = _copy_repo(demo, tmp_path / case)
        m = Manifest.load(repo)
        m = replace(m, request_transforms={k: edit(v) for k, v in m.request_transforms.items()})
        m.save(repo)
        with pytest.raises(ArtifactError, match=case):
            LookupApp(ServeConfig(repo=str(repo)))
        result = CliRunner().invoke(_cli(), ["serve", "--repo", str(repo)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("skewless: error:") and case in lines[0]


def _cli() -> Any:
    import typer

    from cli.commands_serve import register

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """skewless (test)."""

    register(app)
    return app


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_down_503_then_recovers(demo: DemoRepo) -> None:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="skewless-redis-")
    proc = start_redis_server(port, workdir)
    body = {"features": STATS_REFS, "entities": {"user_id": [1, 2]}}
    try:
        app = LookupApp(
            ServeConfig(
                repo=str(demo.path), redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_ms=200
            )
        )

        async def scenario() -> list[tuple[int, float]]:
            out = []
            transport = httpx.ASGITransport(app=cast(Any, app))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.post("/get-online-features", json=body)
                out.append((r.status_code, 0.0))
                assert r.json()["results"][1]["statuses"] == ["NOT_FOUND", "NOT_FOUND"]
                proc.terminate()
                proc.wait(10)
                for path in ("/get-online-features", "/ready"):
                    t0 = time.perf_counter()
                    r = await c.post(path, json=body) if path != "/ready" else await c.get(path)
                    out.append((r.status_code, time.perf_counter() - t0))
                    assert set(r.json()) >= ({"error", "field"} if path != "/ready" else {"ready"})
                restarted = start_redis_server(port, workdir)
                try:
                    r = await c.post("/get-online-features", json=body)
                    out.append((r.status_code, 0.0))
                    r = await c.get("/ready")
                    out.append((r.status_code, 0.0))
                finally:
                    await app.shutdown()
                    restarted.terminate()
                    restarted.wait(10)
            return out

        codes = asyncio.run(scenario())
        assert [c for c, _ in codes] == [200, 503, 503, 200, 200]
        assert all(t < 1.0 for _, t in codes[1:3])
        assert "skewless_redis_errors_total 1.0" in app.metrics.render().decode()
    finally:
        if proc.poll() is None:
            proc.terminate()
        shutil.rmtree(workdir, ignore_errors=True)


def test_serve_process_answers_and_never_imports_heavy_modules(
    demo: DemoRepo, redis_url: str
) -> None:
    """Real process: `skewless serve` comes up, answers, and never imports feast."""
    port = free_port()
    script = (
        "import sys, typer\n"
        "from cli.commands_serve import register\n"
        "app = typer.Typer()\n"
        "app.callback()(lambda: None)\n"
        "register(app)\n"
        "app()\n"
    )
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "serve", "--repo", str(demo.path), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        up = None
        while time.monotonic() - t0 < 10:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.2).status_code == 200:
                    up = time.monotonic() - t0
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        assert up is not None, "server did not come up"
        r = httpx.post(
            f"http://127.0.0.1:{port}/get-online-features",
            json={"features": ["user_stats:avg_amount"], "entities": {"user_id": [0]}},
        )
        assert r.status_code == 200 and r.json()["metadata"]["feature_names"] == [
            "user_id",
            "avg_amount",
        ]
        # start-up time is measured in bench/serving.py, not asserted in a test
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert b"Traceback" not in out, out.decode()


def test_no_heavy_imports(demo: DemoRepo, redis_url: str, tmp_path: Path) -> None:
    """The serving process (app built, logger on) never imports feast, pandas, Spark, Beam."""
    script = (
        "import sys\n"
        "from cli.commands_serve import register\n"
        "from serving.app import LookupApp\n"
        "from serving.config import ServeConfig\n"
        "import serving.server, serving.http\n"
        f"app = LookupApp(ServeConfig(repo={str(demo.path)!r}, log_dir={str(tmp_path)!r}))\n"
        "app.logger.close()\n"
        "print(sorted(m for m in ('feast', 'pandas', 'pyspark', 'apache_beam') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "REDIS_URL": redis_url},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
