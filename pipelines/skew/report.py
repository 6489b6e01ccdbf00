"""The skew report: consistency + attribution + drift, as ``report.html`` and ``report.json``.

:func:`build_report` reads the feature logs, recomputes them offline, attributes every
mismatch, compares served values with the training statistics and writes both files; its
:class:`Summary` says whether any threshold was breached (the CLI exits 1 then).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.skew.attribution import CAUSES, attribute, current_state
from pipelines.skew.consistency import (
    Consistency,
    compare,
    entity_frame,
    feature_sources,
    read_logs,
    recompute,
)
from pipelines.skew.drift import (
    Check,
    FeatureDrift,
    compare_all,
    load_thresholds,
    thresholds_for,
    vocabularies,
)
from pipelines.skew.statistics import (
    compute_statistics,
    load_statistics,
    statistics_for_training_set,
    stats_path,
)
from pipelines.skew.windows import WINDOW_CAUSES, attribute_windows
from store.manifest import Manifest
from transforms.atomic import atomic_file
from transforms.errors import SchemaError


@dataclass
class Summary:
    """What the report found; ``breaches`` non-empty means the gate fails."""

    service: str
    rows: int
    exact_match_rate: float
    causes: dict[str, int]
    breaches: list[dict[str, Any]]
    html_path: Path
    json_path: Path
    report: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.breaches


def _pick_service(log: pa.Table, manifest: Manifest, service: str | None) -> str:
    found = sorted(set(log.column("service").to_pylist()) - {None})
    if service is None:
        if len(found) != 1:
            raise SchemaError(f"the logs hold services {found}; choose one with --service")
        service = found[0]
    if service not in manifest.services:
        raise SchemaError(
            f"logged service '{service}' is not in the manifest "
            f"(known: {sorted(manifest.services)})"
        )
    return service


def build_report(
    repo: str | Path,
    log_dir: str | Path,
    out: str | Path,
    training_set: str | Path | None = None,
    *,
    json_out: str | Path | None = None,
    service: str | None = None,
    stats_engine: str = "python",
) -> Summary:
    """Write the HTML and JSON skew report for the logs under ``log_dir``."""
    repo = Path(repo)
    manifest = Manifest.load(repo)
    log = read_logs(log_dir)
    service = _pick_service(log, manifest, service)
    served = log.filter(pc.equal(log.column("service"), service))
    _, _, request_fields = entity_frame(served, manifest, service)
    sources = feature_sources(manifest, service)

    offline = recompute(repo, served, service)
    result = compare(service, served, offline, sources)
    current = current_state(manifest)
    notes = attribute(repo, manifest, result, current)
    freshness = attribute_windows(repo, manifest, result)

    overrides = load_thresholds(manifest)
    checks: list[Check] = [
        Check(
            name,
            "exact_match",
            fc.exact_match_rate,
            thresholds_for(name, overrides)["exact_match"],
            f"{fc.rows - fc.exact} of {fc.rows} differ",
        )  # fmt: skip
        for name, fc in result.features.items()
    ]
    drift: dict[str, FeatureDrift] = {}
    training: dict[str, Any] | None = None
    if training_set is not None:
        path = stats_path(training_set)
        if not path.exists():
            statistics_for_training_set(training_set, engine=stats_engine)
        training = load_statistics(path)
        model_features = [*sources, *request_fields]
        drift, schema = compare_all(
            training, served, model_features, overrides, vocabularies(manifest)
        )
        checks += schema
        for d in drift.values():
            checks += d.checks
    breaches = [c.to_json() for c in checks if c.breached]

    serving_stats = compute_statistics(
        served, [c for c in (*sources, *request_fields) if c in served.column_names]
    )
    report = {
        "generated_at": datetime.now(UTC).isoformat(),
        "service": service,
        "log_dir": str(log_dir),
        "training_set": str(training_set) if training_set is not None else None,
        "rows": served.num_rows,
        "request_time_range": _time_range(served),
        "exact_match_rate": result.exact_match_rate,
        "causes": {c: result.causes.get(c, 0) for c in (*CAUSES, *WINDOW_CAUSES)},
        "freshness": freshness,
        "attribution_notes": notes,
        "current": {
            "artifact_hashes": current.artifact_hashes,
            "fingerprints": current.fingerprints,
        },
        "features": {n: fc.to_json() for n, fc in result.features.items()},
        "drift": {n: d.to_json() for n, d in drift.items()},
        "checks": [c.to_json() for c in checks],
        "breaches": breaches,
        "ok": not breaches,
    }
    out = Path(out)
    json_path = Path(json_out) if json_out is not None else out.with_suffix(".json")
    if json_path == out:
        json_path = out.with_suffix(".json")
    page = render_html(report, result, training, serving_stats, drift)
    with atomic_file(json_path, "w") as fh:  # a crash never leaves half a report
        fh.write(json.dumps(_clean(report), indent=1, sort_keys=False) + "\n")
    with atomic_file(out, "w") as fh:
        fh.write(page)
    return Summary(
        service,
        served.num_rows,
        result.exact_match_rate,
        report["causes"],
        breaches,
        out,
        json_path,
        report,
    )


def _time_range(t: pa.Table) -> list[str] | None:
    if not t.num_rows:
        return None
    mm = pc.min_max(t.column("request_ts"))
    return [str(mm["min"].as_py()), str(mm["max"].as_py())]


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ---------------------------------------------------------------- HTML


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(w: float = 4.2, h: float = 2.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def _distribution_plot(
    name: str, train: dict[str, Any] | None, served: list[Any], categorical: bool
) -> str | None:
    present = [v for v in served if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if train is None and not present:
        return None
    fig, ax = _figure()
    if categorical or (train is not None and train["type"] == "string"):
        top = (train or {}).get("top_values") or {"values": [], "counts": []}
        tc = dict(zip(top["values"], top["counts"], strict=True))
        sc = Counter(present)
        cats = list(dict.fromkeys([*tc, *sc]))[:30]
        x = np.arange(len(cats))
        tt, st = sum(tc.values()) or 1, sum(sc.values()) or 1
        ax.bar(x - 0.2, [tc.get(c, 0) / tt for c in cats], 0.4, label="training")
        ax.bar(x + 0.2, [sc.get(c, 0) / st for c in cats], 0.4, label="serving")
        ax.set_xticks(x, [str(c) for c in cats], rotation=45, fontsize=7)
    else:
        hist = (train or {}).get("histogram")
        if hist and hist.get("edges") and len(hist["edges"]) > 1:
            edges = np.asarray(hist["edges"], dtype=float)
            counts = np.asarray(hist["counts"], dtype=float)
            widths = np.diff(edges)
            widths[widths == 0] = 1.0
            dens = counts / max(counts.sum(), 1) / widths
            ax.stairs(dens, edges, fill=True, alpha=0.4, label="training")
        else:
            edges = np.histogram_bin_edges(np.asarray(present, dtype=float) if present else [0])
        if present:
            x = np.clip(np.asarray(present, dtype=float), edges[0], edges[-1])
            ax.hist(x, bins=edges, density=True, histtype="step", lw=1.5, label="serving")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return _png(fig)


def _delta_plot(name: str, deltas: list[float]) -> str | None:
    if not deltas:
        return None
    fig, ax = _figure()
    ax.hist(deltas, bins=30, color="#c0392b")
    ax.set_title(f"{name}: served - offline", fontsize=9)
    ax.tick_params(labelsize=7)
    return _png(fig)


def _causes_plot(causes: dict[str, int]) -> str | None:
    items = [(c, n) for c, n in causes.items() if n]
    if not items:
        return None
    fig, ax = _figure(5.5, 2.4)
    ax.barh([c for c, _ in items], [n for _, n in items], color="#8e44ad")
    ax.set_title("mismatches by cause", fontsize=9)
    ax.tick_params(labelsize=8)
    return _png(fig)


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.bad{background:#fde2e1} .ok{background:#e3f6e5}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;padding:8px;border-radius:6px}
code{font-size:12px}
"""


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if pct:
            return f"{v:.2%}"
        return f"{v:.4g}"
    return html.escape(str(v))


