"""``make_source``: the ``MarketSource`` named by the settings ("sim", "bybit", "bybit-ws", "binance", "binance-ws" or "replay")."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from backend.metrics import Metrics
from backend.venues.source import Clock, MarketSource

__all__ = ["SOURCES", "make_source", "venue_of"]

log = logging.getLogger(__name__)

SOURCES = ("binance", "binance-ws", "bybit", "bybit-ws", "sim", "replay")


def venue_of(source: str) -> str:
    """The venue a source name reads from, as stored in the ``source`` column.

    ``"bybit-ws"`` -> ``"bybit"``, ``"binance-ws"`` -> ``"binance"``; other names are
    returned unchanged (``"sim"``, ``"replay"``). DESIGN.md §3.2 and §6.5: the column
    names the venue, not the transport, so REST and WebSocket rows of one venue group together.
    """
    return source.removesuffix("-ws")


def make_source(settings: Any, symbols: Sequence[str], clock: Clock | None = None,
                metrics: Metrics | None = None) -> MarketSource:
    """Build the source named by ``settings.source`` for ``symbols`` on ``clock``, counting into ``metrics``.

    ``settings`` is a ``backend.config.Settings`` (or anything with its attributes).
    Raises ``ValueError`` for an unknown source name.
    """
    # each venue's modules are imported only when chosen: the command line (``--help``, a
    # settings error) must not pay for every venue's stack, nor a sim run for aiohttp clients
    clock = clock or Clock()
    if settings.source == "sim":
        from backend.venues.sim.source import SimSource

        if settings.fast and not clock.virtual:
            log.warning("--fast without a VirtualClock: the simulator will run in real time")
        return SimSource(symbols, clock, seed=settings.seed, book_depth=settings.book_depth, metrics=metrics)
    if settings.source == "replay":
        from backend.venues.replay.source import ReplaySource

        return ReplaySource(symbols, clock, store_root=settings.feature_store_root, start=settings.replay_from,
                            end=settings.replay_to, metrics=metrics)
    if settings.source in ("binance", "binance-ws"):
        from backend.venues.binance.source import BinanceRestSource, BinanceWsSource

        binance = dict(rest_url=settings.binance_rest_url, timeout_s=settings.http_timeout_s,
                       max_retries=settings.http_max_retries, book_depth=settings.book_depth, seed=settings.seed,
                       metrics=metrics)
        if settings.source == "binance":
            return BinanceRestSource(symbols, clock, tick_interval_s=settings.interval, **binance)
        return BinanceWsSource(symbols, clock, ws_url=settings.binance_ws_url,
                               ping_interval_s=settings.ws_ping_interval_s, **binance)
    from backend.venues.bybit.source import BybitRestSource, BybitWsSource

    common = dict(
        rest_url=settings.bybit_rest_url,
        timeout_s=settings.http_timeout_s,
        max_retries=settings.http_max_retries,
        book_depth=settings.book_depth,
        seed=settings.seed,
        metrics=metrics,
        all_symbols=getattr(settings, "symbols_all", False),
        refresh_s=getattr(settings, "instruments_refresh_s", 86_400.0),
    )
    if settings.source == "bybit":
        return BybitRestSource(symbols, clock, tick_interval_s=settings.interval, **common)
    if settings.source == "bybit-ws":
        return BybitWsSource(symbols, clock, ws_url=settings.bybit_ws_url,
                             ping_interval_s=settings.ws_ping_interval_s, **common)
    raise ValueError(f"unknown market source {settings.source!r}: expected {', '.join(SOURCES)}")
