"""Realised (live) accuracy and macro-F1 of a model's predictions, once the labeller has labelled them;
the statistics of stored paper fills and the price-tape lookups the live report and panel use.

A prediction row of the ``predictions`` group carries the predicted class and, after the
labeller ran, the realised class at each horizon; a model is scored at its own horizon
(``horizon_s``). The scores are the training code's (``evaluate.score``: macro-F1 over the
three classes, a class never predicted scoring 0), so live and test numbers compare directly.
Pure: arrays in, scores out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from backend.ml_engine.live.paper import max_drawdown
from backend.ml_engine.training_orchestrator.evaluate import Scores, score


@dataclass
class LiveReport:
    """Live scores of one model beside its test scores: ``live`` (None before any labelled
    prediction), ``labelled``/``predictions`` counts, ``test_accuracy``/``test_macro_f1`` and the
    test-time baselines' macro-F1 (``baselines``) as logged with the model's run."""

    model_uri: str
    live: Scores | None
    labelled: int
    predictions: int
    test_accuracy: float
    test_macro_f1: float
    baselines: dict

    def as_metrics(self) -> dict[str, float]:
        """``live_accuracy``, ``live_macro_f1``, ``live_labelled`` for MLflow (empty before any label)."""
        if self.live is None:
            return {}
        return {"live_accuracy": self.live.accuracy, "live_macro_f1": self.live.macro_f1, "live_labelled": float(self.labelled)}


def live_scores(model_uri: np.ndarray, predicted: np.ndarray, realised: np.ndarray) -> dict[str, tuple[Scores | None, int, int]]:
    """Per model: (scores over its labelled predictions, labelled count, prediction count).

    ``model_uri`` (n,) str; ``predicted`` (n,) int 0/1/2; ``realised`` (n,) the label column of
    each row's horizon: int with -1, or float with NaN, or a masked/nullable array, where not
    yet labelled.
    """
    model_uri = np.asarray(model_uri).astype(str)
    predicted = np.asarray(predicted, dtype=np.int64)
    realised = np.asarray(np.ma.filled(np.ma.masked_invalid(np.asarray(realised, dtype=np.float64)), -1.0))
    labelled = realised >= 0
    out: dict[str, tuple[Scores | None, int, int]] = {}
    models, inverse = np.unique(model_uri, return_inverse=True)
    for k, uri in enumerate(models):
        rows = inverse == k
        sel = rows & labelled
        n = int(sel.sum())
        scores = score(f"live {uri}", realised[sel].astype(np.int64), predicted[sel]) if n else None
        out[str(uri)] = (scores, n, int(rows.sum()))
    return out


def live_report(model_uri: str, scores: tuple[Scores | None, int, int], test_metrics: Mapping[str, float]) -> LiveReport:
    """Join one model's live scores with the test metrics of its run (``ModelSpec.test_metrics``)."""
    live, labelled, n = scores
    baselines = {
        k[len("baseline_") : -len("_macro_f1")]: float(v)
        for k, v in test_metrics.items()
        if k.startswith("baseline_") and k.endswith("_macro_f1")
    }
    return LiveReport(
        model_uri, live, labelled, n,
        float(test_metrics.get("test_accuracy", np.nan)), float(test_metrics.get("test_macro_f1", np.nan)), baselines,
    )


def rolling_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, window: int) -> np.ndarray:
    """(n,) macro-F1 over the last ``window`` labelled predictions ending at each row (NaN before
    ``window`` rows). Inputs (n,) int 0/1/2 in time order; one cumulative sum of the nine
    confusion cells, so the whole curve costs O(n)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n = y_true.shape[0]
    cells = np.zeros((n + 1, 9), dtype=np.int64)
    cells[np.arange(1, n + 1), y_true * 3 + y_pred] = 1
    cum = np.cumsum(cells, axis=0)
    out = np.full(n, np.nan)
    if n < window:
        return out
    cm = (cum[window:] - cum[:-window]).reshape(-1, 3, 3)  # (n - window + 1, 3, 3)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(np.float64)
    fp = cm.sum(axis=1) - tp
    fn = cm.sum(axis=2) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    out[window - 1 :] = f1.mean(axis=1)
    return out


def fills_pnl(symbol: np.ndarray, signed_qty: np.ndarray, price: np.ndarray, fee: np.ndarray,
              last_mid: Mapping[str, float]) -> dict[str, float]:
    """Gross and net PnL (quote) of stored paper fills: cash flows of the fills plus each symbol's
    open position at ``last_mid`` (its last known mid; a symbol missing there counts its open
    position at its last fill price). ``signed_qty`` (n,) base units, + buy / - sell.

    Returns ``gross``, ``fees``, ``net`` (= gross - fees), ``turnover`` (sum of fill notionals) and
    ``fills``; the same definitions as ``PaperTrader.summary``.
    """
    symbol = np.asarray(symbol).astype(str)
    q = np.asarray(signed_qty, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64)
    gross = float(-(q * p).sum())
    for sym in np.unique(symbol):
        rows = symbol == sym
        pos = float(q[rows].sum())
        if abs(pos) > 1e-12:
            gross += pos * float(last_mid.get(str(sym), p[rows][-1]))
    fees = float(np.asarray(fee, dtype=np.float64).sum())
    return {"gross": gross, "fees": fees, "net": gross - fees, "turnover": float(np.abs(q * p).sum()), "fills": float(q.size)}


def round_trips(symbol: np.ndarray, signed_qty: np.ndarray, price: np.ndarray, fee: np.ndarray) -> np.ndarray:
    """Net PnL (quote) of each completed round trip in fills given in time order; (k,) float64.

    Per symbol, a round trip runs from a flat position back to flat; a fill that flips
    the position closes the trip with the part of its quantity that reaches zero (and that
    share of its fee) and opens the next trip with the rest. Trips still open are left out.
    The loop is over fills (one per paper decision, far fewer than samples), and each fill's
    effect depends on the position the earlier ones left.
    """
    out: list[float] = []
    for sym in np.unique(symbol):
        rows = np.flatnonzero(symbol == sym)
        pos, pnl = 0.0, 0.0
        for q, p, f in zip(signed_qty[rows].tolist(), price[rows].tolist(), fee[rows].tolist()):
            if q == 0:
                continue
            closing = -pos if pos and (pos > 0) != (q > 0) else 0.0
            if closing and abs(q) > abs(closing) + 1e-12:  # a flip: close, then open with the rest
                share = abs(closing) / abs(q)
                out.append(pnl - closing * p - f * share)
                pos, pnl = q - closing, -(q - closing) * p - f * (1 - share)
                continue
            pos += q
            pnl += -q * p - f
            if abs(pos) <= 1e-12:
                out.append(pnl)
                pos, pnl = 0.0, 0.0
    return np.array(out, dtype=np.float64)


def equity_at_fills(symbol: np.ndarray, signed_qty: np.ndarray, price: np.ndarray, fee: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gross, net) equity (quote, (n,) each) after each fill (time order), positions marked at
    their symbol's last fill price."""
    cash = -np.cumsum(signed_qty * price)
    marked = np.zeros(signed_qty.size)
    for sym in np.unique(symbol):
        rows = symbol == sym
        pos = np.cumsum(np.where(rows, signed_qty, 0.0))
        # each symbol's last fill price so far (forward-filled over the other symbols' fills)
        idx = np.maximum.accumulate(np.where(rows, np.arange(signed_qty.size), -1))
        last_px = np.where(idx >= 0, price[np.maximum(idx, 0)], 0.0)
        marked += pos * last_px
    gross = cash + marked
    return gross, gross - np.cumsum(fee)


