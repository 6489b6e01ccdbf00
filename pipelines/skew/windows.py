"""Window features in the skew report: why a served window differs from its offline
recomputation, and how fresh the online window state was.

The server logs, per window feature, the time the windows were computed as of
(``window_ts``) and the newest event the state held before it (``<feature>__event_ts``).
Offline, the window set's source gives the newest event before that time. So:

* ``window_state_lag``: the state's newest event is older than the source's (the stream
  or the pushes stopped or fell behind); the lag is the difference;
* ``missing_online_key``: the state held no event of the entity while the source has one
  (never backfilled, or its key deleted);
* ``late_event``: the state had caught up to the newest event, yet the value differs: an
  older event reached the source after the request (out of event-time order);
* ``code_skew``: anything else.

Freshness per window feature is the lag over every logged row (0 when the state had
the source's newest event), as p50 / p99 / max seconds and the share of rows with no lag.
An event replayed twice changes nothing online (its member is written once), so it shows
as no mismatch at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.skew.attribution import CODE_SKEW, MISSING_KEY, record_example
from pipelines.skew.consistency import Consistency
from pipelines.training_windows import load_window_set, newest_before, read_events
from store.manifest import Manifest

WINDOW_STATE_LAG = "window_state_lag"
LATE_EVENT = "late_event"
WINDOW_CAUSES = (WINDOW_STATE_LAG, LATE_EVENT)


def _micros(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps as int64 micros, nulls as the minimum int64."""
    us = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(np.iinfo(np.int64).min)
    return np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.int64)


def offline_newest(repo: str | Path, manifest: Manifest, served: pa.Table) -> dict[str, np.ndarray]:
    """Per window set of the logged features: the source's newest event in the longest
    window before each row's ``window_ts`` (micros; int64 min when none)."""
    out: dict[str, np.ndarray] = {}
    if "window_ts" not in served.column_names:
        return out
    for name, spec in manifest.window_sets.items():
        if not any(k in served.column_names for k in spec.entities):
            continue
        ws = load_window_set(repo, spec)
        queries = served.select([*spec.entities, "window_ts"])
        events = read_events(spec, ws, queries)
        newest = _micros(newest_before(events, ws, queries, "window_ts")).copy()
        # an event older than the longest window is outside every window: the state need
        # not hold it (the server reads from there on), so it counts as none
        start = _micros(queries.column("window_ts")) - spec.max_window_micros
        newest[newest < start] = np.iinfo(np.int64).min
        out[name] = newest
    return out


def attribute_windows(
    repo: str | Path, manifest: Manifest, result: Consistency
) -> dict[str, dict[str, Any]]:
    """Fill the causes and examples of window features; return their freshness."""
    windows = {n: fc for n, fc in result.features.items() if fc.kind == "window"}
    if not windows:
        return {}
    newest = offline_newest(repo, manifest, result.served)
    freshness: dict[str, dict[str, Any]] = {}
    served = result.served
    for name, fc in windows.items():
        col = f"{name}__event_ts"
        if fc.source not in newest or col not in served.column_names:
            continue
        offline_t = newest[fc.source]
        served_t = _micros(served.column(col))
        none = np.iinfo(np.int64).min
        seen = served_t != none
        has = offline_t != none
        lag = np.where(has & seen, np.maximum(offline_t - served_t, 0), 0)
        freshness[name] = _summary(lag, has & ~seen)
        keys = list(manifest.window_sets[fc.source].entities)
        for i in np.flatnonzero(result.mismatch_masks[name]).tolist():
            if has[i] and not seen[i]:
                cause, extra = MISSING_KEY, {}
            elif lag[i] > 0:
                cause, extra = WINDOW_STATE_LAG, {"lag_seconds": lag[i] / 1e6}
            elif has[i]:
                cause, extra = LATE_EVENT, {}
            else:
                cause, extra = CODE_SKEW, {}
            fc.causes[cause] += 1
            record_example(fc, served, result.offline, i, keys, None, cause, extra)
    return freshness


def _summary(lag_us: np.ndarray, unseen: np.ndarray) -> dict[str, Any]:
    """Freshness of one window feature over the logged rows (seconds)."""
    n = int(lag_us.size)
    if n == 0:
        return {"rows": 0}
    s = lag_us / 1e6
    return {
        "rows": n,
        "fresh_share": float(np.mean((lag_us == 0) & ~unseen)),
        "lag_p50_s": float(np.percentile(s, 50)),
        "lag_p99_s": float(np.percentile(s, 99)),
        "lag_max_s": float(s.max()),
        "entities_without_state": int(unseen.sum()),
    }
