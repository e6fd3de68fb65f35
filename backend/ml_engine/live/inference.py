"""Online inference: per-symbol windows built exactly as training builds them, one forward pass per tick.

Training (``training_orchestrator.sequences``) sorts samples by (symbol, timestamp), drops
a repeated timestamp (keeping the first), cuts a symbol's rows into gap-free segments (a
new segment wherever the spacing to the previous sample exceeds ``gap_factor`` x the
symbol's sampling interval) and names a window by its last row: the ``L`` rows ending
there, allowed only when all ``L`` lie in one segment. Online, per symbol:

* a sample with a timestamp not after the previous one is refused (``out_of_order``; the
  repeated timestamp training would drop), as is one with a non-finite feature
  (``non_finite``; such a sample never reaches the store);
* a spacing above ``gap_factor`` x interval starts a new run (``gap``): the ring forgets
  the older samples, so no window ever spans a gap;
* a window exists once the current run holds ``L`` samples (before that: ``warming_up``).

So the window that ends at a sample is the one training would build from the same stored
samples, and a prediction at time t reads only samples at or before t (no look-ahead).
All symbols with a window are stacked into one (B, L, F) batch and run through the model
once; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from backend.ml_engine.live.model_loader import LiveModel, ModelSpec

#: reasons a sample gets no prediction (the ``reason`` label the engine may count)
WARMING_UP, GAP, OUT_OF_ORDER, NON_FINITE, UNKNOWN_SYMBOL = "warming_up", "gap", "out_of_order", "non_finite", "unknown_symbol"

_OK, _WARM, _ORDER, _NONFINITE = 0, 1, 2, 3


class WindowRing:
    """Per-symbol ring of the last ``sequence_length`` samples, all symbols in one array.

    ``buf`` (S, L, F) float32; per symbol: ``head`` (S,) ring index of the newest sample,
    ``run`` (S,) samples in the current gap-free run, ``last_ts`` (S,) ms of the newest
    sample. ``interval_ms`` (S,): each symbol's sampling interval; a spacing above
    ``gap_factor`` x ``max(interval, 1)`` ms starts a new run (the rule of
    ``sequences.find_segments``).
    """

    def __init__(self, n_symbols: int, n_features: int, sequence_length: int, interval_ms: np.ndarray, gap_factor: float):
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {sequence_length}")
        self.L = int(sequence_length)
        self.buf = np.zeros((n_symbols, self.L, n_features), dtype=np.float32)
        self.head = np.full(n_symbols, self.L - 1, dtype=np.int64)
        self.run = np.zeros(n_symbols, dtype=np.int64)
        self.last_ts = np.full(n_symbols, np.iinfo(np.int64).min, dtype=np.int64)
        interval = np.broadcast_to(np.asarray(interval_ms, dtype=np.int64), (n_symbols,))
        self.limit_ms = float(gap_factor) * np.maximum(interval, 1)  # (S,) float64, as training computes it
        self._offsets = np.arange(1, self.L + 1, dtype=np.int64)

    def push(self, idx: np.ndarray, ts_ms: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append one sample for each of the distinct symbols ``idx`` (k,) at ``ts_ms`` (k,) int64 ms
        with features ``x`` (k, F) float32.

        Returns (status (k,) int8: 0 window ready, 1 warming up, 2 out of order, 3 non-finite;
        gap (k,) bool: the sample started a new run after a gap). Refused samples change nothing.
        Raises ``ValueError`` when a symbol appears twice in one push.
        """
        idx = np.asarray(idx, dtype=np.int64)
        ts_ms = np.asarray(ts_ms, dtype=np.int64)
        if np.unique(idx).size != idx.size:
            raise ValueError("one sample per symbol per push: a symbol appears twice")
        status = np.zeros(idx.shape[0], dtype=np.int8)
        finite = np.isfinite(x).all(axis=1)
        seen = self.last_ts[idx] != np.iinfo(np.int64).min
        in_order = ~seen | (ts_ms > self.last_ts[idx])
        status[~in_order] = _ORDER
        status[in_order & ~finite] = _NONFINITE
        take = status == 0
        i, t = idx[take], ts_ms[take]
        # Spacing compared as training does: int64 difference > float limit.
        new_run = ~seen[take] | ((t - self.last_ts[i]) > self.limit_ms[i])
        gap = np.zeros(idx.shape[0], dtype=bool)
        gap[np.flatnonzero(take)[new_run & seen[take]]] = True
        self.run[i] = np.where(new_run, 1, self.run[i] + 1)
        self.head[i] = (self.head[i] + 1) % self.L
        self.buf[i, self.head[i]] = x[take]
        self.last_ts[i] = t
        status[np.flatnonzero(take)[self.run[i] < self.L]] = _WARM
        return status, gap

    def windows(self, idx: np.ndarray) -> np.ndarray:
        """(k, L, F) float32 windows of symbols ``idx``, oldest sample first (a copy of the batch only)."""
        idx = np.asarray(idx, dtype=np.int64)
        order = (self.head[idx, None] + self._offsets) % self.L
        return self.buf[idx[:, None], order]


