"""Seeded synthetic raw events for the card-fraud example: transactions with a fraud label.

The project's ``generator`` (skewless.yaml), run by ``skewless generate``.

The generator writes three Parquet tables (``users/``, ``merchants/``, ``transactions/``) and a
``_manifest.json``. Output is a pure function of ``(seed, rows, start, days, faults)``, so tests and
benchmarks can rebuild the exact same bytes. Transactions are produced in vectorised numpy chunks
(one file per chunk, each chunk a contiguous slice of event time) to keep memory bounded at any
size, and written into a temporary directory that replaces ``out_dir`` only once complete.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import replace_dir, staging_dir
from transforms.errors import SkewlessError

GENERATOR_VERSION = 1
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK_ROWS = 1_000_000
MIN_USERS = 100
MIN_MERCHANTS = 50
FAULTS = frozenset({"null_user_id", "naive_timestamps", "duplicate_events", "late_arrivals"})

_US_PER_MINUTE = 60_000_000
_US_PER_DAY = 86_400_000_000
_TS = pa.timestamp("us", tz="UTC")

# Countries with the weight of each as a home country; fraud episodes favour the last few.
COUNTRIES = np.array(
    ["US", "GB", "DE", "FR", "ES", "IT", "NL", "CA", "MX", "BR"]
    + ["IN", "JP", "AU", "SG", "PL", "SE", "IE", "TR", "NG", "RO"]
)
_HOME_WEIGHTS = np.array([30, 12, 10, 8, 6, 5, 4, 5, 3, 3, 3, 3, 2, 1, 2, 1, 1, 1, 0.5, 0.5])
_FRAUD_COUNTRY_WEIGHTS = np.array([3, 2, 1, 1, 1, 1, 1, 1, 2, 6, 2, 1, 1, 2, 2, 1, 1, 5, 8, 6])

# (category, mean log-amount, risky); listed by popularity, merchants get categories Zipf-wise.
_CATEGORIES: tuple[tuple[str, float, bool], ...] = (
    ("grocery", 3.5, False),
    ("restaurants", 3.3, False),
    ("fuel", 3.8, False),
    ("coffee", 1.9, False),
    ("online_retail", 3.9, False),
    ("pharmacy", 3.0, False),
    ("transport", 2.8, False),
    ("clothing", 4.0, False),
    ("entertainment", 3.4, False),
    ("subscriptions", 2.6, False),
    ("utilities", 4.5, False),
    ("home_improvement", 4.3, False),
    ("electronics", 5.0, True),
    ("health", 4.2, False),
    ("travel", 5.6, False),
    ("hotels", 5.3, False),
    ("gift_cards", 4.0, True),
    ("jewelry", 5.4, True),
    ("gambling", 4.0, True),
    ("crypto_exchange", 5.0, True),
)
CATEGORIES = np.array([c[0] for c in _CATEGORIES])
_CAT_MU = np.array([c[1] for c in _CATEGORIES])
_CAT_RISKY = np.array([c[2] for c in _CATEGORIES])

# (segment, share of users, log spending offset, activity multiplier)
_SEGMENTS: tuple[tuple[str, float, float, float], ...] = (
    ("student", 0.20, -0.45, 0.8),
    ("standard", 0.55, 0.0, 1.0),
    ("premium", 0.18, 0.45, 1.4),
    ("business", 0.07, 0.8, 2.0),
)
SEGMENTS = np.array([s[0] for s in _SEGMENTS])

DEVICES = np.array(["pos", "web", "ios", "android"])
_DEVICE_WEIGHTS = np.array([0.45, 0.25, 0.15, 0.15])

# Relative transaction intensity by hour of day (UTC) and by weekday (Monday first).
_HOURLY = np.array(
    [0.15, 0.1, 0.07, 0.06, 0.07, 0.15, 0.35, 0.6, 0.85, 0.95, 1.0, 1.1]
    + [1.3, 1.25, 1.05, 1.0, 1.05, 1.2, 1.4, 1.35, 1.1, 0.8, 0.5, 0.3]
)
_WEEKDAY = np.array([0.95, 0.95, 1.0, 1.0, 1.15, 1.2, 0.9])

_AMOUNT_SIGMA = 0.55
_BURST_ROW_SHARE = 0.012  # share of transactions that belong to bursts (velocity signal)
_FRAUD_EPISODE_SHARE = 0.6  # share of bursts that are fraud (card testing, account takeover)


@dataclass(frozen=True)
class GenerateReport:
    """What ``generate`` wrote: counts, fraud rate and wall time."""

    out_dir: Path
    rows: int
    users: int
    merchants: int
    files: int
    fraud_rate: float
    seconds: float


@dataclass(frozen=True)
class _Users:
    ids: np.ndarray
    home: np.ndarray  # index into COUNTRIES
    level: np.ndarray  # log spending offset
    device: np.ndarray  # index into DEVICES (usual device)
    activity_p: np.ndarray  # probability that a legit transaction belongs to the user


@dataclass(frozen=True)
class _Merchants:
    ids: np.ndarray
    category: np.ndarray  # index into CATEGORIES
    popularity_p: np.ndarray
    risky_p: np.ndarray  # popularity restricted to risky categories


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream) so chunks do not depend on each other."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(stream,)))


def _string_column(values: np.ndarray, index: np.ndarray) -> pa.Array:
    """Strings from small vocabulary ``values`` picked by ``index``, without Python objects."""
    return pa.array(values.tolist(), type=pa.string()).take(pa.array(index, type=pa.int32()))


def _make_users(n: int, seed: int, start_us: int) -> tuple[_Users, pa.Table]:
    rng = _rng(seed, 0)
    seg_share = np.array([s[1] for s in _SEGMENTS])
    seg = rng.choice(len(_SEGMENTS), size=n, p=seg_share / seg_share.sum())
    home = rng.choice(len(COUNTRIES), size=n, p=_HOME_WEIGHTS / _HOME_WEIGHTS.sum())
    level = np.array([s[2] for s in _SEGMENTS])[seg] + rng.normal(0.0, 0.35, n)
    device = rng.choice(len(DEVICES), size=n, p=_DEVICE_WEIGHTS)
    activity = rng.lognormal(0.0, 0.9, n) * np.array([s[3] for s in _SEGMENTS])[seg]
    # Account age: mostly years, some recent; always before the first event.
    age_days = np.minimum(rng.exponential(500.0, n) + 1.0, 3650.0)
    signup_us = start_us - (age_days * _US_PER_DAY).astype(np.int64)
    signup_us -= signup_us % 1_000_000
    ids = np.arange(1, n + 1, dtype=np.int64)
    table = pa.table(
        {
            "user_id": pa.array(ids, pa.int64()),
            "signup_ts": pa.array(signup_us, pa.int64()).cast(_TS),
            "home_country": _string_column(COUNTRIES, home),
            "segment": _string_column(SEGMENTS, seg),
        }
    )
    users = _Users(ids, home, level, device, activity / activity.sum())
    return users, table


def _make_merchants(n: int, seed: int) -> tuple[_Merchants, pa.Table]:
    rng = _rng(seed, 1)
    cat_w = 1.0 / np.arange(1, len(CATEGORIES) + 1) ** 1.1
    category = rng.choice(len(CATEGORIES), size=n, p=cat_w / cat_w.sum())
    if n >= len(CATEGORIES):  # every category exists, so downstream vocabularies are stable
        category[rng.permutation(n)[: len(CATEGORIES)]] = np.arange(len(CATEGORIES))
    country = rng.choice(len(COUNTRIES), size=n, p=_HOME_WEIGHTS / _HOME_WEIGHTS.sum())
    popularity = 1.0 / rng.permutation(np.arange(1, n + 1)) ** 0.8
    risky = popularity * _CAT_RISKY[category]
    if risky.sum() == 0:  # tiny merchant sets may lack risky categories
        risky = popularity.copy()
    ids = np.arange(1, n + 1, dtype=np.int64)
    table = pa.table(
        {
            "merchant_id": pa.array(ids, pa.int64()),
            "category": _string_column(CATEGORIES, category),
            "country": _string_column(COUNTRIES, country),
        }
    )
    merchants = _Merchants(ids, category, popularity / popularity.sum(), risky / risky.sum())
    return merchants, table


def _intensity_cdf(start_us: int, days: int) -> np.ndarray:
    """Cumulative event intensity per minute of the window (daily and weekly seasonality)."""
    minutes = np.arange(days * 1440, dtype=np.int64)
    ts_min = start_us // _US_PER_MINUTE + minutes
    hour = (ts_min // 60) % 24
    weekday = (ts_min // 1440 + 3) % 7  # 1970-01-01 was a Thursday
    return np.cumsum(_HOURLY[hour] * _WEEKDAY[weekday])


def _sample_times(
    rng: np.random.Generator, n: int, cdf: np.ndarray, lo: float, hi: float, start_us: int
) -> np.ndarray:
    """``n`` event times (us since epoch) drawn from the intensity between masses lo and hi."""
    u = lo + rng.random(n) * (hi - lo)
    minute = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    return start_us + minute * _US_PER_MINUTE + rng.integers(0, _US_PER_MINUTE, n)


def _make_chunk(
    chunk: int,
    n: int,
    n_chunks: int,
    seed: int,
    users: _Users,
    merchants: _Merchants,
    cdf: np.ndarray,
    start_us: int,
    end_us: int,
) -> dict[str, np.ndarray]:
    """One time slice of transactions as numpy columns, sorted by event time."""
    rng = _rng(seed, 2 + chunk)
    total = float(cdf[-1])
    lo, hi = total * chunk / n_chunks, total * (chunk + 1) / n_chunks

    # Bursts: groups of 2..~10 transactions by one user within minutes; most are fraud episodes.
    n_groups = int(rng.poisson(n * _BURST_ROW_SHARE / 5.0)) if n >= 20 else 0
    sizes = 2 + rng.poisson(3.0, n_groups)
    sizes = sizes[np.cumsum(sizes) <= n // 2]
    n_groups = len(sizes)
    n_burst = int(sizes.sum())
    n_base = n - n_burst
    group_fraud = rng.random(n_groups) < _FRAUD_EPISODE_SHARE
    group_of = np.repeat(np.arange(n_groups), sizes)
    first = np.cumsum(sizes) - sizes
    pos_in_group = np.arange(n_burst) - np.repeat(first, sizes)

    # Legit arrivals: a superposition of per-user Poisson processes is a Poisson process whose
    # events belong to user u with probability rate_u / total rate.
    user_idx = np.empty(n, dtype=np.int64)
    user_idx[:n_base] = rng.choice(len(users.ids), size=n_base, p=users.activity_p)
    # Compromised cards are anyone's; legit bursts follow activity.
    g_user = np.where(
        group_fraud,
        rng.integers(0, len(users.ids), n_groups),
        rng.choice(len(users.ids), size=n_groups, p=users.activity_p),
    )
    user_idx[n_base:] = g_user[group_of]

    ts = np.empty(n, dtype=np.int64)
    ts[:n_base] = _sample_times(rng, n_base, cdf, lo, hi, start_us)
    anchor = _sample_times(rng, n_groups, cdf, lo, hi, start_us)
    gap_mean_s = np.where(group_fraud, 40.0, 150.0)[group_of]
    gaps = (rng.exponential(1.0, n_burst) * gap_mean_s * 1e6).astype(np.int64)
    gaps[pos_in_group == 0] = 0
    within = np.cumsum(gaps) - np.repeat((np.cumsum(gaps) - gaps)[first], sizes)
    ts[n_base:] = np.minimum(anchor[group_of] + within, end_us - 1)

    in_fraud_episode = np.zeros(n, dtype=bool)
    in_fraud_episode[n_base:] = group_fraud[group_of]

    # Merchants: popularity-weighted; fraud episodes lean to risky categories.
    merchant_idx = rng.choice(len(merchants.ids), size=n, p=merchants.popularity_p)
    to_risky = in_fraud_episode & (rng.random(n) < 0.6)
    merchant_idx[to_risky] = rng.choice(
        len(merchants.ids), size=int(to_risky.sum()), p=merchants.risky_p
    )
    category = merchants.category[merchant_idx]

    # Country of the transaction: home mostly; abroad when travelling or in a fraud episode.
    home = users.home[user_idx]
    country = home.copy()
    travel = rng.random(n) < 0.03
    n_c = len(COUNTRIES)
    away = rng.choice(n_c, size=n, p=_HOME_WEIGHTS / _HOME_WEIGHTS.sum())
    country[travel] = away[travel]
    g_foreign = rng.random(n_groups) < 0.55
    g_country = rng.choice(
        n_c, size=n_groups, p=_FRAUD_COUNTRY_WEIGHTS / _FRAUD_COUNTRY_WEIGHTS.sum()
    )
    ep_foreign = np.zeros(n, dtype=bool)
    ep_foreign[n_base:] = (group_fraud & g_foreign)[group_of]
    ep_country = np.zeros(n, dtype=np.int64)
    ep_country[n_base:] = g_country[group_of]
    country[ep_foreign] = ep_country[ep_foreign]
    clash = (travel | ep_foreign) & (country == home)
    country[clash] = (country[clash] + 1 + rng.integers(0, n_c - 1, int(clash.sum()))) % n_c
    foreign = country != home

    # Device: the user's usual one mostly; fraud episodes use one (often new) device throughout.
    usual = users.device[user_idx]
    device = usual.copy()
    other = rng.random(n) < 0.08
    device[other] = rng.integers(0, len(DEVICES), int(other.sum()))
    g_device = rng.integers(0, len(DEVICES), n_groups)
    ep_device = np.zeros(n, dtype=np.int64)
    ep_device[n_base:] = g_device[group_of]
    device[in_fraud_episode] = ep_device[in_fraud_episode]
    new_device = device != usual

    # Amount: log-normal around the user's level and the category's typical ticket.
    z = rng.normal(0.0, 1.0, n) + np.where(in_fraud_episode, 1.3, 0.0)
    amount = np.exp(users.level[user_idx] + _CAT_MU[category] + _AMOUNT_SIGMA * z)
    amount = np.maximum(np.round(amount, 2), 0.5)

    # Label: a logistic risk model of the observable signals; fraud episodes are mostly fraud.
    risky = _CAT_RISKY[category]
    logit = (
        -5.6
        + 1.2 * np.maximum(z, 0.0)
        + 2.0 * foreign
        + 0.9 * risky
        + 1.3 * new_device
        + 0.8 * (np.arange(n) >= n_base)
    )
    p = np.where(in_fraud_episode, 0.85, 1.0 / (1.0 + np.exp(-logit)))
    is_fraud = rng.random(n) < p

    # Ingestion delay: seconds usually, occasionally minutes.
    delay_s = rng.exponential(2.0, n) + np.where(rng.random(n) < 0.01, rng.exponential(120.0, n), 0)
    created = ts + 1_000 + (delay_s * 1e6).astype(np.int64)

    order = np.argsort(ts, kind="stable")
    return {
        "user_id": users.ids[user_idx][order],
        "merchant_id": merchants.ids[merchant_idx][order],
        "amount": amount[order],
        "currency_country": country[order],
        "device": device[order],
        "event_timestamp": ts[order],
        "created_timestamp": created[order],
        "is_fraud": is_fraud[order],
    }


def _apply_faults(
    rng: np.random.Generator,
    cols: dict[str, np.ndarray],
    faults: frozenset[str],
    rate: float,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Row-level faults; returns the columns and a null mask for user_id (or None)."""
    n = len(cols["txn_id"])
    if "late_arrivals" in faults:
        late = rng.random(n) < rate
        hours = rng.uniform(2.0, 72.0, int(late.sum()))
        cols["created_timestamp"][late] += (hours * 3_600_000_000).astype(np.int64)
    if "duplicate_events" in faults:
        dup = np.flatnonzero(rng.random(n) < rate)
        order = np.argsort(np.concatenate([np.arange(n), dup]), kind="stable")
        cols = {k: np.concatenate([v, v[dup]])[order] for k, v in cols.items()}
        # The resent copy arrives later; same txn_id, same event time.
        resent = np.zeros(len(order), dtype=bool)
        resent[np.flatnonzero(order >= n)] = True
        extra = rng.integers(1_000_000, 600_000_000, int(resent.sum()))
        cols["created_timestamp"][resent] += extra
    null_mask = None
    if "null_user_id" in faults:
        null_mask = rng.random(len(cols["txn_id"])) < rate
    return cols, null_mask


