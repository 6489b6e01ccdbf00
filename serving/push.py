"""``POST /push``: Feast's push body written to the online window state.

Body (Feast's ``PushFeaturesRequest``)::

    {"push_source_name": "user_windows", "df": {"user_id": [1, 2], "ts": [...], ...},
     "to": "online"}

``push_source_name`` names a window set of the manifest, ``df`` holds its raw events as
columns (keys, event time as epoch microseconds or ISO-8601 with a zone, event id, the
value functions' inputs), ``to`` must be ``online`` (the default). The events go through
the set's value functions (``WindowRunner.event_values``) and are written in one pipelined
round trip (:mod:`store.window_state`), so a push answered 200 is in the state and a
replayed push changes nothing. Bad input is a 4xx naming the field: 404 unknown source,
400 a missing column or a value of the wrong type, 422 a body of the wrong shape or a value
function rejecting its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from serving.catalog import Catalog
from serving.errors import InvalidBody, UnknownName, clip, describe
from serving.request_checks import json_object
from store.window_events import events_table
from transforms.errors import (
    RequestError,
    SchemaError,
    StoreError,
    StoreUnavailable,
    TransformError,
)

_JSON_TYPE = b"application/json"


class PushRequest:
    """A push waiting for Redis; called with the replies of its writes, it answers."""

    __slots__ = ("check", "events")

    def __init__(self, check: Callable[[list[Any]], int], events: int) -> None:
        self.check = check
        self.events = events

    def __call__(self, replies: list[Any]) -> tuple[int, bytes, bytes]:
        try:
            self.check(replies)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from None
        return 200, _JSON_TYPE, orjson.dumps({"status": "ok", "events": self.events})


def prepare_push(catalog: Catalog, body: bytes) -> tuple[bytes, int, PushRequest]:
    """Validate a push and build its writes: (RESP payload, number of commands, the
    request to call with their replies)."""
    req = json_object(body)
    name = req.get("push_source_name")
    if type(name) is not str:
        raise InvalidBody(
            f"'push_source_name' must be a string, got {describe(name)}", "push_source_name"
        )
    windows = catalog.windows.get(name)
    if windows is None:
        known = ", ".join(sorted(catalog.windows)) or "none"
        raise UnknownName(
            f"unknown push source '{clip(name)}' (window sets: {known})", "push_source_name"
        )
    to = req.get("to", "online")
    if to != "online":
        raise RequestError(
            f"'to' must be \"online\" (pushes go to the online window state), got {describe(to)}",
            "to",
        )
    df = req.get("df")
    if not isinstance(df, dict):
        raise InvalidBody(f"'df' must be an object of column arrays, got {describe(df)}", "df")
    try:
        log = windows.runner.event_values(events_table(windows.window_set, df))
        payload, count = windows.layout.write_log(log)
    except (RequestError, TransformError):
        raise
    except SchemaError as exc:  # e.g. an event id or time the state cannot hold
        raise RequestError(str(exc), "df") from None
    return payload, count, PushRequest(windows.layout.check_writes, log.num_rows)