def _freshness_html(freshness: dict[str, dict[str, Any]]) -> list[str]:
    """Freshness of the window features: the online state's lag behind the source."""
    if not freshness:
        return []
    e = html.escape
    out = [
        "<h2>Freshness of window features</h2><p><small>lag = the source's newest event "
        "before the request time minus the newest one the online state held</small></p>"
        "<table><tr><th class=l>feature</th><th>rows</th><th>no lag</th><th>lag p50 s</th>"
        "<th>lag p99 s</th><th>lag max s</th><th>entities without state</th></tr>"
    ]
    for name, f in freshness.items():
        if not f.get("rows"):
            continue
        bad = f["lag_max_s"] > 0 or f["entities_without_state"]
        out.append(
            f"<tr class={'bad' if bad else 'ok'}><td class=l>{e(name)}</td><td>{f['rows']:,}</td>"
            f"<td>{f['fresh_share']:.2%}</td><td>{_fmt(f['lag_p50_s'])}</td>"
            f"<td>{_fmt(f['lag_p99_s'])}</td><td>{_fmt(f['lag_max_s'])}</td>"
            f"<td>{f['entities_without_state']}</td></tr>"
        )
    out.append("</table>")
    png = _freshness_plot(freshness)
    if png:
        out.append(f"<img alt='window freshness' src='{png}'>")
    return out


