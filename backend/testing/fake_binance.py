"""A fake Binance USD-M futures exchange on 127.0.0.1: public REST and combined market streams, driven by the simulator.

It speaks Binance's wire format as documented for USD-M futures: REST replies are bare
JSON (``/fapi/v1/depth`` ``{"lastUpdateId", "E", "T", "bids", "asks"}``, ``/fapi/v1/time``,
``/fapi/v1/klines`` rows, ``/fapi/v1/trades``, ``/fapi/v1/exchangeInfo``), errors are
``{"code": -1121, "msg": "Invalid symbol."}`` with HTTP 400, every reply carries
``X-MBX-USED-WEIGHT-1M``; the WebSocket serves combined streams at
``/stream?streams=a/b/c`` wrapped as ``{"stream": name, "data": event}`` with
``depthUpdate`` (``U``, ``u``, ``pu``; ids advance by irregular steps as on futures, so
``U`` is not ``pu + 1``), ``aggTrade`` and ``kline`` events, and ping frames from the server.

The *true book* of each symbol is the simulator's book at the exchange's current second
with small size changes between seconds; it is what the diffs publish, what a correct
client must hold, and ``true_mid(symbol, ts_ms)`` answers what its mid was at any
exchange time (the history of every published state is kept).

In-process use::

    async with FakeBinance(["BTCUSDT"], seed=1) as fake:
        fake.rest_url, fake.ws_url
        fake.inject("pu_gap", symbol="BTCUSDT")
        fake.book("BTCUSDT"), fake.true_mid("BTCUSDT", ts_ms)

Faults (``inject(kind, symbol=None, count=1, **params)``, each for the next ``count``
matching events): ``pu_gap`` (one diff is lost: the next one's ``pu`` points at it),
``stale_snapshot`` (a depth reply from ``events`` (default 20) published states ago),
``snapshot_delay`` (the depth reply waits ``seconds``, so the client buffers diffs and
the reply is taken after the wait), ``http_429`` (429 with ``Retry-After``
``retry_after`` s, default 1), ``http_5xx``, ``ws_drop`` (every connection aborted).

States (attributes, or command-line options): ``clock_offset_ms`` (the exchange clock
runs this far ahead of the local one; every time it says uses it), ``quiet`` (symbols
whose book never changes: no diffs; trades, bars and pongs go on), ``silent`` (no
pongs, no pushes), ``ban(seconds)`` (HTTP 418 with ``Retry-After`` for every REST
request; ``counts["rest_banned"]`` counts requests during it and
``counts["rest_banned_late"]`` those more than 1 s after the first, which a client that
heeds the ban never sends), ``close_after_connect`` (each connection is closed right
after its first pushes: a flapping link), ``weight_limit`` (the per-minute request
weight above which requests get 429; Binance's is 2400). A connection sending more
than 10 messages per second is closed as Binance does (``counts["ws_rate_closed"]``).

Command line (a separate process; exits cleanly on SIGTERM/SIGINT)::

    python -m backend.testing.fake_binance --symbols BTCUSDT,ETHUSDT --port-file PATH [--seed N]
        [--push-interval S] [--clock-offset-ms MS] [--quiet SYMS] [--ban-after S --ban-for S]
        [--close-after-connect] [--server-ping-s S] [--stats-file PATH]

The port file is written atomically once the server listens: JSON ``{"port", "rest_url",
"ws_url", "pid"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from aiohttp import WSMsgType, web

from backend.testing.fake_server import FakeServerBase, num as _num, serve, symbols_arg as _symbols_arg
from backend.venues.orderbook import OrderBook
from backend.venues.types import CANDLE_MS

log = logging.getLogger(__name__)

FAULTS = ("pu_gap", "stale_snapshot", "snapshot_delay", "http_429", "http_5xx", "ws_drop")
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
MAX_STREAMS = 200
MAX_INCOMING_PER_S = 10


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    streams: set[str]
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    incoming: deque = field(default_factory=deque)

    def send(self, text: str) -> None:
        self.out.put_nowait(text)


@dataclass
class _State:
    """One symbol's published book: levels, last final update id ``u``, event time ``E``, and past states."""

    u: int
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    E: int = 0
    second: int = -1
    past: deque = field(default_factory=lambda: deque(maxlen=200))  # (u, E, bids, asks)
    times: list[int] = field(default_factory=list)  # E of every published state
    mids: list[float] = field(default_factory=list)
    agg_id: int = 1_000_000


