"""Naive baselines scored on the same test split as the model.

* majority: the most frequent training class, always.
* persistence: the direction of the mid-price move over the h seconds *before* t,
  classified by the labeller's threshold rule (``contracts.labels.direction_from_movement``)
  at the threshold the labels were made with; the past price is the last price-tape row
  in [t - h - tol, t - h] (the mirror of the label's first row in [t + h, t + h + tol],
  found by the labelling core's window search), falling back to the samples
  themselves; with no past price it says NEUTRAL.
* logreg: multinomial logistic regression on the last sample's (normalised) features,
  class-weighted ("balanced").
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from backend.contracts.groups import PRICE_TAPE
from backend.contracts.labels import direction_from_movement
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.labelling.labels import PriceIndex, PriceRows
from backend.ml_engine.labelling.symbol_codes import symbol_codes


def past_prices(
    t_ms: np.ndarray, codes: np.ndarray, ref_ts: np.ndarray, ref_codes: np.ndarray, ref_price: np.ndarray, horizon_ms: int, tol_ms: int
) -> np.ndarray:
    """Price of the last reference row of the same symbol in [t - h - tol, t - h]; NaN where none.

    ``t_ms``, ``codes``: (n,) query times (ms) and symbol codes; ``ref_*``: (m,) reference
    rows in any order. Returns (n,) float64.
    """
    if ref_ts.size == 0 or t_ms.size == 0:
        return np.full(t_ms.shape, np.nan)
    n_codes = 1 + int(max(codes.max(), ref_codes.max()))
    queries = PriceIndex(PriceRows(t_ms, codes, np.zeros(t_ms.size)), n_codes)
    refs = PriceIndex(PriceRows(ref_ts, ref_codes, ref_price), n_codes)
    price, _when = refs.lookup(queries, -horizon_ms - tol_ms, -horizon_ms, last=True)
    return queries.to_input_order(price)


def persistence_predictions(
    t_ms, codes, mid, horizon_s: int, threshold_pct: float, tol_s: float, tape=None, samples=None
) -> tuple[np.ndarray, dict]:
    """Persistence direction for samples ``(t_ms, codes, mid)``, each (n,).

    ``tape`` / ``samples``: (ts ms, codes, price) triples of past prices; the tape is
    tried first. Returns (n,) int8 class codes and counts of where the past price came
    from (``from_tape``, ``from_samples``, ``no_past_price``).
    """
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
    preds = direction_from_movement(move, threshold_pct)
    info = {"from_tape": used_tape, "from_samples": int(known.sum()) - used_tape, "no_past_price": int((~known).sum())}
    return preds, info


def read_tape(store: FeatureStore, symbols: list[str], start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tape rows of ``symbols`` in [start_ms, end_ms] as (ts ms, codes into ``symbols``, mid), each (m,)."""
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date()  # noqa: E731
    ts_type = pa.timestamp("ms", tz="UTC")
    window = (ds.field("timestamp") >= pa.scalar(start_ms, ts_type)) & (ds.field("timestamp") <= pa.scalar(end_ms, ts_type))
    table = store.read_offline_table(
        PRICE_TAPE, day(start_ms), day(end_ms), symbols, ["timestamp", "symbol", "mid_price"], filter=window
    )
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float64))
    if table.num_rows == 0:
        return empty
    codes = symbol_codes(table.column("symbol"), symbols)
    keep = codes >= 0
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()[keep]
    mid = table.column("mid_price").to_numpy()[keep]
    return ts, codes[keep], mid


def majority_predictions(train_labels: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """(n,) int8 predictions of the most frequent training class, and that class."""
    cls = int(np.bincount(train_labels.astype(np.int64), minlength=3).argmax())
    return np.full(n, cls, dtype=np.int8), cls


def logreg_predictions(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int, max_rows: int) -> np.ndarray:
    """Class-weighted logistic regression on (n, F) features; at most ``max_rows`` training rows
    (a seeded random subset). Returns (n_test,) int8 predictions.

    The fit runs with one BLAS thread: for F=110 the products are small, and multi-threaded
    OpenBLAS spinning on a busy machine made the fit 20x slower (3 s -> 70 s for 6k rows
    on 2 loaded cores, measured for bench/eval_bench.py --run-overhead).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if X_train.shape[0] > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(X_train.shape[0], max_rows, replace=False))
        X_train, y_train = X_train[pick], y_train[pick]
    if np.unique(y_train).size < 2:
        return np.full(X_test.shape[0], int(y_train[0]), dtype=np.int8)
    clf = LogisticRegression(max_iter=300, class_weight="balanced", random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        # A few hundred iterations is plenty for a baseline; not converging to 1e-4 does not matter here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train, y_train)
        return clf.predict(X_test).astype(np.int8)
