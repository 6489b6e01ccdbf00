"""What Feast sees of a window set: an on-demand feature view that names the skewless
command instead of computing a value of its own.

A window feature is an aggregation as of each request's time (CONTRACT rules 23-30).
Feast has nothing that computes it: ``feast materialize`` would write a stale row, and
``get_historical_features`` would join the latest row strictly before each entity row, the
"as of each event" value these features replace. So each WindowSet is registered as an
OnDemandFeatureView tagged ``skewless.window_set`` whose UDF raises
:class:`NotComputedByFeast` naming ``skewless serve`` and ``skewless training-set``:

- ``feast materialize`` skips it (an on-demand view is not materialized);
- ``get_online_features`` and ``get_historical_features`` with one of its features, or
  with a feature service that holds one, raise an error: Feast's own that the request
  field ``request_time`` is missing, else, given it, that one: never a silently
  different value, never a silently missing column;
- the FeatureService in Feast's registry lists the window features in the model's order,
  so the serving manifest (:func:`pipelines.apply.manifest_from_registry`) reads services
  back whole.

When Feast infers the view's schema at ``feast apply`` it calls the UDF once with random
inputs; only that call (recognised by Feast's ``infer_features`` frame) gets one row of
typed placeholders, which Feast discards after reading their types.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from transforms.aggregations import WindowSet
from transforms.errors import SkewlessError

WINDOW_SET_TAG = "skewless.window_set"  # "module:attribute" of the WindowSet
REQUEST_TIME = "request_time"  # the view's request field

_FEAST_SCALARS = {
    "int64": "Int64",
    "float64": "Float64",
    "string": "String",
    "bool": "Bool",
    "timestamp": "UnixTimestamp",
}
_SAMPLES: dict[str, Any] = {
    "int64": 0,
    "float64": 0.0,
    "string": "",
    "bool": False,
    "timestamp": datetime(1970, 1, 1, tzinfo=UTC),
}


class NotComputedByFeast(SkewlessError):
    """A window feature was asked of Feast, which cannot compute it as of the request."""


def not_in_feast_message(window_set: str) -> str:
    return (
        f"window set '{window_set}' is computed as of each request's time by skewless, not "
        "by Feast: read it with `skewless serve` (POST /get-online-features) and build "
        "training sets with `skewless training-set`"
    )


def _inferring() -> bool:
    """Whether Feast's schema inference (``infer_features``) is the caller."""
    frame = sys._getframe(2)  # noqa: SLF001 - the one way to know Feast's caller
    while frame is not None:
        code = frame.f_code
        if code.co_name == "infer_features" and "feast" in code.co_filename:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def window_udf(window_set: str, samples: dict[str, Any]) -> Any:
    """The UDF of a window set's on-demand view (see the module doc)."""
    return _refusing(window_set, not_in_feast_message(window_set), samples)


def refusing_udf(feature_set: str, window_refs: list[str], outputs: dict[str, str]) -> Any:
    """The UDF of a request-time set that reads window features (``window_refs``): Feast
    cannot give those inputs as of the request time, so the set's outputs are refused too."""
    message = (
        f"feature set '{feature_set}' reads window features {window_refs}, which skewless "
        "computes as of each request's time, not Feast: read it with `skewless serve` "
        "(POST /get-online-features) and build training sets with `skewless training-set`"
    )
    samples = {name: _sample(type_name) for name, type_name in outputs.items()}
    return _refusing(feature_set, message, samples)


def _refusing(name: str, message: str, samples: dict[str, Any]) -> Any:
    """A UDF raising NotComputedByFeast(``message``), but for Feast's schema inference,
    which gets one typed placeholder row (``samples``) and discards it."""

    def udf(inputs: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 - Feast's signature
        if _inferring():
            return {n: [value] for n, value in samples.items()}
        raise NotComputedByFeast(message)

    udf.__name__ = f"{name.lower()}_not_in_feast"
    return udf


def feast_dtype(type_name: str) -> Any:
    """The Feast dtype of a window feature type name (``list<float64>`` for last_k)."""
    from feast import types as ft

    inner = type_name.removeprefix("list<").removesuffix(">")
    scalar = getattr(ft, _FEAST_SCALARS[inner])
    return ft.Array(scalar) if type_name.startswith("list<") else scalar


def _sample(type_name: str) -> Any:
    inner = type_name.removeprefix("list<").removesuffix(">")
    value = _SAMPLES[inner]
    return [value] if type_name.startswith("list<") else value


def window_view(ws: WindowSet, ref: str) -> Any:
    """The on-demand feature view of window set ``ws`` defined at ``ref``. Its one request
    field is ``request_time`` (what the windows would be as of, as the skewless lookup
    takes it), not the join keys: Feast takes a field that is both request data and a
    join key as request data only, which would break the views of a service on the same
    keys."""
    from feast import Field, RequestSource
    from feast import types as ft
    from feast.on_demand_feature_view import OnDemandFeatureView

    from store.window_layout import window_set_spec

    types = window_set_spec(ws, ref).features
    request = RequestSource(
        name=f"{ws.name}_request_time", schema=[Field(name=REQUEST_TIME, dtype=ft.Int64)]
    )
    return OnDemandFeatureView(
        name=ws.name,
        sources=[request],
        schema=[Field(name=f, dtype=feast_dtype(t)) for f, t in types.items()],
        mode="python",
        udf=window_udf(ws.name, {f: _sample(t) for f, t in types.items()}),
        udf_string=f"skewless window set {ws.name}: {not_in_feast_message(ws.name)}",
        description=(
            f"Window aggregations as of each request's time, served by skewless "
            f"({not_in_feast_message(ws.name)})"
        ),
        tags={WINDOW_SET_TAG: ref},
    )
