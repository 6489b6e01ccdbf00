"""The Redis layout of window-aggregation state (``transforms.aggregations.WindowSet``):
keys, members, retention and the commands that read and write them.

What is stored
--------------
One sorted set per (project, window set, entity) holding the entity's *event log* rows
(:meth:`transforms.window_runtime.WindowRunner.event_values`), one member per event:

key
    ``skw:w:<len>:<project>:<len>:<window set>:<entity key>``: the lengths are decimal
    byte counts of the UTF-8 names, the entity key is Feast's ``serialize_entity_key``
    (version 3) of the set's join keys. A Feast key starts with its join-key count as four
    little-endian bytes (1..64), never with ``skw:``, so the two layouts never collide and
    Feast's key scan (:func:`store.redis_layout.key_project`) never takes one of these; the
    length prefixes make ``skw:w:<len>:<project>:*`` match exactly one project.
score
    the event time in microseconds since the epoch (an integer, exact in a double for
    ``|t| < 2**53``, i.e. until the year 2255).
member
    ``orjson.dumps([event time, event id, value per aggregation...])``: values in the
    set's aggregation order, ``null`` when missing (or filtered out by ``where``), Float64
    as the shortest text that parses back to the same 64 bits (``-0.0`` included), Int64
    and timestamps (microseconds) as integers, strings as UTF-8 JSON, Bool as
    ``true``/``false``. An event without an id (the set declares no ``event_id``, or the
    id is null) has one more item: its occurrence number among equal rows of the same
    write (0, 1, ...), i.e. ``[time, null, values..., occurrence]``.

Because a member is the whole row, writing the same event again is a no-op (ZADD of an
existing member), so replays are idempotent; copies of one event id with other values or
times are separate members, resolved at read time by the one order of rule 29 and the
duplicate rule 27 exactly as offline. For an event without an id a replay cannot be told
from a second, equal event: equal rows of one write are separate events (as offline), an
equal row written again by a later write is taken as a replay (declare ``event_id`` when
equal events arrive apart).

Retention (CONTRACT rule 28)
----------------------------
Every write of a key runs one Lua script (``TRIM_SCRIPT``): it adds the members, then
removes those with an event time before ``newest - (longest window + grace)``, where
``newest`` is the newest event time in the key after the write. The state of a key is
thus *exactly* its events since ``newest - span`` whatever the order, splits or replays of
the writes (an event already older than that is dropped on arrival), and every query at a
time ``t >= newest - grace`` is exact. ``GRACE_MICROS`` (1 hour) is the default grace;
writers of one set must use one grace. Each write also sets the key to expire one span
(of wall-clock time) later: an entity that goes quiet leaves no key behind, and by then
every window as of now is empty anyway (its events are at most the write time plus less
than the grace of clock skew; queries replaying older times must run within the span).

Reads
-----
A query at ``t`` reads ``ZRANGEBYSCORE key <t - longest window> +inf``: events from the
start of the longest window on, including those at or after ``t``: they are outside every
window but a later copy of an event id replaces an earlier one (rule 27), exactly as the
offline log sees it. Without an event id the range ends at ``(t``. The rows are then
aggregated by :class:`transforms.window_rows.RowWindows`, which gives the bits of
:meth:`WindowRunner.aggregate_entity` (and :meth:`WindowState.log_table` feeds that
reference directly).

This module imports neither numpy nor pyarrow until features are computed; the lookup
server uses :class:`WindowLayout` and its command builders, and
:mod:`store.window_state` sends them over a redis-py client (push, backfill, reads).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from store import redis_layout as rl
from store.errors import LayoutError
from store.manifest import WindowSetSpec
from store.resp import bulk, key_command_parts, key_commands
from transforms.errors import ArtifactError, SchemaError, StoreError

if TYPE_CHECKING:
    import pyarrow as pa

    from transforms.aggregations import WindowSet
    from transforms.window_rows import RowWindows

__all__ = [
    "GRACE_MICROS",
    "KEY_PREFIX",
    "SCRIPT_SHA",
    "TRIM_SCRIPT",
    "WindowLayout",
    "decode_member",
    "encode_member",
    "feature_types",
    "key_prefix",
    "parse_key",
    "project_prefix",
    "window_set_spec",
]

KEY_PREFIX = b"skw:w:"
GRACE_MICROS = 3_600_000_000
MAX_PAIRS = 4096  # members per EVALSHA (bounds the time one script holds Redis)
_KEY_TYPES = {"int64": "int64", "string": "string"}  # field type -> Feast key type
_EXACT_SCORE = 1 << 53  # event times (micros) within are exact as Redis scores (doubles)

TRIM_SCRIPT = b"""\
local key = KEYS[1]
local n = #ARGV
for i = 2, n, 1000 do
  local j = i + 999
  if j > n then j = n end
  redis.call('ZADD', key, unpack(ARGV, i, j))
