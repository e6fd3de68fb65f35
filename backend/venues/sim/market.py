"""A simulated market: books, trades and 1-minute candles with a known, learnable signal.

Model (per symbol, on a 1-second grid that starts at a minute boundary before
``start_ms`` so that ``history_minutes`` closed candles exist at the start):

* **Imbalance signal** ``x_t``: an AR(1)/Ornstein-Uhlenbeck process with unit
  stationary variance and a half-life of ``IMB_HALF_LIFE_S`` (150 s);
  ``I_t = tanh(0.9 x_t)`` in (-1, 1) is the order-book imbalance.
* **Volatility clustering**: log-volatility ``h_t`` is a slow AR(1)
  (half-life 30 min, stationary std 0.35), a stochastic-volatility model, so
  quiet and busy hours alternate and returns have fat tails.
* **Mid price**: log-return per second ``r_t = sigma_t * (KAPPA * I_t + eps_t)``
  with ``eps_t ~ N(0, 1)``: the imbalance drives the short-horizon drift.
* **Book**: 50 levels per side on the tick grid, best bid/ask around the mid
  (spread 1 tick, sometimes 2-3). Level sizes are lognormal noise times a depth
  profile times ``1 + 0.8 I_t exp(-j/25)`` on the bid side and
  ``1 - 0.8 I_t exp(-j/25)`` on the ask side, so volume-imbalance features
  (``ob_imbalance_*``) see the signal, noisily at level 1, clearly over 10-20 levels.
* **Trades**: Poisson arrivals whose rate follows the volatility; buyer-initiated
  with probability ``0.5 + 0.35 I_t``; buys print at the best ask, sells at the best bid.
* **Candles**: OHLC of the (tick-quantised) mid at each second of the minute,
  volume/turnover from the simulated trades: consistent with the books.

Measured strength (tests/venues/test_sim.py measures it on every run): over
12 simulated hours of BTCUSDT (seed 1) sampled every 30 s, the sign of the
20-level book imbalance predicts the sign of the next 60-s mid move in 75 % of
samples (the test asserts >= 65 %, a margin of at least 15 points over a coin
toss), while persistence of the last 60-s move scores 67 % (the test asserts the
imbalance beats it by >= 4 points). With a 0.03 % threshold the three 60-s
classes down/neutral/up are roughly balanced (31/35/34 %).

Everything is deterministic for a given seed, symbol and start time: chunks of
one hour are generated in order from one random generator per symbol, and the
state at time t is the state of the second containing t, whatever the poll times.
Generation may run on any thread (``SimMarket.prepare``): a per-symbol lock keeps
each symbol's chunks generated once and in order, so which thread generates a
chunk never changes it.

Memory per symbol (so thousands of symbols fit): the current and previous hour's
per-second scalars and trades (~0.3 MB), one minute of level sizes re-drawn on
demand from saved generator states (48 kB), and every bar as 56 bytes in numpy
(~80 kB per simulated day); the level sizes of an hour (2.9 MB) are never held.
"""

from __future__ import annotations

import math
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from backend.venues.orderbook import OrderBook
from backend.venues.types import CANDLE_MS, Candle, Trade

