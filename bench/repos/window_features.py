"""The window set of the window benchmark (``bench.windows``): the shape ``skewless init``
declares (``driver_windows``), over two windows, so a lookup asks 8 window features."""

from transforms import Float64, Nullable, String, WindowSet, aggregate


@aggregate(ops=("count", "sum", "mean", "max"), windows=("1h", "24h"))
def trip_fare(fare: Nullable[Float64]) -> Float64:
    """The fares of a driver's trips in each window before the request time."""
    return fare


DRIVER_WINDOWS = WindowSet(
    name="driver_windows",
    entities={"driver_id": String},
    aggregations=[trip_fare],
    event_timestamp="pickup_at",
    event_id="trip_id",
)