end
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if top[2] == nil then return 0 end
redis.call('PEXPIRE', key, math.floor(tonumber(ARGV[1]) / 1000))
return redis.call('ZREMRANGEBYSCORE', key, '-inf', tonumber(top[2]) - tonumber(ARGV[1]) - 1)
"""
"""KEYS[1] an entity's state; ARGV[1] the span kept (longest window + grace, micros);
ARGV[2..] score, member pairs. Adds them, sets the key to expire after the span, then
removes members with a score below ``newest - span`` (scores are integers, so
``<= newest - span - 1``); returns how many."""
SCRIPT_SHA = hashlib.sha1(TRIM_SCRIPT).hexdigest().encode()  # noqa: S324 - Redis's script id
_SCRIPT_LOAD = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n" + bulk(TRIM_SCRIPT)
_EVALSHA = b"$7\r\nEVALSHA\r\n" + bulk(SCRIPT_SHA) + bulk(b"1")


# ----------------------------------------------------------------------------- keys


def project_prefix(project: str) -> bytes:
    """The prefix of every window-state key of ``project`` (and of no other project)."""
    p = project.encode("utf-8")
    return KEY_PREFIX + b"%d:%b:" % (len(p), p)


def key_prefix(project: str, window_set: str) -> bytes:
    """The prefix of the keys of one window set of ``project``."""
    w = window_set.encode("utf-8")
    return project_prefix(project) + b"%d:%b:" % (len(w), w)


def parse_key(key: bytes) -> tuple[str, str, bytes] | None:
    """(project, window set, serialized entity key) of a window-state key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    pos = len(KEY_PREFIX)
    names: list[str] = []
    try:
        for _ in range(2):
            colon = key.index(b":", pos)
            length = int(key[pos:colon])
            start = colon + 1
            if key[start + length : start + length + 1] != b":":
                return None
            names.append(key[start : start + length].decode("utf-8"))
            pos = start + length + 1
    except (ValueError, UnicodeDecodeError):
        return None
    return names[0], names[1], key[pos:]


def _key_type(ws_name: str, key: str, field_type: Any) -> str:
    name = getattr(field_type, "name", field_type)
    got = _KEY_TYPES.get(name) if isinstance(name, str) else None
    if got is None:
        raise LayoutError(
            f"window set '{ws_name}': entity key '{key}' is {name}; online window state "
            f"takes {' or '.join(_KEY_TYPES)} keys"
        )
    return got


def feature_types(window_set: WindowSet) -> dict[str, str]:
    """Each feature's type name as the server reports it (``list<...>`` for last_k)."""
    out = {}
    for f in window_set.features:
        name = f.type.name
        out[f.name] = f"list<{name}>" if f.op == "last_k" else name
    return out


def window_set_spec(
    window_set: WindowSet, ref: str, grace_micros: int = GRACE_MICROS
) -> WindowSetSpec:
    """The manifest entry of a window set defined at ``ref`` (``module:attribute``)."""
    ws = window_set
    return WindowSetSpec(
        name=ws.name,
        window_set=ref,
        entities={k: _key_type(ws.name, k, t) for k, t in ws.entities.items()},
        features=feature_types(ws),
        event_timestamp=ws.event_timestamp,
        event_id=ws.event_id,
        max_window_micros=int(ws.max_window_micros),
        grace_micros=grace_micros,
    )


def checked_window_set(repo: str | Path, spec: WindowSetSpec) -> WindowSet:
    """The window set a manifest entry names, imported from the project, refusing any
    drift from what `skewless apply` recorded (keys, features and their types, windows,
    event columns): the server, training sets, backfills and skew reports all compute
    with the definition the model was registered with, or not at all (ArtifactError)."""
    from transforms.modules import resolve_window_set

    try:
        ws = resolve_window_set(spec.window_set, Path(repo))
    except SchemaError as exc:
        raise ArtifactError(f"window set '{spec.name}': {exc}") from None
    now = dataclasses.replace(
        window_set_spec(ws, spec.window_set, spec.grace_micros), source=spec.source
    )
    if now != spec:
        diff = [k for k, v in vars(now).items() if getattr(spec, k) != v]
        raise ArtifactError(
            f"window set '{spec.name}': its definition differs from the manifest in "
            f"{', '.join(diff)}; re-run `skewless apply`"
        )
    return ws


