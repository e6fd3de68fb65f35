"""Paper trading against the book: a documented policy, fills that walk the book, PnL gross and net.

No order ever leaves the process. Units: quantities in base units (e.g. BTC), prices in
quote per base (e.g. USDT per BTC), notionals, fees and PnL in quote, fees and slippage
in basis points (1 bp = 0.01 %).

Policy (``PaperConfig``; defaults from issue 17):

* signal per symbol and tick: long when P(UP) >= ``enter_prob`` (0.6), short when
  P(DOWN) >= ``enter_prob``, none otherwise or without a prediction (``enter_prob`` > 0.5,
  so at most one side qualifies);
* flat + signal -> ``enter``: buy (long) or sell (short) ``notional_quote`` worth at the
  book's mid (qty = notional / mid);
* holding + opposite signal -> ``flip``: one order of the closing quantity plus a fresh
  ``notional_quote`` of the other side;
* holding for at least ``horizon_s`` (the model's horizon) -> ``exit`` to flat, at the
  first tick at or after entry + horizon; a signal in the held direction neither adds
  nor extends the holding; a new entry can come at a later tick;
* one position per symbol; a symbol without a valid book this tick does nothing (its
  pending exit waits for the next book).

Fills (``walk_book``): taker orders at the decision tick's book. A buy takes asks from the
best upward, a sell bids from the best downward, level by level for the whole quantity;
the average price is then moved against the trader by ``slippage_bps`` (latency between
decision and fill). A buy therefore never averages below the best ask, a sell never above
the best bid. An order larger than the visible book: with ``thin_book="partial"`` (default)
it fills what the visible levels hold and the rest is dropped (an entry gets a smaller
position; an exit leaves a remainder that is retried at the next tick); with
``thin_book="refuse"`` nothing fills and the tick is counted. The fee is
``taker_fee_bps`` of each fill's notional (qty x average price), charged on every fill.

Accounting (per symbol, summed over symbols): ``cash`` = sum of sell notionals - sum of
buy notionals; gross equity = cash + position x mid; net equity = gross - fees. On a round
trip (flat -> position -> flat) the realised gross PnL is the closed quantity x (exit
price - entry price) x side, and its fees are the exit fill's plus the entry fill's share
of the closed quantity. Hit rate: share of round trips with net PnL > 0. Turnover: sum of
fill notionals. Max drawdown: the largest fall of equity from its running peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from backend.venues.orderbook import OrderBook

ENTER, EXIT, FLIP = "enter", "exit", "flip"
BUY, SELL = "buy", "sell"
#: why a wanted order did not trade this tick
NO_BOOK, THIN_BOOK = "no_book", "thin_book"
THIN_BOOK_MODES = ("partial", "refuse")


@dataclass(frozen=True)
class PaperConfig:
    """The policy and cost settings (see the module docstring).

    ``enter_prob`` in (0.5, 1]; ``notional_quote`` > 0 (quote per trade); ``taker_fee_bps``
    >= 0 (Bybit's linear-perpetual taker fee is 5.5 bps for the base tier); ``slippage_bps``
    >= 0; ``horizon_s`` > 0 (the model's); ``thin_book``: ``partial`` or ``refuse``.
    """

    horizon_s: int = 60
    enter_prob: float = 0.6
    notional_quote: float = 1000.0
    taker_fee_bps: float = 5.5
    slippage_bps: float = 1.0
    thin_book: str = "partial"

    def __post_init__(self) -> None:
        if not 0.5 < self.enter_prob <= 1.0:
            raise ValueError(f"enter_prob must be in (0.5, 1] so that only one side can qualify, got {self.enter_prob}")
        if not self.notional_quote > 0:
            raise ValueError(f"notional per trade must be > 0 quote units, got {self.notional_quote}")
        if not self.taker_fee_bps >= 0 or not self.slippage_bps >= 0:
            raise ValueError(f"fee and slippage must be >= 0 bps, got {self.taker_fee_bps} and {self.slippage_bps}")
        if not self.horizon_s > 0:
            raise ValueError(f"horizon must be > 0 s, got {self.horizon_s}")
        if self.thin_book not in THIN_BOOK_MODES:
            raise ValueError(f"thin_book must be one of {THIN_BOOK_MODES}, got {self.thin_book!r}")


# --- fills ---------------------------------------------------------------------------------


def stack_levels(prices: Sequence[np.ndarray], sizes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pad k one-sided books to (k, D) arrays (D = deepest): missing levels get price NaN and size 0."""
    depth = max((len(p) for p in prices), default=0)
    px = np.full((len(prices), max(depth, 1)), np.nan)
    sz = np.zeros((len(prices), max(depth, 1)))
    for j, (p, s) in enumerate(zip(prices, sizes)):
        px[j, : len(p)] = p
        sz[j, : len(s)] = s
    return px, sz


def walk_book(prices: np.ndarray, sizes: np.ndarray, qty: np.ndarray, refuse_thin: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Take ``qty`` (k,) base units from one side of k books, best level first.

    ``prices`` (k, D) quote per base, best first (asks ascending for a buy, bids descending
    for a sell), NaN-padded; ``sizes`` (k, D) base units, 0-padded. Returns (filled (k,) base
    units, vwap (k,) quote per base, NaN where nothing filled). ``filled`` is ``qty`` when the
    visible levels hold it, else their total (or 0 with ``refuse_thin``). The vwap lies
    between the best and the worst level touched (clamped to that range against rounding).
    """
    qty = np.asarray(qty, dtype=np.float64)
    cum = np.cumsum(sizes, axis=1)
    take = np.clip(qty[:, None] - (cum - sizes), 0.0, sizes)
    total = cum[:, -1]
    enough = total >= qty
    filled = np.where(enough, qty, total)
    if refuse_thin:
        filled = np.where(enough, filled, 0.0)
        take = np.where(enough[:, None], take, 0.0)
    cost = np.where(take > 0, take * np.nan_to_num(prices), 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(filled > 0, cost / np.where(take.sum(axis=1) > 0, take.sum(axis=1), 1.0), np.nan)
    touched = take > 0
    deepest = np.where(touched.any(axis=1), touched.shape[1] - 1 - np.argmax(touched[:, ::-1], axis=1), 0)
    best, worst = prices[:, 0], prices[np.arange(prices.shape[0]), deepest]
    lo, hi = np.minimum(best, worst), np.maximum(best, worst)
    vwap = np.where(filled > 0, np.clip(vwap, lo, hi), np.nan)
    return filled, vwap


@dataclass
class Fills:
    """Fills of k orders: ``qty`` (k,) signed base units (+ bought, - sold; 0 = no fill), ``price``
    (k,) average fill price incl. slippage (quote per base; NaN without fill), ``fee`` (k,) quote,
    ``best`` (k,) the touch the order crossed (best ask for a buy, best bid for a sell)."""

    qty: np.ndarray
    price: np.ndarray
    fee: np.ndarray
    best: np.ndarray


def fill_orders(books: Sequence[OrderBook], signed_qty: np.ndarray, cfg: PaperConfig) -> Fills:
    """Fill k taker orders (``signed_qty`` (k,) base units, + buy / - sell) against their books.

    Buys walk the asks, sells the bids (``walk_book``), then the average moves against the
    trader by ``slippage_bps``; the fee is ``taker_fee_bps`` of qty x price on every fill.
    """
    signed_qty = np.asarray(signed_qty, dtype=np.float64)
    buy = signed_qty > 0
    px, sz = stack_levels(
        [b.ask_prices if is_buy else b.bid_prices for b, is_buy in zip(books, buy)],
        [b.ask_sizes if is_buy else b.bid_sizes for b, is_buy in zip(books, buy)],
    )
    filled, vwap = walk_book(px, sz, np.abs(signed_qty), refuse_thin=cfg.thin_book == "refuse")
    slip = cfg.slippage_bps / 1e4
    price = np.where(buy, vwap * (1 + slip), vwap * (1 - slip))
    price = np.where(filled > 0, price, np.nan)
    fee = np.where(filled > 0, filled * np.nan_to_num(price) * cfg.taker_fee_bps / 1e4, 0.0)
    return Fills(np.where(buy, filled, -filled), price, fee, px[:, 0])


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall (quote) of ``equity`` (n,) from its running peak; 0 for an empty or rising curve.
    The peak starts at 0 (equity before the first trade)."""
    equity = np.asarray(equity, dtype=np.float64)
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(np.maximum(equity, 0.0))
    return float(np.max(peak - equity, initial=0.0))


# --- the trader ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperTrade:
    """One simulated fill, a row of the ``paper_trades`` group (DESIGN.md §6.6): ``timestamp`` ms
    (decision time: the event time of the book the fill walked, its price-tape row's timestamp), ``side`` buy/sell, ``qty`` base units (> 0), ``price``
    average fill (quote per base), ``fee`` quote, ``reason`` enter/exit/flip."""

    timestamp: int
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    reason: str
    model_uri: str


@dataclass(frozen=True)
class RoundTrip:
    """A closed position: side (+1 long, -1 short), entry and exit times (ms), closed qty (base),
    gross PnL, fees and net PnL (quote)."""

    symbol: str
    side: int
    entry_ms: int
    exit_ms: int
    qty: float
    gross: float
    fees: float

    @property
    def net(self) -> float:
        """Gross PnL less fees (quote)."""
        return self.gross - self.fees


@dataclass
class PaperStep:
    """What one tick did: the fills (``trades``), the orders that could not trade as (symbol,
    reason) in ``missed``, and equity after the tick (quote): ``equity_gross`` = cash + positions
    at mid, ``equity_net`` = gross - all fees so far."""

    timestamp: int
    trades: list[PaperTrade]
    missed: list[tuple[str, str]]
    equity_gross: float
    equity_net: float


@dataclass
class PaperSummary:
    """Totals since start (quote unless stated): ``gross_pnl``/``net_pnl`` (open positions at the
    last mid), ``fees``, ``turnover`` (sum of fill notionals), ``hit_rate`` (share of round trips
    with net PnL > 0, NaN before the first), ``round_trips``, ``fills``, ``max_drawdown_gross``/
    ``max_drawdown_net`` (largest fall from the running peak of equity, peak starting at 0),
    ``open_positions``."""

    gross_pnl: float
    net_pnl: float
    fees: float
    turnover: float
    hit_rate: float
    round_trips: int
    fills: int
    max_drawdown_gross: float
    max_drawdown_net: float
    open_positions: int
    extra: dict = field(default_factory=dict)


class PaperTrader:
    """Positions and PnL of a paper-trading run over a fixed symbol universe (sans-I/O).

    State per symbol (S,) float64 arrays: ``pos`` (signed base units), ``entry_px`` (quote per
    base), ``entry_ms``, ``cash`` (quote), ``fees`` (quote), ``open_fee`` (entry fee not yet
    attributed to a round trip), ``trip_gross``/``trip_fees``/``trip_qty`` (the current round
    trip's realised gross PnL, fees and closed quantity so far),
    ``mark`` (last mid). Call ``step`` once per tick with that tick's books and predictions.
    """

    def __init__(self, symbols: Sequence[str], cfg: PaperConfig, model_uri: str = ""):
        self.cfg = cfg
        self.model_uri = model_uri
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        S = len(self.symbols)
        self.pos = np.zeros(S)
        self.entry_px = np.full(S, np.nan)
        self.entry_ms = np.zeros(S, dtype=np.int64)
        self.cash = np.zeros(S)
        self.fees = np.zeros(S)
        self.open_fee = np.zeros(S)
        self.trip_gross = np.zeros(S)
        self.trip_fees = np.zeros(S)
        self.trip_qty = np.zeros(S)
        self.mark = np.full(S, np.nan)
        self.turnover = 0.0
        self.fill_count = 0
        self.round_trips: list[RoundTrip] = []
        self._peak = np.zeros(2)  # running peaks of gross and net equity
        self._max_dd = np.zeros(2)

    def signals(self, prob: np.ndarray) -> np.ndarray:
        """(S, 3) probabilities (NaN rows = no prediction) -> (S,) int8 signal: +1 long, -1 short, 0 none."""
        t = self.cfg.enter_prob
        with np.errstate(invalid="ignore"):
            return np.where(prob[:, 2] >= t, 1, np.where(prob[:, 0] >= t, -1, 0)).astype(np.int8)

    def step(self, ts_ms: int, books: Mapping[str, OrderBook], predictions=None) -> PaperStep:
        """One tick at ``ts_ms`` (ms): decide (policy), fill against ``books`` (valid books of this
        tick by symbol), account, mark to mid. ``predictions``: the tick's ``PredictionBatch`` (or
        any object with ``symbols`` and ``prob`` (m, 3)), None when the tick predicted nothing."""
        S = len(self.symbols)
        prob = np.full((S, 3), np.nan)
        if predictions is not None and len(predictions.symbols):
            rows = np.array([self.index.get(s, -1) for s in predictions.symbols], dtype=np.int64)
            ok = rows >= 0
            prob[rows[ok]] = np.asarray(predictions.prob, dtype=np.float64)[ok]
        sig = self.signals(prob)
        side = np.sign(self.pos).astype(np.int8)
        held_ms = ts_ms - self.entry_ms
        enter = (side == 0) & (sig != 0)
        flip = (side != 0) & (sig == -side)
        exit_ = (side != 0) & ~flip & (held_ms >= self.cfg.horizon_s * 1000)
        act = np.flatnonzero(enter | flip | exit_)

        have = [i for i in act if self.symbols[i] in books]
        missed = [(self.symbols[i], NO_BOOK) for i in act if self.symbols[i] not in books]
        trades: list[PaperTrade] = []
        if have:
            idx = np.asarray(have, dtype=np.int64)
            bks = [books[self.symbols[i]] for i in idx]
            mids = np.array([(b.bid_prices[0] + b.ask_prices[0]) / 2 for b in bks])
            new_qty = self.cfg.notional_quote / mids
            target = np.where(exit_[idx], 0.0, sig[idx] * new_qty)
            order = target - self.pos[idx]
            fills = fill_orders(bks, order, self.cfg)
            reason = np.where(enter[idx], ENTER, np.where(flip[idx], FLIP, EXIT))
            traded = fills.qty != 0
            missed += [(self.symbols[i], THIN_BOOK) for i in idx[~traded]]
            self._apply(ts_ms, idx[traded], fills.qty[traded], fills.price[traded], fills.fee[traded])
            # a fill is stamped with the event time of the book it walked (the tape row of that book)
            book_ts = np.array([int(getattr(b, "ts_ms", ts_ms)) for b in bks], dtype=np.int64)
            trades = [
                PaperTrade(int(t), self.symbols[i], BUY if q > 0 else SELL, float(abs(q)), float(p), float(f), str(r), self.model_uri)
                for i, t, q, p, f, r in zip(idx[traded], book_ts[traded], fills.qty[traded], fills.price[traded],
                                            fills.fee[traded], reason[traded])
            ]
        marked = [i for i in np.flatnonzero(self.pos != 0) if self.symbols[i] in books]
        for i in marked:
            b = books[self.symbols[i]]
            self.mark[i] = (b.bid_prices[0] + b.ask_prices[0]) / 2
        gross, net = self.equity()
        self._track_drawdown(gross, net)
        return PaperStep(int(ts_ms), trades, missed, gross, net)

    def _apply(self, ts_ms: int, idx: np.ndarray, delta: np.ndarray, price: np.ndarray, fee: np.ndarray) -> None:
        """Book fills (vectorised over the filled symbols ``idx``): cash, fees, position, round trips."""
        pos = self.pos[idx]
        size = np.abs(delta)
        self.cash[idx] -= delta * price
        self.fees[idx] += fee
        self.turnover += float((size * price).sum())
        self.fill_count += int(idx.size)
        closing = np.sign(delta) == -np.sign(pos)
        close_qty = np.where(closing, np.minimum(size, np.abs(pos)), 0.0)
        open_qty = size - close_qty
        # Realised part: closed quantity at (exit - entry) in the held direction; fees pro rata.
        gross = close_qty * (price - np.nan_to_num(self.entry_px[idx])) * np.sign(pos)
        entry_share = np.where(np.abs(pos) > 0, self.open_fee[idx] * close_qty / np.where(pos != 0, np.abs(pos), 1.0), 0.0)
        self.trip_gross[idx] += gross
        self.trip_qty[idx] += close_qty
        self.trip_fees[idx] += fee * close_qty / size + entry_share
        self.open_fee[idx] -= entry_share
        new_pos = np.where(open_qty == 0, pos + np.where(closing, delta, 0.0), np.sign(delta) * open_qty)
        # A full close lands exactly on zero (the order was -pos and filled whole).
        new_pos = np.where(closing & (close_qty == np.abs(pos)) & (open_qty == 0), 0.0, new_pos)
        closed = (pos != 0) & ((new_pos == 0) | (np.sign(new_pos) == -np.sign(pos)))
        for j in np.flatnonzero(closed):
            i = idx[j]
            self.round_trips.append(
                RoundTrip(self.symbols[i], int(np.sign(pos[j])), int(self.entry_ms[i]), int(ts_ms), float(self.trip_qty[i]),
                          float(self.trip_gross[i]), float(self.trip_fees[i]))
            )
        self.trip_gross[idx[closed]] = 0.0
        self.trip_fees[idx[closed]] = 0.0
        self.trip_qty[idx[closed]] = 0.0
        opened = open_qty > 0
        self.entry_px[idx[opened]] = price[opened]
        self.entry_ms[idx[opened]] = ts_ms
        self.open_fee[idx[opened]] = (fee * open_qty / size)[opened]
        self.pos[idx] = new_pos
        self.mark[idx] = np.where(np.isnan(self.mark[idx]), price, self.mark[idx])

    def equity(self) -> tuple[float, float]:
        """(gross, net) equity in quote: cash + positions at their last mid, and that less all fees."""
        held = self.pos != 0
        gross = float(self.cash.sum() + (self.pos[held] * self.mark[held]).sum())
        return gross, gross - float(self.fees.sum())

    def _track_drawdown(self, gross: float, net: float) -> None:
        eq = np.array([gross, net])
        self._peak = np.maximum(self._peak, eq)
        self._max_dd = np.maximum(self._max_dd, self._peak - eq)

    def summary(self) -> PaperSummary:
        """Totals since start (``PaperSummary``)."""
        gross, net = self.equity()
        nets = np.array([t.net for t in self.round_trips])
        return PaperSummary(
            gross_pnl=gross,
            net_pnl=net,
            fees=float(self.fees.sum()),
            turnover=self.turnover,
            hit_rate=float((nets > 0).mean()) if nets.size else float("nan"),
            round_trips=len(self.round_trips),
            fills=self.fill_count,
            max_drawdown_gross=float(self._max_dd[0]),
            max_drawdown_net=float(self._max_dd[1]),
            open_positions=int((self.pos != 0).sum()),
        )
