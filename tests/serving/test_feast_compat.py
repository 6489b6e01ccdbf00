"""Feast clients change nothing: a corpus of Feast request bodies sent to ``feast serve`` and
``skewless serve`` over the same Redis data, the forms of ids and flags Feast accepts, the
statuses it gives, wrong key types, and error messages that stay bounded on any input."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from bench.repos.serving_repo import STATS_FEATURES, DemoRepo
from serving.app import LookupApp, feature_names_flag, is_json_type
from serving.config import ServeConfig
from serving.entities import key_column
from serving.errors import InvalidBody, describe
from tests.support import free_port
from transforms.errors import RequestError

ROOT = Path(__file__).resolve().parents[2]
REFS = ["user_stats:txn_count", "user_stats:country", "user_stats:avg_amount"]
ALL_REFS = [f"user_stats:{f}" for f in STATS_FEATURES]


def _config(demo: DemoRepo, redis_url: str, **kw: Any) -> ServeConfig:
    return ServeConfig(repo=str(demo.path), redis_url=redis_url, **kw)


async def _post_all(
    app: LookupApp, requests: list[tuple[bytes, dict[str, str]]]
) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        out = [await c.post("/get-online-features", content=b, headers=h) for b, h in requests]
    await app.shutdown()
    return out


def _in_process(
    demo: DemoRepo, redis_url: str, requests: list[tuple[bytes, dict[str, str]]], **kw: Any
) -> list[httpx.Response]:
    return asyncio.run(_post_all(LookupApp(_config(demo, redis_url, **kw)), requests))


def _body(entities: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"features": REFS, "entities": entities, **extra}).encode()


# ----------------------------------------------------------------- bounded messages


def test_deep_nesting_at_every_depth_is_a_4xx_json_answer(demo: DemoRepo, redis_url: str) -> None:
    """The issue's body at depths 1..2000: depth 1 is the valid ``[1]``; every other depth
    is a 4xx JSON error, never a 500 from formatting the message (no recursion)."""
    head, tail = b'{"features":["user_stats:txn_count"],"entities":{"user_id":', b"}}"
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (head + b"[" * d + b"1" + b"]" * d + tail, {}) for d in range(1, 2001)
    ]
    answers = _in_process(demo, redis_url, bodies)
    assert answers[0].status_code == 200
    for depth, r in enumerate(answers[1:], start=2):
        assert 400 <= r.status_code < 500, (depth, r.status_code, r.text[:200])
        data = r.json()
        assert set(data) == {"error", "field"} and len(data["error"]) < 300, depth
    deep = answers[979 - 1].json()  # depth 979: parsed, refused by the key check
    assert deep["field"] == "user_id" and "array of 1 item" in deep["error"]


def test_messages_about_caller_values_are_bounded(demo: DemoRepo, redis_url: str) -> None:
    long = "x" * 100_000
    nested: Any = 1
    for _ in range(5000):  # deeper than Python's recursion limit, built without JSON
        nested = [nested]
    assert describe(nested) == "array of 1 item"
    assert describe(long).endswith("...(100000 characters)") and len(describe(long)) < 80
    assert describe({"a": 1, "b": 2}) == "object of 2 keys"
    assert describe(2**300) == "integer of 301 bits"
    bodies = [
        json.dumps({"features": [long + ":x"], "entities": {"user_id": [1]}}).encode(),
        json.dumps({"features": ["user_stats:" + long], "entities": {"user_id": [1]}}).encode(),
        json.dumps({"features": REFS, "entities": {"user_id": [long]}}).encode(),
        json.dumps({"features": REFS, "entities": {long: 5}}).encode(),
        json.dumps(
            {
                "feature_service": "payments_v1",
                "entities": {"user_id": [1], "request_amount": [long]},
            }
        ).encode(),
        json.dumps({"feature_service": long, "entities": {"user_id": [1]}}).encode(),
    ]
    answers = _in_process(demo, redis_url, [(b, {}) for b in bodies], max_body_bytes=1 << 20)
    for r in answers:
        assert 400 <= r.status_code < 500 and len(r.content) < 600, (r.status_code, r.text[:300])


# ------------------------------------------------------------ accepted forms, exactly


def test_int_key_forms_feast_accepts_are_converted_exactly() -> None:
    assert key_column("user_id", "int64", ["8", 5.0, 1e3, " 9", "+7", "08", 3]) == [
        8,
        5,
        1000,
        9,
        7,
        8,
        3,
    ]
    col = [1, 2, 3]
    assert key_column("user_id", "int64", col) is col  # the fast path returns the column
    assert key_column("user_id", "int64", [float(2**53)]) == [2**53]
    assert key_column("day", "int32", [2**31 - 1, "-5"]) == [2**31 - 1, -5]


@pytest.mark.parametrize(
    ("type_name", "value", "got"),
    [
        ("int64", 5.5, "float 5.5 (not an exact integer)"),
        ("int64", "5.5", "string '5.5' (not an integer)"),
        ("int64", "1e3", "string '1e3' (not an integer)"),
        ("int64", True, "boolean true"),
        ("int64", None, "null"),
        ("int64", [8], "array of 1 item"),
        ("int64", 2**63, "integer 9223372036854775808 (outside the int64 range)"),
        ("int64", "9223372036854775808", "(outside the int64 range)"),
        ("int64", 1e17, "float 1e+17 (not an exact integer)"),
        ("int64", float("nan"), "float nan (not an exact integer)"),
        ("int32", 2**31, "integer 2147483648 (outside the int32 range)"),
        ("string", 8, "integer 8"),
        ("string", 8.5, "float 8.5"),
        ("string", False, "boolean false"),
    ],
)
def test_wrong_key_types_are_an_error_naming_key_and_types(
    type_name: str, value: Any, got: str
) -> None:
    with pytest.raises(RequestError) as info:
        key_column("k", type_name, ["1" if type_name == "string" else 1, value])
    message = str(info.value)
    assert message.startswith(f"entity key 'k' expects {type_name}, got "), message
    assert got in message and info.value.field == "k"


def test_flags_and_media_types_as_feast_reads_them() -> None:
    for yes in (True, 1, 1.0, "true", "TRUE", "True", "1", "yes", "on", "t", "Y"):
        assert feature_names_flag(yes) is True, yes
    for no in (False, 0, 0.0, "false", "0", "no", "off", "f", "N"):
        assert feature_names_flag(no) is False, no
    for bad in (None, 2, 0.5, "", " true", "2", "maybe", [True], {"a": 1}):
        with pytest.raises(InvalidBody):
            feature_names_flag(bad)
    for ok in (b"application/json", b"Application/JSON; charset=utf-8", b"application/vnd.x+json"):
        assert is_json_type(ok), ok
    for bad_type in (b"text/plain", b"application/x-www-form-urlencoded", b"json", b""):
        assert not is_json_type(bad_type), bad_type


def test_coerced_ids_flags_and_bearer_scheme_in_process(demo: DemoRepo, redis_url: str) -> None:
    plain = _body({"user_id": [8, 5, 1000]})
    same = [
        _body({"user_id": ["8", 5.0, 1e3]}),
        _body({"user_id": [" 8", "5", 1000.0]}),
        _body({"user_id": [8, 5, 1000]}, full_feature_names="false"),
        _body({"user_id": [8, 5, 1000]}, full_feature_names=0),
    ]
    full = [_body({"user_id": [8, 5, 1000]}, full_feature_names=v) for v in (True, "true", 1)]
    headers = [{"authorization": a} for a in ("bearer s3cret", "BEARER  s3cret", "Bearer s3cret")]
    requests = [(plain, headers[2])] + [(b, headers[2]) for b in same + full]
    requests += [(plain, h) for h in headers[:2]]
    requests += [(plain, {"authorization": a}) for a in ("Basic s3cret", "Bearer", "s3cret")]
    answers = _in_process(demo, redis_url, requests, auth_token="s3cret")
    want = answers[0].json()
    assert want["results"][0]["values"] == [8, 5, 1000]
    for r in answers[1 : 1 + len(same)]:
        assert r.status_code == 200 and r.json() == want, r.text
    for r in answers[1 + len(same) : 1 + len(same) + len(full)]:
        body = r.json()
        assert body["metadata"]["feature_names"][1:] == [ref.replace(":", "__") for ref in REFS]
        assert body["results"] == want["results"]
    assert [r.status_code for r in answers[-5:]] == [200, 200, 401, 401, 401]


def test_content_type_as_feast(demo: DemoRepo, redis_url: str) -> None:
    body = _body({"user_id": [8]})
    cases = {
        "application/json": 200,
        "application/json; charset=utf-8": 200,
        "application/vnd.feast+json": 200,
        "text/plain": 422,
        "application/x-www-form-urlencoded": 422,
    }
    answers = _in_process(demo, redis_url, [(body, {"content-type": ct}) for ct in cases])
    assert [r.status_code for r in answers] == list(cases.values())
    assert answers[3].json()["field"] == "content-type"


# ------------------------------------------------------ feast serve vs skewless serve


@dataclass(frozen=True)
class Case:
    """A recorded request body, the status Feast's server gives it and ours; ``readme``
    quotes the row of the README's table that lists a deliberate difference."""

    name: str
    body: Any
    feast: int
    ours: int
    readme: str | None = None
    feast_body: Any = None  # when Feast's answer to ``body`` is wrong: a body it answers right


