"""Naive baselines scored on the same test split as the model.

* majority: the most frequent training class, always.
* persistence: the direction of the mid-price move over the h seconds *before* t,
  classified with the labeller's threshold; the past price is the last price-tape row
  in [t - h - tol, t - h] (the mirror of the label's first row in [t + h, t + h + tol]),
  falling back to the samples themselves; with no past price it says NEUTRAL.
* logreg: multinomial logistic regression on the last sample's (normalised) features.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from backend.ml_engine.feature_store.feature_schema import DIRECTION_DOWN, DIRECTION_NEUTRAL, DIRECTION_UP
from backend.ml_engine.feature_store.feature_store import FeatureStore

_KEY_SHIFT = 43  # ms timestamps stay below 2**43 until the year 2248


def _keys(codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return (codes.astype(np.int64) << _KEY_SHIFT) + ts.astype(np.int64)


def direction_from_move(move_pct: np.ndarray, threshold_pct: float) -> np.ndarray:
    out = np.full(move_pct.shape, DIRECTION_NEUTRAL, dtype=np.int8)
    out[move_pct > threshold_pct] = DIRECTION_UP
    out[move_pct < -threshold_pct] = DIRECTION_DOWN
    return out


def past_prices(
    t_ms: np.ndarray, codes: np.ndarray, ref_ts: np.ndarray, ref_codes: np.ndarray, ref_price: np.ndarray, horizon_ms: int, tol_ms: int
) -> np.ndarray:
    """Price of the last reference row of the same symbol in [t - h - tol, t - h]; NaN where none. Refs may be unsorted."""
    if ref_ts.size == 0 or t_ms.size == 0:
        return np.full(t_ms.shape, np.nan)
    order = np.lexsort((ref_ts, ref_codes))
    keys = _keys(ref_codes[order], ref_ts[order])
    target = t_ms - horizon_ms
    idx = np.searchsorted(keys, _keys(codes, target), side="right") - 1
    ok = idx >= 0
    idx_c = np.where(ok, idx, 0)
    src = order[idx_c]
    ok &= (ref_codes[src] == codes) & (ref_ts[src] >= target - tol_ms)
    return np.where(ok, ref_price[src], np.nan)


def persistence_predictions(
    t_ms, codes, mid, horizon_s: int, threshold_pct: float, tol_s: float, tape=None, samples=None
) -> tuple[np.ndarray, dict]:
    """Persistence direction for samples (t_ms, codes, mid); ``tape``/``samples`` are (ts, codes, price) triples."""
    h_ms, tol_ms = int(horizon_s * 1000), int(round(tol_s * 1000))
    past = np.full(t_ms.shape, np.nan)
    used_tape = 0
    if tape is not None and tape[0].size:
        past = past_prices(t_ms, codes, *tape, h_ms, tol_ms)
        used_tape = int(np.isfinite(past).sum())
    missing = ~np.isfinite(past)
    if samples is not None and missing.any():
        past[missing] = past_prices(t_ms[missing], codes[missing], *samples, h_ms, tol_ms)
    known = np.isfinite(past)
    move = np.where(known, (mid / np.where(known, past, 1.0) - 1.0) * 100.0, 0.0)
    preds = direction_from_move(move, threshold_pct)
    info = {"from_tape": used_tape, "from_samples": int(known.sum()) - used_tape, "no_past_price": int((~known).sum())}
    return preds, info


def read_tape(store: FeatureStore, symbols: list[str], start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tape rows of ``symbols`` in [start_ms, end_ms] as (ts, codes into ``symbols``, mid)."""
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date()  # noqa: E731
    ts_type = pa.timestamp("ms", tz="UTC")
    window = (ds.field("timestamp") >= pa.scalar(start_ms, ts_type)) & (ds.field("timestamp") <= pa.scalar(end_ms, ts_type))
    table = store.read_offline_table(
        "price_tape", day(start_ms), day(end_ms), symbols, ["timestamp", "symbol", "mid_price"], filter=window
    )
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float64))
    if table.num_rows == 0:
        return empty
    lookup = {s: i for i, s in enumerate(symbols)}
    enc = table.column("symbol").combine_chunks().dictionary_encode()
    dict_codes = np.array([lookup.get(s, -1) for s in enc.dictionary.to_pylist()], dtype=np.int32)
    codes = dict_codes[enc.indices.to_numpy(zero_copy_only=False)]
    keep = codes >= 0
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()[keep]
    mid = table.column("mid_price").to_numpy()[keep]
    return ts, codes[keep], mid


def majority_predictions(train_labels: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    cls = int(np.bincount(train_labels.astype(np.int64), minlength=3).argmax())
    return np.full(n, cls, dtype=np.int8), cls


def logreg_predictions(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int, max_rows: int) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if X_train.shape[0] > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(X_train.shape[0], max_rows, replace=False))
        X_train, y_train = X_train[pick], y_train[pick]
    if np.unique(y_train).size < 2:
        return np.full(X_test.shape[0], int(y_train[0]), dtype=np.int8)
    clf = LogisticRegression(max_iter=300, class_weight="balanced", random_state=seed)
    with warnings.catch_warnings():
        # A few hundred iterations is plenty for a baseline; not converging to 1e-4 does not matter here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train)
    return clf.predict(X_test).astype(np.int8)
