"""Online lookups: decoded views -> request-time transforms -> the assembled Result, and
the pipelined Redis reads that feed them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving.catalog import WINDOW_INPUT, LoadedTransforms, Plan
from serving.decode import EPOCH_TS, NULL_VALUE, PRESENT, Decoded, _all_present, decode_views
from serving.redis_client import RedisPipeline
from store import redis_layout as rl
from store.resp import key_commands
from transforms.errors import SkewlessError, TransformError

# ------------------------------------------------------------------------ results


@dataclass
class Result:
    """Columns of one lookup, entity keys first; timestamps as (seconds, nanos)."""

    plan: Plan
    n: int
    names: list[str]
    values: list[list[Any]]
    statuses: list[list[int]]
    timestamps: list[list[tuple[int, int]]]
    request_data: dict[str, list[Any]]
    entities: dict[str, list[Any]]
    at_micros: int | None = None  # the time window features were computed as of


def decode(
    plan: Plan,
    n: int,
    replies: list[list[list[bytes | None]]],
    entities: dict[str, list[Any]],
    now_ns: int | None = None,
    at_micros: int | None = None,
) -> Result:
    """Decode HMGET replies (per group, per entity) into columns, then run transforms.

    One entity is decoded value by value; more are columnar: each group's replies are transposed once (``zip(*rows)``), every feature
    column is decoded by type in one call (:func:`store.redis_layout.decode_column`), and
    the per-entity work is only the row timestamp / ttl check. Statuses of a column without
    nulls or missing rows are one shared all-PRESENT list.

    Window features are computed from the ZRANGEBYSCORE replies that follow the groups'
    (:func:`decode_windows`) as of ``at_micros`` (the request time; now when None).
    """
    now = time.time_ns() if now_ns is None else now_ns
    decoded = decode_views(plan, n, replies, now)
    if not plan.windows:
        (transformed,) = run_transforms(plan, [(n, decoded, entities)])
        return assemble(plan, n, decoded, transformed, entities)
    at = now // 1000 if at_micros is None else at_micros
    windows = decode_windows(plan, n, replies, at)  # before the transforms that read them
    (transformed,) = run_transforms(plan, [(n, decoded, entities)], [windows])
    result = assemble(plan, n, decoded, transformed, entities, windows)
    result.at_micros = at
    return result


WindowColumns = list[dict[str, list[Any]]]
"""Per window read of a plan: feature -> column (one value per entity), and under
``NEWEST`` each entity's newest event before the request time as (seconds, nanos)."""
NEWEST = "\0newest"


