"""Which source (``sim``, ``bybit``, ``binance``, ``replay``) each price-tape row came from.

A label's future price must come from the same market as the sample: a simulated
BTCUSDT at 95,000 and a live one at 87,000 at the same moment are two different
series. Samples carry a ``source`` column; the ``price_tape`` group does not, so the
source of a tape row is recovered from the samples themselves:

* the collector writes a tape row at every sample tick with the sample's symbol and
  timestamp, so a tape row with exactly a sample's (symbol, timestamp) is that
  sample's source (an *anchor*);
* one collector process writes each tape file (one flush), and the parts of one flush
  that a UTC midnight splits share the ``<unique>`` end of their file names
  (``features_HHMMSS_<unique>.parquet``): that name is the tape row's *run*;
* within a run and symbol, a row takes the source of the nearest anchor before it
  (after it for the rows before the first anchor); a run with anchors of one source
  only gives that source to its symbols without anchors;
* a run without any anchor (each tape flush is a run, so a flush shorter than one
  sampling interval has none) takes the source of the attributed tape rows within 10 s
  of its time span when they all have one source; otherwise (another group's collector
  alone, or two sources around it) it is *unattributed* (-1) and its rows price no sample.

Labels then search prices per (symbol, source) pair: ``pair_codes`` folds the two
codes into one, so the labelling core's per-code window search never crosses sources.
Everything is vectorised (one lexsort and two accumulations over the tape).
"""

from __future__ import annotations

import numpy as np

UNATTRIBUTED = -1
_TS_BITS = 43  # ms since epoch fit in 43 bits until the year 2248


def run_of_file(name: str) -> str:
    """The run a store file belongs to: its name without ``features_HHMMSS_`` and ``.parquet``.

    The parts of one write that midnight splits into two day folders share it; any other
    name is its own run (the whole name).
    """
    stem = name[:-8] if name.endswith(".parquet") else name
    parts = stem.split("_", 2)
    if len(parts) == 3 and parts[0] == "features" and len(parts[1]) == 6 and parts[1].isdigit():
        return parts[2]
    return stem


def _pack(codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return (codes.astype(np.int64) << _TS_BITS) | (ts.astype(np.int64) & ((1 << _TS_BITS) - 1))


def attribute_tape(
    tape_codes: np.ndarray,
    tape_ts: np.ndarray,
    tape_run: np.ndarray,
    anchor_codes: np.ndarray,
    anchor_ts: np.ndarray,
    anchor_src: np.ndarray,
    adjacent_ms: int = 10_000,
) -> np.ndarray:
    """Source code of every tape row, ``UNATTRIBUTED`` (-1) where none can be told.

    ``tape_codes``, ``tape_ts``, ``tape_run``: (m,) symbol codes, ms timestamps and
    integer run ids of the tape rows; ``anchor_*``: (k,) symbol codes, ms timestamps
    and source codes (>= 0) of the samples, in the same symbol-code space;
    ``adjacent_ms``: how far around an anchorless run to look for the source it continues.
    Returns (m,) int64 in the tape's input order (rules in the module docstring).
    """
    m = tape_ts.size
    out = np.full(m, UNATTRIBUTED, np.int64)
    if m == 0 or anchor_ts.size == 0:
        return out
    # 1. exact (symbol, timestamp) matches
    a_key = _pack(anchor_codes, anchor_ts)
    a_order = np.argsort(a_key, kind="stable")
    a_key, a_src = a_key[a_order], anchor_src[a_order].astype(np.int64)
    t_key = _pack(tape_codes, tape_ts)
    pos = np.minimum(np.searchsorted(a_key, t_key), a_key.size - 1)
    matched = np.where(a_key[pos] == t_key, a_src[pos], UNATTRIBUTED)

    # 2. nearest anchor before (then after) within (run, symbol), in time order
    order = np.lexsort((tape_ts, tape_codes, tape_run))
    grp = _pack(tape_run[order], tape_codes[order])  # run and symbol as one group key (runs < 2**20)
    src = matched[order]
    idx = np.arange(m)
    has = src != UNATTRIBUTED
    prev = np.maximum.accumulate(np.where(has, idx, -1))
    ok = (prev >= 0) & (grp[np.maximum(prev, 0)] == grp)
    filled = np.where(ok, src[np.maximum(prev, 0)], UNATTRIBUTED)
    nxt = np.minimum.accumulate(np.where(has, idx, m)[::-1])[::-1]
    ok = (nxt < m) & (grp[np.minimum(nxt, m - 1)] == grp) & (filled == UNATTRIBUTED)
    filled = np.where(ok, src[np.minimum(nxt, m - 1)], filled)

    # 3. a run whose anchors are all of one source gives it to its rows still without one
    runs = tape_run[order]
    n_runs = int(runs.max()) + 1
    lo = np.full(n_runs, np.iinfo(np.int64).max)
    hi = np.full(n_runs, -1, np.int64)
    np.minimum.at(lo, runs[has], src[has])
    np.maximum.at(hi, runs[has], src[has])
    single = np.where((hi >= 0) & (lo == hi), hi, UNATTRIBUTED)
    filled = np.where(filled == UNATTRIBUTED, single[runs], filled)
    out[order] = filled

    # 4. a run still without a source continues the one source found around its time span
    lost = out == UNATTRIBUTED
    if lost.any() and not lost.all():
        first = np.full(n_runs, np.iinfo(np.int64).max)
        last = np.full(n_runs, np.iinfo(np.int64).min)
        np.minimum.at(first, tape_run[lost], tape_ts[lost])
        np.maximum.at(last, tape_run[lost], tape_ts[lost])
        lost_runs = np.unique(tape_run[lost])
        lo_t, hi_t = first[lost_runs] - adjacent_ms, last[lost_runs] + adjacent_ms
        found = np.full(lost_runs.size, UNATTRIBUTED, np.int64)
        n_found = np.zeros(lost_runs.size, np.int64)
        for s in np.unique(out[~lost]):
            ts_s = np.sort(tape_ts[out == s])
            near = np.searchsorted(ts_s, hi_t, side="right") > np.searchsorted(ts_s, lo_t, side="left")
            found[near] = s
            n_found += near
        assign = np.full(n_runs, UNATTRIBUTED, np.int64)
        assign[lost_runs] = np.where(n_found == 1, found, UNATTRIBUTED)
        out[lost] = assign[tape_run[lost]]
    return out


def pair_codes(symbol_codes: np.ndarray, source_codes: np.ndarray, n_sources: int) -> np.ndarray:
    """One code per (symbol, source) pair: ``symbol * n_sources + source`` as (n,) int64.

    The space has ``n_symbols * n_sources`` codes; with one source the codes are the
    symbol codes unchanged.
    """
    return symbol_codes.astype(np.int64) * int(n_sources) + source_codes.astype(np.int64)
