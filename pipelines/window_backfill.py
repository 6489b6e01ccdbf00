"""Backfill the online window state of a project's window sets from their sources.

``skewless materialize`` runs it after the views (and ``skewless demo`` through it): each
window set's raw events from ``end - (longest window + grace)`` to ``end`` go through
:func:`store.window_state.backfill`, the same writes ``POST /push`` and the streaming job
make. Older events cannot change a window answered at or after ``end - grace`` (rule 28),
and the writes are idempotent, so running it again, or streaming the same events after
it, leaves the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from pipelines.training_windows import load_window_set
from store.manifest import MANIFEST_NAME, Manifest
from transforms.errors import SchemaError, StoreUnavailable


def backfill_windows(
    repo: str | Path, end: datetime | None = None, names: Sequence[str] | None = None
) -> dict[str, int]:
    """Events written per window set (all sets, or those in ``names``); ``end`` None
    takes every event of the source. A Feast repo without a skewless manifest (never
    `skewless apply`-ed) has no window sets."""
    from pipelines.materialize import redis_client
    from store.window_state import backfill

    if not (Path(repo) / MANIFEST_NAME).is_file():
        return {}
    manifest = Manifest.load(repo)
    specs = [s for n, s in manifest.window_sets.items() if names is None or n in names]
    if not specs:
        return {}
    client = redis_client(manifest.redis_connection_string)
    out: dict[str, int] = {}
    try:
        for spec in specs:
            ws = load_window_set(repo, spec)
            if not spec.source:
                raise SchemaError(f"window set '{spec.name}': no source; re-run `skewless apply`")
            data = ds.dataset(spec.source, format="parquet")
            flt = None
            if end is not None:
                span = timedelta(microseconds=spec.max_window_micros + spec.grace_micros)
                t = ds.field(ws.event_timestamp)
                flt = (t >= pa.scalar(end - span)) & (t <= pa.scalar(end))
            batches = data.to_batches(filter=flt, batch_size=65_536)
            out[spec.name] = backfill(
                client, manifest.project, ws, batches, grace_micros=spec.grace_micros
            )
    except OSError as exc:
        raise StoreUnavailable(f"window backfill: {exc}") from None
    finally:
        client.close()
    return out