class FakeBinance(FakeServerBase):
    """The fake exchange for ``symbols`` on ``host:port`` (0: a free port); an async context manager."""

    def __init__(self, symbols: Iterable[str], *, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 push_interval_s: float = 0.1, clock_offset_ms: int = 0, quiet: Iterable[str] = (),
                 close_after_connect: bool = False, server_ping_s: float = 180.0, weight_limit: int = 2400):
        self._init_server(symbols, seed=seed, host=host, port=port, push_interval_s=push_interval_s,
                          clock_offset_ms=clock_offset_ms, quiet=quiet)
        self.close_after_connect = close_after_connect
        self.server_ping_s = server_ping_s
        self.weight_limit = weight_limit
        self._state = {s: _State(u=self._rng.randint(10**9, 2 * 10**9)) for s in self.symbols}
        self._minute = -1
        self._weight = 0
        self._last_trade_ms = {s: self._now() for s in self.symbols}
        self._last_kline_ms = {s: self._now() for s in self.symbols}
        self._next_kline_push = 0.0

    label = "Binance"
    FAULTS = FAULTS

    # --- lifecycle ----------------------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        """The USD-M market endpoints and the combined-stream WebSocket."""
        app.router.add_get("/fapi/v1/depth", self._rest_depth)
        app.router.add_get("/fapi/v1/time", self._rest_time)
        app.router.add_get("/fapi/v1/klines", self._rest_klines)
        app.router.add_get("/fapi/v1/trades", self._rest_trades)
        app.router.add_get("/fapi/v1/exchangeInfo", self._rest_exchange_info)
        app.router.add_get("/stream", self._ws_handler)

    def _started(self) -> None:
        """Publish and record every symbol's first book; start pushing and the server's ping frames."""
        for s in self.symbols:
            self._advance(s, force=True)
            self._record(s)
        self._spawn(self._push_loop())
        self._spawn(self._ping_loop())

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` (clients add ``/stream?streams=...``)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def used_weight(self) -> int:
        """Request weight counted in the current UTC minute (what ``X-MBX-USED-WEIGHT-1M`` reports)."""
        return self._weight

    # --- control --------------------------------------------------------------------------
    def ban(self, seconds: float) -> None:
        """Answer every REST request with HTTP 418 (``Retry-After``: the seconds left) for ``seconds`` from now."""
        super().ban(seconds)

    def book(self, symbol: str) -> OrderBook:
        """The true book (what the diffs have published), best level first."""
        st = self._state[symbol]
        return OrderBook.from_levels(symbol, sorted(st.bids.items(), reverse=True), sorted(st.asks.items()), st.E,
                                     recv_ms=st.E, update_id=st.u)

    def update_id(self, symbol: str) -> int:
        """``u`` of the last state published for ``symbol``."""
        return self._state[symbol].u

    def true_mid(self, symbol: str, ts_ms: int) -> float | None:
        """The true book's mid at exchange time ``ts_ms`` (the last state published at or before it), or None before any."""
        st = self._state[symbol]
        i = bisect_right(st.times, ts_ms)
        return st.mids[i - 1] if i else None

    # --- the true book -----------------------------------------------------------------------
    def _advance(self, sym: str, force: bool = False) -> tuple[list, list]:
        """Move the true book to the simulator's book of the current second (or jitter sizes within it);
        return the changed levels (quantity 0: removed)."""
        st = self._state[sym]
        now = self._now()
        if force or now // 1000 != st.second:
            b = self.market[sym].book_at(now)
            new_b = dict(zip(b.bid_prices.tolist(), b.bid_sizes.tolist()))
            new_a = dict(zip(b.ask_prices.tolist(), b.ask_sizes.tolist()))
            st.second = now // 1000
        else:
            new_b, new_a = dict(st.bids), dict(st.asks)
            step = self.market[sym].spec.qty_step
            for side in (new_b, new_a):
                price = self._rng.choice(sorted(side))
                side[price] = round(max(step, side[price] + step * self._rng.randint(-3, 3)), 12)
        db = [(p, 0.0) for p in st.bids if p not in new_b] + [(p, q) for p, q in new_b.items() if st.bids.get(p) != q]
        da = [(p, 0.0) for p in st.asks if p not in new_a] + [(p, q) for p, q in new_a.items() if st.asks.get(p) != q]
        st.bids, st.asks, st.E = new_b, new_a, now
        return db, da

    def _record(self, sym: str) -> None:
        st = self._state[sym]
        st.past.append((st.u, st.E, dict(st.bids), dict(st.asks)))
        st.times.append(st.E)
        st.mids.append((max(st.bids) + min(st.asks)) / 2.0)

    # --- REST -----------------------------------------------------------------------------------
    def _reply(self, body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        h = {"X-MBX-USED-WEIGHT-1M": str(self._weight)}
        h.update(headers or {})
        return web.json_response(body, status=status, headers=h, dumps=lambda o: json.dumps(o, separators=(",", ":")))

    def _gate(self, request: web.Request, weight: int) -> web.Response | None:
        """Count the request and its weight; the 418/429/5xx answer when one is due."""
        self._count("rest")
        self._count(f"rest:{request.path}")
        left = self._banned_request()
        if left is not None:
            return self._reply({"code": -1003, "msg": "Way too many requests; IP banned."}, 418,
                               {"Retry-After": str(max(1, int(left + 0.999)))})
        minute = self._now() // 60_000
        if minute != self._minute:
            self._minute, self._weight = minute, 0
        sym = request.rel_url.query.get("symbol")
        f = self._take_fault("http_429", sym)
        if f is not None or self._weight + weight > self.weight_limit:
            ra = f.params.get("retry_after", 1) if f is not None else 60 - (self._now() // 1000) % 60
            self._count("rest_429")
            return self._reply({"code": -1003, "msg": "Too many requests."}, 429, {"Retry-After": str(ra)})
        if self._take_fault("http_5xx", sym) is not None:
            return web.Response(status=503, text="Service Unavailable")
        self._weight += weight
        return None

    def _bad_symbol(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        sym = request.rel_url.query.get("symbol")
        if sym not in self._state:
            return None, self._reply({"code": -1121, "msg": "Invalid symbol."}, 400)
        return sym, None

    async def _rest_time(self, request: web.Request) -> web.StreamResponse:
        return self._gate(request, 1) or self._reply({"serverTime": self._now()})

    async def _rest_exchange_info(self, request: web.Request) -> web.StreamResponse:
        early = self._gate(request, 1)
        if early is not None:
            return early
        rows = [{"symbol": s, "pair": s, "contractType": "PERPETUAL", "status": "TRADING",
                 "baseAsset": s[:-4], "quoteAsset": "USDT"} for s in self.symbols]
        return self._reply({"timezone": "UTC", "serverTime": self._now(),
                            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                            "intervalNum": 1, "limit": self.weight_limit}], "symbols": rows})

    async def _rest_depth(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.rel_url.query.get("limit", "500"))
        except ValueError:
            limit = -1
        weight = 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
        early = self._gate(request, weight)
        if early is not None:
            return early
        sym, bad = self._bad_symbol(request)
        if bad is not None:
            return bad
        if limit not in DEPTH_LIMITS:
            return self._reply({"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}, 400)
        f = self._take_fault("snapshot_delay", sym)
        if f is not None:
            await asyncio.sleep(float(f.params.get("seconds", 0.5)))
        st = self._state[sym]
        u, E, bids, asks = st.u, st.E, st.bids, st.asks
        f = self._take_fault("stale_snapshot", sym)
        if f is not None:
            back = int(f.params.get("events", 20))
            u, E, bids, asks = st.past[max(0, len(st.past) - 1 - back)]
        return self._reply({
            "lastUpdateId": u, "E": self._now(), "T": E,
            "bids": [[_num(p), _num(q)] for p, q in sorted(bids.items(), reverse=True)[:limit]],
            "asks": [[_num(p), _num(q)] for p, q in sorted(asks.items())[:limit]],
        })

    async def _rest_klines(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        try:
            limit = int(q.get("limit", "500"))
            now = self._now()
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            return self._reply({"code": -1100, "msg": "Illegal characters found in a parameter."}, 400)
        early = self._gate(request, 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10)
        if early is not None:
            return early
        sym, bad = self._bad_symbol(request)
        if bad is not None:
            return bad
        if q.get("interval") != "1m" or not 1 <= limit <= 1500:
            return self._reply({"code": -1120, "msg": "Invalid interval or limit."}, 400)
        sim = self.market[sym]
        bars = sim.candles_closed_between(sim.origin_ms - 1, now)
        forming = sim.forming_candle(now)
        if not bars or bars[-1].start_ms < forming.start_ms:
            bars = bars + [forming]
        if start is not None:
            bars = [c for c in bars if c.start_ms >= start][:limit]
            if end is not None:
                bars = [c for c in bars if c.start_ms <= end]
        else:
            if end is not None:
                bars = [c for c in bars if c.start_ms <= end]
            bars = bars[-limit:]
        rows = [[c.start_ms, _num(c.open), _num(c.high), _num(c.low), _num(c.close), _num(c.volume),
                 c.start_ms + CANDLE_MS - 1, _num(c.turnover), 10, "0", "0", "0"] for c in bars]
        return self._reply(rows)

    async def _rest_trades(self, request: web.Request) -> web.StreamResponse:
        early = self._gate(request, 5)
        if early is not None:
            return early
        sym, bad = self._bad_symbol(request)
        if bad is not None:
            return bad
        try:
            limit = max(1, min(1000, int(request.rel_url.query.get("limit", "500"))))
        except ValueError:
            limit = 500
        now = self._now()
        ts, price, size, side, idx = self.market[sym].trade_arrays(now - 600_000, now)
        rows = [{"id": int(i), "price": _num(p), "qty": _num(s), "quoteQty": _num(p * s), "time": int(t),
                 "isBuyerMaker": bool(d < 0)}
                for t, p, s, d, i in zip(ts[-limit:], price[-limit:], size[-limit:], side[-limit:], idx[-limit:])]
        return self._reply(rows)

    # --- WebSocket ----------------------------------------------------------------------------------
    def _stream_ok(self, name: str) -> bool:
        parts = name.split("@")
        if len(parts) < 2 or parts[0].upper() not in self._state or parts[0] != parts[0].lower():
            return False
        return parts[1:] in (["depth", "100ms"], ["depth"], ["aggTrade"], ["kline_1m"])

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        names = [n for n in request.rel_url.query.get("streams", "").split("/") if n]
        bad = [n for n in names if not self._stream_ok(n)]
        if not names or bad or len(names) > MAX_STREAMS:
            self._count("ws_refused")
            return self._reply({"code": -1100, "msg": f"Invalid streams: {bad[:3] or len(names)}"}, 400)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = _Conn(ws, request, set(names))
        if self.close_after_connect:
            asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(self._close(conn)))

        async def on_message(msg) -> bool:
            now = time.monotonic()
            conn.incoming.append(now)
            while conn.incoming and conn.incoming[0] < now - 1.0:
                conn.incoming.popleft()
            if len(conn.incoming) > MAX_INCOMING_PER_S:
                self._count("ws_rate_closed")
                await ws.close(code=1008, message=b"Too many requests")
                return True
            if msg.type == WSMsgType.PING:
                self._count("pings")
                if self.silent:
                    self._count("pings_unanswered")
                else:
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                self._count("pongs")
            elif msg.type == WSMsgType.TEXT:
                self._on_text(conn, msg.data)
            return False

        await self._serve_conn(conn, on_message)
        return ws

    async def _close(self, conn: _Conn) -> None:
        self._count("closed_after_connect")
        await conn.ws.close()

    def _on_text(self, conn: _Conn, text: str) -> None:
        try:
            req = json.loads(text)
            method, rid = req.get("method"), req.get("id")
        except (ValueError, AttributeError):
            conn.send(json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        if method == "SUBSCRIBE":
            conn.streams.update(p for p in req.get("params", []) if self._stream_ok(p))
        elif method == "UNSUBSCRIBE":
            conn.streams.difference_update(req.get("params", []))
        elif method != "LIST_SUBSCRIPTIONS":
            conn.send(json.dumps({"error": {"code": 1, "msg": f"Unknown method {method!r}"}, "id": rid}))
            return
        conn.send(json.dumps({"result": sorted(conn.streams) if method == "LIST_SUBSCRIPTIONS" else None, "id": rid}))

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.server_ping_s)
            for c in list(self._conns):
                try:
                    await c.ws.ping()
                    self._count("server_pings")
                except (ConnectionError, RuntimeError):
                    pass

    def _publish(self, sym: str, kind: str, event: dict) -> None:
        name = f"{sym.lower()}@{kind}"
        text = None
        for c in self._conns:
            if name in c.streams or (kind == "depth@100ms" and f"{sym.lower()}@depth" in c.streams):
                text = text or json.dumps({"stream": name, "data": event}, separators=(",", ":"))
                c.send(text)

    def _push_held(self) -> bool:
        """A silent server pushes nothing."""
        return self.silent

    def _push_round(self) -> None:
        if self._take_fault("ws_drop", None) is not None:
            for c in list(self._conns):
                if c.request.transport is not None:
                    c.request.transport.abort()
        now = self._now()
        for sym in self.symbols:
            st = self._state[sym]
            if sym not in self.quiet:
                db, da = self._advance(sym)
                if db or da:
                    pu = st.u
                    first = pu + self._rng.randint(1, 3)  # futures ids are not contiguous across events
                    st.u = first + self._rng.randint(0, 4)
                    self._record(sym)
                    if self._take_fault("pu_gap", sym) is None:
                        self._publish(sym, "depth@100ms", {
                            "e": "depthUpdate", "E": st.E, "T": st.E - 2, "s": sym, "U": first, "u": st.u, "pu": pu,
                            "b": [[_num(p), _num(q)] for p, q in db], "a": [[_num(p), _num(q)] for p, q in da]})
            self._push_trades(sym, now)
        if time.monotonic() >= self._next_kline_push:
            self._next_kline_push = time.monotonic() + 1.0
            for sym in self.symbols:
                self._push_klines(sym, now)

    def _push_trades(self, sym: str, now: int) -> None:
        st = self._state[sym]
        t0, self._last_trade_ms[sym] = self._last_trade_ms[sym], now
        ts, price, size, side, _ = self.market[sym].trade_arrays(t0, now)
        for t, p, q, d in zip(ts.tolist(), price.tolist(), size.tolist(), side.tolist()):
            st.agg_id += 1
            self._publish(sym, "aggTrade", {"e": "aggTrade", "E": now, "s": sym, "a": st.agg_id, "p": _num(p),
                                            "q": _num(q), "f": st.agg_id * 3, "l": st.agg_id * 3 + 2, "T": int(t),
                                            "m": bool(d < 0)})

    def _push_klines(self, sym: str, now: int) -> None:
        sim = self.market[sym]
        k0, self._last_kline_ms[sym] = self._last_kline_ms[sym], now
        rows = [(c, True) for c in sim.candles_closed_between(k0, now)] + [(sim.forming_candle(now), False)]
        for c, closed in rows:
            self._publish(sym, "kline_1m", {"e": "kline", "E": now, "s": sym, "k": {
                "t": c.start_ms, "T": c.start_ms + CANDLE_MS - 1, "s": sym, "i": "1m", "f": 1, "L": 2,
                "o": _num(c.open), "c": _num(c.close), "h": _num(c.high), "l": _num(c.low), "v": _num(c.volume),
                "n": 10, "x": closed, "q": _num(c.turnover), "V": "0", "Q": "0", "B": "0"}})


# --- command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m backend.testing.fake_binance``."""
    p = argparse.ArgumentParser(
        prog="python -m backend.testing.fake_binance",
        description="Run a fake Binance USD-M futures exchange (REST + combined streams on one port) on 127.0.0.1, "
        "driven by the market simulator, for tests and demos. Stop it with SIGTERM or Ctrl-C.")
    p.add_argument("--symbols", type=_symbols_arg, default=["BTCUSDT", "ETHUSDT"],
                   help="comma-separated symbols to serve (default: BTCUSDT,ETHUSDT)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free port)")
    p.add_argument("--port-file", type=Path, default=None,
                   help="write {port, rest_url, ws_url, pid} as JSON here once listening (atomic); removed on exit")
    p.add_argument("--seed", type=int, default=0, help="simulator and fault random seed (default 0)")
    p.add_argument("--push-interval", type=float, default=0.1, help="seconds between pushes (default 0.1: @100ms)")
    p.add_argument("--clock-offset-ms", type=int, default=0,
                   help="the exchange clock runs this many ms ahead of the local one; negative: behind")
    p.add_argument("--quiet", type=_symbols_arg, default=[], help="symbols whose book never changes (no diffs)")
    p.add_argument("--ban-after", type=float, default=None, metavar="S",
                   help="S seconds after start, answer every REST request with HTTP 418 (an IP ban)")
    p.add_argument("--ban-for", type=float, default=120.0, metavar="S", help="length of that ban (default 120 s)")
    p.add_argument("--close-after-connect", action="store_true",
                   help="close each WebSocket connection right after its first pushes (a flapping link)")
    p.add_argument("--server-ping-s", type=float, default=180.0, help="seconds between server ping frames (180)")
    p.add_argument("--stats-file", type=Path, default=None, help="on exit, write the request/fault counts here")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


async def _serve(args: argparse.Namespace) -> int:
    fake = FakeBinance(args.symbols, seed=args.seed, port=args.port, push_interval_s=args.push_interval,
                       clock_offset_ms=args.clock_offset_ms, quiet=args.quiet,
                       close_after_connect=args.close_after_connect, server_ping_s=args.server_ping_s)

    def scheduled(loop: asyncio.AbstractEventLoop) -> None:
        if args.ban_after is not None:
            loop.call_later(args.ban_after, fake.ban, args.ban_for)

    listening = f"fake Binance listening: REST {{fake.rest_url}}  WS {{fake.ws_url}}  symbols={','.join(args.symbols)}"
    return await serve(fake, args, scheduled=scheduled, listening=listening)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; exit code 0, or 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
