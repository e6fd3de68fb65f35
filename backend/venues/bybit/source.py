"""The two Bybit ``MarketSource``s: REST polling ("bybit") and the WebSocket local book ("bybit-ws").

* ``BybitRestSource`` polls ``/v5/market/orderbook`` for every symbol concurrently
  each tick, plus new trades (de-duplicated by ``execId``) and newly closed
  1-minute bars.
* ``BybitWsSource`` hands out the local books kept by ``BybitWsClient``; closed bars
  come from the kline stream, with REST filling any bar the stream missed.

Common promises: ``poll()`` never raises for market or network faults (the symbol
gets ``book=None`` with a ``reason``; other symbols are unaffected); books are
trimmed to ``book_depth`` and handed over as the venue gave them (the engine
validates them, once); each closed candle is delivered exactly once, oldest first,
across ``initial_candles`` and later snapshots, and never a forming bar. Faults are
counted in the shared ``Metrics`` under ``venue="bybit"``. What does not depend on the
venue (candle delivery, the clock offset, the polling and local-book hand-out) is
``LiveSourceBase`` (``venues/live_source.py``), shared with Binance.

At start both check the configured symbols against ``/v5/market/instruments-info``:
an unknown or closed symbol stops the start with ``UnknownSymbolError`` naming it, an
IP ban (HTTP 403) with ``VenueBannedError``; neither is reported as a network problem.
A symbol Bybit stops knowing during a run (retCode 10001 on its book or candles, or
gone from instruments-info / no longer ``Trading`` at a refresh) is dropped with one
warning: its snapshots say reason ``delisted`` and carry nothing (the bot leaves it out),
the WebSocket source ignores its topics (and closes a connection left with no live
symbol); the others go on.

The symbol universe: with ``all_symbols`` (``--symbols all``) the symbols are every
trading linear USDT perpetual instruments-info lists at start
(``trading_usdt_perpetuals``). Every ``refresh_s`` seconds (``instruments_refresh_s``,
a day by default) both sources ask instruments-info again, in the background: delisted
symbols are dropped, and with ``all_symbols`` new listings join: their candles are
back-filled as at start (WebSocket: on a new connection, once its snapshots are in),
then ``take_joined()`` hands them to the bot, which starts their features (samples come
after the usual warm-up). The REST source takes new listings only while its request
plan stays within its share of Bybit's IP limit.

Exchange time: every snapshot carries the venue's clock offset (``clock_offset_ms``)
measured by the REST client's ``ClockOffsetEstimator`` from ordinary replies; the
WebSocket source, which needs little REST, asks ``/v5/market/time`` every
``TIME_SYNC_S`` seconds. Pushed books' ``ts`` are deliberately not used as one-way
bounds: they are what the future-timestamp check judges, so they must not move the
clock it judges them by. The
offset is exported as ``lobbot_exchange_clock_offset_seconds{venue}``, and a local
clock more than 1 s off is logged once with the offset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Sequence

from backend.metrics import Metrics
from backend.venues.bybit.messages import BybitApiError, trading_usdt_perpetuals
from backend.venues.bybit.protocol import MAX_ARGS_PER_SUBSCRIBE
from backend.venues.bybit.rest import IP_REQUESTS_PER_5S, BybitBannedError, BybitRequestError, BybitRestClient
from backend.venues.bybit.ws import BybitWsClient
from backend.venues.health import BYBIT_BAN_S
from backend.venues.live_source import TIME_SYNC_S, CandleFeed, LiveSourceBase, describe
from backend.venues.source import Clock, UnknownSymbolError, VenueBannedError, VenueConfigError
from backend.venues.types import Candle, MarketSnapshot

__all__ = ["BybitRestSource", "BybitWsSource", "CandleFeed", "TIME_SYNC_S", "max_rest_symbols",
           "rest_requests_per_5s", "shard_symbols"]

log = logging.getLogger(__name__)

REST_BUDGET_SHARE = 0.5
"""Share of Bybit's per-IP limit (``IP_REQUESTS_PER_5S``) the REST source may plan to use; the rest is
head room for retries, candle fills and other programs on the same IP ("do not run at the very edge")."""
MAX_TOPIC_CHARS_PER_CONNECTION = 21_000
"""Bybit v5 docs, "WebSocket Connect > How to subscribe": the ``args`` of a public connection may total
at most 21,000 characters. Read per connection (the stricter of the two readings seen in clients, the
other being per subscribe request), so a longer symbol list is spread over several connections; our
subscribe requests carry at most ``MAX_ARGS_PER_SUBSCRIBE`` topics each, far below it either way."""
MAX_SYMBOLS_PER_CONNECTION = 100  # our own cap: keeps one connection's message rate moderate
MAX_WS_CONNECTIONS = 50
"""Connections this source opens at most; Bybit allows 1,000 market-data connections per IP ("Rate Limit
Rules > WebSocket IP limit"), and every shard's reconnects count towards its 500 new connections per 5 min."""
_CLOSED_STATUSES = frozenset({"Closed", "Delivering", "Settling"})


def shard_symbols(symbols: Sequence[str], depth: int = 50, topics_per_symbol: int = 3) -> list[list[str]]:
    """Split ``symbols`` into groups that each fit one WebSocket connection.

    A group holds at most ``MAX_SYMBOLS_PER_CONNECTION`` symbols and at most
    ``MAX_TOPIC_CHARS_PER_CONNECTION`` characters of topics (``orderbook.<depth>.<S>``,
    ``publicTrade.<S>``, ``kline.1.<S>``, each counted with its JSON quotes and comma).
    Raises ``VenueConfigError`` when more than ``MAX_WS_CONNECTIONS`` would be needed.
    """
    groups: list[list[str]] = [[]]
    chars = 0
    for sym in symbols:
        need = (len(f"orderbook.{depth}.{sym}") + len(f"publicTrade.{sym}") + len(f"kline.1.{sym}")
                + 3 * topics_per_symbol)
        if groups[-1] and (len(groups[-1]) >= MAX_SYMBOLS_PER_CONNECTION
                           or chars + need > MAX_TOPIC_CHARS_PER_CONNECTION):
            groups.append([])
            chars = 0
        groups[-1].append(sym)
        chars += need
    if len(groups) > MAX_WS_CONNECTIONS:
        raise VenueConfigError(
            f"{len(symbols)} symbols need {len(groups)} WebSocket connections; this bot opens at most "
            f"{MAX_WS_CONNECTIONS} per venue (Bybit: 1,000 market-data connections and 500 new connections "
            "per 5 minutes per IP). Collect fewer symbols per bot.")
    return [g for g in groups if g]


def rest_requests_per_5s(n: int, interval_s: float) -> float:
    """REST requests per 5 s of the REST source polling ``n`` symbols every ``interval_s`` seconds: a book
    and a trades request per symbol per tick, and a kline request per symbol per minute."""
    if interval_s <= 0:
        return 0.0
    return n * (2 * 5.0 / interval_s + 5.0 / 60.0)


def max_rest_symbols(interval_s: float) -> int:
    """The most symbols the REST source polls every ``interval_s`` s within ``REST_BUDGET_SHARE`` of Bybit's
    per-IP limit (87 at 3 s; the WebSocket source needs no request per symbol per tick)."""
    return max(1, int(IP_REQUESTS_PER_5S * REST_BUDGET_SHARE / rest_requests_per_5s(1, interval_s)))


def _reason(exc: BaseException) -> str:
    """The fault word for a failed book request."""
    if isinstance(exc, BybitBannedError):
        return "banned"
    if isinstance(exc, BybitRequestError):
        return exc.reason
    if isinstance(exc, BybitApiError):
        return f"ret_code_{exc.ret_code}" if exc.ret_code >= 0 else f"http_{-exc.ret_code}"
    return "request_error"


class _RestBase(LiveSourceBase):
    """What both Bybit sources share beyond ``LiveSourceBase``: the REST client, the symbol checks, the
    instruments refresh (delistings, new listings) and the candle back-fill."""

    venue = "bybit"
    label = "Bybit"
    banned_error = BybitBannedError
    ban_status = "HTTP 403"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, rest_url: str,
                 timeout_s: float = 10.0, max_retries: int = 5, book_depth: int = 50,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 10.0, poll_timeout_s: float | None = None,
                 seed: int | None = None, metrics: Metrics | None = None, ban_s: float = BYBIT_BAN_S,
                 all_symbols: bool = False, refresh_s: float = 86_400.0):
        super().__init__(symbols, clock, metrics, book_depth=book_depth, poll_timeout_s=poll_timeout_s,
                         timeout_s=timeout_s)
        self.rest = BybitRestClient(rest_url, timeout_s=timeout_s, max_retries=max_retries,
                                    backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                                    clock=self.clock, seed=seed, metrics=self.metrics, venue=self.venue, ban_s=ban_s)
        self.dropped: dict[str, str] = {}  # symbol -> why it left the run (delisted)
        self.all_symbols = all_symbols
        self.refresh_s = refresh_s
        self.listed: list[str] = []  # symbols that joined during the run, in order
        self._joined: list[str] = []  # joined, not yet taken by the bot
        self._last_refresh = self.clock.now_ms()
        self._refresh_task: asyncio.Task | None = None
        self._join_warned: set[str] = set()  # new listings not taken (no room), warned about once

    def _reason(self, exc: BaseException) -> str:
        """The fault word for a failed book request."""
        return _reason(exc)

    # --- start-up checks ------------------------------------------------------------
    def _add_state(self, sym: str) -> None:
        """Per-symbol state of a symbol that joins (at start with ``all_symbols``, or a new listing)."""
        self._feeds.setdefault(sym, CandleFeed())
        self._initial.setdefault(sym, [])

    async def _resolve_all(self) -> None:
        """With ``all_symbols``: every trading linear USDT perpetual becomes a symbol of this source.

        Raises ``VenueBannedError`` under an IP ban, ``VenueConfigError`` when Bybit lists none; other
        failures propagate (without the list there is nothing to collect: the bot says it cannot reach Bybit).
        """
        try:
            rows = await self.rest.get_instrument_rows()
        except BybitBannedError as exc:
            raise VenueBannedError(_ban_message(exc)) from None
        symbols = trading_usdt_perpetuals(rows)
        if not symbols:
            raise VenueConfigError(f"--symbols all: Bybit's instruments-info lists no trading linear USDT perpetual "
                                   f"({len(rows)} instruments listed). Give the symbols by name instead.")
        self.symbols = symbols
        for sym in symbols:
            self._add_state(sym)
        self._last_refresh = self.clock.now_ms()
        log.info("--symbols all: Bybit lists %d trading linear USDT perpetuals; collecting all of them (the list "
                 "is checked again every %s)", len(symbols), _every(self.refresh_s))

    def active_symbols(self) -> list[str]:
        """The symbols not dropped, in order."""
        return [s for s in self.symbols if s not in self.dropped]

    def take_joined(self) -> list[str]:
        """Symbols that joined since the last call (new listings), their candles back-filled
        (``initial_candles``); each is returned once."""
        out, self._joined = self._joined, []
        return out

    def _maybe_refresh(self, now: int) -> None:
        """Start a background instruments-info check when ``refresh_s`` has passed (never during a ban)."""
        if now - self._last_refresh < self.refresh_s * 1000 or (
                self._refresh_task is not None and not self._refresh_task.done()):
            return
        self._last_refresh = now
        if self.rest.ban.active(now):
            return
        self._refresh_task = asyncio.ensure_future(self._refresh())

    async def _refresh(self) -> None:
        """Drop symbols gone from instruments-info (or no longer ``Trading``); with ``all_symbols`` let new
        trading USDT perpetuals join. A failed request changes nothing until the next refresh."""
        try:
            rows = await self.rest.get_instrument_rows()
        except Exception as exc:
            log.warning("Checking Bybit's instruments-info failed (%s); the symbol list stays as it is until the "
                        "next check in %s", describe(exc), _every(self.refresh_s))
            return
        status = {i.symbol: i.status for i in rows}
        for sym in self.active_symbols():
            now_status = status.get(sym)
            if now_status is None:
                self._drop(sym, "Bybit no longer lists it (instruments-info)")
            elif now_status != "Trading" and (self.all_symbols or now_status != "PreLaunch"):
                self._drop(sym, f"its status on Bybit is now {now_status} (instruments-info)")
        if self.all_symbols:
            new = [s for s in trading_usdt_perpetuals(rows) if s not in self._feeds]
            if new:
                try:
                    await self._join(new)
                except Exception as exc:  # e.g. the back-fill failed: they are tried again at the next refresh
                    log.warning("New Bybit listings %s could not join (%s); trying again at the next check",
                                ", ".join(new), describe(exc))

    def _room_for(self, new: list[str]) -> list[str]:
        """The new listings this source can take now (all by default)."""
        return new

    async def _connect(self, new: list[str]) -> None:
        """Start receiving the new symbols' market data (the WebSocket source opens a connection)."""

    async def _join(self, new: list[str]) -> None:
        taken = self._room_for(new)
        if not taken:
            return
        bars: dict[str, list[Candle]] = {}

        async def one(sym: str) -> None:
            try:
                bars[sym] = await self.rest.get_closed_candles(sym, count=self.history_candles)
            except Exception as exc:  # joins without history; poll() back-fills it (feed.due)
                log.warning("%s: candle back-fill failed (%s); will retry while polling", sym, describe(exc))

        await _paced(one, taken)
        for sym in taken:
            self._add_state(sym)
            self._initial[sym] = self._feeds[sym].take(bars.get(sym, []))
        await self._connect(taken)
        self.symbols = self.symbols + taken
        self.listed.extend(taken)
        self._joined.extend(taken)
        log.info("New Bybit listing%s join%s this run: %s (candles back-filled; samples start after the usual "
                    "warm-up).", "s" if len(taken) > 1 else "", "" if len(taken) > 1 else "s", ", ".join(taken))

    async def _stop_refresh(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            await asyncio.gather(self._refresh_task, return_exceptions=True)

    async def _check_symbols(self) -> None:
        """Raise ``UnknownSymbolError`` naming every configured symbol Bybit does not list as tradable,
        ``VenueBannedError`` under an IP ban; other failures are left to the back-fill."""
        if self.all_symbols:
            return  # the symbols are instruments-info's own list
        try:
            listed = await self.rest.get_instruments()
        except BybitBannedError as exc:
            raise VenueBannedError(_ban_message(exc)) from None
        except (BybitApiError, BybitRequestError) as exc:  # checked again, symbol by symbol, by the back-fill
            log.warning("Could not check the symbols against instruments-info (%s); going on", describe(exc))
            return
        unknown = [s for s in self.symbols if s not in listed]
        closed = [f"{s} ({listed[s]})" for s in self.symbols if listed.get(s) in _CLOSED_STATUSES]
        if unknown or closed:
            raise UnknownSymbolError(unknown + [c.split()[0] for c in closed], _unknown_message(unknown, closed, self.rest.category))

    def _drop(self, sym: str, why: str) -> None:
        if sym in self.dropped:
            return
        self.dropped[sym] = why
        self.count_fault("delisted")
        log.warning("%s: %s. Dropped from this run; the other symbols go on.", sym, why)

    async def _backfill(self) -> None:
        errors: list[Exception] = []
        unknown: list[str] = []

        async def one(sym: str) -> None:
            try:
                bars = await self.rest.get_closed_candles(sym, count=self.history_candles)
                self._initial[sym] = self._feeds[sym].take(bars)
            except BybitApiError as exc:
                if exc.ret_code == 10001:
                    unknown.append(sym)
                errors.append(exc)
            except Exception as exc:  # start() must not die on one symbol: poll() retries the back-fill
                errors.append(exc)
                log.warning("%s: candle back-fill failed (%s); will retry while polling", sym, describe(exc))

        await _paced(one, self.symbols)
        if unknown:
            unknown.sort(key=self.symbols.index)
            raise UnknownSymbolError(unknown, _unknown_message(unknown, [], self.rest.category))
        bans = [e for e in errors if isinstance(e, BybitBannedError)]
        if bans:
            raise VenueBannedError(_ban_message(bans[0]))
        if errors and len(errors) == len(self.symbols):
            # not one symbol answered: the exchange is unreachable, which the bot reports at start
            raise errors[-1]

class BybitRestSource(_RestBase):
    """Bybit REST polling: one order-book, trade and (when due) kline request per symbol per tick.

    ``trade_limit`` trades are asked for per poll (Bybit's maximum is 1000); a poll
    that takes longer than ``poll_timeout_s`` (default: ``timeout_s``) is abandoned
    for this tick with reason ``poll_timeout``.
    """

    name = "bybit"

    def __init__(self, *args: Any, trade_limit: int = 1000, tick_interval_s: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trade_limit = trade_limit
        self.tick_interval_s = tick_interval_s
        self._seen = self._new_seen()
        self._trades_since = 0

    def planned_requests_per_5s(self, n: int | None = None) -> float:
        """REST requests per 5 s this source plans for ``n`` symbols (default: those not dropped): a book and
        a trades request per symbol per tick, plus one kline request per symbol per minute."""
        return rest_requests_per_5s(len(self.active_symbols()) if n is None else n, self.tick_interval_s or 0.0)

    def max_symbols(self) -> int:
        """The most symbols this source polls at its tick interval within ``REST_BUDGET_SHARE`` of Bybit's limit."""
        return max_rest_symbols(self.tick_interval_s) if self.tick_interval_s else 1 << 30

    def _check_budget(self) -> None:
        planned, budget = self.planned_requests_per_5s(), IP_REQUESTS_PER_5S * REST_BUDGET_SHARE
        if planned > budget:
            raise VenueConfigError(
                f"{len(self.symbols)} symbols polled over REST every {self.tick_interval_s:g} s need about "
                f"{planned:.0f} requests per 5 s; Bybit allows {IP_REQUESTS_PER_5S} per IP and bans the IP for "
                f"at least 10 minutes above that, so this bot plans at most {budget:.0f}. Use --source bybit-ws "
                f"(WebSocket books: no request per symbol per tick; see 'Which source at which width' in "
                f"docs/data_collection.md), at most {self.max_symbols()} symbols, or a longer --interval.")

    def _add_state(self, sym: str) -> None:
        super()._add_state(sym)
        self._seen.setdefault(sym, (deque(), set()))

    def _room_for(self, new: list[str]) -> list[str]:
        room = max(0, self.max_symbols() - len(self.active_symbols()))
        taken, left = new[:room], [s for s in new[room:] if s not in self._join_warned]
        if left:
            self._join_warned.update(left)
            log.warning("New Bybit listing%s %s not collected: polling %d more symbols over REST every %g s would "
                        "pass this bot's share of Bybit's %d requests per 5 s per IP (taken when a delisting frees "
                        "room). Use --source bybit-ws to collect every listing.", "s" if len(left) > 1 else "", ", ".join(left), len(left),
                        self.tick_interval_s, IP_REQUESTS_PER_5S)
        return taken

    async def start(self) -> None:
        """Check the request budget and the symbols, measure the clock offset, back-fill candles.

        With ``all_symbols`` the symbols come from instruments-info first. Raises ``VenueConfigError``
        (too many requests for Bybit's limit), ``UnknownSymbolError``, ``VenueBannedError``, or the last
        error when no symbol could be fetched (exchange unreachable).
        """
        if self.all_symbols:
            await self._resolve_all()
        self._check_budget()
        self._trades_since = self.clock.now_ms()
        await self._check_symbols()
        await self._sync_time(1)
        await self._backfill()

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Every symbol's book, new trades and new closed bars, fetched concurrently.

        During an IP ban nothing is sent: every symbol gets reason ``banned``.
        """
        now = self.clock.now_ms()
        banned = self._banned_snapshots(now)
        if banned is not None:
            return banned
        self._maybe_refresh(now)
        results = await asyncio.gather(*(self._poll_symbol(s) for s in self.symbols))
        offset = self.clock_offset_ms()
        for snap in results:
            snap.clock_offset_ms = offset
        return {snap.symbol: snap for snap in results}

    async def _poll_symbol(self, sym: str) -> MarketSnapshot:
        if sym in self.dropped:
            return MarketSnapshot(sym, None, reason="delisted", error=self.dropped[sym])
        return await self._poll_rest_symbol(
            sym, lambda: self.rest.get_orderbook(sym, limit=min(200, max(1, self.book_depth)), depth=self.book_depth),
            lambda: self.rest.get_recent_trades(sym, limit=self.trade_limit), lambda book: book, "order book")

    def _book_failed(self, sym: str, exc: BaseException) -> None:
        """retCode 10001 on a book: Bybit no longer knows the symbol, which is dropped."""
        if isinstance(exc, BybitApiError) and exc.ret_code == 10001:
            self._drop(sym, f"Bybit no longer knows this symbol (retCode 10001: {exc.ret_msg})")

    async def close(self) -> None:
        """Stop the instruments refresh, close the HTTP session."""
        await self._stop_refresh()
        await self.rest.close()


class BybitWsSource(_RestBase):
    """Bybit WebSocket local books (``BybitWsClient``), with REST for the candle back-fill, gaps and the clock.

    Symbols are spread over as many connections as Bybit's per-connection topic limit
    needs (``shard_symbols``); ``ws`` is the first (usually the only) client, ``shards``
    all of them. ``start()`` waits up to ``sync_timeout_s`` for every book's first
    snapshot (a symbol still waiting is reported per poll with reason ``resync_pending``).

    Liveness, not age: a book on a connection that answers pings (within the client's
    ``pong_timeout_s``) with no sequence gap pending is current however long since it
    last changed, because Bybit pushes a book only when it changes. Such a book is handed
    out ``live`` and stamped as of the current exchange time (local time plus the
    measured offset), never earlier than its own ``ts`` nor than the stamp handed out
    before, so a quiet book yields a sample every collection tick with increasing
    exchange timestamps. On a silent connection (a ping unanswered) no book is handed
    out: reason ``ws_silent``.
    """

    name = "bybit-ws"

    def __init__(self, symbols: Sequence[str], clock: Clock | None = None, *, ws_url: str,
                 ping_interval_s: float = 20.0, pong_timeout_s: float | None = None, ws_backoff_base_s: float = 0.5,
                 ws_backoff_max_s: float = 30.0, sync_timeout_s: float = 5.0, **kwargs: Any):
        kwargs.pop("tick_interval_s", None)
        super().__init__(symbols, clock, **kwargs)
        self.sync_timeout_s = sync_timeout_s
        self._ws_url = ws_url
        self._ws_options = dict(depth=50, ping_interval_s=ping_interval_s, pong_timeout_s=pong_timeout_s,
                                backoff_base_s=ws_backoff_base_s, backoff_max_s=ws_backoff_max_s,
                                open_timeout_s=kwargs.get("timeout_s", 10.0))
        self.shards: list[BybitWsClient] = []
        self._client: dict[str, BybitWsClient] = {}
        self.ws: BybitWsClient | None = None
        if self.symbols:  # with all_symbols they are known at start
            self._add_shards(shard_symbols(self.symbols))
        self._closing: set[asyncio.Task] = set()

    def _add_shards(self, groups: list[list[str]]) -> list[BybitWsClient]:
        new = [BybitWsClient(self._ws_url, group, clock=self.clock, metrics=self.metrics, venue=self.venue,
                             **self._ws_options) for group in groups]
        self.shards.extend(new)
        self._client.update({sym: c for c in new for sym in c.symbols})
        self.ws = self.shards[0]
        return new

    def _room_for(self, new: list[str]) -> list[str]:
        groups = shard_symbols(new)
        if len(self.shards) + len(groups) <= MAX_WS_CONNECTIONS:
            return new
        left = [s for s in new if s not in self._join_warned]
        self._join_warned.update(left)
        if left:
            log.warning("New Bybit listings %s not collected: they would need WebSocket connection %d, above this "
                        "bot's %d. Restart the bot to collect them on fewer connections.", ", ".join(left),
                        len(self.shards) + len(groups), MAX_WS_CONNECTIONS)
        return []

    async def _connect(self, new: list[str]) -> None:
        clients = self._add_shards(shard_symbols(new))
        for c in clients:
            await c.start()
        await asyncio.gather(*(c.wait_synced(self.sync_timeout_s) for c in clients))

    def _drop(self, sym: str, why: str) -> None:
        super()._drop(sym, why)
        client = self._client.get(sym)
        if client is not None and all(s in self.dropped for s in client.symbols):
            # nothing left to receive on it: close it (counts towards no limit, sends nothing)
            task = asyncio.ensure_future(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def start(self) -> None:
        """Check the symbols, measure the clock, connect, back-fill candles over REST, wait (bounded) for snapshots.

        With ``all_symbols`` the symbols (and so the connections) come from instruments-info first."""
        if self.all_symbols:
            await self._resolve_all()
            self._add_shards(shard_symbols(self.symbols))
        await self._start_streams()

    async def poll(self) -> dict[str, MarketSnapshot]:
        """Every symbol's current local book, trades and closed bars since the last poll."""
        now = self.clock.now_ms()
        self._maybe_sync_time(now)
        self._maybe_refresh(now)
        return await self._poll_streams(now)

    def _ws_skipped(self, sym: str, ws: Any, offset: int) -> MarketSnapshot | None:
        """A delisted symbol: its topics are ignored (whatever still arrives is thrown away), reason ``delisted``."""
        if sym not in self.dropped:
            return None
        ws.drain_trades(sym)
        ws.drain_candles(sym)
        return MarketSnapshot(sym, None, reason="delisted", error=self.dropped[sym], clock_offset_ms=offset)

    def _fill_failed(self, sym: str, exc: Exception, out: dict[str, MarketSnapshot], offset: int) -> None:
        """retCode 10001 on a candle fill: Bybit no longer knows the symbol (its book will never change again),
        which is dropped; other failures are asked again at the next poll."""
        if isinstance(exc, BybitApiError) and exc.ret_code == 10001:
            self._drop(sym, f"Bybit no longer knows this symbol (retCode 10001: {exc.ret_msg})")
            out[sym] = MarketSnapshot(sym, None, reason="delisted", error=self.dropped[sym], clock_offset_ms=offset)
        else:
            super()._fill_failed(sym, exc, out, offset)

    async def close(self) -> None:
        """Stop the background checks, close the WebSocket connections and the HTTP session."""
        await self._stop_sync()
        await self._stop_refresh()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for c in self.shards:
            await c.close()
        await self.rest.close()


BACKFILL_PER_5S = int(IP_REQUESTS_PER_5S * REST_BUDGET_SHARE)
"""Candle back-fills started per 5 s (at start, and when new listings join): ``--symbols all`` back-fills
~500 symbols, which at once would be most of Bybit's 600 requests per IP per 5 s."""


async def _paced(one, symbols: Sequence[str]) -> None:
    """``await one(sym)`` for every symbol, concurrently, at most ``BACKFILL_PER_5S`` started per 5 s."""
    loop = asyncio.get_running_loop()
    for i in range(0, len(symbols), BACKFILL_PER_5S):
        started = loop.time()
        await asyncio.gather(*(one(sym) for sym in symbols[i:i + BACKFILL_PER_5S]))
        if i + BACKFILL_PER_5S < len(symbols):
            await asyncio.sleep(max(0.0, 5.0 - (loop.time() - started)))


def _every(seconds: float) -> str:
    """86400 -> 'day', 3600 -> '1 h', 90 -> '90 s': the refresh period in words."""
    if seconds == 86_400:
        return "day"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 600 else f"{seconds:g} s"


def _ban_message(exc: BybitBannedError) -> str:
    until = time.strftime("%H:%M:%S UTC", time.gmtime(exc.until_ms / 1000))
    return (f"Bybit has banned this IP address (HTTP 403: too many requests from it). Bybit lifts such a ban "
            f"after at least 10 minutes; start the bot again after {until}. If it is still banned after 30 "
            "minutes the ban may be permanent. Several bots or programs on one IP share Bybit's limit of "
            f"{IP_REQUESTS_PER_5S} requests per 5 s.")


def _unknown_message(unknown: Sequence[str], closed: Sequence[str], category: str) -> str:
    parts = []
    if unknown:
        parts.append(f"unknown symbol{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    if closed:
        parts.append(f"not trading: {', '.join(closed)}")
    return (f"Bybit ({category} contracts) does not list {'; '.join(parts)}. Check the spelling in --symbols "
            f"(e.g. BTCUSDT); the listed symbols are at /v5/market/instruments-info?category={category}.")