@dataclass
class PredictionBatch:
    """One tick's predictions (rows of the ``predictions`` group, DESIGN.md §6.6).

    ``symbols`` (m,); ``ts_ms`` (m,) int64: the predicted samples' timestamps (ms since the
    epoch, UTC); ``prob`` (m, 3) float32: P(DOWN), P(NEUTRAL), P(UP), each row summing to 1;
    ``predicted_direction`` (m,) int8: argmax (0 DOWN, 1 NEUTRAL, 2 UP); ``skips``: (symbol,
    reason) of samples that got no prediction (``WARMING_UP``, ``GAP``, ``OUT_OF_ORDER``,
    ``NON_FINITE``, ``UNKNOWN_SYMBOL``); a sample that ended a gap and is warming up again is
    listed once, as ``GAP``.
    """

    model_uri: str
    horizon_s: int
    symbols: list[str]
    ts_ms: np.ndarray
    prob: np.ndarray
    predicted_direction: np.ndarray
    skips: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.symbols)

    def prob_of(self, symbol: str) -> np.ndarray | None:
        """(3,) probabilities of ``symbol`` this tick, or None without a prediction."""
        try:
            return self.prob[self.symbols.index(symbol)]
        except ValueError:
            return None


class LivePredictor:
    """Feeds each tick's samples into the per-symbol rings and predicts every ready symbol in one pass.

    ``module``: raw windows (B, L, F) float32 -> (B, 3) logits (``LiveModel.module``: the
    normaliser is inside); ``spec``: how the windows are built (``ModelSpec``); ``symbols``:
    the bot's universe (fixed at start). ``sample_interval_ms``: spacing used for the gap rule
    of a symbol the model was not trained on (default: the model's median interval).
    """

    def __init__(self, module: Any, spec: ModelSpec, symbols: Sequence[str], sample_interval_ms: int | None = None):
        import torch

        self._torch = torch
        self.module = module
        self.spec = spec
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        interval = np.array(
            [spec.interval_ms.get(s) or sample_interval_ms or spec.symbol_interval_ms(s) for s in self.symbols], dtype=np.int64
        )
        self.ring = WindowRing(len(self.symbols), spec.n_features, spec.sequence_length, interval, spec.gap_factor)

    @classmethod
    def from_live_model(cls, model: LiveModel, symbols: Sequence[str], sample_interval_ms: int | None = None) -> "LivePredictor":
        """A predictor for a loaded ``LiveModel``."""
        return cls(model.module, model.spec, symbols, sample_interval_ms)

    def _locate(self, symbols: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
        pos = np.array([self.index.get(s, -1) for s in symbols], dtype=np.int64)
        known = pos >= 0
        skips = [(symbols[j], UNKNOWN_SYMBOL) for j in np.flatnonzero(~known)]
        return pos, known, skips

    def prime(self, symbols: Sequence[str], ts_ms: np.ndarray, features: np.ndarray) -> None:
        """Fill the rings from stored history (e.g. the last samples before a restart) without predicting.

        ``symbols`` (n,), ``ts_ms`` (n,) int64, ``features`` (n, F) float32, any order: rows are
        pushed in time order per symbol, one time rank at a time across all symbols (at most
        ``L`` pushes of up to S samples each), so the rings end as a live run would leave them.
        """
        pos, known, _ = self._locate(symbols)
        ts_ms = np.asarray(ts_ms, dtype=np.int64)[known]
        features = np.asarray(features, dtype=np.float32)[known]
        pos = pos[known]
        if pos.size == 0:
            return
        order = np.lexsort((ts_ms, pos))
        pos, ts_ms, features = pos[order], ts_ms[order], features[order]
        # Only the last L samples of a symbol can be in its ring; a run reset among them is replayed by push.
        starts = np.r_[0, np.flatnonzero(np.diff(pos)) + 1]
        counts = np.diff(np.r_[starts, pos.size])
        rank_from_end = np.repeat(starts + counts, counts) - np.arange(pos.size) - 1
        keep = rank_from_end < self.ring.L
        pos, ts_ms, features, rank_from_end = pos[keep], ts_ms[keep], features[keep], rank_from_end[keep]
        for r in range(int(rank_from_end.max()), -1, -1):
            sel = rank_from_end == r
            self.ring.push(pos[sel], ts_ms[sel], features[sel])

    def step(self, symbols: Sequence[str], ts_ms: np.ndarray, features: np.ndarray) -> PredictionBatch:
        """One collection tick: ``symbols`` (k,) distinct, ``ts_ms`` (k,) int64 sample times (ms),
        ``features`` (k, F) float32 raw features in ``spec.feature_names`` order.

        Returns the predictions of every symbol whose window is complete, in input order, and
        the skipped samples with their reason.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.spec.n_features:
            raise ValueError(f"features must be (k, {self.spec.n_features}), got {features.shape}")
        pos, known, skips = self._locate(symbols)
        status = np.full(len(symbols), -1, dtype=np.int8)
        gap = np.zeros(len(symbols), dtype=bool)
        status[known], gap[known] = self.ring.push(pos[known], np.asarray(ts_ms, dtype=np.int64)[known], features[known])
        names = {_WARM: WARMING_UP, _ORDER: OUT_OF_ORDER, _NONFINITE: NON_FINITE}
        for j in np.flatnonzero(status > 0):
            skips.append((symbols[j], GAP if gap[j] else names[int(status[j])]))
        ready = np.flatnonzero(status == _OK)
        prob = self.predict_windows(self.ring.windows(pos[ready]))
        return PredictionBatch(
            model_uri=self.spec.model_uri,
            horizon_s=self.spec.horizon_s,
            symbols=[symbols[j] for j in ready],
            ts_ms=np.asarray(ts_ms, dtype=np.int64)[ready],
            prob=prob,
            predicted_direction=prob.argmax(axis=1).astype(np.int8),
            skips=skips,
        )

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """(B, L, F) raw windows -> (B, 3) float32 probabilities (softmax of the logits), one forward pass."""
        torch = self._torch
        if windows.shape[0] == 0:
            return np.zeros((0, 3), dtype=np.float32)
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)))
            return torch.softmax(logits.float(), dim=1).numpy()
