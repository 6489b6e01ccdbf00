"""The lookup server's errors, the one table from error class to HTTP status, and bounded
descriptions of caller values for messages.

Statuses follow Feast's feature server where Feast answers 4xx (422 for a body that does
not fit the request schema, 404 for unknown views, services and missing request data) and
HTTP semantics where Feast answers 500 (400 for the rest of bad input); README.md, "Differences
from Feast's feature server", lists every case.
"""

from __future__ import annotations

from typing import Any

from transforms.errors import RequestError, StoreUnavailable, TransformError

_TEXT_CHARS = 40  # characters of a caller's string quoted in a message
_NAME_CHARS = 120  # characters of a caller's name (key, feature reference) in a message


class HTTPError(Exception):
    """An answer decided by the transport or routing (404 path, 405, 413, 431, ...)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class InvalidBody(RequestError):
    """The body does not fit the request schema: not JSON, not an object, a field of the
    wrong JSON type (HTTP 422, as the validation of Feast's server answers)."""


class UnknownName(RequestError):
    """A feature view or feature service that is not registered (HTTP 404, as Feast)."""


class UnknownService(UnknownName):
    """The feature service is not in the manifest."""


class UnknownView(UnknownName):
    """The feature view (or on-demand feature view) is not in the manifest."""


class MissingRequestData(RequestError):
    """A request field a request-time transform reads is absent (HTTP 404, as Feast's
    ``RequestDataNotFoundInEntityRowsException``)."""


class TooManyEntities(RequestError):
    """More entities than --max-entities (HTTP 413)."""


ERROR_STATUS: dict[type[BaseException], int] = {
    InvalidBody: 422,
    UnknownName: 404,
    MissingRequestData: 404,
    TooManyEntities: 413,
    RequestError: 400,
    TransformError: 422,
    StoreUnavailable: 503,
}
"""Error class -> HTTP status; an error takes the status of its nearest class in the table
(looked up along its MRO). HTTPError carries its own status."""


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an expected error, or None for a bug."""
    if isinstance(exc, HTTPError):
        return exc.status
    for cls in type(exc).__mro__:
        status = ERROR_STATUS.get(cls)
        if status is not None:
            return status
    return None


def clip(text: str, limit: int = _NAME_CHARS) -> str:
    """``text`` cut to ``limit`` characters (a caller's name in a message or a field)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters)"


def describe(value: Any) -> str:
    """A caller's JSON value as its JSON type and a short preview, in bounded time and
    length and without recursion: ``string '5.5'``, ``float 5.5``, ``array of 3 items``."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        if value.bit_length() > 128:
            return f"integer of {value.bit_length()} bits"
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        if len(value) <= _TEXT_CHARS:
            return f"string {value!r}"
        return f"string {value[:_TEXT_CHARS]!r}...({len(value)} characters)"
    if isinstance(value, list | tuple):
        return f"array of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return f"object of {len(value)} key{'' if len(value) == 1 else 's'}"
    return type(value).__name__
