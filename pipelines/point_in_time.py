"""Point-in-time (as-of) join of feature rows onto entity rows, for ``training_set``.

Join keys are coded densely (``KeyCoder``), pass 1 scans only keys and times
(``_scan_keys``), and ``as_of`` picks each entity row's feature row on packed
(code, time) integer keys (``_time_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.materialize import ViewPlan
from transforms.errors import SchemaError

BATCH_ROWS = 1_000_000  # rows per scanned batch
# Candidate units of event timestamps (ns), coarsest first: scaling by the unit keeps the
# packed (code, time) key small without a second sort.
_UNITS = (86_400 * 10**9, 3_600 * 10**9, 60 * 10**9, 10**9, 10**6, 10**3)
_KEY_BITS = 62


def _int64(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamp/integer column -> int64 numpy (no nulls expected)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return np.asarray(col.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


# --------------------------------------------------------------------- key coding


class KeyCoder:
    """Dense int64 codes for the distinct join-key tuples of the entity rows.

    ``entity_codes`` holds one code in [0, size) per entity row; ``encode`` maps feature rows
    to the same codes, or -1 when their key was not requested.
    """

    def __init__(self, columns: Sequence[pa.ChunkedArray], file_types: Sequence[pa.DataType]):
        self.uniques: list[pa.Array] = []
        self.steps: list[tuple[int, np.ndarray | None]] = []  # (radix, combined uniques)
        codes: np.ndarray | None = None
        for col, ftype in zip(columns, file_types, strict=True):
            ftype = ftype.value_type if pa.types.is_dictionary(ftype) else ftype
            etype = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            # integer keys meet as int64, so an entity key out of a narrower file's range
            # matches nothing instead of failing the cast
            both_int = pa.types.is_integer(ftype) and pa.types.is_integer(etype)
            target = pa.int64() if both_int else ftype
            try:
                col = pc.cast(col, target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"join key column of type {col.type} cannot match file type {ftype}: {exc}"
                ) from exc
            uniq = pc.unique(col)
            if isinstance(uniq, pa.ChunkedArray):
                uniq = uniq.combine_chunks()
            self.uniques.append(uniq)
            part = _int64(pc.index_in(col, value_set=uniq))
            if codes is None:
                codes = part
                self.steps.append((len(uniq), None))
                continue
            radix = len(uniq)
            combined = codes * radix + part
            table, codes = np.unique(combined, return_inverse=True)
            self.steps.append((radix, table))
        assert codes is not None
        self.entity_codes = codes.astype(np.int64, copy=False)
        last = self.steps[-1]
        self.size = len(self.uniques[0]) if last[1] is None else len(last[1])

    def encode(self, columns: Sequence[pa.Array]) -> np.ndarray:
        """Codes of feature rows (-1: key absent from the entity rows or null)."""
        codes: np.ndarray | None = None
        for col, uniq, (radix, table) in zip(columns, self.uniques, self.steps, strict=True):
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            idx = pc.index_in(col, value_set=uniq).fill_null(-1)
            part = _int64(idx)
            if codes is None:
                codes = part
                continue
            assert table is not None
            combined = codes * radix + part
            pos = np.searchsorted(table, combined)
            pos_c = np.minimum(pos, len(table) - 1)
            ok = (codes >= 0) & (part >= 0) & (table[pos_c] == combined)
            codes = np.where(ok, pos_c, -1)
        assert codes is not None
        return codes


# ------------------------------------------------------------------------ pass 1


@dataclass
class KeyScan:
    """Pass 1 result: per kept feature row its code, event and created time (int64 ns)."""

    code: np.ndarray
    ts: np.ndarray
    created: np.ndarray | None
    rows: np.ndarray | None  # scan row number per kept row (None: all rows kept)
    scanned: int


def _ts_filter(ts_col: str, ts_type: pa.DataType, lo: int | None, hi: int) -> ds.Expression:
    """Pushdown filter lo <= ts <= hi (ns bounds, in the file column's time zone)."""
    st = pa.timestamp("ns", tz=ts_type.tz)
    expr = ds.field(ts_col) <= pa.scalar(hi, type=st)
    if lo is not None:
        expr = expr & (ds.field(ts_col) >= pa.scalar(lo, type=st))
    return expr


def _scan_keys(
    dataset: ds.Dataset,
    cols: dict[str, str],
    plan: ViewPlan,
    coder: KeyCoder,
    flt: ds.Expression,
) -> KeyScan:
    names = [cols[k] for k in plan.join_keys] + [cols[plan.timestamp_field]]
    if plan.created_field:
        names.append(cols[plan.created_field])
    nk = len(plan.join_keys)
    codes, tss, creates = [], [], []
    masks: list[tuple[int, np.ndarray | None]] = []  # (first scan row, kept mask or None)
    scanned = 0
    for batch in dataset.to_batches(columns=names, filter=flt, batch_size=BATCH_ROWS):
        n = batch.num_rows
        if n == 0:
            continue
        code = coder.encode([batch.column(i) for i in range(nk)])
        tcol = batch.column(nk)
        ts = _int64(pc.cast(tcol, pa.timestamp("ns", tz=tcol.type.tz)))
        created = None
        if plan.created_field:
            c = batch.column(nk + 1)
            c = pc.cast(c, pa.timestamp("ns", tz=c.type.tz)).cast(pa.int64())
            created = _int64(c.fill_null(np.iinfo(np.int64).min))  # null created loses
        keep = code >= 0
        if keep.all():
            masks.append((scanned, None))
        else:
            masks.append((scanned, keep))
            code, ts = code[keep], ts[keep]
            created = None if created is None else created[keep]
        codes.append(code)
        tss.append(ts)
        if created is not None:
            creates.append(created)
        scanned += n
    rows = None
    if any(m is not None for _, m in masks):
        ends = [o for o, _ in masks[1:]] + [scanned]
        rows = np.concatenate(
            [
                np.arange(o, e, dtype=np.int64) if m is None else np.flatnonzero(m) + o
                for (o, m), e in zip(masks, ends, strict=True)
            ]
        )
    empty = np.empty(0, dtype=np.int64)
    return KeyScan(
        code=np.concatenate(codes) if codes else empty,
        ts=np.concatenate(tss) if tss else empty,
        created=(np.concatenate(creates) if creates else empty) if plan.created_field else None,
        rows=rows,
        scanned=scanned,
    )


# ---------------------------------------------------------------------- as-of join


def _time_keys(
    f_ts: np.ndarray, e_ts: np.ndarray, strict: bool, code_bits: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Order-preserving small integers for feature and entity times.

    Returns (k_f, k_e, bits): k_f in [1, kmax+1], k_e in [0, kmax+1], with
    ``f_ts <= e_ts`` (``<`` when strict) iff ``k_f <= k_e``.
    """
    tmin, tmax = int(f_ts.min()), int(f_ts.max())
    span = tmax - tmin
    unit = 1
    for u in _UNITS:
        if span % u == 0 and not np.any((f_ts - tmin) % u):
            unit = u
            break
    kmax = span // unit
    if (kmax + 2).bit_length() + code_bits <= _KEY_BITS:
        k_f = (f_ts - tmin) // unit + 1
        t = np.clip(e_ts, tmin - 1, tmax + 1) - tmin
        k_e = -((-t) // unit) - 1 if strict else t // unit  # ceil(t/u) - 1 or floor(t/u)
        return k_f, np.clip(k_e, -1, kmax) + 1, (kmax + 2).bit_length()
    uniq = np.unique(f_ts)  # fall back to ranks
    k_f = np.searchsorted(uniq, f_ts) + 1
    k_e = np.searchsorted(uniq, e_ts, side="left" if strict else "right")
    bits = (len(uniq) + 1).bit_length()
    if bits + code_bits > _KEY_BITS:
        raise SchemaError("too many distinct keys x timestamps to pack into 62 bits")
    return k_f, k_e, bits


def as_of(
    scan: KeyScan,
    e_code: np.ndarray,
    e_ts: np.ndarray,
    size: int,
    ttl: timedelta | None,
    strict: bool,
) -> np.ndarray:
    """Index into the scan of each entity row's feature row, -1 if none (consumes ``scan``).

    The winner is the greatest (event time, created time) with the same code and event time
    <= the entity time (< when ``strict``), null when older than ``entity time - ttl``.
    """
    n = len(scan.code)
    out = np.full(len(e_code), -1, dtype=np.int64)
    if n == 0 or len(e_code) == 0:
        return out
    code_bits = max(size, 1).bit_length()
    k_f, k_e, bits = _time_keys(scan.ts, e_ts, strict, code_bits)
    key = (scan.code << bits) | k_f
    scan.code = np.empty(0, dtype=np.int64)  # free early
    del k_f
    order = np.argsort(key, kind="stable")
    sk = key[order]
    del key
    # keep one row per (code, event time): greatest created time, last in file order on ties
    first = np.ones(n, dtype=bool)
    np.not_equal(sk[1:], sk[:-1], out=first[1:])
    last = np.ones(n, dtype=bool)
    last[:-1] = first[1:]
    single = first & last
    if not single.all():
        keep = single
        dup = np.flatnonzero(~single)
        starts = np.flatnonzero(first[dup])
        if scan.created is None:
            win = np.flatnonzero(last[dup])  # last in file order (stable sort)
        else:
            c = scan.created[order[dup]]
            lens = np.diff(np.append(starts, len(dup)))
            is_max = c == np.repeat(np.maximum.reduceat(c, starts), lens)
            pos = np.where(is_max, np.arange(len(dup)), -1)
            win = np.maximum.reduceat(pos, starts)
        keep[dup[win]] = True
        sk, order = sk[keep], order[keep]
    scan.created = None
    q = (e_code << bits) | k_e
    j = np.searchsorted(sk, q, side="right") - 1
    jc = np.maximum(j, 0)
    ok = (j >= 0) & ((sk[jc] >> bits) == e_code)
    row = order[jc]
    if ttl is not None and ttl.total_seconds() != 0:
        ttl_ns = int(ttl / timedelta(microseconds=1)) * 1000
        ok &= scan.ts[row] >= e_ts - ttl_ns
    out[ok] = row[ok]
    return out