def paper_stats(symbol: np.ndarray, signed_qty: np.ndarray, price: np.ndarray, fee: np.ndarray,
                last_mid: Mapping[str, float]) -> dict[str, float | int | None]:
    """Everything reported of stored paper fills given in time order (``symbol``, ``signed_qty`` base
    units + buy / - sell, ``price`` quote per base, ``fee`` quote; (n,) each).

    ``fills_pnl``'s ``gross``/``fees``/``net``/``turnover``/``fills`` (open positions at
    ``last_mid``), plus ``round_trips`` and ``hit_rate`` (share of completed round trips with
    net PnL > 0; None before the first), ``max_drawdown_gross``/``max_drawdown_net`` (largest
    fall of the equity at each fill from its running peak, ``paper.max_drawdown``) and
    ``open_positions`` (symbols not flat after the last fill). PnL, fees, turnover, round
    trips and hit rate are ``PaperTrader.summary``'s definitions; the drawdown here sees the
    equity only at fills (marked at fill prices), the trader's at every tick's mid, so it can
    be smaller.
    """
    symbol = np.asarray(symbol).astype(str)
    q = np.asarray(signed_qty, dtype=np.float64)
    p = np.asarray(price, dtype=np.float64)
    f = np.asarray(fee, dtype=np.float64)
    out: dict[str, float | int | None] = dict(fills_pnl(symbol, q, p, f, last_mid))
    gross, net = equity_at_fills(symbol, q, p, f)
    trips = round_trips(symbol, q, p, f)
    names, codes = np.unique(symbol, return_inverse=True)
    open_positions = int((np.abs(np.bincount(codes, weights=q, minlength=names.size)) > 1e-12).sum()) if q.size else 0
    out.update({"round_trips": int(trips.size), "hit_rate": float((trips > 0).mean()) if trips.size else None,
                "max_drawdown_gross": max_drawdown(gross), "max_drawdown_net": max_drawdown(net),
                "open_positions": open_positions})
    return out


def _tape_keys(codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    # one sortable int64 per (symbol code, ms): codes are small and ms since 1970 stay below 2**42
    return codes.astype(np.int64) * (1 << 42) + ts.astype(np.int64)


def mids_at(tape: tuple[np.ndarray, np.ndarray, np.ndarray], codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The tape's mid at exactly each (symbol code, timestamp ms) pair; NaN where the tape has no such row.

    ``tape``: (ts ms, codes, mid) as ``read_tape`` returns it, each (m,); ``codes``/``ts``: (n,).
    Returns (n,) float64. Where the tape holds a pair twice, the later row wins.
    """
    out = np.full(ts.shape, np.nan)
    if tape[0].size == 0 or ts.size == 0:
        return out
    keys = _tape_keys(tape[1], tape[0])
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    want = _tape_keys(codes, ts)
    pos = np.searchsorted(sorted_keys, want, side="right") - 1
    hit = (pos >= 0) & (codes >= 0)
    hit[hit] = sorted_keys[pos[hit]] == want[hit]
    out[hit] = tape[2][order[pos[hit]]]
    return out


def last_mids(tape: tuple[np.ndarray, np.ndarray, np.ndarray], symbols: list[str]) -> dict[str, float]:
    """Each symbol's mid at its latest tape timestamp (``tape`` as ``read_tape`` returns it, codes into
    ``symbols``); symbols without a tape row are absent."""
    ts, codes, mid = tape
    if ts.size == 0:
        return {}
    order = np.lexsort((ts, codes))  # by symbol, then time (stable: the later row of a tie last)
    c = codes[order]
    last = np.flatnonzero(np.r_[c[1:] != c[:-1], True])
    return {symbols[int(c[i])]: float(mid[order[i]]) for i in last}
