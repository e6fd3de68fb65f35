"""Bybit v5 public WebSocket client: local order books, trades and closed 1-minute bars.

Per symbol it subscribes ``orderbook.<depth>.<SYM>``, ``publicTrade.<SYM>`` and
``kline.1.<SYM>`` and keeps a ``LocalBook`` from snapshot + deltas. Guarantees:

* a gap in ``u`` or a crossed book discards that symbol's book and resubscribes its
  book topic for a fresh snapshot (unsubscribe + subscribe; counted as a resync);
  until the snapshot arrives the book is reported as unavailable, never half-built;
* an application ping ``{"op": "ping"}`` every ``ping_interval_s`` (Bybit drops
  silent connections); no traffic for ``dead_after_s`` counts as a dead link;
* on any disconnect: reconnect with exponential backoff and jitter, resubscribe
  every topic, and rebuild every book from new snapshots;
* malformed frames are counted and skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter, deque
from typing import Callable, Sequence

import websockets
from websockets.asyncio.client import connect

from backend.venues.bybit.messages import (
    BybitMessageError,
    decode_json,
    parse_ws_book,
    parse_ws_klines,
    parse_ws_trades,
    topic_kind,
)
from backend.venues.bybit.rest import backoff_delay
from backend.venues.local_book import ApplyResult, LocalBook
from backend.venues.source import Clock
from backend.venues.types import Candle, Trade
from backend.symbols import validate_symbol

log = logging.getLogger(__name__)

MAX_ARGS_PER_SUBSCRIBE = 10  # Bybit's limit of topics per subscribe request
BookHook = Callable[[str, ApplyResult, LocalBook], None]


class BybitWsClient:
    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        *,
        depth: int = 50,
        ping_interval_s: float = 20.0,
        dead_after_s: float | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        open_timeout_s: float = 10.0,
        trades: bool = True,
        klines: bool = True,
        clock: Clock | None = None,
        seed: int | None = None,
        on_book: BookHook | None = None,
    ):
        self.url = url
        self.symbols = [validate_symbol(s) for s in symbols]
        self.depth = depth
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s if dead_after_s is not None else 2.5 * ping_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.open_timeout_s = open_timeout_s
        self.clock = clock or Clock()
        self.on_book = on_book
        self._rng = random.Random(seed)
        self.books = {s: LocalBook(s, depth) for s in self.symbols}
        self._topics: list[str] = []
        for s in self.symbols:
            self._topics.append(self.book_topic(s))
            if trades:
                self._topics.append(f"publicTrade.{s}")
            if klines:
                self._topics.append(f"kline.1.{s}")
        self._trades: dict[str, list[Trade]] = {s: [] for s in self.symbols}
        self._seen_ids: dict[str, tuple[deque, set]] = {s: (deque(), set()) for s in self.symbols}
        self._candles: dict[str, list[Candle]] = {s: [] for s in self.symbols}
        self.counts: Counter = Counter()
        self.last_error: str | None = None
        self.connected = asyncio.Event()
        self._ws = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._last_rx = time.monotonic()
        self._req = 0

    def book_topic(self, symbol: str) -> str:
        return f"orderbook.{self.depth}.{symbol}"

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="bybit-ws")

    async def close(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except (asyncio.TimeoutError, websockets.exceptions.WebSocketException, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def wait_synced(self, timeout_s: float, symbols: Sequence[str] | None = None) -> bool:
        """Wait until every (given) symbol has a book; False on timeout."""
        deadline = time.monotonic() + timeout_s
        wanted = symbols or self.symbols
        while not all(self.books[s].ready for s in wanted):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def drain_trades(self, symbol: str) -> list[Trade]:
        out, self._trades[symbol] = self._trades[symbol], []
        return out

    def drain_candles(self, symbol: str) -> list[Candle]:
        out, self._candles[symbol] = self._candles[symbol], []
        return out

    def status(self, symbol: str) -> str:
        """Why a symbol has no book right now."""
        if self._ws is None:
            return f"websocket disconnected ({self.last_error or 'connecting'}); reconnecting"
        return "waiting for an order-book snapshot (resync in progress)"

    # --- connection loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            pinger = None
            try:
                async with connect(self.url, ping_interval=None, open_timeout=self.open_timeout_s,
                                   close_timeout=1.0, max_size=2**24) as ws:
                    self._ws = ws
                    self.counts["connects"] += 1
                    self._last_rx = time.monotonic()
                    for b in self.books.values():
                        b.reset()
                    for i in range(0, len(self._topics), MAX_ARGS_PER_SUBSCRIBE):
                        await self._send(ws, "subscribe", self._topics[i : i + MAX_ARGS_PER_SUBSCRIBE])
                    self.connected.set()
                    pinger = asyncio.create_task(self._ping_loop(ws))
                    async for raw in ws:
                        self._last_rx = time.monotonic()
                        if await self._on_text(ws, raw):
                            attempt = 0  # a snapshot arrived: the link is healthy again
                self.last_error = "closed by server"
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Bybit WebSocket %s: %s", self.url, self.last_error)
            finally:
                if pinger is not None:
                    pinger.cancel()
                self._ws = None
                self.connected.clear()
                for b in self.books.values():
                    b.reset()
            if self._closing:
                break
            self.counts["reconnects"] += 1
            delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _send(self, ws, op: str, args: list[str] | None = None) -> None:
        self._req += 1
        msg: dict = {"op": op, "req_id": str(self._req)}
        if args is not None:
            msg["args"] = args
        await ws.send(json.dumps(msg))

    async def _ping_loop(self, ws) -> None:
        try:
            while True:
                await asyncio.sleep(self.ping_interval_s)
                if time.monotonic() - self._last_rx > self.dead_after_s:
                    self.counts["dead_links"] += 1
                    self.last_error = f"no traffic for {self.dead_after_s:.1f} s"
                    await ws.close()
                    return
                await self._send(ws, "ping")
                self.counts["pings"] += 1
        except (websockets.exceptions.WebSocketException, OSError):
            return

    async def _resync(self, ws, symbol: str) -> None:
        self.counts["resyncs"] += 1
        topic = self.book_topic(symbol)
        await self._send(ws, "unsubscribe", [topic])
        await self._send(ws, "subscribe", [topic])

    # --- messages --------------------------------------------------------------------------------
    async def _on_text(self, ws, raw: str | bytes) -> bool:
        """Handle one frame; True if it was a book snapshot that (re)synced a book."""
        self.counts["messages"] += 1
        try:
            msg = decode_json(raw, "websocket frame")
            if not isinstance(msg, dict):
                raise BybitMessageError(f"websocket frame: expected an object, got {type(msg).__name__}")
            kind = topic_kind(msg)
            if kind is None:
                self._on_control(msg)
                return False
            channel, symbol = kind
            if symbol not in self.books:
                self.counts["unknown_topic"] += 1
                return False
            if channel == "orderbook":
                return await self._on_book(ws, symbol, msg)
            if channel == "publicTrade":
                self._on_trades(symbol, msg)
            elif channel == "kline":
                self._candles[symbol].extend(parse_ws_klines(msg))
            else:
                self.counts["unknown_topic"] += 1
        except BybitMessageError as exc:
            self.counts["malformed"] += 1
            log.warning("skipping malformed Bybit message: %s", exc)
        return False

    def _on_control(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "ping" or msg.get("ret_msg") == "pong":
            self.counts["pongs"] += 1
        elif op in ("subscribe", "unsubscribe"):
            if not msg.get("success", False):
                self.counts["subscribe_errors"] += 1
                log.warning("Bybit %s failed: %s", op, msg.get("ret_msg"))
        else:
            self.counts["other_control"] += 1

    async def _on_book(self, ws, symbol: str, msg: dict) -> bool:
        book_msg = parse_ws_book(msg)
        local = self.books[symbol]
        result = local.apply(book_msg, recv_ms=self.clock.now_ms())
        self.counts[f"book_{result.value}"] += 1
        if self.on_book is not None:
            self.on_book(symbol, result, local)
        if result.needs_resync:
            log.warning("%s order book %s at u=%s: resubscribing for a fresh snapshot", symbol, result.value, book_msg.u)
            await self._resync(ws, symbol)
        return result is ApplyResult.RESET

    def _on_trades(self, symbol: str, msg: dict) -> None:
        order, seen = self._seen_ids[symbol]
        for exec_id, trade in parse_ws_trades(msg):
            if exec_id in seen:
                self.counts["duplicate_trades"] += 1
                continue
            seen.add(exec_id)
            order.append(exec_id)
            if len(order) > 20_000:
                seen.discard(order.popleft())
            self._trades[symbol].append(trade)
