"""The Live Model panel without a model in this process: read back from the store.

A bot run with ``--model`` writes its predictions and paper fills to the ``predictions``
and ``paper_trades`` groups (DESIGN.md §6.6). ``StoredLive.view()`` turns the last
``days`` UTC days of those groups into the JSON the panel draws (the shape of
``LiveModelService.live_view``, plus ``"source": "store"``), for the model that predicted
last:

* ``recent``: its newest predictions with the realised class where the labeller has
  labelled them (``future_direction_<h>s`` at the model's own horizon), else ``None``;
* ``labelled``, ``live_accuracy`` and the rolling live macro-F1 over its labelled
  predictions (``live_metrics.rolling_macro_f1``, the training code's definition);
* ``paper``: totals of its fills (``live_metrics.fills_pnl``: open positions at the last
  price-tape mid, as ``python -m backend.apps.live_report`` counts them), round trips and
  hit rate (a round trip ends when a symbol's position returns to zero or flips), and the
  equity curve at each fill (positions marked at each symbol's last fill price), whose
  largest fall is ``max_drawdown_gross``/``max_drawdown_net``;
* the model's test metrics and baselines from its MLflow run (when the tracking store
  has it; ``None`` otherwise).

Blocking (file and MLflow reads): the app calls ``view`` in a worker thread. The result
is kept while the two groups' files (path, size, mtime) stay the same, so the page's
poll every few seconds costs two directory listings.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from backend.contracts.groups import PAPER_TRADES, PREDICTIONS
from backend.contracts.labels import direction_column
from backend.ml_engine.feature_store.feature_schema import HORIZONS_S
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.live.records import column_numpy as _np
from backend.ml_engine.live.live_metrics import equity_at_fills, paper_stats, rolling_macro_f1

__all__ = ["StoredLive"]

log = logging.getLogger("lobbot.web")

RECENT = 50
ROLLING_WINDOW = 100
MAX_POINTS = 2000
#: MLflow facts of a model are read again after this many seconds (a failure too)
RUN_TTL_S = 60.0


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


class StoredLive:
    """Reads the Live Model panel's data from the store under ``store_root``.

    ``runs``: a ``backend.web.runs.RunsReader`` for the model's test metrics (None: none
    shown); ``days``: how many UTC days, back from the newest prediction partition, are read.
    """

    def __init__(self, store_root: Path, runs=None, *, days: int = 7) -> None:
        self.store = FeatureStore(Path(store_root))
        self.runs = runs
        self.days = days
        self._lock = threading.Lock()
        self._last: tuple[tuple, dict] | None = None
        self._run_info: dict[str, tuple[float, dict]] = {}

    def _listing(self, group: str, since: dt.date | None) -> tuple:
        out = []
        for part in self.store.partition_dirs(group, since):
            try:
                entries = sorted(os.scandir(part), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for e in entries:
                if e.name.endswith(".parquet") and not e.name.startswith((".", "_")):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    out.append((e.path, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def view(self) -> dict:
        """The panel's JSON: ``{"loaded": False}`` without stored predictions, else ``{"loaded": True, ...}``."""
        parts = self.store.partition_dirs(PREDICTIONS)
        if not parts:
            return {"loaded": False}
        newest = dt.date.fromisoformat(parts[-1].name.split("=", 1)[1])
        since = newest - dt.timedelta(days=self.days - 1)
        key = (since, self._listing(PREDICTIONS, since), self._listing(PAPER_TRADES, since))
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
        body = self._build(since)
        with self._lock:
            self._last = (key, body)
        return body

    def _build(self, since: dt.date) -> dict:
        labels = [direction_column(h) for h in HORIZONS_S]
        cols = ["timestamp", "symbol", "model_uri", "horizon_s", "prob_down", "prob_neutral", "prob_up",
                "predicted_direction"] + labels
        preds = self.store.read_offline_table(PREDICTIONS, since, None, columns=cols)
        if preds.num_rows == 0:
            return {"loaded": False}
        uri_all = _np(preds, "model_uri").astype(str)
        ts_all = _np(preds, "timestamp").astype(np.int64)
        models = sorted(set(uri_all.tolist()))
        uri = str(uri_all[int(np.argmax(ts_all))])  # the model that predicted last
        mine = preds.filter(pa.array(uri_all == uri))
        ts = _np(mine, "timestamp").astype(np.int64)
        sym = _np(mine, "symbol").astype(str)
        order = np.lexsort((sym, ts))
        ts, sym = ts[order], sym[order]
        horizon = int(_np(mine, "horizon_s")[order][-1])
        prob = np.stack([_np(mine, c).astype(np.float64)[order] for c in ("prob_down", "prob_neutral", "prob_up")], axis=1)
        pred = _np(mine, "predicted_direction").astype(np.int64)[order]
        label_col = direction_column(horizon)
        if label_col in mine.column_names:
            realised = mine.column(label_col).cast(pa.int64()).fill_null(-1).to_numpy()[order]
        else:
            realised = np.full(ts.size, -1, np.int64)
        lab = realised >= 0
        recent = [
            {"ts": int(ts[i]), "symbol": str(sym[i]), "prob": [round(float(x), 5) for x in prob[i]],
             "direction": int(pred[i]), "realised": int(realised[i]) if lab[i] else None}
            for i in range(max(0, ts.size - RECENT), ts.size)
        ]
        rolling = []
        if lab.any():
            lts, ly, lp = ts[lab][-MAX_POINTS:], realised[lab][-MAX_POINTS:], pred[lab][-MAX_POINTS:]
            window = min(ROLLING_WINDOW, lts.size)
            f1 = rolling_macro_f1(ly, lp, window)
            rolling = [{"ts": int(lts[i]), "macro_f1": float(f1[i])} for i in range(window - 1, lts.size)]
        body = {
            "loaded": True,
            "source": "store",
            "since": since.isoformat(),
            "models": models,
            "model_uri": uri,
            "horizon_s": horizon,
            "predictions": int(ts.size),
            "skips": {},
            "recent": recent,
            "labelled": int(lab.sum()),
            "live_accuracy": _num(np.mean(pred[lab] == realised[lab])) if lab.any() else None,
            "rolling_window": ROLLING_WINDOW,
            "rolling_macro_f1": rolling,
        }
        body.update(self._paper(uri, since, sorted(set(sym.tolist())), int(ts.max())))
        body.update(self._model_facts(uri))
        return body

    def _paper(self, uri: str, since: dt.date, symbols: list[str], last_ms: int) -> dict:
        cols = ["timestamp", "symbol", "side", "qty", "price", "fee", "model_uri"]
        trades = self.store.read_offline_table(PAPER_TRADES, since, None, columns=cols)
        if trades.num_rows:
            trades = trades.filter(pa.array(_np(trades, "model_uri").astype(str) == uri))
        if trades.num_rows == 0:
            return {"equity": [], "paper": {"gross_pnl": 0.0, "net_pnl": 0.0, "fees": 0.0, "turnover": 0.0,
                                            "hit_rate": None, "round_trips": 0, "fills": 0, "max_drawdown_gross": 0.0,
                                            "max_drawdown_net": 0.0, "open_positions": 0}}
        ts = _np(trades, "timestamp").astype(np.int64)
        sym = _np(trades, "symbol").astype(str)
        order = np.argsort(ts, kind="stable")
        ts, sym = ts[order], sym[order]
        q = np.where(_np(trades, "side")[order] == "buy", 1.0, -1.0) * _np(trades, "qty").astype(np.float64)[order]
        px = _np(trades, "price").astype(np.float64)[order]
        fee = _np(trades, "fee").astype(np.float64)[order]
        last_mid = self._last_mids(sorted(set(symbols) | set(sym.tolist())), max(last_ms, int(ts[-1])))
        stats = paper_stats(sym, q, px, fee, last_mid)
        gross, net = equity_at_fills(sym, q, px, fee)
        keep = slice(max(0, ts.size - MAX_POINTS), ts.size)
        return {
            "equity": [{"ts": int(t), "gross": float(g), "net": float(n)} for t, g, n in zip(ts[keep], gross[keep], net[keep])],
            "paper": {
                "gross_pnl": stats["gross"], "net_pnl": stats["net"], "fees": stats["fees"],
                "turnover": stats["turnover"], "hit_rate": _num(stats["hit_rate"]),
                "round_trips": stats["round_trips"], "fills": int(ts.size),
                "max_drawdown_gross": stats["max_drawdown_gross"], "max_drawdown_net": stats["max_drawdown_net"],
                "open_positions": stats["open_positions"],
            },
        }

    def _last_mids(self, symbols: list[str], last_ms: int) -> dict[str, float]:
        """Each symbol's last price-tape mid in the hour up to a day after ``last_ms`` (empty without a tape)."""
        from backend.ml_engine.training_orchestrator.baselines import read_tape

        try:
            ts, codes, mid = read_tape(self.store, symbols, last_ms - 3_600_000, last_ms + 86_400_000)
        except Exception as exc:  # no or unreadable tape: open positions are marked at their last fill
            log.debug("live panel: no price tape for the last mids: %s", exc)
            return {}
        out: dict[str, float] = {}
        for i in np.argsort(ts, kind="stable"):
            out[symbols[int(codes[i])]] = float(mid[i])
        return out

    def _model_facts(self, uri: str) -> dict:
        """The model's run id, sequence length, test metrics and baselines from MLflow, cached for ``RUN_TTL_S``."""
        empty = {"run_id": None, "sequence_length": None, "test_macro_f1": None, "test_accuracy": None, "baselines": {}}
        if self.runs is None:
            return empty
        now = time.monotonic()
        hit = self._run_info.get(uri)
        if hit is not None and now - hit[0] < RUN_TTL_S:
            return hit[1]
        try:
            facts = self.runs.model_facts(uri) or empty
        except Exception as exc:  # the tracking store is down or does not know the model: the rest still shows
            log.info("live panel: no MLflow facts for %s: %s", uri, str(exc).splitlines()[0][:200] if str(exc) else exc)
            facts = empty
        self._run_info[uri] = (now, facts)
        return facts