def decode_windows(plan: Plan, n: int, replies: list[list[Any]], at_micros: int) -> WindowColumns:
    """The window features of one lookup as of ``at_micros``: each entity's members (the
    replies after the groups', one list per window set) aggregated by the set's layout
    (:meth:`store.window_layout.WindowLayout.answer`, the bits of the offline path)."""
    out: WindowColumns = []
    base = len(plan.groups)
    for wi, wr in enumerate(plan.windows):
        answer = wr.windows.layout.answer_and_newest
        feats = wr.features
        cols: dict[str, list[Any]] = {f: [None] * n for f in feats}
        newest: list[Any] = [EPOCH_TS] * n
        for e, members in enumerate(replies[base + wi]):
            got, t = answer(members, at_micros)
            for f in feats:
                cols[f][e] = got[f]
            if t is not None:
                newest[e] = (t // 1_000_000, t % 1_000_000 * 1000)
        cols[NEWEST] = newest
        out.append(cols)
    return out


def decode_many(
    plan: Plan,
    lookups: Sequence[tuple[int, list[list[list[bytes | None]]], dict[str, list[Any]]]],
    now_ns: int | None = None,
) -> list[Result | TransformError]:
    """:func:`decode` of several lookups of one plan, ``(n, replies, entities)`` each,
    whose Redis replies arrived together: the views are decoded per lookup, the request-time
    transforms run once over all their rows (transforms are row-independent, rule 19 of
    transforms/CONTRACT.md, so each row gets the value it gets alone). If that fails, the
    transforms run per lookup, so a lookup whose own inputs make a transform fail gets its
    TransformError and the others are unaffected. Any other error propagates."""
    now = time.time_ns() if now_ns is None else now_ns
    parts = [(n, decode_views(plan, n, replies, now), ent) for n, replies, ent in lookups]
    outs: list[Transformed | TransformError]
    try:
        outs = list(run_transforms(plan, parts))
    except TransformError:  # find whose rows fail: run each lookup alone
        outs = []
        for part in parts:
            try:
                outs.extend(run_transforms(plan, [part]))
            except TransformError as exc:
                outs.append(exc)
    results: list[Result | TransformError] = []
    for (n, dec, entities), out in zip(parts, outs, strict=True):
        results.append(
            out if isinstance(out, TransformError) else assemble(plan, n, dec, out, entities)
        )
    return results


def _transform_inputs(
    plan: Plan,
    wiring: dict[str, tuple[int, int, int]],
    inputs: Sequence[str],
    decoded: Decoded,
    entities: dict[str, list[Any]],
    windows: WindowColumns | None,
) -> dict[str, list[Any]]:
    """One transform set's input columns: request data, decoded view features, or window
    features as of the request time."""
    out: dict[str, list[Any]] = {}
    for inp in inputs:
        w = wiring.get(inp)
        if w is None:
            out[inp] = entities[inp]
        elif w[0] == WINDOW_INPUT:
            out[inp] = _window_column(windows, w[1], plan.windows[w[1]].features[w[2]])
        else:
            gi, vi, fi = w
            out[inp] = decoded[gi][vi][0][fi]
    return out


def _run_set(lt: LoadedTransforms, inputs: dict[str, list[Any]], n: int) -> dict[str, list[Any]]:
    try:
        columns: dict[str, list[Any]] = lt.engine.runner.run_python_columns(inputs, n)
        return columns
    except TransformError:
        raise
    except SkewlessError as exc:
        raise TransformError(str(exc)) from None


Transformed = dict[tuple[str, str], list[Any]]
"""(transform set, output name) -> output column of one lookup."""


def run_transforms(
    plan: Plan,
    parts: Sequence[tuple[int, Decoded, dict[str, list[Any]]]],
    windows: Sequence[WindowColumns | None] | None = None,
) -> list[Transformed]:
    """The request-time transforms of lookups ``(n, decoded views, entity columns)`` (and
    their window features, when the plan reads any), one call per transform set over all
    their rows: input columns concatenated, outputs cut back at the lookups' boundaries
    (rows are independent of their batch)."""
    outs: list[Transformed] = [{} for _ in parts]
    sizes = [n for n, _, _ in parts]
    wins = windows if windows is not None else [None] * len(parts)
    for lt, wiring in plan.transform_sets:
        per = [
            _transform_inputs(plan, wiring, lt.engine.inputs, dec, ent, win)
            for (_, dec, ent), win in zip(parts, wins, strict=True)
        ]
        joined = {inp: [v for cols in per for v in cols[inp]] for inp in lt.engine.inputs}
        for name, col in _run_set(lt, joined, sum(sizes)).items():
            lo = 0
            for out, size in zip(outs, sizes, strict=True):
                out[(lt.spec.name, name)] = col[lo : lo + size]
                lo += size
    return outs


def assemble(
    plan: Plan,
    n: int,
    decoded: Decoded,
    transformed: Transformed,
    entities: dict[str, list[Any]],
    windows: WindowColumns | None = None,
) -> Result:
    """The Result of one lookup: entity keys, then the plan's outputs in order. Window
    features, like request-time outputs, are PRESENT or NULL_VALUE; their event time is the
    entity's newest event before the request time (none: the epoch)."""
    values: list[list[Any]] = [entities[k] for k in plan.entity_names]
    present = _all_present(n)  # shared, never mutated
    statuses: list[list[int]] = [present for _ in plan.entity_names]
    epoch = [EPOCH_TS] * n
    timestamps: list[list[tuple[int, int]]] = [epoch for _ in plan.entity_names]
    for _, kind, a, b in plan.outputs:
        if kind == "view":
            vals, stats, tss = decoded[a[0]][a[1]]
            values.append(vals[b])
            statuses.append(stats[b])
            timestamps.append(tss)
        else:
            col = transformed[(a, b)] if kind == "transform" else _window_column(windows, a, b)
            values.append(col)
            if None in col:
                statuses.append([NULL_VALUE if v is None else PRESENT for v in col])
            else:
                statuses.append(present)
            timestamps.append(epoch if kind == "transform" else _window_column(windows, a, NEWEST))
    request_data = {k: entities[k] for k in plan.request_fields}
    ent = {k: entities[k] for k in plan.entity_names}
    return Result(plan, n, plan.column_names, values, statuses, timestamps, request_data, ent)


def _window_column(windows: WindowColumns | None, index: int, feature: str) -> list[Any]:
    if windows is None:
        raise ValueError("a plan with window features was decoded without its windows")
    return windows[index][feature]


# ---------------------------------------------------------------------- Redis reads


class RedisReader:
    """All HMGETs (and window-state ZRANGEBYSCOREs) of a request in one pipelined write
    over a shared connection (:mod:`serving.redis_client`); commands are the plan's
    prebuilt RESP bytes plus keys."""

    def __init__(self, connection_string: str, timeout_s: float) -> None:
        nodes, params = rl.parse_connection_string(connection_string)
        host, port = nodes[0] if nodes else ("127.0.0.1", 6379)
        self.client = RedisPipeline(
            host,
            port,
            timeout_s,
            db=int(params.get("db", 0) or 0),
            password=params.get("password"),
            username=params.get("username"),
            ssl=bool(params.get("ssl", False)),
        )
        self.timeout_s = timeout_s

    def submit(
        self, plan: Plan, keys: list[list[bytes]], at_micros: int = 0
    ) -> asyncio.Future[list[Any]]:
        """Send every HMGET of a request in one write, then the window-state reads as of
        ``at_micros`` (``keys``: per group, then per window read, one key per entity); the
        future resolves to the replies, group after group then window set after window
        set, one per entity (:func:`split_replies` regroups them), or fails as
        :meth:`RedisPipeline.submit` does."""
        parts: list[bytes] = []
        count = 0
        n_groups = len(plan.groups)
        for g, gkeys in zip(plan.groups, keys[:n_groups], strict=True):
            parts.append(key_commands(g.hmget_head, g.hmget_tail, gkeys))
            count += len(gkeys)
        for wr, wkeys in zip(plan.windows, keys[n_groups:], strict=True):
            parts.append(wr.windows.layout.read_commands(wkeys, at_micros))
            count += len(wkeys)
        return self.client.submit(parts[0] if len(parts) == 1 else b"".join(parts), count)

    def submit_ping(self) -> asyncio.Future[bool]:
        """A future resolving to whether Redis answers PING (never fails)."""
        return self.client.submit_ping()

    async def close(self) -> None:
        await self.client.close()


def split_replies(flat: list[Any], n: int) -> list[list[Any]]:
    """Flat replies (every group has one key per entity) -> replies per group."""
    if len(flat) == n:
        return [flat]
    return [flat[i : i + n] for i in range(0, len(flat), n)]