CHUNK_S = 3600  # one generated block; a multiple of 60 so minutes never straddle blocks
SIZE_GROUP_S = 60  # level sizes are re-drawn on demand this many seconds at a time
IMB_HALF_LIFE_S = 150.0
VOL_HALF_LIFE_S = 1800.0
VOL_STD = 0.35
KAPPA = 0.25  # drift per unit imbalance, in units of the per-second volatility
SIZE_TILT = 0.8
BUY_TILT = 0.35


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One simulated instrument: start price, tick and quantity step, typical level size,
    1-minute volatility (std of the log return) and trade rate (trades per second)."""

    base_price: float
    tick: float
    qty_step: float
    level_size: float  # typical size of one book level, in base units
    vol_1m: float  # typical std of a 1-minute log return
    trades_per_s: float = 2.0

    @property
    def price_decimals(self) -> int:
        """Decimals of the tick, as Bybit formats prices."""
        return _decimals(self.tick)

    @property
    def qty_decimals(self) -> int:
        """Decimals of the quantity step."""
        return _decimals(self.qty_step)


def _decimals(step: float) -> int:
    for d in range(0, 13):
        if abs(round(step * 10**d) - step * 10**d) < 1e-9 * max(1.0, step * 10**d):
            return d
    raise ValueError(f"step {step} needs more than 12 decimals")


DEFAULT_SPECS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec(90_000.0, 0.1, 0.001, 0.6, 0.0005, 3.0),
    "ETHUSDT": SymbolSpec(3_000.0, 0.01, 0.01, 15.0, 0.0006, 2.5),
    "SOLUSDT": SymbolSpec(200.0, 0.01, 0.1, 200.0, 0.0008, 2.0),
    "XRPUSDT": SymbolSpec(2.0, 0.0001, 1.0, 20_000.0, 0.0008, 2.0),
    "4USDT": SymbolSpec(0.004, 0.000001, 1.0, 2_000_000.0, 0.0009, 1.0),
}


def default_spec(symbol: str) -> SymbolSpec:
    """Known symbols get realistic settings; any other valid symbol gets deterministic ones."""
    if symbol in DEFAULT_SPECS:
        return DEFAULT_SPECS[symbol]
    h = zlib.crc32(symbol.encode())
    exponent = (h % 6) - 2  # price 0.01 .. 1000
    mantissa = 1.0 + (h >> 8) % 9
    price = mantissa * 10.0**exponent
    tick = 10.0 ** (math.floor(math.log10(price)) - 4)
    tick = float(f"{tick:.12g}")
    level_usd = 50_000.0
    qty_step = 10.0 ** max(-3, min(3, math.floor(math.log10(level_usd / price)) - 3))
    qty_step = float(f"{qty_step:.12g}")
    return SymbolSpec(price, tick, qty_step, level_usd / price, 0.0007, 1.5)


def parse_sim_start(value: str | None, now_ms: int | None = None) -> int:
    """``--sim-start`` (ISO 8601; a naive time is UTC; None or "now" = now) -> epoch ms."""
    if value is None or value.strip().lower() in ("", "now"):
        return int(now_ms if now_ms is not None else datetime.now(timezone.utc).timestamp() * 1000)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--sim-start {value!r}: expected an ISO time such as 2024-12-01T00:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _ar1(e: np.ndarray, phi: float, prev: float) -> np.ndarray:
    """y_t = phi * y_{t-1} + e_t, vectorised in blocks short enough that phi**-B stays tame."""
    out = np.empty_like(e)
    block = 256
    k = np.arange(block, dtype=np.float64)
    pw = phi**k
    inv = phi ** (-k)
    y = prev
    for s in range(0, e.size, block):
        seg = e[s : s + block]
        n = seg.size
        acc = np.cumsum(seg * inv[:n])
        out[s : s + n] = pw[:n] * (phi * y + acc)
        y = out[s + n - 1]
    return out


@dataclass(slots=True)
class _Chunk:
    index: int
    t0_ms: int  # time of its first second
    bid0: np.ndarray  # (CHUNK_S,) int64 best bid in ticks
    spread: np.ndarray  # (CHUNK_S,) int64 spread in ticks
    imbalance: np.ndarray  # (CHUNK_S,) float64 I_t
    noise_states: list  # bit-generator state at the start of each SIZE_GROUP_S rows of the size noise (bid then ask)
    trade_ts: np.ndarray  # int64 ms, sorted
    trade_price: np.ndarray
    trade_size: np.ndarray
    trade_side: np.ndarray  # int8 +1/-1
    trade_id0: int  # global index of its first trade (for exec ids)
    candles: np.ndarray  # (CHUNK_S // 60, 7) start ms, open, high, low, close, volume, turnover (float64)


class SymbolSim:
    """The simulated market of one symbol. Query times must not go backwards by more than a chunk."""

    def __init__(
        self,
        symbol: str,
        *,
        seed: int = 0,
        start_ms: int,
        spec: SymbolSpec | None = None,
        history_minutes: int = 480,
        levels: int = 50,
    ):
        self.symbol = symbol
        self.spec = spec or default_spec(symbol)
        self.levels = levels
        self.start_ms = int(start_ms)
        self.origin_ms = (self.start_ms // CANDLE_MS) * CANDLE_MS - history_minutes * CANDLE_MS
        self._rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(symbol.encode())])
        # the generator's constant increment, read once: ``_sizes`` must not read the state
        # of a generator another thread may be drawing from
        self._state_template = self._rng.bit_generator.state
        self._gen_lock = threading.Lock()  # generation of this symbol's chunks, from any thread
        sp = self.spec
        self._dec = sp.price_decimals
        self._scale = 10**self._dec
        self._tick_units = int(round(sp.tick * self._scale))
        self._qscale = 10**sp.qty_decimals
        self._qunits = int(round(sp.qty_step * self._qscale))
        self._sigma_s = sp.vol_1m / math.sqrt(60.0)
        self._phi_x = 0.5 ** (1.0 / IMB_HALF_LIFE_S)
        self._phi_h = 0.5 ** (1.0 / VOL_HALF_LIFE_S)
        # state carried from one chunk to the next
        self._x = float(self._rng.standard_normal())
        self._h = float(self._rng.standard_normal() * VOL_STD)
        self._logmid = math.log(sp.base_price / sp.tick)  # in log-ticks
        self._next_trade_id = 0
        j = np.arange(levels, dtype=np.float64)
        self._profile = sp.level_size * (0.6 + 0.8 * j / max(1, levels - 1))
        self._tilt = SIZE_TILT * np.exp(-j / 25.0)
        self._offsets = np.arange(levels, dtype=np.int64)
        self._chunks: dict[int, _Chunk] = {}
        self._candles: list[np.ndarray] = []  # every generated bar, one (60, 7) array per chunk
        self._redraw: np.random.Generator | None = None  # replays saved states of the size noise
        self._size_cache: tuple | None = None  # ((chunk, group), bid sizes, ask sizes) last re-drawn
        self._generated = 0  # chunks generated so far

    # --- generation --------------------------------------------------------------
    def _generate(self) -> None:
        n, L, sp, rng = CHUNK_S, self.levels, self.spec, self._rng
        k = self._generated
        t0 = self.origin_ms + k * CHUNK_S * 1000
        ex = rng.standard_normal(n) * math.sqrt(1 - self._phi_x**2)
        x = _ar1(ex, self._phi_x, self._x)
        eh = rng.standard_normal(n) * VOL_STD * math.sqrt(1 - self._phi_h**2)
        h = _ar1(eh, self._phi_h, self._h)
        self._x, self._h = float(x[-1]), float(h[-1])
        imb = np.tanh(0.9 * x)
        sigma = self._sigma_s * np.exp(h - 0.5 * VOL_STD**2)
        r = sigma * (KAPPA * imb + rng.standard_normal(n))
        logmid = math.log(sp.tick) + self._logmid + np.cumsum(r)  # log price
        self._logmid = float(logmid[-1] - math.log(sp.tick))
        mid_ticks = np.exp(logmid) / sp.tick
        spread = 1 + (rng.random(n) < 0.2).astype(np.int64) + (rng.random(n) < 0.05).astype(np.int64)
        bid0 = np.floor(mid_ticks - spread / 2.0 + 0.5).astype(np.int64)
        bid0 = np.maximum(bid0, spread + L + 1)  # keep every level strictly positive
        # The level-size noise (two (n, L) lognormal blocks) is the bulk of a chunk (2.9 MB).
        # It is not kept: the generator's state at the start of every SIZE_GROUP_S rows is,
        # and ``_sizes`` re-draws one group when a book needs it. A lognormal draw uses the
        # bits of one standard normal, so advancing with standard normals leaves the
        # generator exactly where drawing the lognormals would (the stream is unchanged).
        states = []
        for _side in range(2):
            for _g in range(n // SIZE_GROUP_S):
                st = rng.bit_generator.state  # PCG64: keep the 128-bit state and the buffered 32 bits only
                states.append((st["state"]["state"], st["has_uint32"], st["uinteger"]))
                rng.standard_normal(SIZE_GROUP_S * L)
        # trades
        rate = sp.trades_per_s * np.clip(sigma / self._sigma_s, 0.2, 5.0)
        counts = rng.poisson(rate)
        sec = np.repeat(np.arange(n), counts)
        m = sec.size
        ts = t0 + sec * 1000 + rng.integers(0, 1000, m)
        order = np.argsort(ts, kind="stable")
        ts, sec = ts[order], sec[order]
        buy = rng.random(m) < (0.5 + BUY_TILT * imb[sec])
        side = np.where(buy, 1, -1).astype(np.int8)
        price_ticks = np.where(buy, bid0[sec] + spread[sec], bid0[sec])
        price = self._price(price_ticks)
        size = self._quantise_qty(sp.level_size * 0.05 * rng.lognormal(0.0, 1.0, m))
        # candles from the quantised mid of every second
        mids = self._price(bid0) / 2.0 + self._price(bid0 + spread) / 2.0
        mm = mids.reshape(-1, 60)
        minute = sec // 60
        vol = np.bincount(minute, weights=size, minlength=n // 60)
        turn = np.bincount(minute, weights=size * price, minlength=n // 60)
        opens, highs, lows, closes = mm[:, 0], mm.max(axis=1), mm.min(axis=1), mm[:, -1]
        starts = (t0 + np.arange(n // 60, dtype=np.int64) * CANDLE_MS).astype(np.float64)  # exact below 2**53
        candles = np.column_stack([starts, opens, highs, lows, closes, vol, turn])
        self._chunks[k] = _Chunk(k, t0, bid0, spread, imb, states, ts, price, size, side,
                                 self._next_trade_id, candles)
        self._next_trade_id += m
        self._candles.append(candles)
        self._generated += 1
        for old in [i for i in self._chunks if i < k - 1]:
            del self._chunks[old]  # books/trades of older hours are no longer served

    def _sizes(self, c: _Chunk, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Bid and ask level sizes of second ``i`` of chunk ``c`` (its SIZE_GROUP_S-row group re-drawn, cached)."""
        g = i // SIZE_GROUP_S
        if self._size_cache is None or self._size_cache[0] != (c.index, g):
            L, groups = self.levels, CHUNK_S // SIZE_GROUP_S
            if self._redraw is None:
                self._redraw = np.random.Generator(type(self._rng.bit_generator)())
            rng = self._redraw
            rows = slice(g * SIZE_GROUP_S, (g + 1) * SIZE_GROUP_S)
            tilt = c.imbalance[rows, None] * self._tilt[None, :]
            out = []
            for side, sign in ((0, 1.0), (1, -1.0)):
                state, has32, u32 = c.noise_states[side * groups + g]
                full = {**self._state_template, "state": dict(self._state_template["state"])}
                full["state"]["state"], full["has_uint32"], full["uinteger"] = state, has32, u32
                rng.bit_generator.state = full
                noise = rng.lognormal(0.0, 0.35, size=(SIZE_GROUP_S, L))
                out.append(self._quantise_qty(self._profile * noise * (1.0 + sign * tilt)))
            self._size_cache = ((c.index, g), out[0], out[1])
        _, bid, ask = self._size_cache
        return bid[i % SIZE_GROUP_S], ask[i % SIZE_GROUP_S]

    def _candle_rows(self, lo: int, hi: int) -> list[Candle]:
        """Bars ``lo`` to ``hi - 1`` (minutes since the origin) as ``Candle`` objects."""
        if hi <= lo:
            return []
        per = CHUNK_S // 60
        out = []
        for k in range(lo // per, (hi - 1) // per + 1):
            if k >= len(self._candles):
                break
            block = self._candles[k][max(0, lo - k * per): hi - k * per]
            out.extend(Candle(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6]))
                       for r in block.tolist())
        return out

    def _price(self, ticks: np.ndarray) -> np.ndarray:
        # integer numerator over a power of ten: the nearest double to the decimal price,
        # so it survives a round trip through Bybit's string format unchanged
        return (ticks * self._tick_units) / self._scale

    def _quantise_qty(self, sizes: np.ndarray) -> np.ndarray:
        units = np.maximum(1, np.rint(sizes * self._qscale / self._qunits)).astype(np.int64) * self._qunits
        return units / self._qscale

    def _chunk(self, k: int) -> _Chunk:
        if k < 0:
            raise ValueError(f"{self.symbol}: time before the simulation origin")
        if self._generated <= k:
            with self._gen_lock:  # another thread may be generating it (``SimMarket.prepare``)
                while self._generated <= k:
                    self._generate()
        try:
            return self._chunks[k]
        except KeyError:
            raise ValueError(f"{self.symbol}: hour {k} of the simulation is no longer held") from None

    def prepare(self, t_ms: int) -> None:
        """Generate every chunk up to the one containing ``t_ms`` (any thread; see ``SimMarket.prepare``)."""
        self._chunk((int(t_ms) - self.origin_ms) // 1000 // CHUNK_S)

    def _locate(self, t_ms: int) -> tuple[_Chunk, int]:
        s = (int(t_ms) - self.origin_ms) // 1000
        c = self._chunk(s // CHUNK_S)
        return c, s % CHUNK_S

    # --- queries -------------------------------------------------------------------
    def book_at(self, t_ms: int, depth: int | None = None, recv_ms: int | None = None) -> OrderBook:
        """The book at time ``t_ms`` (ms since the epoch), ``depth`` levels per side (at most ``levels``)."""
        c, i = self._locate(t_ms)
        d = self.levels if depth is None else min(depth, self.levels)
        b0 = c.bid0[i]
        off = self._offsets[:d]
        bid_sizes, ask_sizes = self._sizes(c, i)
        return OrderBook(
            self.symbol,
            self._price(b0 - off),
            bid_sizes[:d].copy(),
            self._price(b0 + c.spread[i] + off),
            ask_sizes[:d].copy(),
            ts_ms=int(t_ms),
            recv_ms=int(t_ms if recv_ms is None else recv_ms),
            cts_ms=int(t_ms),
        )

    def imbalance_at(self, t_ms: int) -> float:
        """The hidden order-flow imbalance driving the book at ``t_ms`` (the signal the features should find)."""
        c, i = self._locate(t_ms)
        return float(c.imbalance[i])

    def trade_arrays(self, t0_ms: int, t1_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Trades with ``t0 < ts <= t1`` as arrays ``(ts, price, size, side, global_index)``."""
        self._locate(t1_ms)  # generate up to t1
        first = max(0, (int(t0_ms) - self.origin_ms) // 1000 // CHUNK_S)
        last = (int(t1_ms) - self.origin_ms) // 1000 // CHUNK_S
        parts = []
        for k in range(first, last + 1):
            c = self._chunks.get(k)
            if c is None:
                continue
            lo = np.searchsorted(c.trade_ts, t0_ms, side="right")
            hi = np.searchsorted(c.trade_ts, t1_ms, side="right")
            if hi > lo:
                idx = np.arange(lo, hi) + c.trade_id0
                parts.append((c.trade_ts[lo:hi], c.trade_price[lo:hi], c.trade_size[lo:hi], c.trade_side[lo:hi], idx))
        if not parts:
            e = np.empty(0)
            return e.astype(np.int64), e, e, e.astype(np.int8), e.astype(np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    def trades_between(self, t0_ms: int, t1_ms: int) -> list[Trade]:
        """Trades with ``t0_ms < ts <= t1_ms``, oldest first."""
        ts, price, size, side, _ = self.trade_arrays(t0_ms, t1_ms)
        return [Trade(int(a), float(b), float(c), int(d)) for a, b, c, d in zip(ts.tolist(), price.tolist(), size.tolist(), side.tolist())]

    def candles_closed_between(self, t0_ms: int, t1_ms: int) -> list[Candle]:
        """Closed bars with ``t0 < close_ms <= t1``, oldest first."""
        self._locate(max(t1_ms - 1, self.origin_ms))
        # bar i starts at origin + i minutes and closes a minute later
        lo = max(0, -(-(int(t0_ms) + 1 - self.origin_ms) // CANDLE_MS) - 1)
        hi = max(0, (int(t1_ms) - self.origin_ms) // CANDLE_MS)
        return self._candle_rows(lo, hi)

    def history(self) -> list[Candle]:
        """Bars closed at or before the start, oldest first (at least ``history_minutes``)."""
        return self.candles_closed_between(self.origin_ms - 1, self.start_ms)

    def forming_candle(self, t_ms: int) -> Candle:
        """The bar containing ``t_ms`` built from the seconds up to ``t_ms`` (for the fake kline endpoint)."""
        c, i = self._locate(t_ms)
        m0 = (i // 60) * 60
        mids = (self._price(c.bid0[m0 : i + 1]) + self._price(c.bid0[m0 : i + 1] + c.spread[m0 : i + 1])) / 2.0
        start = c.t0_ms + m0 * 1000
        ts, price, size, _, _ = self.trade_arrays(start - 1, t_ms)
        return Candle(start, float(mids[0]), float(mids.max()), float(mids.min()), float(mids[-1]),
                      float(size.sum()), float((size * price).sum()))

    def candles_range(self, start_ms: int, end_ms: int) -> list[Candle]:
        """Generated bars whose start lies in ``[start_ms, end_ms]`` (closed or not), oldest first."""
        lo = max(0, -(-(int(start_ms) - self.origin_ms) // CANDLE_MS))
        hi = max(0, (int(end_ms) - self.origin_ms) // CANDLE_MS + 1)
        return self._candle_rows(lo, min(hi, len(self._candles) * (CHUNK_S // 60)))


class SimMarket:
    """All simulated symbols of one run.

    ``prepare(t_ms)`` generates every symbol's hours up to ``t_ms`` on worker threads
    (the random draws release the GIL), so a caller on an event loop can have the start-up
    history and each next hour made off the loop; a query of an hour not yet prepared
    generates it on the spot, as before.
    """

    def __init__(self, symbols, *, seed: int | None = 0, start_ms: int, history_minutes: int = 480, levels: int = 50):
        self.seed = 0 if seed is None else int(seed)
        self.sims = {
            s: SymbolSim(s, seed=self.seed, start_ms=start_ms, history_minutes=history_minutes, levels=levels)
            for s in symbols
        }

    def __getitem__(self, symbol: str) -> SymbolSim:
        return self.sims[symbol]

    def prepare(self, t_ms: int, workers: int = 1) -> None:
        """Generate every symbol's chunks up to the one containing ``t_ms``, on ``workers`` threads (blocking)."""
        sims = list(self.sims.values())
        if workers <= 1 or len(sims) < 2:
            for sim in sims:
                sim.prepare(t_ms)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-gen") as pool:
            for _ in pool.map(lambda sim: sim.prepare(t_ms), sims):
                pass
