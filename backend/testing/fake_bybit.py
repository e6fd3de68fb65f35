"""A fake Bybit v5 exchange on 127.0.0.1: public REST and WebSocket, driven by the simulator.

It speaks Bybit's wire format (the REST envelope ``{"retCode":0,"retMsg":"OK",
"result":{...},"retExtInfo":{},"time":...}``; WebSocket pushes shaped like the real
capture in ``shared/data/bybit_xrpusdt_ob500.jsonl``; subscribe/unsubscribe acks and
pong replies), so the real clients can be tested against it, with faults injected
on demand or at random.

REST and WebSocket share one port: ``rest_url`` is ``http://127.0.0.1:<port>`` and
``ws_url`` is ``ws://127.0.0.1:<port>/v5/public/linear``.

In-process use::

    async with FakeBybit(["BTCUSDT"], seed=1) as fake:
        fake.rest_url, fake.ws_url
        fake.inject("u_gap", symbol="BTCUSDT")
        fake.book("BTCUSDT")          # the book the server has published (WS)

Faults (``fake.inject(kind, symbol=None, count=1, **params)``):

REST: ``http_429``, ``http_5xx`` (status=503), ``ret_code`` (code=10006, msg=...),
``rest_delay`` (seconds=...), ``malformed_json``, ``rest_drop`` (connection closed
without an answer). Each applies to the next ``count`` matching requests.

WebSocket: ``ws_drop`` (every connection closed abruptly), ``ws_delay`` (no pushes
for ``seconds``), ``ws_malformed`` (a truncated JSON frame), ``u_gap`` (one book
delta is lost), ``crossed`` (a delta that crosses the book, not reflecting the
server's real book), ``restart`` (the book service restarts: a snapshot with
``u == 1``).

``book_lag_ms`` stamps every book (REST and WebSocket ``ts``/``cts``) that many ms in
the past, as a lagging matching engine would: with a lag above the bot's
``max_book_age_s`` every book it receives is stale.

Bybit as it really behaves (states, set as attributes or on the command line):

* ``clock_offset_ms``: the exchange's clock runs this far ahead of the local one (negative:
  behind). Everything the server says about time uses it: the REST envelope ``time``,
  ``/v5/market/time``, book ``ts``/``cts``, trade and kline times, and the simulator
  itself runs on that clock.
* ``quiet``: symbols whose book never changes: no deltas are pushed after the snapshot
  (trades, bars and pongs go on), as Bybit pushes a book only when it changes.
* ``silent``: every connection stops answering: no pongs, no pushes, no acks.
* ``ban(seconds)``: an IP ban: every REST request is answered HTTP 403 until it ends;
  ``counts["rest_banned"]`` counts requests that arrived during it, ``counts["rest_banned_late"]``
  those that arrived more than 1 s after the first (a client that heeds the ban sends none),
  and ``banned_at`` lists their arrival times (monotonic s).
* ``close_after_snapshot``: each connection is closed right after its order-book snapshots.
* ``delist(symbol)``: Bybit stops knowing the symbol: REST answers retCode 10001, it leaves
  ``/v5/market/instruments-info``, nothing more is pushed for it and subscribing fails.
  A symbol the server was not started with is unknown from the start.
* ``unlisted`` (constructor, ``--unlisted``) / ``list_symbol(symbol)``: symbols the server simulates but
  does not list yet (as delisted) until ``list_symbol`` lists them: a new listing during a run.
* ``set_status(symbol, status)``: instruments-info reports another ``status`` (``Closed``, ...) for it.

``/v5/market/instruments-info`` pages by ``cursor`` (``limit`` 1..1000) and, like Bybit's linear category,
also lists a USDC perpetual and a dated future (``OTHER_LINEAR_CONTRACTS``).

Every REST request is counted in ``counts["rest"]`` and ``counts["rest:<path>"]``;
``/v5/market/time`` and ``/v5/market/instruments-info`` are served as Bybit does.

Command line (a separate process; exits cleanly on SIGTERM/SIGINT)::

    python -m backend.testing.fake_bybit --symbols BTCUSDT,ETHUSDT --port-file PATH \\
        [--fault-rate P] [--ws-fault-rate R] [--book-lag-ms MS] [--seed N] [--port 0] [--replay FILE]
        [--clock-offset-ms MS] [--quiet SYMS] [--silent-after S] [--ban-after S --ban-for S]
        [--close-after-snapshot] [--unlisted SYMS --list-after S] [--delist-after S:SYMS]

``fault_rate`` is the probability of a random fault per REST request and, unless
``ws_fault_rate`` is given, the rate of random WebSocket faults per second.

The port file is written atomically once the server listens; it holds JSON:
``{"port": ..., "rest_url": ..., "ws_url": ..., "pid": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import logging
import os
import sys
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from aiohttp import WSMsgType, web

from backend.testing.fake_server import FakeServerBase, Fault as _Fault, num as _num, serve, symbols_arg as _symbols_arg
from backend.venues.orderbook import OrderBook
from backend.venues.types import CANDLE_MS

log = logging.getLogger(__name__)

WS_PATH = "/v5/public/linear"
REST_FAULTS = ("http_429", "http_5xx", "ret_code", "rest_delay", "malformed_json", "rest_drop")
WS_FAULTS = ("ws_drop", "ws_delay", "ws_malformed", "u_gap", "crossed", "restart")
FAULTS = REST_FAULTS + WS_FAULTS
BOOK_DEPTHS = (1, 50, 200, 500)
OTHER_LINEAR_CONTRACTS = (
    {"symbol": "BTCPERP", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
     "quoteCoin": "USDC", "priceScale": "1"},
    {"symbol": "BTCUSDT-26DEC25", "contractType": "LinearFutures", "status": "Trading", "baseCoin": "BTC",
     "quoteCoin": "USDT", "priceScale": "1"},
)
"""Rows served by instruments-info besides the fake's USDT perpetuals, as on Bybit: not collectable here
(other quote coin, dated future), so ``--symbols all`` must leave them out."""


@dataclass(eq=False)  # identity-hashed: connections live in a set
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    conn_id: str
    topics: set[str] = field(default_factory=set)
    out: asyncio.Queue = field(default_factory=asyncio.Queue)

    def send(self, text: str) -> None:
        self.out.put_nowait(text)

    def drop(self) -> None:
        if self.request.transport is not None:
            self.request.transport.abort()


@dataclass
class _Published:
    """The order book the server has published on the WebSocket, level by level."""

    u: int = 0
    seq: int = 10_000_000
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    ts: int = 0
    sim_second: int = -1


class FakeBybit(FakeServerBase):
    """The fake exchange for ``symbols`` on ``host:port`` (0: a free port); an async context manager.

    ``seed`` drives the simulator and random faults; ``push_interval_s`` is the period
    of WebSocket pushes; ``fault_rate``, ``ws_fault_rate`` and ``book_lag_ms`` as in the
    module docstring; ``replay_path`` serves a captured JSONL stream instead of the
    simulator's book. ``counts`` tallies requests, pings and injected faults.
    """

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        push_interval_s: float = 0.1,
        fault_rate: float = 0.0,
        sim_start_ms: int | None = None,
        replay_path: str | os.PathLike | None = None,
        replay_interval_s: float = 0.0,
        book_lag_ms: int = 0,
        ws_fault_rate: float | None = None,
        clock_offset_ms: int = 0,
        quiet: Iterable[str] = (),
        close_after_snapshot: bool = False,
        unlisted: Iterable[str] = (),
    ):
        self._init_server(symbols, seed=seed, host=host, port=port, push_interval_s=push_interval_s,
                          clock_offset_ms=clock_offset_ms, quiet=quiet, sim_start_ms=sim_start_ms)
        self.book_lag_ms = int(book_lag_ms)
        self.close_after_snapshot = close_after_snapshot
        self.delisted: set[str] = set(unlisted)
        self.status: dict[str, str] = {}  # instruments-info status other than "Trading", per symbol
        self.fault_rate = fault_rate
        self.ws_fault_rate = fault_rate if ws_fault_rate is None else ws_fault_rate
        self._last_fault_roll: float | None = None
        # u starts high like a long-running Bybit topic; u == 1 is reserved for a service restart
        self._pub = {s: _Published(u=self._rng.randint(10_000, 10_000_000)) for s in self.symbols}
        self._delay_until = 0.0
        self._last_trade_ms = {s: self._now() for s in self.symbols}
        self._last_kline_ms = {s: self._now() for s in self.symbols}
        self._next_kline_update = 0.0
        self.replay_lines: list[str] = []
        self.replay_topic: str | None = None
        self.replay_interval_s = replay_interval_s
        if replay_path is not None:
            self._load_replay(Path(replay_path))
        self.requests: deque[str] = deque(maxlen=1000)

    label = "Bybit"
    FAULTS = FAULTS

    # --- lifecycle ----------------------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        """Bybit's market endpoints and the public linear WebSocket."""
        app.router.add_get("/v5/market/orderbook", self._rest_orderbook)
        app.router.add_get("/v5/market/kline", self._rest_kline)
        app.router.add_get("/v5/market/recent-trade", self._rest_trades)
        app.router.add_get("/v5/market/time", self._rest_time)
        app.router.add_get("/v5/market/instruments-info", self._rest_instruments)
        app.router.add_get(WS_PATH, self._ws_handler)

    def _started(self) -> None:
        """Publish every symbol's first book and start pushing (a replay is pushed per connection instead)."""
        for s in self.symbols:
            self._refresh_book(s, force=True)
        if not self.replay_lines:
            self._spawn(self._push_loop())

    @property
    def ws_url(self) -> str:
        """``ws://host:port/v5/public/linear``."""
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    # --- control ------------------------------------------------------------------------
    def ban(self, seconds: float) -> None:
        """Answer every REST request with HTTP 403 for ``seconds`` from now."""
        super().ban(seconds)

    def delist(self, symbol: str) -> None:
        """Stop knowing ``symbol`` (see the module docstring)."""
        self.delisted.add(symbol)

    def list_symbol(self, symbol: str, status: str = "Trading") -> None:
        """A new listing: ``symbol`` (one the server was started with, e.g. in ``unlisted``) is known from now
        on, with instruments-info ``status``; ``ValueError`` for a symbol the server cannot simulate."""
        if symbol not in self._pub:
            raise ValueError(f"{symbol} is not one of the fake's symbols ({', '.join(self.symbols)})")
        self.delisted.discard(symbol)
        self.set_status(symbol, status)

    def set_status(self, symbol: str, status: str) -> None:
        """The instruments-info ``status`` of ``symbol`` from now on (``Trading``, ``Delivering``, ``Closed``, ...);
        market data keeps flowing, as it does on Bybit while a contract settles."""
        if status == "Trading":
            self.status.pop(symbol, None)
        else:
            self.status[symbol] = status

    def book(self, symbol: str) -> OrderBook:
        """The book published on the WebSocket (what a correct client must hold)."""
        p = self._pub[symbol]
        bids = sorted(p.bids.items(), reverse=True)
        asks = sorted(p.asks.items())
        return OrderBook.from_levels(symbol, bids, asks, p.ts, recv_ms=p.ts, update_id=p.u)

    def update_id(self, symbol: str) -> int:
        """``u`` of the last book message published for ``symbol``."""
        return self._pub[symbol].u

    def _random_rest_fault(self) -> _Fault | None:
        if self.fault_rate <= 0 or self._rng.random() >= self.fault_rate:
            return None
        kind = self._rng.choice(REST_FAULTS)
        params: dict[str, Any] = {}
        if kind == "rest_delay":
            params["seconds"] = self._rng.uniform(0.05, 0.5)
        if kind == "ret_code":
            params["code"] = self._rng.choice((10006, 10016, 10018))
        self._count(f"fault_{kind}")
        return _Fault(kind, None, 1, params)

    # --- REST -----------------------------------------------------------------------------
    def _envelope(self, result: Any, code: int = 0, msg: str = "OK") -> web.Response:
        body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": self._now()}
        return web.Response(text=json.dumps(body), content_type="application/json")

    def _rest_gate(self, request: web.Request) -> web.StreamResponse | None:
        """Count the request; during a ban, the 403 answer."""
        self.requests.append(request.path_qs)
        self._count("rest")
        self._count(f"rest:{request.path}")
        if self._banned_request() is not None:
            return web.Response(status=403, text="403 Forbidden: access too frequent")
        return None

    async def _rest_time(self, request: web.Request) -> web.StreamResponse:
        early = self._rest_gate(request)
        if early is not None:
            return early
        ns = time.time_ns() + self.clock_offset_ms * 1_000_000
        return self._envelope({"timeSecond": str(ns // 1_000_000_000), "timeNano": str(ns)})

    async def _rest_instruments(self, request: web.Request) -> web.StreamResponse:
        early = self._rest_gate(request)
        if early is not None:
            return early
        q = request.rel_url.query
        if q.get("category") != "linear":
            return self._envelope({}, 10001, "params error: category invalid")
        try:
            limit = int(q.get("limit", "500"))
            start = int(q.get("cursor") or 0)
        except ValueError:
            return self._envelope({}, 10001, "params error")
        if not 1 <= limit <= 1000:
            return self._envelope({}, 10001, "params error: limit invalid")
        listed = [{"symbol": s, "contractType": "LinearPerpetual", "status": self.status.get(s, "Trading"),
                   "baseCoin": s[:-4], "quoteCoin": "USDT", "priceScale": "2"}
                  for s in self.symbols if s not in self.delisted]
        listed += OTHER_LINEAR_CONTRACTS  # Bybit's linear category also lists USDC perpetuals and dated futures
        rows = listed[start:start + limit]
        nxt = str(start + limit) if start + limit < len(listed) else ""
        return self._envelope({"category": "linear", "list": rows, "nextPageCursor": nxt})

    async def _rest_common(self, request: web.Request) -> tuple[web.StreamResponse | None, str | None]:
        """Apply faults and check category/symbol; returns (early response, symbol)."""
        early = self._rest_gate(request)
        if early is not None:
            return early, None
        q = request.rel_url.query
        sym = q.get("symbol")
        fault = self._take_fault(REST_FAULTS, sym) or self._random_rest_fault()
        if fault is not None:
            k = fault.kind
            if k == "http_429":
                return web.Response(status=429, text="Too Many Requests"), None
            if k == "http_5xx":
                return web.Response(status=int(fault.params.get("status", 503)), text="Service Unavailable"), None
            if k == "ret_code":
                code = int(fault.params.get("code", 10006))
                return self._envelope({}, code, str(fault.params.get("msg", "Too many visits!"))), None
            if k == "rest_delay":
                await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
            if k == "malformed_json":
                return web.Response(text='{"retCode":0,"retMsg":"OK","result":{"s":', content_type="application/json"), None
            if k == "rest_drop":
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=500), None
        if q.get("category") != "linear":
            return self._envelope({}, 10001, "params error: category invalid"), None
        if sym not in self._pub or sym in self.delisted:
            return self._envelope({}, 10001, "params error: symbol invalid"), None
        return None, sym

    async def _rest_orderbook(self, request: web.Request) -> web.StreamResponse:
        early, sym = await self._rest_common(request)
        if early is not None:
            return early
        try:
            limit = int(request.rel_url.query.get("limit", "25"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 500:
            return self._envelope({}, 10001, "params error: limit invalid")
        now = self._now()
        b = self.market[sym].book_at(now, depth=limit)
        result = {
            "s": sym,
            "b": [[_num(p), _num(s)] for p, s in zip(b.bid_prices, b.bid_sizes)],
            "a": [[_num(p), _num(s)] for p, s in zip(b.ask_prices, b.ask_sizes)],
            "ts": now - self.book_lag_ms,
            "u": self._pub[sym].u,
            "seq": self._pub[sym].seq,
            "cts": now - 3 - self.book_lag_ms,
        }
        return self._envelope(result)

    async def _rest_kline(self, request: web.Request) -> web.StreamResponse:
        early, sym = await self._rest_common(request)
        if early is not None:
            return early
        q = request.rel_url.query
        if q.get("interval") != "1":
            return self._envelope({}, 10001, "params error: interval invalid (the fake serves 1-minute bars)")
        try:
            limit = int(q.get("limit", "200"))
            now = self._now()
            end = min(int(q.get("end", now)), now)
            start = int(q.get("start", 0))
        except ValueError:
            return self._envelope({}, 10001, "params error")
        if not 1 <= limit <= 1000:
            return self._envelope({}, 10001, "params error: limit invalid")
        sim = self.market[sym]
        bars = [c for c in sim.candles_closed_between(sim.origin_ms - 1, now) if start <= c.start_ms <= end]
        forming = sim.forming_candle(now)
        if start <= forming.start_ms <= end and (not bars or bars[-1].start_ms < forming.start_ms):
            bars.append(forming)  # like Bybit: the still-forming bar comes first (newest)
        bars = bars[-limit:][::-1]
        rows = [[str(c.start_ms), _num(c.open), _num(c.high), _num(c.low), _num(c.close), _num(c.volume),
                 _num(c.turnover)] for c in bars]
        return self._envelope({"category": "linear", "symbol": sym, "list": rows})

    async def _rest_trades(self, request: web.Request) -> web.StreamResponse:
        early, sym = await self._rest_common(request)
        if early is not None:
            return early
        try:
            limit = int(request.rel_url.query.get("limit", "500"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            return self._envelope({}, 10001, "params error: limit invalid")
        now = self._now()
        ts, price, size, side, idx = self.market[sym].trade_arrays(now - 600_000, now)
        rows = [
            {"execId": self._exec_id(sym, int(i)), "symbol": sym, "price": _num(p), "size": _num(s),
             "side": "Buy" if d > 0 else "Sell", "time": str(int(t)), "isBlockTrade": False, "isRPITrade": False}
            for t, p, s, d, i in zip(ts[-limit:], price[-limit:], size[-limit:], side[-limit:], idx[-limit:])
        ][::-1]
        return self._envelope({"category": "linear", "list": rows})

    @staticmethod
    def _exec_id(symbol: str, index: int) -> str:
        return str(uuid.UUID(int=(zlib.crc32(symbol.encode()) << 64) | index))

    # --- WebSocket ----------------------------------------------------------------------------
    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, request, str(uuid.uuid4()))

        async def on_message(msg) -> bool:
            if msg.type == WSMsgType.TEXT:
                self._on_ws_text(conn, msg.data)
            return False

        await self._serve_conn(conn, on_message)
        return ws

    def _ack(self, conn: _Conn, op: str, req: dict, success: bool = True, ret_msg: str = "") -> None:
        reply = {"success": success, "ret_msg": ret_msg, "conn_id": conn.conn_id, "op": op}
        if "req_id" in req:
            reply["req_id"] = req["req_id"]
        conn.send(json.dumps(reply))

    def _on_ws_text(self, conn: _Conn, text: str) -> None:
        try:
            req = json.loads(text)
            op = req.get("op")
        except (ValueError, AttributeError):
            conn.send(json.dumps({"success": False, "ret_msg": "error:invalid request", "conn_id": conn.conn_id, "op": ""}))
            return
        if op == "ping":
            self._count("pings")
            if self.silent:
                self._count("pings_unanswered")
                return
            self._ack(conn, "ping", req, ret_msg="pong")
            return
        if self.silent:
            return
        args = req.get("args") or []
        if op == "subscribe":
            bad = [t for t in args if not self._topic_ok(t)]
            dup = [t for t in args if t in conn.topics]
            if bad or dup:
                why = f"error:handler not found,topic:{bad[0]}" if bad else f"error:already subscribed,topic:{dup[0]}"
                self._ack(conn, "subscribe", req, success=False, ret_msg=why)
                args = [t for t in args if t not in bad and t not in dup]
            else:
                self._ack(conn, "subscribe", req)
            for t in args:
                conn.topics.add(t)
                self._count("subscriptions")
                self._on_subscribed(conn, t)
        elif op == "unsubscribe":
            for t in args:
                conn.topics.discard(t)
            self._ack(conn, "unsubscribe", req)
        else:
            self._ack(conn, str(op), req, success=False, ret_msg=f"error:unknown op {op!r}")

    def _topic_ok(self, topic: Any) -> bool:
        if not isinstance(topic, str):
            return False
        if self.replay_topic is not None:
            return topic == self.replay_topic or topic.split(".")[-1] in self.symbols
        parts = topic.split(".")
        if parts[-1] in self.delisted:
            return False
        if len(parts) == 3 and parts[0] == "orderbook":
            return parts[1].isdigit() and int(parts[1]) in BOOK_DEPTHS and parts[2] in self._pub
        if len(parts) == 3 and parts[0] == "kline":
            return parts[1] == "1" and parts[2] in self._pub
        if len(parts) == 2 and parts[0] == "publicTrade":
            return parts[1] in self._pub
        return False

    def _on_subscribed(self, conn: _Conn, topic: str) -> None:
        if self.replay_topic is not None:
            # the capture's book stream also serves another depth of the same symbol (topic renamed;
            # the client keeps every level it is sent and hands out its own depth)
            rep = self.replay_topic.split(".")
            if topic.startswith("orderbook.") and topic.split(".")[-1] == rep[-1] and rep[0] == "orderbook":
                asyncio.get_running_loop().create_task(self._replay_to(conn, topic))
            return
        if topic.startswith("orderbook."):
            sym = topic.split(".")[2]
            p = self._pub[sym]
            conn.send(self._book_msg(topic, sym, "snapshot", sorted(p.bids.items(), reverse=True),
                                     sorted(p.asks.items()), p.u, p.seq, p.ts))
            if self.close_after_snapshot:
                asyncio.get_running_loop().create_task(self._close_soon(conn))

    async def _close_soon(self, conn: _Conn) -> None:
        """Close ``conn`` once its queued messages are out (close-after-snapshot)."""
        for _ in range(100):
            if conn.out.empty():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        self._count("closed_after_snapshot")
        await conn.ws.close()

    def _book_msg(self, topic: str, sym: str, kind: str, bids, asks, u: int, seq: int, ts: int) -> str:
        ts -= self.book_lag_ms
        return json.dumps({
            "topic": topic, "type": kind, "ts": ts,
            "data": {"s": sym, "b": [[_num(p), _num(s)] for p, s in bids],
                     "a": [[_num(p), _num(s)] for p, s in asks], "u": u, "seq": seq},
            "cts": ts - 2,
        }, separators=(",", ":"))

    def _subscribers(self, topic_prefix: str, sym: str) -> list[_Conn]:
        return [c for c in self._conns if any(t.startswith(topic_prefix) and t.endswith("." + sym) for t in c.topics)]

    def _broadcast_book(self, sym: str, kind: str, bids, asks, u: int, seq: int, ts: int) -> None:
        if self.silent or sym in self.delisted:
            return
        for c in self._conns:
            for t in c.topics:
                if t.startswith("orderbook.") and t.endswith("." + sym):
                    c.send(self._book_msg(t, sym, kind, bids, asks, u, seq, ts))

    # --- publishing ---------------------------------------------------------------------------------
    def _refresh_book(self, sym: str, force: bool = False) -> tuple[list, list]:
        """Move the published book to the simulator's current book (plus small size jitter
        between simulator seconds so every push carries a delta); return the changed levels."""
        p = self._pub[sym]
        now = self._now()
        second = now // 1000
        if force or second != p.sim_second:
            b = self.market[sym].book_at(now)
            new_b = dict(zip(b.bid_prices.tolist(), b.bid_sizes.tolist()))
            new_a = dict(zip(b.ask_prices.tolist(), b.ask_sizes.tolist()))
            p.sim_second = second
        else:
            new_b, new_a = dict(p.bids), dict(p.asks)
            for side in (new_b, new_a):
                if side:
                    price = self._rng.choice(list(side))
                    step = self.market[sym].spec.qty_step
                    side[price] = round(max(step, side[price] + step * self._rng.randint(-3, 3)), 12)
        db = [(px, 0.0) for px in p.bids if px not in new_b] + [(px, s) for px, s in new_b.items() if p.bids.get(px) != s]
        da = [(px, 0.0) for px in p.asks if px not in new_a] + [(px, s) for px, s in new_a.items() if p.asks.get(px) != s]
        p.bids, p.asks, p.ts = new_b, new_a, now
        return db, da

    def _push_held(self) -> bool:
        """True during an injected ``ws_delay``."""
        return time.monotonic() < self._delay_until

    def _random_ws_fault(self) -> None:
        # ws_fault_rate is per second of wall time: the chance covers the time since the last
        # round, so a loaded machine (rounds later than push_interval_s) sees the same fault
        # rate instead of fewer faults
        now = time.monotonic()
        elapsed = self.push_interval_s if self._last_fault_roll is None else max(0.0, now - self._last_fault_roll)
        self._last_fault_roll = now
        if self.ws_fault_rate > 0 and self._rng.random() < -math.expm1(-self.ws_fault_rate * elapsed):
            kind = self._rng.choice(WS_FAULTS)
            params = {"seconds": self._rng.uniform(0.2, 1.5)} if kind == "ws_delay" else {}
            self._faults.append(_Fault(kind, self._rng.choice(self.symbols), 1, params))

    def _push_round(self) -> None:
        if self.silent:
            return
        self._random_ws_fault()
        f = self._take_fault(("ws_drop",), None)
        if f is not None:
            for c in list(self._conns):
                c.drop()
        f = self._take_fault(("ws_delay",), None)
        if f is not None:
            self._delay_until = time.monotonic() + float(f.params.get("seconds", 2.0))
            return
        now = self._now()
        for sym in self.symbols:
            p = self._pub[sym]
            if self._take_fault(("ws_malformed",), sym) is not None:
                for c in self._subscribers("orderbook.", sym):
                    c.send('{"topic":"orderbook.50.%s","type":"delta","data":{"b":[["1' % sym)
            if self._take_fault(("restart",), sym) is not None:
                self._refresh_book(sym, force=True)
                p.u = 1
                p.seq += 7
                self._broadcast_book(sym, "snapshot", sorted(p.bids.items(), reverse=True), sorted(p.asks.items()),
                                     p.u, p.seq, p.ts)
                continue
            if sym in self.quiet or sym in self.delisted:
                continue  # a quiet book does not change, so nothing is pushed
            if self._take_fault(("crossed",), sym) is not None:
                tick = self.market[sym].spec.tick
                best_ask = min(p.asks)
                bogus = round(best_ask + tick, 12)
                p.u += 1
                p.seq += 3
                self._broadcast_book(sym, "delta", [(bogus, 1.0)], [], p.u, p.seq, now)
                continue
            db, da = self._refresh_book(sym)
            p.u += 1
            p.seq += self._rng.randint(1, 50)
            if self._take_fault(("u_gap",), sym) is not None:
                continue  # the delta is "lost": subscribers see u jump
            if db or da:
                self._broadcast_book(sym, "delta", db, da, p.u, p.seq, p.ts)
            else:
                p.u -= 1
        self._push_trades_and_klines(now)

    def _push_trades_and_klines(self, now: int) -> None:
        for sym in self.symbols:
            if sym in self.delisted:
                continue
            sim = self.market[sym]
            t0 = self._last_trade_ms[sym]
            self._last_trade_ms[sym] = now
            subs = self._subscribers("publicTrade.", sym)
            if subs:
                ts, price, size, side, idx = sim.trade_arrays(t0, now)
                if ts.size:
                    data = [{"T": int(t), "s": sym, "S": "Buy" if d > 0 else "Sell", "v": _num(s), "p": _num(px),
                             "L": "PlusTick" if d > 0 else "MinusTick", "i": self._exec_id(sym, int(i)), "BT": False,
                             "seq": int(i)} for t, px, s, d, i in zip(ts, price, size, side, idx)]
                    text = json.dumps({"topic": f"publicTrade.{sym}", "type": "snapshot", "ts": now, "data": data})
                    for c in subs:
                        c.send(text)
            k0 = self._last_kline_ms[sym]
            subs = self._subscribers("kline.1.", sym)
            closed = sim.candles_closed_between(k0, now)
            self._last_kline_ms[sym] = now
            rows = [(c, True) for c in closed]
            if time.monotonic() >= self._next_kline_update:
                rows.append((sim.forming_candle(now), False))
            if subs and rows:
                data = [{"start": c.start_ms, "end": c.start_ms + CANDLE_MS - 1, "interval": "1", "open": _num(c.open),
                         "close": _num(c.close), "high": _num(c.high), "low": _num(c.low), "volume": _num(c.volume),
                         "turnover": _num(c.turnover), "confirm": done, "timestamp": now} for c, done in rows]
                text = json.dumps({"topic": f"kline.1.{sym}", "data": data, "ts": now, "type": "snapshot"})
                for c in subs:
                    c.send(text)
        if time.monotonic() >= self._next_kline_update:
            self._next_kline_update = time.monotonic() + 1.0

    # --- replay ----------------------------------------------------------------------------------
    def _load_replay(self, path: Path) -> None:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"{path}: no messages to replay")
        try:
            first = json.loads(lines[0])
            self.replay_topic = str(first["topic"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}: line 1 is not a Bybit push with a 'topic'") from None
        self.replay_lines = lines

    async def _replay_to(self, conn: _Conn, topic: str | None = None) -> None:
        """Send the capture's messages verbatim, in order (under ``topic`` when it differs)."""
        old = f'"{self.replay_topic}"'
        new = f'"{topic}"' if topic else old
        for line in self.replay_lines:
            conn.send(line if new == old else line.replace(old, new, 1))
            if self.replay_interval_s:
                await asyncio.sleep(self.replay_interval_s)
        self._count("replays")


# --- command line ----------------------------------------------------------------------------------


def _rate_arg(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"fault rate must be within 0..1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m backend.testing.fake_bybit``."""
    p = argparse.ArgumentParser(
        prog="python -m backend.testing.fake_bybit",
        description="Run a fake Bybit v5 public exchange (REST + WebSocket on one port) on 127.0.0.1, "
        "driven by the market simulator, for tests and demos. Stop it with SIGTERM or Ctrl-C.",
    )
    p.add_argument("--symbols", type=_symbols_arg, default=["BTCUSDT", "ETHUSDT"],
                   help="comma-separated symbols to serve (default: BTCUSDT,ETHUSDT)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free port is chosen)")
    p.add_argument("--port-file", type=Path, default=None,
                   help="write {port, rest_url, ws_url, pid} as JSON here once listening (atomic); removed on exit")
    p.add_argument("--seed", type=int, default=0, help="simulator and fault random seed (default 0)")
    p.add_argument("--fault-rate", type=_rate_arg, default=0.0,
                   help="random faults: probability per REST request, and per second per symbol on the "
                   "WebSocket (default 0: none)")
    p.add_argument("--push-interval", type=float, default=0.1, help="seconds between WebSocket book pushes (default 0.1)")
    p.add_argument("--replay", type=Path, default=None,
                   help="serve this JSONL capture of Bybit pushes on the WebSocket instead of the simulator")
    p.add_argument("--ws-fault-rate", type=_rate_arg, default=None,
                   help="random WebSocket faults per second (default: the --fault-rate)")
    p.add_argument("--book-lag-ms", type=int, default=0,
                   help="stamp every book this many ms in the past (default 0)")
    p.add_argument("--clock-offset-ms", type=int, default=0,
                   help="the exchange clock runs this many ms ahead of the local one; negative: behind (default 0)")
    p.add_argument("--quiet", type=_symbols_arg, default=[],
                   help="comma-separated symbols whose book never changes: no deltas after the snapshot")
    p.add_argument("--silent-after", type=float, default=None, metavar="S",
                   help="S seconds after start, every WebSocket connection stops answering (no pongs, no pushes)")
    p.add_argument("--ban-after", type=float, default=None, metavar="S",
                   help="S seconds after start, answer every REST request with HTTP 403 (an IP ban)")
    p.add_argument("--ban-for", type=float, default=600.0, metavar="S", help="length of that ban (default 600 s)")
    p.add_argument("--unlisted", type=_symbols_arg, default=[],
                   help="comma-separated symbols (also in --symbols) that are not listed yet")
    p.add_argument("--list-after", type=float, default=None, metavar="S",
                   help="S seconds after start, list the --unlisted symbols (a new listing)")
    p.add_argument("--delist-after", default=None, metavar="S:SYMS",
                   help="S seconds after start, delist these comma-separated symbols, e.g. 5:ETHUSDT")
    p.add_argument("--close-after-snapshot", action="store_true",
                   help="close each WebSocket connection right after its order-book snapshots (a flapping link)")
    p.add_argument("--stats-file", type=Path, default=None,
                   help="on exit, write the request/fault counts as JSON here (e.g. rest_banned)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


async def _serve(args: argparse.Namespace) -> int:
    fake = FakeBybit(args.symbols, seed=args.seed, port=args.port, fault_rate=args.fault_rate,
                     ws_fault_rate=args.ws_fault_rate,
                     push_interval_s=args.push_interval, replay_path=args.replay, book_lag_ms=args.book_lag_ms,
                     clock_offset_ms=args.clock_offset_ms, quiet=args.quiet,
                     close_after_snapshot=args.close_after_snapshot, unlisted=args.unlisted)

    def list_new() -> None:
        for sym in args.unlisted:
            fake.list_symbol(sym)
        log.info("fake Bybit: listed %s", ",".join(args.unlisted))

    def delist(symbols: list[str]) -> None:
        for sym in symbols:
            fake.delist(sym)
        log.info("fake Bybit: delisted %s", ",".join(symbols))

    def go_silent() -> None:
        fake.silent = True
        log.info("fake Bybit: connections are silent from now on")

    def start_ban() -> None:
        fake.ban(args.ban_for)
        log.info("fake Bybit: IP ban (HTTP 403) for %g s", args.ban_for)

    def scheduled(loop: asyncio.AbstractEventLoop) -> None:
        if args.list_after is not None:
            loop.call_later(args.list_after, list_new)
        if args.delist_after is not None:
            when, _, names = args.delist_after.partition(":")
            loop.call_later(float(when), delist, _symbols_arg(names))
        if args.silent_after is not None:
            loop.call_later(args.silent_after, go_silent)
        if args.ban_after is not None:
            loop.call_later(args.ban_after, start_ban)

    def stopped() -> None:
        log.info("fake Bybit stopped; faults injected: %s",
                 {k: v for k, v in fake.counts.items() if k.startswith("fault_")} or "none")

    listening = (f"fake Bybit listening: REST {{fake.rest_url}}  WS {{fake.ws_url}}  symbols={','.join(args.symbols)} "
                 f"fault_rate={args.fault_rate}")
    return await serve(fake, args, scheduled=scheduled, listening=listening, stopped=stopped)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; exit code 0, or 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.replay is not None and not args.replay.is_file():
        print(f"error: replay file not found: {args.replay}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
