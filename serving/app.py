"""The online lookup handler: routing, auth, lookups and JSON for every endpoint.

``skewless serve`` runs it behind its own HTTP front (:mod:`serving.http`, httptools on
uvloop) through :meth:`LookupApp.handle`; the same object is also an ASGI app, so it can be
mounted under any ASGI server or driven in-process by ``httpx.ASGITransport`` in tests.

Endpoints
---------
``POST /get-online-features``
    Feast's feature-server API, byte-for-byte the same JSON shapes, so Feast HTTP clients
    work unchanged. Request: ``{"features": ["view:feature", ...]}`` or
    ``{"feature_service": "name"}``, ``"entities": {"key": [1, 2], "request_field":
    [..]}`` (request data rides in ``entities``, as in Feast) and ``"full_feature_names"``.
    Response: ``{"metadata": {"feature_names": [...]}, "results": [{"values": [...],
    "statuses": [...], "event_timestamps": [...]}, ...]}``, entity keys first, then the
    features (view features grouped by view, then on-demand outputs), values encoded like
    Feast's ``convert_response_to_dict`` (NaN/inf as strings, bytes base64, unix timestamps
    as epoch seconds, event timestamps RFC 3339 with Feast's adaptive precision). Statuses
    follow :mod:`serving.decode` (stricter than Feast: NOT_FOUND, NULL_VALUE,
    OUTSIDE_MAX_AGE).

``POST /v1/features/{feature_service}``
    The compact native form. Request: ``{"entities": {...}}`` (same as above, optional
    ``"full_feature_names"``). Response::

        {"feature_service": "payments_v1", "n": 2,
         "features": {"key": [1, 2], "avg_amount": [3.5, null], ...},
         "statuses": {"avg_amount": ["PRESENT", "NOT_FOUND"]},   # only non-all-PRESENT
         "fingerprints": {"amount_vs_avg": "ed76..."},            # request-time transforms
         "artifact_hashes": {"payments": "6f1c..."}}

    Timestamps are not returned; a feature absent from ``statuses`` is PRESENT for every
    entity.

Window features (``<window set>:<feature>`` references, :mod:`store.window_state`) are
answered in both forms as of ``"request_time"`` in the body (a skewless extension: epoch
microseconds or ISO-8601 with a zone; now when absent), from one ZRANGEBYSCORE per entity
in the same pipelined round trip, with the bits the offline path gives for that time.

``POST /push``
    Feast's push body writing a window set's events to its online state
    (:mod:`serving.push`).

``GET /health`` (process up), ``GET /ready`` (manifest loaded and Redis answers),
``GET /metrics`` (Prometheus), ``GET /openapi.json``.

Errors are ``{"error": message, "field": name-or-null}``, statuses as Feast's server
where it answers 4xx (:mod:`serving.errors`): 400 unknown feature of a known view, missing
entity key, wrong key or request-data type; 401 bad/missing bearer token; 404 unknown
feature view, feature service or path, missing request data; 405 wrong method; 413 body
over ``max_body_bytes`` or more than ``max_entities`` entities; 422 a body that is not a
JSON object of the request schema (or sent with a non-JSON Content-Type), or a transform
rejected its inputs; 503 Redis unreachable or slower than ``redis_timeout_ms`` (the next
request reconnects, no restart needed).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from serving.catalog import Catalog, Plan, PlanCache
from serving.config import ServeConfig, redis_connection
from serving.decode import NOT_FOUND
from serving.entities import encode_keys, encode_window_keys, parse_entities
from serving.errors import HTTPError, InvalidBody, clip, describe, http_status
from serving.lookup import RedisReader, Result, decode, decode_many, split_replies
from serving.metrics import Metrics
from serving.openapi import openapi_spec
from serving.push import prepare_push
from serving.request_checks import (
    check_content_length,
    feature_names_flag,
    is_json_type,
    json_object,
    request_time,
)
from serving.responses import _all_finite as _all_finite
from serving.responses import error_body, feast_response, native_column, native_response
from transforms.errors import StoreUnavailable, TransformError

__all__ = [
    "NOT_FOUND",
    "HTTPError",
    "LookupApp",
    "check_content_length",
    "create_app",
    "error_body",
    "feast_response",
    "feature_names_flag",
    "is_json_type",
    "native_column",
    "native_response",
]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_JSON_TYPE = b"application/json"
_METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_FEAST_PATH = "/get-online-features"
_PUSH_PATH = "/push"
_NATIVE_PREFIX = "/v1/features/"
_ROUTES = frozenset({_FEAST_PATH, _PUSH_PATH, "/health", "/ready", "/metrics", "/openapi.json"})

# -------------------------------------------------------------------------- app


class LookupApp:
    """The ASGI application. Loads (and verifies) the catalog when constructed."""

    def __init__(self, config: ServeConfig, catalog: Catalog | None = None) -> None:
        self.config = config
        self.catalog = catalog if catalog is not None else Catalog.load(config.repo)
        self.plans = PlanCache(self.catalog)
        self.metrics = Metrics()
        conn = redis_connection(self.catalog.manifest.redis_connection_string, config.redis_url)
        self.reader = RedisReader(conn, config.redis_timeout_ms / 1000.0)
        # pushes write on their own connection (opened by the first one) with their own
        # timeout: a burst of large pushes never delays, nor times out, the lookups
        self.writer = RedisReader(conn, config.push_timeout_ms / 1000.0)
        self.token = config.auth_token.encode() if config.auth_token else None
        self.logger = None
        if config.log_dir:
            from serving.feature_log import FeatureLogger

            m = self.catalog.manifest
            entity_types = {k: t for v in m.views.values() for k, t in v.entities.items()}
            request_types = {
                k: t for rt in m.request_transforms.values() for k, t in rt.request_schema.items()
            }
            self.logger = FeatureLogger(
                config.log_dir,
                config.log_sample_rate,
                self.metrics,
                max_queue=config.log_queue,
                rows_per_file=config.log_rows_per_file,
                roll_seconds=config.log_roll_seconds,
                entity_types=entity_types,
                request_types=request_types,
            )
            self.logger.start()
        self._openapi = orjson.dumps(openapi_spec(self.catalog, __doc__))

    async def shutdown(self) -> None:
        """Flush feature logs and close Redis connections (idempotent)."""
        if self.logger is not None:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, self.logger.close)
        await self.reader.close()
        await self.writer.close()

    # ------------------------------------------------------------ requests

    def handle(
        self,
        method: str,
        path: str,
        authorization: bytes | None,
        body: bytes,
        content_type: bytes | None = None,
    ) -> Reply | Pending:
        """Answer one request whose body has been read (within ``max_body_bytes``).

        A lookup sent with a Content-Type that is not JSON is refused (422), as Feast's
        server refuses it; ``content_type`` None (absent, or not passed by the transport)
        is read as JSON.

        Transport-neutral, used by the HTTP front (:mod:`serving.http`) and the ASGI entry
        alike. Returns the reply, or a :class:`Pending` when Redis must answer first: the
        request is parsed, validated and its Redis commands are sent before this returns,
        and ``Pending.complete`` turns the reply into the response (no task per request).
        """
        try:
            if path == _FEAST_PATH or path == _PUSH_PATH or path.startswith(_NATIVE_PREFIX):
                if method != "POST":
                    raise HTTPError(405, f"{path} takes POST", None)
                self._check_auth(authorization)
                if content_type is not None and not is_json_type(content_type):
                    raise InvalidBody(
                        f"Content-Type {clip(content_type.decode('latin-1'), 60)!r} is not "
                        "JSON; send application/json",
                        "content-type",
                    )
                if path == _FEAST_PATH:
                    return self._lookup(body, None, feast_response)
                if path == _PUSH_PATH:
                    return self._push(body)
                return self._lookup(body, path[len(_NATIVE_PREFIX) :], native_response)
            if path == "/health":
                return 200, _JSON_TYPE, b'{"status":"ok"}'
            if path == "/ready":
                return Pending(self.reader.submit_ping(), self._ready, self)
            if path == "/metrics":
                self._check_auth(authorization)
                return 200, _METRICS_TYPE, self.metrics.render()
            if path == "/openapi.json":
                return 200, _JSON_TYPE, self._openapi
            raise HTTPError(404, f"no route {path}", None)
        except Exception as exc:
            return self.error_reply(exc)

    def error_reply(self, exc: BaseException) -> Reply:
        """The 4xx/503 answer of a known error (:data:`serving.errors.ERROR_STATUS`);
        anything else is a bug and propagates."""
        status = http_status(exc)
        if status is None:
            raise exc
        if isinstance(exc, StoreUnavailable):
            self.metrics.redis_errors.inc()
        return status, _JSON_TYPE, error_body(str(exc), getattr(exc, "field", None))

    def _ready(self, ok: bool) -> Reply:
        payload = orjson.dumps(
            {"ready": ok, "manifest": True, "redis": ok, "project": self.catalog.manifest.project}
        )
        return 200 if ok else 503, _JSON_TYPE, payload

    def _check_auth(self, authorization: bytes | None) -> None:
        """``Authorization: Bearer <token>``, the scheme in any case (RFC 9110 11.1)."""
        if self.token is None:
            return
        scheme, _, credentials = (authorization or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(
            credentials.lstrip(b" "), self.token
        ):
            raise HTTPError(401, "missing or wrong bearer token", "authorization")

    def _lookup(
        self, body: bytes, service: str | None, render: Callable[[Result], bytes]
    ) -> Reply | Pending:
        plan, n, entities, keys, at = self.prepare(body, service)
        lookup = LookupRequest(self, plan, n, entities, render, at)
        if not keys:
            return lookup([])
        return Pending(self.reader.submit(plan, keys, at), lookup, self)

    # ------------------------------------------------------------ pushes

    def _push(self, body: bytes) -> Reply | Pending:
        """``POST /push`` (:func:`serving.push.prepare_push`): one round trip of writes."""
        payload, count, done = prepare_push(self.catalog, body)
        if not count:
            return done([])
        return Pending(self.writer.client.submit(payload, count), done, self)

    # ------------------------------------------------------------ lookups

    def prepare(
        self, body: bytes, service: str | None
    ) -> tuple[Plan, int, dict[str, list[Any]], list[list[bytes]], int]:
        """Parse and validate a request body: (plan, entities, their columns, Redis keys
        per group then per window read, request time in epoch microseconds)."""
        req = json_object(body)
        full = feature_names_flag(req.get("full_feature_names", False))
        refs = req.get("features")
        if refs is not None and not (type(refs) is list and all(type(r) is str for r in refs)):
            raise InvalidBody(
                f"'features' must be an array of strings, got {describe(refs)}", "features"
            )
        if "entities" not in req:
            raise InvalidBody("'entities' is required", "entities")
        if service is None:
            service = req.get("feature_service")
            if service is not None and type(service) is not str:
                raise InvalidBody(
                    f"'feature_service' must be a string, got {describe(service)}",
                    "feature_service",
                )
        if service:
            plan = self.plans.for_service(service, full)
        else:
            plan = self.plans.for_features(refs, full)
        at = request_time(req.get("request_time"))
        n, entities = parse_entities(plan, req.get("entities"), self.config.max_entities)
        keys = [encode_keys(g, entities) for g in plan.groups]
        keys += [encode_window_keys(w, entities) for w in plan.windows]
        return plan, n, entities, keys, at

    def finish(
        self,
        plan: Plan,
        n: int,
        replies: list[Any],
        entities: dict[str, list[Any]],
        at_micros: int | None = None,
    ) -> Result:
        """Decode Redis replies (flat, as sent), run request-time transforms, compute
        window features as of ``at_micros``, count statuses, log."""
        replies_of = split_replies(replies, n)
        return self._served(decode(plan, n, replies_of, entities, at_micros=at_micros))

    def _served(self, result: Result) -> Result:
        """Count the statuses of a decoded lookup and offer it to the feature log."""
        self.metrics.count_statuses(result.statuses[len(result.plan.entity_names) :], result.n)
        if self.logger is not None:
            self.logger.offer(result)
        return result

    def complete_many(self, pendings: Sequence[Pending]) -> list[Reply]:
        """``Pending.complete`` of requests whose Redis replies arrived together. Lookups of
        one plan with request-time transforms run them in one call over all their rows
        (:func:`serving.lookup.decode_many`): under concurrency the per-call cost of the
        transforms is shared instead of paid per request, with the same values. (Decoding
        the views of such lookups as one measured slower than decoding each alone.)"""
        replies: list[Reply | None] = [None] * len(pendings)
        batches: dict[int, list[tuple[int, Pending, LookupRequest]]] = {}
        for i, p in enumerate(pendings):
            lk = p.lookup
            if lk is not None and lk.plan.transform_sets and not lk.plan.windows and p.succeeded():
                batches.setdefault(id(lk.plan), []).append((i, p, lk))
        for batch in batches.values():
            if len(batch) > 1:
                self._complete_batch(batch, replies)
        return [
            r if r is not None else p.complete() for r, p in zip(replies, pendings, strict=True)
        ]

    def _complete_batch(
        self, batch: list[tuple[int, Pending, LookupRequest]], replies: list[Reply | None]
    ) -> None:
        items = [(lk.n, split_replies(p.future.result(), lk.n), lk.entities) for _, p, lk in batch]
        try:
            results = decode_many(batch[0][2].plan, items)
        except Exception:  # noqa: S110 - not a transform's input error: each request
            return  # completes alone and reports its own error
        for (i, _, lk), res in zip(batch, results, strict=True):
            if isinstance(res, TransformError):
                replies[i] = self.error_reply(res)
            else:
                replies[i] = lk.reply(self._served(res))

    async def lookup(self, body: bytes, service: str | None) -> Result:
        """One lookup as a coroutine (tests, embedding): parse, read Redis, decode."""
        plan, n, entities, keys, at = self.prepare(body, service)
        replies = await self.reader.submit(plan, keys, at) if keys else []
        return self.finish(plan, n, replies, entities, at)

    # ------------------------------------------------------------ ASGI entry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        headers = dict(scope["headers"])
        try:
            body = await self._read_body(headers, receive)
        except HTTPError as exc:
            reply: Reply | Pending = self.error_reply(exc)
        else:
            reply = self.handle(
                scope["method"],
                path,
                headers.get(b"authorization"),
                body,
                headers.get(b"content-type"),
            )
        if isinstance(reply, Pending):
            try:
                await reply.future
            except Exception:  # noqa: S110 - complete() turns the failure into a 503
                pass
            reply = reply.complete()
        status, content_type, payload = reply
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        self.metrics.observe(endpoint_label(path), status, time.perf_counter() - start)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            check_content_length(declared, limit)
        chunks: list[bytes] = []
        total = 0
        while True:
            msg = await receive()
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise HTTPError(413, f"body exceeds {limit} bytes", None)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


Reply = tuple[int, bytes, bytes]  # (status, content type, body)


class LookupRequest:
    """A parsed feature lookup waiting for Redis; called with the replies, it answers."""

    __slots__ = ("app", "plan", "n", "entities", "render", "at")

    def __init__(
        self,
        app: LookupApp,
        plan: Plan,
        n: int,
        entities: dict[str, list[Any]],
        render: Callable[[Result], bytes],
        at: int | None = None,
    ) -> None:
        self.app = app
        self.plan = plan
        self.n = n
        self.entities = entities
        self.render = render
        self.at = at

    def __call__(self, replies: list[Any]) -> Reply:
        return self.reply(self.app.finish(self.plan, self.n, replies, self.entities, self.at))

    def reply(self, result: Result) -> Reply:
        """The 200 answer of a served lookup."""
        return 200, _JSON_TYPE, self.render(result)


class Pending:
    """A request waiting for Redis: ``future`` resolves to the replies, ``complete()``
    then builds the response (a 503 if Redis failed or timed out, 4xx/422 on bad input
    found while decoding)."""

    __slots__ = ("future", "finish", "app")

    def __init__(
        self, future: asyncio.Future[Any], finish: Callable[[Any], Reply], app: LookupApp
    ) -> None:
        self.future = future
        self.finish = finish
        self.app = app

    @property
    def lookup(self) -> LookupRequest | None:
        """The feature lookup this request is (batchable), or None (e.g. /ready)."""
        return self.finish if isinstance(self.finish, LookupRequest) else None

    def succeeded(self) -> bool:
        """Redis answered (the future holds replies, not an error)."""
        fut = self.future
        return fut.done() and not fut.cancelled() and fut.exception() is None

    def complete(self) -> Reply:
        fut = self.future
        exc = fut.exception() if not fut.cancelled() else StoreUnavailable("request cancelled")
        try:
            if exc is not None:
                raise exc
            return self.finish(fut.result())
        except Exception as err:
            return self.app.error_reply(err)


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a path in metrics (bounded: services are not labels)."""
    if path.startswith(_NATIVE_PREFIX):
        return "/v1/features"
    return path if path in _ROUTES else "other"


def create_app() -> LookupApp:
    """ASGI factory (e.g. ``uvicorn --factory serving.app:create_app``): settings come from
    the SKEWLESS_SERVE_CONFIG env var (a JSON ServeConfig)."""
    return LookupApp(ServeConfig.from_env())