def _corpus() -> list[Case]:
    svc = "payments_v1"
    ok = [
        Case("ints", {"features": ALL_REFS, "entities": {"user_id": [8, 5, 13, 1000]}}, 200, 200),
        Case("int as string", {"features": REFS, "entities": {"user_id": ["8", "5"]}}, 200, 200),
        Case(
            "int as padded string",
            {"features": REFS, "entities": {"user_id": [" 8", "+5"]}},
            200,
            200,
        ),
        Case("int as leading zeros", {"features": REFS, "entities": {"user_id": ["08"]}}, 200, 200),
        Case("int as float", {"features": REFS, "entities": {"user_id": [5.0, 1e1]}}, 200, 200),
        Case("int as exponent", {"features": REFS, "entities": {"user_id": [1e3]}}, 200, 200),
        Case("mixed forms", {"features": REFS, "entities": {"user_id": [8, "9", 10.0]}}, 200, 200),
        Case("int64 min", {"features": REFS, "entities": {"user_id": [-(2**63)]}}, 200, 200),
        Case("extra field", {"features": REFS, "entities": {"user_id": [8]}, "zz": 1}, 200, 200),
        Case(
            "extra entity column",
            {"features": REFS, "entities": {"user_id": [8], "x": [1]}},
            200,
            200,
        ),
    ]
    for flag in (True, False, "true", "false", "TRUE", "yes", "on", "t", "n", 1, 0, 1.0, 0.0):
        body: dict[str, Any] = {
            "features": REFS,
            "entities": {"user_id": [8, 2]},
            "full_feature_names": flag,
        }
        ok.append(Case(f"full_feature_names={flag!r}", body, 200, 200))
    for amount in (10.0, 10, None, 0.0):
        body = {
            "feature_service": svc,
            "entities": {"user_id": [8, 5], "request_amount": [amount, 3.5 if amount != 10 else 3]},
        }
        ok.append(Case(f"service, amount {amount!r}", body, 200, 200))
    ok.append(
        Case(
            "service ignores features",
            {"feature_service": "stats_v1", "features": REFS[:1], "entities": {"user_id": [8]}},
            200,
            200,
        )
    )
    ok.append(
        Case(
            "service, id as string",
            {
                "feature_service": svc,
                "full_feature_names": True,
                "entities": {"user_id": ["8"], "request_amount": [2.5]},
            },
            200,
            200,
        )
    )

    e = {"user_id": [8]}
    bad = [
        # Feast reads a float64 request column as int64 when its first value is an int
        Case(
            "request data int then float",
            {"feature_service": svc, "entities": {"user_id": [8, 5], "request_amount": [10, 3.5]}},
            200,
            200,
            "an int, then a float with a fraction",
            {
                "feature_service": svc,
                "entities": {"user_id": [8, 5], "request_amount": [10.0, 3.5]},
            },
        ),
        # Feast fails on the name collision; we answer the reference once
        Case(
            "duplicate refs",
            {"features": REFS + REFS[:1], "entities": {"user_id": [8]}},
            500,
            200,
            "the same reference twice",
        ),
        # Feast answers 200 with a lossy conversion; we refuse
        Case(
            "int as fraction",
            {"features": REFS, "entities": {"user_id": [5.5]}},
            200,
            400,
            "a float with a fraction (`5.5`)",
        ),
        Case(
            "int as boolean",
            {"features": REFS, "entities": {"user_id": [True]}},
            200,
            400,
            "int key as a boolean",
        ),
        Case(
            "int as huge float",
            {"features": REFS, "entities": {"user_id": [1e17]}},
            200,
            400,
            "a float beyond 2^53",
        ),
        # Feast answers 4xx: the same status
        Case("malformed JSON", b'{"features": [', 422, 422, "malformed JSON"),
        Case("array body", b"[1, 2]", 422, 422, "not a JSON object"),
        Case("no entities", {"features": REFS}, 422, 422, "`entities` missing"),
        Case(
            "entities not arrays",
            {"features": REFS, "entities": {"user_id": 8}},
            422,
            422,
            "not an object of arrays",
        ),
        Case(
            "features of ints",
            {"features": [1], "entities": e},
            422,
            422,
            "`features` not an array",
        ),
        Case(
            "service not a string",
            {"feature_service": 5, "entities": e},
            422,
            422,
            "JSON object of its request schema",
        ),
        Case(
            "flag 2",
            {"features": REFS, "entities": e, "full_feature_names": 2},
            422,
            422,
            "an invalid `full_feature_names`",
        ),
        Case(
            "flag null",
            {"features": REFS, "entities": e, "full_feature_names": None},
            422,
            422,
            "an invalid `full_feature_names`",
        ),
        Case(
            "flag ' true'",
            {"features": REFS, "entities": e, "full_feature_names": " true"},
            422,
            422,
            "an invalid `full_feature_names`",
        ),
        Case(
            "unknown view",
            {"features": ["nope:x"], "entities": e},
            404,
            404,
            "404 for an unknown feature view",
        ),
        Case(
            "unknown service",
            {"feature_service": "nope", "entities": e},
            404,
            404,
            "unknown feature view or feature service",
        ),
        Case(
            "no request data",
            {"feature_service": svc, "entities": e},
            404,
            404,
            "missing request data",
        ),
        # Feast answers 500: HTTP semantics
        Case(
            "int as '5.5'",
            {"features": REFS, "entities": {"user_id": ["5.5"]}},
            500,
            400,
            'int key `"5.5"`',
        ),
        Case(
            "int as 'abc'",
            {"features": REFS, "entities": {"user_id": ["abc"]}},
            500,
            400,
            '`"abc"`',
        ),
        Case(
            "int as null", {"features": REFS, "entities": {"user_id": [None]}}, 500, 400, "`null`"
        ),
        Case(
            "int as array", {"features": REFS, "entities": {"user_id": [[8]]}}, 500, 400, "an array"
        ),
        Case(
            "int beyond int64",
            {"features": REFS, "entities": {"user_id": [2**63]}},
            500,
            400,
            "outside int64",
        ),
        Case(
            "missing key",
            {"features": REFS, "entities": {"other": [8]}},
            500,
            400,
            "missing join key",
        ),
        Case(
            "unequal lists",
            {"features": REFS, "entities": {"user_id": [8], "x": [1, 2]}},
            500,
            400,
            "lists of unequal length",
        ),
        Case(
            "empty lists", {"features": REFS, "entities": {"user_id": []}}, 500, 400, "no entities"
        ),
        Case("empty features", {"features": [], "entities": e}, 500, 400, "empty `features`"),
        Case(
            "ref without colon",
            {"features": ["user_stats"], "entities": e},
            500,
            400,
            "a reference without `:`",
        ),
        Case(
            "unknown feature",
            {"features": ["user_stats:nope"], "entities": e},
            500,
            400,
            "an unknown feature of a known view",
        ),
        Case(
            "request data as string",
            {"feature_service": svc, "entities": {"user_id": [8], "request_amount": ["10.5"]}},
            500,
            400,
            "request data of another type",
        ),
    ]
    return ok + bad