def _transactions_table(
    cols: dict[str, np.ndarray], null_user: np.ndarray | None, naive: bool
) -> pa.Table:
    ts_type = pa.timestamp("us") if naive else _TS
    return pa.table(
        {
            "txn_id": pa.array(cols["txn_id"], pa.int64()),
            "user_id": pa.array(cols["user_id"], pa.int64(), mask=null_user),
            "merchant_id": pa.array(cols["merchant_id"], pa.int64()),
            "amount": pa.array(cols["amount"], pa.float64()),
            "currency_country": _string_column(COUNTRIES, cols["currency_country"]),
            "device": _string_column(DEVICES, cols["device"]),
            "event_timestamp": pa.array(cols["event_timestamp"], pa.int64()).cast(ts_type),
            "created_timestamp": pa.array(cols["created_timestamp"], pa.int64()).cast(ts_type),
            "is_fraud": pa.array(cols["is_fraud"], pa.bool_()),
        }
    )


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def _schema_json(schema: pa.Schema) -> dict[str, str]:
    return {field.name: str(field.type) for field in schema}


def _check_args(rows: int, out_dir: Path, days: int, start: datetime, fault_rate: float) -> None:
    if rows <= 0:
        raise SkewlessError(f"rows must be positive, got {rows}")
    if days <= 0:
        raise SkewlessError(f"days must be positive, got {days}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise SkewlessError("start must be timezone-aware (UTC)")
    if not 0.0 <= fault_rate <= 0.5:
        raise SkewlessError(f"fault_rate must be in [0, 0.5], got {fault_rate}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SkewlessError(f"output path {out_dir} exists and is not a directory")


def generate(
    rows: int,
    out_dir: Path,
    seed: int = 7,
    start: datetime | None = None,
    days: int = 30,
    progress: bool = True,
    inject_faults: Iterable[str] = (),
    fault_rate: float = 0.001,
    chunk_rows: int = CHUNK_ROWS,
) -> GenerateReport:
    """Write ``rows`` synthetic card transactions plus users and merchants under ``out_dir``.

    Deterministic: the same ``(rows, seed, start, days, inject_faults, fault_rate, chunk_rows)``
    give byte-identical files. Users number ``max(100, rows // 50)``, merchants
    ``max(50, rows // 500)``. Events span ``days`` days from ``start`` (default 2024-01-01 UTC)
    with daily and weekly seasonality; files are time slices ``part-00000.parquet``... sorted by
    event time (burst tails may spill up to ~30 minutes past a slice). ``is_fraud`` (~1-2%)
    rises with amount above the user's usual level, a foreign ``currency_country``, risky
    categories, a device other than the user's usual one, and bursts of transactions within
    minutes.

    The data is clean unless ``inject_faults`` names faults, each hitting ``fault_rate`` of rows
    (``naive_timestamps`` hits whole files), for tests of the downstream pipeline:

    - ``null_user_id``: ``user_id`` is null;
    - ``naive_timestamps``: transaction timestamps are written as ``timestamp[us]`` without tz;
    - ``duplicate_events``: the event is written twice (same ``txn_id``), the copy ingested later;
    - ``late_arrivals``: ``created_timestamp`` is 2-72 hours after the event.

    Output is written to a temporary directory beside ``out_dir`` and renamed into place when
    complete, so a failure leaves any previous ``out_dir`` untouched. Raises ``SkewlessError``
    for bad arguments (non-positive rows or days, naive ``start``, ``out_dir`` being a file,
    unknown fault names).
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    start = DEFAULT_START if start is None else start
    _check_args(rows, out_dir, days, start, fault_rate)
    if chunk_rows <= 0:
        raise SkewlessError(f"chunk_rows must be positive, got {chunk_rows}")
    faults = frozenset(inject_faults)
    unknown = faults - FAULTS
    if unknown:
        raise SkewlessError(f"unknown faults {sorted(unknown)}; known: {', '.join(sorted(FAULTS))}")

    start_us = int(start.timestamp() * 1_000_000)
    end_us = start_us + days * _US_PER_DAY
    n_users = max(MIN_USERS, rows // 50)
    n_merchants = max(MIN_MERCHANTS, rows // 500)
    n_chunks = -(-rows // chunk_rows)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out_dir)
    try:
        for sub in ("users", "merchants", "transactions"):
            (tmp / sub).mkdir(parents=True)
        users, users_table = _make_users(n_users, seed, start_us)
        merchants, merchants_table = _make_merchants(n_merchants, seed)
        _write(users_table, tmp / "users" / "part-00000.parquet")
        _write(merchants_table, tmp / "merchants" / "part-00000.parquet")
        cdf = _intensity_cdf(start_us, days)

        written = fraud = 0
        txn_schema: pa.Schema | None = None
        with _progress(progress, rows) as advance:
            for chunk in range(n_chunks):
                n = rows // n_chunks + (1 if chunk < rows % n_chunks else 0)
                cols = _make_chunk(
                    chunk, n, n_chunks, seed, users, merchants, cdf, start_us, end_us
                )
                first_id = 1 + chunk * (rows // n_chunks) + min(chunk, rows % n_chunks)
                cols = {"txn_id": np.arange(first_id, first_id + n, dtype=np.int64), **cols}
                fraud += int(cols["is_fraud"].sum())
                null_user = None
                if faults:
                    fault_rng = _rng(seed, 1_000_000 + chunk)
                    cols, null_user = _apply_faults(fault_rng, cols, faults, fault_rate)
                table = _transactions_table(cols, null_user, "naive_timestamps" in faults)
                txn_schema = table.schema
                _write(table, tmp / "transactions" / f"part-{chunk:05d}.parquet")
                written += table.num_rows
                advance(n)

        assert txn_schema is not None
        manifest: dict[str, Any] = {
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "rows": rows,
            "start": start.astimezone(UTC).isoformat(),
            "days": days,
            "chunk_rows": chunk_rows,
            "faults": sorted(faults),
            "fault_rate": fault_rate if faults else 0.0,
            "counts": {
                "users": n_users,
                "merchants": n_merchants,
                "transactions": written,
                "transaction_files": n_chunks,
                "fraud": fraud,
            },
            "fraud_rate": fraud / rows,
            "schema": {
                "users": _schema_json(users_table.schema),
                "merchants": _schema_json(merchants_table.schema),
                "transactions": _schema_json(txn_schema),
            },
        }
        (tmp / "_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return GenerateReport(
        out_dir=out_dir,
        rows=rows,
        users=n_users,
        merchants=n_merchants,
        files=n_chunks,
        fraud_rate=fraud / rows,
        seconds=time.perf_counter() - began,
    )


class _progress:
    """A rich progress bar on stderr, or a no-op; yields an ``advance(n)`` callable."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda _n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("generating transactions"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.__enter__()
        task = self._bar.add_task("generate", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