# --------------------------------------------------------------------------- members


def encode_member(event_time: int, ident: Any, values: Sequence[Any], occurrence: int = 0) -> bytes:
    """A member's bytes (see the module doc): ``[event time, event id, values...]``, and
    the occurrence after the values when ``ident`` is None."""
    row = [event_time, ident, *values]
    if ident is None:
        row.append(occurrence)
    try:
        return orjson.dumps(row)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise LayoutError(f"event log row cannot be stored: {exc}") from None


def decode_member(member: bytes) -> list[Any]:
    """The row ``[event time, event id, values...(, occurrence)]`` of a member."""
    row: list[Any] = orjson.loads(member)
    return row


# ---------------------------------------------------------------------------- layout


class WindowLayout:
    """The keys and commands of one window set of one project (no numpy, no pyarrow)."""

    def __init__(
        self, project: str, window_set: WindowSet, grace_micros: int = GRACE_MICROS
    ) -> None:
        ws = window_set
        if grace_micros < 0:
            raise LayoutError(f"grace must be >= 0 microseconds, got {grace_micros}")
        self.project = project
        self.name = ws.name
        self.window_set = ws
        self.join_keys = tuple(ws.entities)
        self.key_types = tuple(_key_type(ws.name, k, t) for k, t in ws.entities.items())
        self.encoder = rl.EntityKeyEncoder("", self.join_keys, self.key_types)
        self.prefix = key_prefix(project, ws.name)
        self.aggregations = tuple(a.name for a in ws.aggregations)
        self.value_types = tuple(a.value.output.type.name for a in ws.aggregations)
        self.has_id = ws.event_id is not None
        self.max_window = int(ws.max_window_micros)
        self.grace = grace_micros
        self.span = self.max_window + grace_micros
        self._span_arg = bulk(b"%d" % self.span)
        self._rows: RowWindows | None = None

    # ------------------------------------------------------------ keys

    def key(self, values: Sequence[Any]) -> bytes:
        """The key of one entity, its join-key values in the set's key order."""
        return self.prefix + self.encoder.encode(values)

    def keys(self, columns: Sequence[Sequence[Any]]) -> list[bytes]:
        """Keys of many entities, one column of values per join key (set's key order)."""
        p = self.prefix
        return [p + k for k in self.encoder.encode_columns(columns)]

    # ------------------------------------------------------------ writes

    def write_commands(
        self,
        keys: Sequence[bytes],
        times: Sequence[int],
        ids: Sequence[Any] | None,
        values: Sequence[Sequence[Any]],
    ) -> tuple[bytes, int]:
        """RESP of one write of event log rows given as columns (entity key, event time
        micros, event id or None, one column per aggregation with timestamps as micros):
        ``SCRIPT LOAD`` then one ``EVALSHA`` of :data:`TRIM_SCRIPT` per entity (per
        :data:`MAX_PAIRS` members). Returns (payload, number of commands)."""
        dumps = orjson.dumps
        groups: dict[bytes, list[bytes]] = {}
        rows = zip(*values, strict=True)
        seen: dict[tuple[bytes, bytes], int] = {}
        if ids is None:
            ids = [None] * len(times)
        try:
            for key, t, ident, vals in zip(keys, times, ids, rows, strict=True):
                if ident is None:  # no id: the occurrence among equal rows of this write
                    m = dumps([t, None, *vals])
                    plain = (key, m)
                    occ = seen.get(plain, 0)
                    seen[plain] = occ + 1
                    m = m[:-1] + b",%d]" % occ
                else:
                    m = dumps([t, ident, *vals])
                s = b"%d" % t
                part = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(s), s, len(m), m)
                g = groups.get(key)
                if g is None:
                    groups[key] = [part]
                else:
                    g.append(part)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise LayoutError(f"window set '{self.name}': a row cannot be stored: {exc}") from None
        out = [_SCRIPT_LOAD]
        span = self._span_arg
        for key, parts in groups.items():
            head = _EVALSHA + bulk(key) + span
            for lo in range(0, len(parts), MAX_PAIRS):
                chunk = parts[lo : lo + MAX_PAIRS]
                out.append(b"*%d\r\n" % (5 + 2 * len(chunk)) + head + b"".join(chunk))
        return b"".join(out), len(out)

    def log_columns(
        self, log: pa.Table
    ) -> tuple[list[bytes], list[int], list[Any] | None, list[list[Any]]]:
        """The columns :meth:`write_commands` takes, from an event log table."""
        import pyarrow as pa

        from transforms.window_runtime import EVENT_ID, EVENT_TIME

        keys = self.keys([log.column(k).to_pylist() for k in self.join_keys])
        times = log.column(EVENT_TIME).to_pylist()
        if times and not (-_EXACT_SCORE < min(times) and max(times) < _EXACT_SCORE):
            raise LayoutError(
                f"window set '{self.name}': an event time beyond 2**53 microseconds from "
                "1970 (the year 2255) is not exact as a Redis score"
            )
        ids = None
        if self.has_id:
            col = log.column(EVENT_ID)
            t = col.type
            if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise LayoutError(
                    f"window set '{self.name}': event id '{self.window_set.event_id}' is {t}; "
                    "online window state takes integer or string event ids"
                )
            ids = col.to_pylist()
        values: list[list[Any]] = []
        for name, vtype in zip(self.aggregations, self.value_types, strict=True):
            c = log.column(name)
            if vtype == "timestamp":
                c = c.cast(pa.int64())
            values.append(c.to_pylist())
        return keys, times, ids, values

    def write_log(self, log: pa.Table) -> tuple[bytes, int]:
        """:meth:`write_commands` of an event log table."""
        if log.num_rows == 0:
            return b"", 0
        return self.write_commands(*self.log_columns(log))

    def check_writes(self, replies: Sequence[Any]) -> int:
        """The replies of a write (SCRIPT LOAD's sha, then removed counts): StoreError on
        an error reply; returns how many members retention removed."""
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            raise StoreError(f"Redis rejected {len(errors)} window-state writes: {errors[0]}")
        if replies and _as_bytes(replies[0]) != SCRIPT_SHA:
            raise StoreError(f"SCRIPT LOAD answered {replies[0]!r}, expected {SCRIPT_SHA!r}")
        return sum(int(r) for r in replies[1:])

    # ------------------------------------------------------------ reads

    def read_commands(self, keys: Sequence[bytes], t: int) -> bytes:
        """RESP of the reads for a query at ``t`` (micros): one ZRANGEBYSCORE per key
        (see the module doc for the range)."""
        lo = b"%d" % (t - self.max_window)
        hi = b"+inf" if self.has_id else b"(%d" % t
        return key_commands(*key_command_parts(b"ZRANGEBYSCORE", [lo, hi]), keys)

    @property
    def rows_aggregator(self) -> RowWindows:
        if self._rows is None:
            from transforms.window_rows import RowWindows

            self._rows = RowWindows(self.window_set)
        return self._rows

    def answer(self, members: Sequence[bytes], t: int) -> dict[str, Any]:
        """Every window feature of one entity as of ``t`` from its ZRANGEBYSCORE reply."""
        rows = orjson.loads(b"[%b]" % b",".join(members)) if members else []
        return self.rows_aggregator.aggregate(rows, t)

    def answer_and_newest(
        self, members: Sequence[bytes], t: int
    ) -> tuple[dict[str, Any], int | None]:
        """:meth:`answer`, and the newest event time (micros) before ``t`` among the
        members (in score order): what the served windows had seen, for freshness
        audits. The members are parsed once for both."""
        rows: list[list[Any]] = orjson.loads(b"[%b]" % b",".join(members)) if members else []
        newest = next((r[0] for r in reversed(rows) if r[0] < t), None)
        return self.rows_aggregator.aggregate(rows, t), newest

    def log_table(self, members: Sequence[bytes]) -> pa.Table:
        """One entity's members as an event log table (event time, event id, values), the
        input of :meth:`WindowRunner.aggregate_entity`."""
        import pyarrow as pa

        from transforms.window_runtime import EVENT_ID, EVENT_TIME

        rows = [decode_member(m) for m in members]
        cols = [[r[i] for r in rows] for i in range(2 + len(self.aggregations))]
        arrays = [pa.array(cols[0], pa.int64())]
        names = [EVENT_TIME]
        if self.has_id:
            arrays.append(pa.array(cols[1]))
            names.append(EVENT_ID)
        for i, (name, vtype) in enumerate(zip(self.aggregations, self.value_types, strict=True)):
            col = cols[2 + i]
            if vtype == "timestamp":
                arrays.append(pa.array(col, pa.int64()).cast(pa.timestamp("us", tz="UTC")))
            else:
                types = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}
                arrays.append(pa.array(col, types.get(vtype, pa.string())))
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names)


def _as_bytes(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)