def _readme_differences() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("**Differences from Feast's feature server.**")
    return " ".join(text[start : text.index("\n**", start + 10)].split())


def _wait_up(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server on {port} exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server on {port} did not answer /health within {timeout_s}s")


@pytest.fixture(scope="module")
def servers(
    demo: DemoRepo, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int]]:
    """One ``feast serve`` (Feast's own CLI, as bench/serving.py starts it) and one
    ``skewless serve`` over the demo repo's Redis data: (feast port, our port)."""
    logs = tmp_path_factory.mktemp("serve_logs")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}
    feast_port, our_port = free_port(), free_port()
    feast_bin = str(Path(sys.executable).parent / "feast")
    serve = (
        "import typer\nfrom cli.commands_serve import register\napp = typer.Typer()\n"
        "app.callback()(lambda: None)\nregister(app)\napp()\n"
    )
    feast_cmd = [
        feast_bin,
        "-c",
        str(demo.path),
        "serve",
        "-h",
        "127.0.0.1",
        "-p",
        str(feast_port),
        "--no-access-log",
    ]
    our_cmd = [
        sys.executable,
        "-c",
        serve,
        "serve",
        "--repo",
        str(demo.path),
        "--port",
        str(our_port),
    ]
    procs = [
        subprocess.Popen(feast_cmd, cwd=demo.path, env=env, stdout=subprocess.DEVNULL,
                         stderr=open(logs / "feast.log", "wb")),  # noqa: SIM115
        subprocess.Popen(our_cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=open(logs / "skewless.log", "wb")),  # noqa: SIM115
    ]  # fmt: skip
    try:
        _wait_up(our_port, procs[1], 30)
        _wait_up(feast_port, procs[0], 120)
        yield feast_port, our_port
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _send(client: httpx.Client, port: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        f"http://127.0.0.1:{port}/get-online-features",
        content=content,
        headers={"content-type": "application/json", "connection": "close"},
    )


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _assert_same_answer(case: Case, feast: dict[str, Any], ours: dict[str, Any]) -> None:
    """Equal values column by column (by name: Feast orders a service's columns in no fixed
    order), except where our status says why ours is null (the README's status rows)."""
    f_cols = dict(zip(feast["metadata"]["feature_names"], feast["results"], strict=True))
    o_cols = dict(zip(ours["metadata"]["feature_names"], ours["results"], strict=True))
    assert sorted(f_cols) == sorted(o_cols), case.name
    assert list(o_cols)[0] == list(f_cols)[0] == "user_id"
    n = len(o_cols["user_id"]["values"])
    stale = {  # entities whose row is older than the ttl: every value of theirs is null
        e
        for col in o_cols.values()
        for e, s in enumerate(col["statuses"])
        if s == "OUTSIDE_MAX_AGE"
    }
    for name, col in o_cols.items():
        for e in range(n):
            got, want = col["values"][e], f_cols[name]["values"][e]
            if e in stale and name != "user_id":
                assert got is None, (case.name, name, e)
                continue
            assert _same_value(got, want), (case.name, name, e, got, want)
            status = col["statuses"][e]
            assert status in ("PRESENT", "NOT_FOUND", "NULL_VALUE"), (case.name, name, status)
            assert (status == "PRESENT") == (got is not None) or name == "user_id"


