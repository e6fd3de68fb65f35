"""The venue-neutral part of a public REST client: one aiohttp session, retries with backoff, IP bans.

``BybitRestClient`` (``venues/bybit/rest.py``) and ``BinanceRestClient``
(``venues/binance/rest.py``) are this loop around their venue's answers. What is shared:

* every transient fault (5xx, timeouts, dropped connections, unparseable bodies, rate
  limits) is retried up to ``max_retries`` times after ``backoff_delay``: exponential
  backoff with full jitter (DESIGN.md §6.2), never below a tenth of the cap, so clients
  that failed together do not come back together;
* an IP ban (Bybit: HTTP 403; Binance: HTTP 418) stops every request until it ends: each
  call raises the venue's banned error at once, nothing is sent. The ban is logged once,
  loudly (the venue's ``ban_text``), counted in ``lobbot_venue_bans_total{venue}`` and
  exported as ``lobbot_venue_banned_until_seconds`` (0 again once it is over);
* every fault is counted as ``lobbot_venue_faults_total{venue,reason}``, every re-sent
  request as ``lobbot_venue_retries_total{venue}``.

What a venue supplies: ``_once`` (one request and what its status, headers and body mean,
raising ``Transient`` for what may be retried), the error classes, and optionally
``_before_send`` (Binance's weight budget and 429 pause) and API errors worth retrying.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp

from backend.metrics import Metrics
from backend.venues.health import BanState, ClockOffsetEstimator
from backend.venues.source import Clock

__all__ = ["RestClientBase", "Transient", "backoff_delay"]


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**attempt)], never below a tenth of the cap."""
    cap = min(max_s, base_s * (2**attempt))
    return rng.uniform(cap * 0.1, cap)


class Transient(Exception):
    """A fault that asking again may fix; ``reason`` is its fault word, ``retry_after`` the venue's hint (s)."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retry_after = retry_after


class RestClientBase:
    """GET requests to one venue's REST base URL with retries and bans; an async context manager.

    A subclass sets ``label`` (for log lines), ``banned_error`` and ``request_error`` (its
    exception classes: ``banned_error(until_ms, remaining_s)``, ``request_error(message, reason)``),
    ``ban_text`` (the log line of a new ban, formatted with the base URL, the ban's length in
    seconds and its end) and ``log``, calls ``_init_rest`` from its constructor and implements
    ``_once``.
    """

    label = "venue"
    banned_error: type[Exception] = RuntimeError
    request_error: type[Exception] = RuntimeError
    api_errors: tuple[type[Exception], ...] = ()
    ban_text = "%s: IP ban for %.0f s, until %s"
    log: logging.Logger = logging.getLogger(__name__)

    def _init_rest(self, base_url: str, *, timeout_s: float, max_retries: int, backoff_base_s: float,
                   backoff_max_s: float, clock: Clock | None, seed: int | None, metrics: Metrics | None,
                   venue: str, ban_s: float) -> None:
        """Set the state every venue's client shares (call from the subclass's ``__init__``)."""
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock or Clock()
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self.metrics = metrics if metrics is not None else Metrics()
        self.venue = venue
        self.ban = BanState(ban_s)
        self.offset = ClockOffsetEstimator()
        self.requests_sent = 0

    # --- plumbing ----------------------------------------------------------------------
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Accept": "application/json", "User-Agent": "lob-collector-bot"},
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session; safe to call twice."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _fault(self, reason: str) -> None:
        self.metrics.venue_faults.labels(venue=self.venue, reason=reason).inc()

    def _check_ban(self) -> None:
        now = self.clock.now_ms()
        if self.ban.active(now):
            raise self.banned_error(self.ban.until_ms, self.ban.remaining_s(now))
        if self.ban.until_ms:
            self.metrics.venue_banned_until.labels(venue=self.venue).set(0)

    def _banned(self) -> Exception:
        """The venue said this IP is banned: start the ban (logged and counted once) and return the error to raise."""
        now = self.clock.now_ms()
        if self.ban.ban(now):
            self.metrics.venue_bans.labels(venue=self.venue).inc()
            self.metrics.venue_banned_until.labels(venue=self.venue).set(self.ban.until_ms / 1000.0)
            until = time.strftime("%H:%M:%S UTC", time.gmtime(self.ban.until_ms / 1000))
            self.log.error(self.ban_text, self.base_url, self.ban.duration_ms / 1000, until)
        return self.banned_error(self.ban.until_ms, self.ban.remaining_s(now))

    async def _get(self, url: str, params: dict[str, Any]):
        """One GET: ``(status, headers, body, local send ms, local receive ms)``; timeouts and dropped
        connections raise ``Transient``."""
        session = self._get_session()
        t_send = self.clock.now_ms()
        self.requests_sent += 1
        try:
            async with session.get(url, params=params) as resp:
                body = await resp.read()
                return resp.status, resp.headers, body, t_send, self.clock.now_ms()
        except asyncio.TimeoutError:
            raise Transient("timeout") from None
        except aiohttp.ClientError as exc:
            raise Transient("connection_error", type(exc).__name__) from None

    # --- venue hooks ------------------------------------------------------------------------
    async def _before_send(self, weight: int) -> None:
        """Called before each attempt, after the ban check (Binance waits for its weight budget here)."""

    def _api_fault(self, exc: Exception) -> str:
        """The fault word of an API error from ``api_errors``."""
        return "api_error"

    async def _once(self, url: str, params: dict[str, Any], where: str) -> Any:
        """One attempt: the venue's answer, or ``Transient`` for a fault worth another attempt."""
        raise NotImplementedError

    # --- the retry loop -------------------------------------------------------------------------
    async def _retrying(self, path: str, params: dict[str, Any], weight: int = 1) -> Any:
        """``_once`` until it succeeds, at most ``max_retries`` more times; raises ``request_error`` when every
        attempt failed, and at once the banned error and API errors that are not ``retryable``."""
        url = self.base_url + path
        where = f"GET {path} {params.get('symbol', '')}".rstrip()
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.metrics.venue_retries.labels(venue=self.venue).inc()
                delay = backoff_delay(attempt - 1, self.backoff_base_s, self.backoff_max_s, self._rng)
                if isinstance(last, Transient) and last.retry_after is not None:
                    delay = max(delay, min(last.retry_after, self.backoff_max_s))
                await asyncio.sleep(delay)
            self._check_ban()
            await self._before_send(weight)
            try:
                return await self._once(url, params, where)
            except Transient as exc:
                self._fault(exc.reason)
                last = exc
                self.log.debug("%s: %s (attempt %d/%d)", where, exc, attempt + 1, self.max_retries + 1)
            except self.api_errors as exc:
                self._fault(self._api_fault(exc))
                if not getattr(exc, "retryable", False):
                    raise
                last = exc
        self._fault("request_failed")
        reason = last.reason if isinstance(last, Transient) else (
            self._api_fault(last) if isinstance(last, self.api_errors) else "request_failed")
        raise self.request_error(f"{where}: failed after {self.max_retries + 1} attempts: {last}", reason) from last
