"""Request checks: the JSON body, the full_feature_names flag, the request time, JSON
Content-Type and Content-Length."""

from __future__ import annotations

import time
from typing import Any

import orjson

from serving.errors import HTTPError, InvalidBody, clip, describe
from store.window_events import parse_time
from transforms.errors import RequestError

_INT64 = (-(1 << 63), (1 << 63) - 1)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (InvalidBody, HTTP 422, otherwise)."""
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"malformed JSON: {clip(str(exc))}", None) from None
    if not isinstance(req, dict):
        raise InvalidBody(f"the body must be a JSON object, got {describe(req)}", None)
    return req


def request_time(value: Any) -> int:
    """``request_time`` (a skewless extension: epoch microseconds or ISO-8601 with a zone)
    in epoch microseconds; now when absent. Window features are computed as of it."""
    if value is None:
        return time.time_ns() // 1000
    if type(value) is int and not _INT64[0] <= value <= _INT64[1]:
        raise RequestError(f"'request_time' {value} is outside int64 microseconds", "request_time")
    if type(value) is not int and type(value) is not str:
        raise RequestError(
            "'request_time' must be epoch microseconds or an ISO-8601 time with a zone, got "
            f"{describe(value)}",
            "request_time",
        )
    return parse_time(value, "request_time")


# full_feature_names as Feast's server (pydantic's lax bool) reads it
_FLAGS: dict[Any, bool] = {
    **{s: True for s in ("1", "on", "t", "true", "y", "yes")},
    **{s: False for s in ("0", "off", "f", "false", "n", "no")},
}


def feature_names_flag(value: Any) -> bool:
    """``full_feature_names`` as Feast's server reads it: a boolean, 0 or 1 (also as 0.0,
    1.0), or one of pydantic's words for a boolean in any case; InvalidBody otherwise."""
    if value is True or value is False:
        return value
    kind = type(value)
    if kind is int or kind is float:
        if value in (0, 1):
            return bool(value == 1)
    elif kind is str and len(value) <= 5:
        flag = _FLAGS.get(value.lower())
        if flag is not None:
            return flag
    raise InvalidBody(
        f"'full_feature_names' must be a boolean, got {describe(value)}", "full_feature_names"
    )


def is_json_type(content_type: bytes) -> bool:
    """Whether a Content-Type names JSON (``application/json`` or ``application/*+json``,
    any case, parameters ignored), the media types Feast's server parses."""
    media = content_type.split(b";", 1)[0].strip().lower()
    main, _, sub = media.partition(b"/")
    return main == b"application" and (sub == b"json" or sub.endswith(b"+json"))


def check_content_length(value: bytes, limit: int) -> None:
    """HTTPError 400/413 for a malformed or too large Content-Length header."""
    try:
        declared = int(value)
    except ValueError:
        raise HTTPError(400, "bad Content-Length", "content-length") from None
    if declared > limit:
        raise HTTPError(413, f"body of {declared} bytes exceeds {limit}", "content-length")
