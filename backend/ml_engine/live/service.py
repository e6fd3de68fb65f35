"""The model in the loop as a bot service: predict at every collection tick, paper-trade every tick.

``LiveModelService`` is handed to ``backend.engine.bot.Bot(services=...)`` by the app
(``--model URI``); the engine sits below this package, so it knows the service only by its
hooks: ``async start(bot)``, ``async on_tick(now_ms, out, snapshots)`` after the tick's
samples are collected, ``async stop()``.

Per tick:

* on a collection tick, the tick's samples (``TickOutput.samples``: all warm symbols) go
  through ``LivePredictor.step`` in one batched forward pass on a private one-thread
  executor (the pass costs more than a millisecond per tick and torch releases the GIL, so
  the event loop keeps running); the tick waits for it before the next one starts;
* every tick, ``PaperTrader.step`` runs against the books the engine accepted this tick
  (those with a price-tape row), with the tick's predictions or none;
* predictions and fills are appended to the collector's ``prediction`` and ``paper_trade``
  streams: spooled before anything else, flushed to the ``predictions`` and ``paper_trades``
  groups like samples, recovered after a crash.

The service also keeps a bounded in-memory view for the web app's Live Model panel
(``live_view``): recent predictions with their realised class, the rolling live macro-F1,
the paper equity curve and the trader's totals. The realised class is found here as the
labeller finds it (the first price-tape row of the symbol in [t + h, t + h + tolerance],
its move against the sample's mid classified at the model's threshold), only for the
panel: the stored predictions are labelled by the labeller, and the live report reads those.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import numpy as np

from backend.contracts.labels import DEFAULT_TOLERANCE_S, direction_from_movement

from backend.ml_engine.data_collection.streams import PAPER_REASONS, PAPER_TRADE, PREDICTION
from backend.ml_engine.live.inference import LivePredictor, PredictionBatch
from backend.ml_engine.live.live_metrics import rolling_macro_f1
from backend.ml_engine.live.model_loader import LiveModel
from backend.ml_engine.live.paper import BUY, PaperConfig, PaperTrader

__all__ = ["LiveModelService"]

log = logging.getLogger(__name__)

#: points kept for the panel: predictions (all symbols) and equity curve points
VIEW_PREDICTIONS = 2000
VIEW_EQUITY = 2000
#: labelled predictions the panel's rolling macro-F1 is taken over
ROLLING_WINDOW = 100


class LiveModelService:
    """A loaded model and its paper trader, run by the bot's tick.

    ``model``: from ``model_loader.load_live_model`` (already checked against the bot);
    ``symbols``: the bot's universe; ``paper``: the paper-trading settings (its ``horizon_s``
    should be the model's). ``collector`` defaults to the bot's at ``start``.
    """

    def __init__(self, model: LiveModel, symbols, paper: PaperConfig, collector: Any = None):
        self.model = model
        self.uri = model.spec.model_uri
        self.symbols = list(symbols)
        self.predictor = LivePredictor.from_live_model(model, self.symbols)
        self.trader = PaperTrader(self.symbols, paper, self.uri)
        self.paper = paper
        self.collector = collector
        self._pool: ThreadPoolExecutor | None = None
        self.predictions = 0
        self.skips: dict[str, int] = {}
        self.recent: deque[tuple[int, str, float, float, float, int]] = deque(maxlen=VIEW_PREDICTIONS)
        self.equity: deque[tuple[int, float, float]] = deque(maxlen=VIEW_EQUITY)
        self.last_inference_ms = 0.0
        self.horizon_ms = int(model.spec.horizon_s) * 1000
        self.tolerance_ms = int(DEFAULT_TOLERANCE_S * 1000)
        self._pending: dict[str, deque[tuple[int, float, int]]] = {s: deque() for s in self.symbols}
        #: (ts, symbol, predicted, realised) of labelled predictions, oldest first
        self.realised: deque[tuple[int, str, int, int]] = deque(maxlen=VIEW_PREDICTIONS)
        self._realised_lookup: dict[tuple[int, str], int] = {}

    async def start(self, bot: Any) -> None:
        """Attach to the bot's collector and open the inference thread."""
        if self.collector is None:
            self.collector = bot.ml_data_collector
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-model")
        log.info("Model %s loaded (%s): %d features, windows of %d samples, horizon %d s; paper trading %s",
                 self.uri, self.model.source, self.model.spec.n_features, self.model.spec.sequence_length,
                 self.model.spec.horizon_s, _paper_line(self.paper))
        for w in self.model.warnings:
            log.warning("Model %s: %s", self.uri, w)

    async def on_tick(self, now_ms: int, out: Any, snapshots: Mapping[str, Any]) -> None:
        """Predict from the tick's samples (if any), paper-trade against its accepted books, spool both."""
        batch: PredictionBatch | None = None
        if out.samples:
            syms = [s.symbol for s in out.samples]
            ts = np.fromiter((s.ts_ms for s in out.samples), dtype=np.int64, count=len(syms))
            feats = np.stack([np.asarray(s.features, dtype=np.float32) for s in out.samples])
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            batch = await loop.run_in_executor(self._pool, self.predictor.step, syms, ts, feats)
            self.last_inference_ms = (loop.time() - t0) * 1000.0
            self._record_predictions(batch, {s.symbol: float(s.mid) for s in out.samples})
        self._realise(out.tape)
        books = {sym: snapshots[sym].book for sym in out.tape if sym in snapshots}
        step = self.trader.step(int(now_ms), books, batch)
        for t in step.trades:
            self.collector.add_record(PAPER_TRADE, t.symbol, (t.timestamp, 1 if t.side == BUY else -1,
                                                              PAPER_REASONS.index(t.reason)),
                                      (t.qty, t.price, t.fee), source=self.uri)
        if batch is not None or step.trades:
            self.equity.append((int(now_ms), step.equity_gross, step.equity_net))

    def _realise(self, tape: Mapping[str, Any]) -> None:
        """Give pending predictions their realised class from this tick's tape rows (panel only)."""
        threshold = self.model.spec.label_threshold_pct
        for sym, row in tape.items():
            pending = self._pending.get(sym)
            while pending and row.ts_ms >= pending[0][0] + self.horizon_ms:
                ts, mid, pred = pending.popleft()
                if row.ts_ms <= ts + self.horizon_ms + self.tolerance_ms and mid > 0:
                    move = (row.mid / mid - 1.0) * 100.0
                    real = int(direction_from_movement(np.array([move]), threshold)[0])
                    if len(self.realised) == self.realised.maxlen:
                        old = self.realised[0]
                        self._realised_lookup.pop((old[0], old[1]), None)
                    self.realised.append((ts, sym, pred, real))
                    self._realised_lookup[(ts, sym)] = real

    def _record_predictions(self, batch: PredictionBatch, mids: Mapping[str, float]) -> None:
        for sym, reason in batch.skips:
            self.skips[reason] = self.skips.get(reason, 0) + 1
        for j, sym in enumerate(batch.symbols):
            p = batch.prob[j]
            d = int(batch.predicted_direction[j])
            ts = int(batch.ts_ms[j])
            self.collector.add_record(PREDICTION, sym, (ts, int(batch.horizon_s), d),
                                      (float(p[0]), float(p[1]), float(p[2])), source=self.uri)
            self.recent.append((ts, sym, float(p[0]), float(p[1]), float(p[2]), d))
            self._pending[sym].append((ts, mids.get(sym, float("nan")), d))
        self.predictions += len(batch)

    async def stop(self) -> None:
        """Close the inference thread and log the paper-trading totals (open positions stay open, marked at mid)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        s = self.trader.summary()
        log.info("Model %s: %d predictions (skipped: %s); paper trading: %s", self.uri, self.predictions,
                 ", ".join(f"{k}={v}" for k, v in sorted(self.skips.items())) or "none", summary_line(s))

    def live_view(self) -> dict:
        """The panel's data (JSON-ready): model, counts, recent predictions, equity curve, paper totals."""
        spec = self.model.spec
        s = self.trader.summary()
        return {
            "model_uri": self.uri,
            "run_id": spec.run_id,
            "horizon_s": spec.horizon_s,
            "sequence_length": spec.sequence_length,
            "test_macro_f1": _num(spec.test_metrics.get("test_macro_f1")),
            "test_accuracy": _num(spec.test_metrics.get("test_accuracy")),
            "baselines": {k[len("baseline_"):-len("_macro_f1")]: _num(v) for k, v in spec.test_metrics.items()
                          if k.startswith("baseline_") and k.endswith("_macro_f1")},
            "predictions": self.predictions,
            "skips": dict(self.skips),
            "last_inference_ms": round(self.last_inference_ms, 3),
            "recent": [{"ts": t, "symbol": sym, "prob": [round(a, 5), round(b, 5), round(c, 5)], "direction": d,
                        "realised": self._realised_lookup.get((t, sym))}
                       for t, sym, a, b, c, d in list(self.recent)[-50:]],
            "labelled": len(self.realised),
            "live_accuracy": _num(np.mean([p == r for _, _, p, r in self.realised])) if self.realised else None,
            "rolling_window": ROLLING_WINDOW,
            "rolling_macro_f1": self._rolling(),
            "equity": [{"ts": t, "gross": g, "net": n} for t, g, n in self.equity],
            "paper": {k: _num(v) for k, v in vars(s).items() if k != "extra"},
            "paper_config": {k: getattr(self.paper, k) for k in ("enter_prob", "notional_quote", "taker_fee_bps", "slippage_bps")},
        }


    def _rolling(self) -> list[dict]:
        if not self.realised:
            return []
        arr = np.array([(p, r) for _, _, p, r in self.realised], dtype=np.int64)
        window = min(ROLLING_WINDOW, len(arr))
        f1 = rolling_macro_f1(arr[:, 1], arr[:, 0], window)
        ts = [t for t, _, _, _ in self.realised]
        return [{"ts": ts[i], "macro_f1": float(f1[i])} for i in range(window - 1, len(arr))]


def summary_line(s) -> str:
    """One line of paper-trading totals (quote units)."""
    hit = "n/a" if s.hit_rate != s.hit_rate else f"{s.hit_rate:.1%}"
    return (f"gross PnL {s.gross_pnl:+.2f}, net PnL {s.net_pnl:+.2f} (fees {s.fees:.2f}), {s.fills} fills, "
            f"{s.round_trips} round trips, hit rate {hit}, turnover {s.turnover:.0f}, "
            f"max drawdown gross {s.max_drawdown_gross:.2f} / net {s.max_drawdown_net:.2f}, open positions {s.open_positions}")


def _paper_line(cfg: PaperConfig) -> str:
    return (f"enter at p >= {cfg.enter_prob:g}, {cfg.notional_quote:g} quote per trade, taker fee {cfg.taker_fee_bps:g} bps, "
            f"slippage {cfg.slippage_bps:g} bps, exit after {cfg.horizon_s} s")


def _num(v):
    """A float for JSON: None for NaN/None (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None
