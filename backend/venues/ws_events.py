"""The events a venue's sans-I/O WebSocket protocol reports to its driver, shared by every venue.

``venues/bybit/protocol.py`` and ``venues/binance/protocol.py`` both turn frames into these
(Bybit also reports ``Pong``, its application-level ping answer); ``venues/ws_driver.py``
counts and logs them the same way for both.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.venues.local_book import ApplyResult

__all__ = ["BookUpdate", "Fault", "Pong", "ResyncNeeded"]


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """One order-book message (diff or snapshot) was handled; ``result`` says how (``ApplyResult``);
    ``u`` is its (final) update id."""

    symbol: str
    result: ApplyResult
    u: int


@dataclass(frozen=True, slots=True)
class Pong:
    """The server answered an application-level ping (Bybit's ``{"op": "ping"}``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """Something the venue sent was wrong or unusable. ``reason`` is a short snake_case word for counting
    (``malformed``, ``sequence_gap``, ``stale_snapshot``, ``crossed_book``, ``subscribe_error``,
    ``unknown_topic``/``unknown_stream``, ``duplicate_trade``); ``detail`` is for a log line."""

    reason: str
    detail: str
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class ResyncNeeded:
    """A symbol's book (or its snapshot) was discarded; what re-fetches it is already queued (Bybit: the
    resubscribe requests in ``data_to_send``; Binance: a snapshot in ``snapshots_needed``). ``reason`` is
    the cause: ``gap``, ``crossed`` or ``stale_snapshot``."""

    symbol: str
    reason: str