def test_feast_corpus_against_feast_serve(servers: tuple[int, int], demo: DemoRepo) -> None:
    feast_port, our_port = servers
    corpus = _corpus()
    assert 13 in demo.expired  # the corpus reads one stale row
    listed = _readme_differences()
    seen_stale = False
    answers = []
    with httpx.Client(timeout=60) as client:
        for case in corpus:
            feast_body = case.body if case.feast_body is None else case.feast_body
            answers.append(
                (_send(client, feast_port, feast_body), _send(client, our_port, case.body))
            )
    statuses = [
        (c.name, f.status_code, o.status_code) for c, (f, o) in zip(corpus, answers, strict=True)
    ]
    assert statuses == [(c.name, c.feast, c.ours) for c in corpus]
    for case, (f, o) in zip(corpus, answers, strict=True):
        if case.feast == 200 == case.ours:
            ours = o.json()
            _assert_same_answer(case, f.json(), ours)
            seen_stale |= any("OUTSIDE_MAX_AGE" in c["statuses"] for c in ours["results"])
        elif case.ours != 200:
            assert set(o.json()) == {"error", "field"}, case.name
        if case.feast != case.ours or case.feast >= 400:
            assert case.readme is not None, f"{case.name}: a difference the README must list"
            assert case.readme in listed, f"README's table does not list: {case.readme!r}"
    assert seen_stale
    assert sum(c.feast == 200 == c.ours for c in corpus) >= 25


def test_non_json_content_type_as_feast_serve(
    servers: tuple[int, int], demo: DemoRepo, redis_url: str
) -> None:
    """Feast refuses a body sent as text/plain or a form (422): so does the app (the status
    comes from :meth:`LookupApp.handle` given the header)."""
    feast_port, _ = servers
    body = _body({"user_id": [8]})
    types = ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"]
    with httpx.Client(timeout=60) as client:
        feast = [
            client.post(
                f"http://127.0.0.1:{feast_port}/get-online-features",
                content=body,
                headers={"content-type": t},
            ).status_code
            for t in types
        ]
    ours = _in_process(demo, redis_url, [(body, {"content-type": t}) for t in types])
    assert feast == [r.status_code for r in ours] == [422, 422, 200]
    assert re.search(r"Content-Type 'text/plain' is not JSON", ours[0].json()["error"])
