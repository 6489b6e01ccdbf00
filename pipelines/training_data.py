"""Model inputs offline: the point-in-time join plus the request-time transforms.

The same function builds training sets and recomputes logged online requests for skew
reports, so both see exactly what the online server computes: view features as of
strictly before the request time (the online store cannot hold a row written at the
request instant), then the request-time transforms with the frozen artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from pipelines.training_set import LOCAL, Engine, get_training_set, write_training_set
from pipelines.training_windows import window_columns
from store.manifest import Manifest
from transforms.artifact import StatisticsArtifact
from transforms.errors import SchemaError
from transforms.runtime import FeatureSetRunner


def model_inputs(
    repo: str | Path,
    entities: pa.Table,
    service: str,
    *,
    timestamp_column: str = "event_timestamp",
    strict_before: bool = True,
    engine: Engine = LOCAL,
    window_time_column: str | None = None,
) -> tuple[pa.Table, dict[str, str]]:
    """``entities`` (keys, request time, request data, any labels) + every feature of
    ``service``, one output row per input row in input order; and its metadata.

    View features are joined strictly before the request time unless ``strict_before`` is
    False (then a feature row at the request instant joins too). ``engine`` says where
    the joins run (:class:`pipelines.training_set.Engine`); every engine gives the same rows.

    Window features are each row's windows ``[t - w, t)`` as of ``window_time_column``
    (default: the request time; the skew report passes the time the server computed them
    at), from the window set's raw events (:mod:`pipelines.training_windows`)."""
    manifest = Manifest.load(repo)
    try:
        spec = manifest.services[service]
    except KeyError:
        raise SchemaError(
            f"feature service '{service}' is not in the manifest "
            f"(known: {sorted(manifest.services)})"
        ) from None
    not_views = set(manifest.request_transforms) | set(manifest.window_sets)
    hidden = _hidden_inputs(manifest, spec.features)
    wanted = [*spec.features, *hidden]
    view_refs = [f for f in wanted if f.split(":")[0] not in not_views]
    table = (
        get_training_set(
            repo,
            entities,
            view_refs,
            timestamp_column=timestamp_column,
            strict_before=strict_before,
            engine=engine,
        )
        if view_refs
        else _checked_rows(entities, timestamp_column)  # windows and transforms only
    )
    windows = window_columns(
        repo,
        manifest,
        table,
        wanted,
        window_time_column or timestamp_column,
        spark_master=(engine.master or "local[*]") if engine.name == "spark" else None,
    )
    for name, column in windows.items():
        table = table.append_column(name, column)
    request_fields = sorted(
        {f for rt in manifest.request_transforms.values() for f in rt.request_schema}
    )
    meta: dict[str, str] = {
        "skewless.service": service,
        "skewless.features": json.dumps(spec.features),
        "skewless.request_fields": json.dumps(request_fields),
        "skewless.timestamp_column": timestamp_column,
    }
    for name, rt in manifest.request_transforms.items():
        wanted = [f.split(":")[1] for f in spec.features if f.split(":")[0] == name]
        if not wanted:
            continue
        fs = manifest.feature_set(rt)
        art = StatisticsArtifact.load(manifest.artifact_file(rt))
        runner = FeatureSetRunner(fs, art, fs.select(wanted, request_time=True))
        batch = table.combine_chunks()
        outputs = runner.run_arrow(batch.to_batches()[0], []) if batch.num_rows else None
        for f in runner.outputs:
            column = outputs.column(f.name) if outputs is not None else pa.array([], f.type.arrow)
            table = table.append_column(f.name, column)
        meta[f"skewless.artifact.{name}"] = art.content_hash
        meta[f"skewless.fingerprints.{name}"] = json.dumps(fs.fingerprints(art), sort_keys=True)
    if hidden:  # read for the transforms only, as the server does
        table = table.drop_columns([ref.partition(":")[2] for ref in hidden])
    return table, meta


def _checked_rows(entities: pa.Table, timestamp_column: str) -> pa.Table:
    if timestamp_column not in entities.column_names:
        raise SchemaError(f"entity rows have no timestamp column '{timestamp_column}'")
    return entities


def _hidden_inputs(manifest: Manifest, features: list[str]) -> list[str]:
    """The view and window features the service's request-time transforms read that the
    service does not list itself ("view:feature" references)."""
    used = {f.partition(":")[0] for f in features}
    listed = {f.partition(":")[2] for f in features}
    hidden: list[str] = []
    for name in manifest.request_transforms:
        if name not in used:
            continue
        for _, src, feat in manifest.transform_reads(name):
            ref = f"{src}:{feat}"
            if feat not in listed and ref not in hidden:
                hidden.append(ref)
    return hidden


def build_training_set(
    repo: str | Path,
    entities: pa.Table,
    out: str | Path,
    service: str,
    *,
    timestamp_column: str = "event_timestamp",
    strict_before: bool = True,
    stats_engine: str = "python",
    engine: Engine = LOCAL,
) -> pa.Table:
    """Write the training set to ``out`` (Parquet, artifact hash and fingerprints in its
    schema metadata, atomically) and its per-feature statistics next to it
    (``<out>.stats.json``, the baseline of skew reports); return the table.

    View features are as of strictly before each request time (``strict_before=False``:
    at most the request time), as ``model_inputs``."""
    from pipelines.skew.statistics import statistics_for_training_set

    table, meta = model_inputs(
        repo,
        entities,
        service,
        timestamp_column=timestamp_column,
        strict_before=strict_before,
        engine=engine,
    )
    write_training_set(table, out, meta)
    statistics_for_training_set(out, engine=stats_engine)
    return table