def _freshness_plot(freshness: dict[str, dict[str, Any]]) -> str | None:
    names = [n for n, f in freshness.items() if f.get("rows")]
    if not names:
        return None
    fig, ax = _figure(6.0, 0.35 * len(names) + 1.0)
    y = np.arange(len(names))
    ax.barh(y - 0.2, [freshness[n]["lag_p50_s"] for n in names], 0.4, label="p50")
    ax.barh(y + 0.2, [freshness[n]["lag_p99_s"] for n in names], 0.4, label="p99")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("online state lag (s)")
    ax.legend(fontsize=7)
    return _png(fig)


def render_html(
    report: dict[str, Any],
    result: Consistency,
    training: dict[str, Any] | None,
    serving_stats: dict[str, Any],
    drift: dict[str, FeatureDrift],
) -> str:
    """One self-contained page: summary, cause counts, per-feature table, plots."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>skewless skew report: {e(report['service'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Skew report: {e(report['service'])}</h1>",
        f"<p>{report['rows']:,} logged rows, requests {e(str(report['request_time_range']))}; "
        f"online/offline exact match <b>{report['exact_match_rate']:.4%}</b>; "
        f"<b class='{'ok' if report['ok'] else 'bad'}'>"
        f"{'no threshold breached' if report['ok'] else str(len(report['breaches'])) + ' breach(es)'}"
        "</b></p>",
    ]
    if report["breaches"]:
        parts.append("<h2>Breaches</h2><table><tr><th class=l>feature</th><th class=l>check</th>"
                     "<th>value</th><th>threshold</th><th class=l>detail</th></tr>")  # fmt: skip
        for b in report["breaches"]:
            parts.append(
                f"<tr class=bad><td class=l>{e(b['feature'])}</td><td class=l>{e(b['check'])}</td>"
                f"<td>{_fmt(b['value'])}</td><td>{_fmt(b['threshold'])}</td>"
                f"<td class=l>{e(b['detail'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Mismatches by cause</h2><table><tr>")
    parts += [f"<th>{e(c)}</th>" for c in report["causes"]]
    parts.append("</tr><tr>")
    parts += [f"<td>{n}</td>" for n in report["causes"].values()]
    parts.append("</tr></table>")
    causes_png = _causes_plot(report["causes"])
    if causes_png:
        parts.append(f"<img alt='causes' src='{causes_png}'>")
    notes = report["attribution_notes"]
    parts.append(
        f"<p><small>event timestamps logged: {notes['event_ts_logged']}; artifact hashes "
        f"logged: {notes['artifact_hashes_logged']}; inferred attributions: "
        f"{e(json.dumps(notes['inferred']))}</small></p>"
    )
    parts += _freshness_html(report.get("freshness") or {})
    parts.append(
        "<h2>Features</h2><table><tr><th class=l>feature</th><th class=l>source</th>"
        "<th>exact match</th><th>missing</th><th>extra</th><th>differ</th>"
        "<th>mean abs diff</th><th>mean rel diff</th><th class=l>causes</th>"
        "<th class=l>drift</th><th>value</th></tr>"
    )
    for name, fc in result.features.items():
        d = drift.get(name)
        main = None
        if d is not None:
            main = next((c for c in d.checks if c.check in ("jsd", "linf")), None)
        bad = fc.exact < fc.rows or (d is not None and any(c.breached for c in d.checks))
        causes = ", ".join(f"{c}: {n}" for c, n in sorted(fc.causes.items())) or "-"
        parts.append(
            f"<tr class={'bad' if bad else 'ok'}><td class=l>{e(name)}</td>"
            f"<td class=l>{e(fc.kind)}:{e(fc.source)}</td>"
            f"<td>{fc.exact_match_rate:.2%}</td><td>{fc.missing}</td><td>{fc.extra}</td>"
            f"<td>{fc.differ}</td><td>{_fmt(fc.mean_abs_diff)}</td>"
            f"<td>{_fmt(fc.mean_rel_diff)}</td><td class=l>{e(causes)}</td>"
            f"<td class=l>{e(main.check) if main else '-'}</td>"
            f"<td>{_fmt(main.value) if main else '-'}</td></tr>"
        )
    parts.append("</table>")
    other = [
        c for c in report["checks"]
        if c["check"] not in ("exact_match", "jsd", "linf") and c["value"] is not None
    ]  # fmt: skip
    if other:
        parts.append(
            "<h2>Schema and range checks</h2><table><tr><th class=l>feature</th>"
            "<th class=l>check</th><th>value</th><th>threshold</th><th class=l>detail</th></tr>"
        )
        for c in other:
            parts.append(
                f"<tr class={'bad' if c['breached'] else 'ok'}><td class=l>{e(c['feature'])}</td>"
                f"<td class=l>{e(c['check'])}</td><td>{_fmt(c['value'])}</td>"
                f"<td>{_fmt(c['threshold'])}</td><td class=l>{e(c['detail'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Distributions (training vs serving) and deltas</h2><div class=cards>")
    train_feats = (training or {}).get("features", {})
    for name in [*result.features, *(n for n in drift if n not in result.features)]:
        col = result.served.column(name).to_pylist() if name in result.served.column_names else []
        d = drift.get(name)
        dist = _distribution_plot(
            name, train_feats.get(name), col, d is not None and d.kind == "categorical"
        )
        feat = result.features.get(name)
        delta = _delta_plot(name, feat.deltas) if feat is not None else None
        if dist or delta:
            parts.append("<div class=card>")
            if dist:
                parts.append(f"<img alt='{e(name)} distribution' src='{dist}'>")
            if delta:
                parts.append(f"<img alt='{e(name)} deltas' src='{delta}'>")
            parts.append("</div>")
    parts.append("</div>")
    examples = [(n, x) for n, fc in result.features.items() for x in fc.examples[:5]]
    if examples:
        parts.append("<h2>Example mismatches</h2><table><tr><th class=l>feature</th>"
                     "<th class=l>row</th></tr>")  # fmt: skip
        for n, x in examples:
            parts.append(
                f"<tr><td class=l>{e(n)}</td><td class=l><code>"
                f"{e(json.dumps(_clean(x), default=str))}</code></td></tr>"
            )
        parts.append("</table>")
    parts.append(
        f"<p><small>serving statistics over {serving_stats['rows']:,} rows; "
        f"generated {e(report['generated_at'])}</small></p></body></html>"
    )
    return "\n".join(parts)
