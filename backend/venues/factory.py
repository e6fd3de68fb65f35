"""``make_source``: the ``MarketSource`` named by the settings ("sim", "bybit", "bybit-ws", "binance" or "binance-ws")."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from backend.metrics import Metrics
from backend.venues.binance.source import BinanceRestSource, BinanceWsSource
from backend.venues.bybit.source import BybitRestSource, BybitWsSource
from backend.venues.sim.source import SimSource
from backend.venues.source import Clock, MarketSource

__all__ = ["SOURCES", "make_source"]

log = logging.getLogger(__name__)

SOURCES = ("binance", "binance-ws", "bybit", "bybit-ws", "sim")


def make_source(settings: Any, symbols: Sequence[str], clock: Clock | None = None,
                metrics: Metrics | None = None) -> MarketSource:
    """Build the source named by ``settings.source`` for ``symbols`` on ``clock``, counting into ``metrics``.

    ``settings`` is a ``backend.config.Settings`` (or anything with its attributes).
    Raises ``ValueError`` for an unknown source name.
    """
    clock = clock or Clock()
    if settings.source == "sim":
        if settings.fast and not clock.virtual:
            log.warning("--fast without a VirtualClock: the simulator will run in real time")
        return SimSource(symbols, clock, seed=settings.seed, book_depth=settings.book_depth, metrics=metrics)
    if settings.source in ("binance", "binance-ws"):
        binance = dict(rest_url=settings.binance_rest_url, timeout_s=settings.http_timeout_s,
                       max_retries=settings.http_max_retries, book_depth=settings.book_depth, seed=settings.seed,
                       metrics=metrics)
        if settings.source == "binance":
            return BinanceRestSource(symbols, clock, tick_interval_s=settings.interval, **binance)
        return BinanceWsSource(symbols, clock, ws_url=settings.binance_ws_url,
                               ping_interval_s=settings.ws_ping_interval_s, **binance)
    common = dict(
        rest_url=settings.bybit_rest_url,
        timeout_s=settings.http_timeout_s,
        max_retries=settings.http_max_retries,
        book_depth=settings.book_depth,
        seed=settings.seed,
        metrics=metrics,
    )
    if settings.source == "bybit":
        return BybitRestSource(symbols, clock, tick_interval_s=settings.interval, **common)
    if settings.source == "bybit-ws":
        return BybitWsSource(symbols, clock, ws_url=settings.bybit_ws_url,
                             ping_interval_s=settings.ws_ping_interval_s, **common)
    raise ValueError(f"unknown market source {settings.source!r}: expected {', '.join(SOURCES)}")
