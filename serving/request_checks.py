"""Request checks: the full_feature_names flag, JSON Content-Type and Content-Length."""

from __future__ import annotations

from typing import Any

from serving.errors import HTTPError, InvalidBody, describe

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
            return value == 1
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
