"""Pure, clock-free objects that judge a venue connection: exchange time, bans, reconnect pacing, liveness.

Nothing here reads a clock, sleeps or touches a socket: every method takes the time it
should reason about (integer ms since the epoch, or float seconds of a monotonic clock
where named ``*_s``), so each rule is tested without a network or a real wait.

* ``ClockOffsetEstimator``: exchange clock minus local clock, from request/reply round
  trips, NTP-style (the sample with the smallest round trip in a sliding window wins),
  bounded below by one-way server stamps (a pushed message cannot have been stamped after
  it arrived).
* ``BanState``: after HTTP 403 no request may go to the venue until the ban has run out.
* ``ReconnectPolicy``: exponential backoff with full jitter that restarts only after a
  connection stayed healthy for ``healthy_after_s``, plus a reconnect-rate alarm.
* ``Heartbeat``: a connection is alive while every ping is answered within a bound.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

__all__ = ["BanState", "ClockOffsetEstimator", "Heartbeat", "OffsetSample", "ReconnectPolicy",
           "CLOCK_WARN_MS", "BYBIT_BAN_S"]

CLOCK_WARN_MS = 1_000
"""A local clock further than this from the exchange's is logged once (DESIGN.md §6.2: "off by more than 1 s")."""

BYBIT_BAN_S = 600.0
"""Seconds all REST traffic pauses after HTTP 403. Bybit v5 docs, "Rate Limit Rules > IP Limit": on
"403, access too frequent" terminate all HTTP sessions and wait for at least 10 minutes; the ban is
lifted automatically."""


@dataclass(frozen=True, slots=True)
class OffsetSample:
    """One round trip: local send and receive times and the server's time (all ms since the epoch)."""

    t_send_ms: int
    t_recv_ms: int
    server_ms: int

    @property
    def rtt_ms(self) -> int:
        """Round-trip time, ms (never negative)."""
        return max(0, self.t_recv_ms - self.t_send_ms)

    @property
    def offset_ms(self) -> float:
        """server - local midpoint of the round trip, ms: exact when the two legs take equally long."""
        return self.server_ms - (self.t_send_ms + self.t_recv_ms) / 2.0


class ClockOffsetEstimator:
    """Exchange clock minus local clock (ms), from server times returned by the venue.

    ``add_round_trip`` takes a request/reply pair whose reply carries the server's time
    (Bybit: every REST reply's ``time``, ``/v5/market/time``). Of the samples taken in the
    last ``window_ms``, the one with the smallest round trip gives the estimate (NTP's
    minimum-delay filter: the least-delayed exchange has the smallest error, at most half
    its round trip). ``add_one_way(server_ms, recv_ms)`` takes a pushed message's server
    stamp (Bybit WebSocket ``ts``): the message was stamped before it arrived, so the
    offset is at least ``server_ms - recv_ms``; such bounds only ever raise the estimate
    (or give a first estimate when no round trip exists yet). Bounds expire after
    ``window_ms`` too.
    """

    def __init__(self, window_ms: int = 300_000, max_samples: int = 256):
        self.window_ms = int(window_ms)
        self._rt: deque[OffsetSample] = deque(maxlen=max_samples)
        self._bounds: deque[tuple[int, int]] = deque(maxlen=max_samples)  # (recv_ms, lower bound)
        self._warned = False

    def add_round_trip(self, t_send_ms: int, t_recv_ms: int, server_ms: int) -> None:
        """One reply with the server's time; ``t_send_ms`` <= ``t_recv_ms`` local times (ms)."""
        if t_recv_ms < t_send_ms:
            return  # the local clock stepped back during the request: no information
        self._rt.append(OffsetSample(int(t_send_ms), int(t_recv_ms), int(server_ms)))

    def add_one_way(self, server_ms: int, recv_ms: int) -> None:
        """A pushed message stamped ``server_ms`` (exchange) received at local ``recv_ms``."""
        self._bounds.append((int(recv_ms), int(server_ms) - int(recv_ms)))

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        while self._rt and self._rt[0].t_recv_ms < horizon:
            self._rt.popleft()
        while self._bounds and self._bounds[0][0] < horizon:
            self._bounds.popleft()

    def best(self, now_ms: int) -> OffsetSample | None:
        """The window's minimum-round-trip sample, or None."""
        self._expire(now_ms)
        return min(self._rt, key=lambda s: s.rtt_ms) if self._rt else None

    def offset_ms(self, now_ms: int) -> float | None:
        """The estimate at local time ``now_ms`` (ms), or None when the window holds nothing."""
        best = self.best(now_ms)
        lower = max((b for _, b in self._bounds), default=None)
        if best is None:
            return None if lower is None else float(lower)
        est = best.offset_ms
        return est if lower is None else max(est, float(lower))

    def error_bound_ms(self, now_ms: int) -> float | None:
        """Half the best round trip (ms): how far the estimate can be off, or None without a round trip."""
        best = self.best(now_ms)
        return None if best is None else best.rtt_ms / 2.0

    def should_warn(self, now_ms: int, limit_ms: float = CLOCK_WARN_MS) -> bool:
        """True once, the first time the estimate's magnitude exceeds ``limit_ms``."""
        off = self.offset_ms(now_ms)
        if self._warned or off is None or abs(off) <= limit_ms:
            return False
        self._warned = True
        return True


class BanState:
    """An IP ban: after ``ban(now_ms)`` no request may be sent until ``until_ms``.

    ``duration_s`` defaults to Bybit's documented ban (``BYBIT_BAN_S``). A 403 during a
    ban (a request already in flight) extends nothing: the first 403 set the clock.
    """

    def __init__(self, duration_s: float = BYBIT_BAN_S):
        self.duration_ms = int(duration_s * 1000)
        self.until_ms = 0
        self.bans = 0

    def ban(self, now_ms: int) -> bool:
        """Record a 403 at ``now_ms``; True when this started a new ban (log it loudly then)."""
        if self.active(now_ms):
            return False
        self.until_ms = int(now_ms) + self.duration_ms
        self.bans += 1
        return True

    def active(self, now_ms: int) -> bool:
        """True while requests must not be sent."""
        return now_ms < self.until_ms

    def remaining_s(self, now_ms: int) -> float:
        """Seconds left of the ban (0 when none)."""
        return max(0.0, (self.until_ms - now_ms) / 1000.0)


class ReconnectPolicy:
    """When to reconnect after a disconnect, and whether reconnects come too often.

    The delay before attempt ``k`` (0-based, counted since the last healthy connection) is
    uniform in ``[cap/10, cap]`` with ``cap = min(max_s, base_s * 2**k)`` (exponential
    backoff, full jitter). The attempt count returns to 0 only when a connection stayed up
    for ``healthy_after_s`` (default 60 s, DESIGN.md §6.2): a server that closes right after
    the snapshot keeps the delay growing to ``max_s``. ``alarm(now_s)`` is True once per
    ``rate_window_s`` while more than ``warn_per_window`` disconnects fell in the window.
    Times are seconds on a monotonic clock.
    """

    def __init__(self, base_s: float = 0.5, max_s: float = 30.0, healthy_after_s: float = 60.0,
                 rate_window_s: float = 300.0, warn_per_window: int = 20, rng: random.Random | None = None):
        self.base_s, self.max_s, self.healthy_after_s = base_s, max_s, healthy_after_s
        self.rate_window_s, self.warn_per_window = rate_window_s, warn_per_window
        self.attempt = 0
        self._rng = rng or random.Random()
        self._up_since: float | None = None
        self._drops: deque[float] = deque()
        self._last_alarm = float("-inf")

    def connected(self, now_s: float) -> None:
        """A connection is up (subscribed) at ``now_s``."""
        self._up_since = now_s

    def disconnected(self, now_s: float) -> float:
        """The connection is gone at ``now_s``; returns the delay (s) before the next attempt."""
        if self._up_since is not None and now_s - self._up_since >= self.healthy_after_s:
            self.attempt = 0
        self._up_since = None
        self._drops.append(now_s)
        while self._drops and self._drops[0] < now_s - self.rate_window_s:
            self._drops.popleft()
        cap = min(self.max_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(cap * 0.1, cap)

    def recent(self, now_s: float) -> int:
        """Disconnects in the last ``rate_window_s``."""
        return sum(1 for t in self._drops if t >= now_s - self.rate_window_s)

    def alarm(self, now_s: float) -> bool:
        """True (at most once per window) while the disconnect rate is above ``warn_per_window``."""
        if self.recent(now_s) > self.warn_per_window and now_s - self._last_alarm >= self.rate_window_s:
            self._last_alarm = now_s
            return True
        return False


class Heartbeat:
    """Liveness of one connection from its pings and pongs (seconds on a monotonic clock).

    The connection is alive while no ping has waited longer than ``timeout_s`` for its
    answer. ``opened`` starts a fresh connection (alive); ``ping_sent`` records a ping (an
    earlier one still unanswered keeps its own start); ``pong`` answers every ping sent.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._waiting_since: float | None = None
        self.last_pong_s: float | None = None

    def opened(self, now_s: float) -> None:
        """A new connection at ``now_s``: nothing outstanding."""
        self._waiting_since = None
        self.last_pong_s = now_s

    def ping_sent(self, now_s: float) -> None:
        """A ping left at ``now_s``."""
        if self._waiting_since is None:
            self._waiting_since = now_s

    def pong(self, now_s: float) -> None:
        """An answer arrived at ``now_s``."""
        self._waiting_since = None
        self.last_pong_s = now_s

    def silent(self, now_s: float) -> bool:
        """True when a ping has gone unanswered for more than ``timeout_s``."""
        return self._waiting_since is not None and now_s - self._waiting_since > self.timeout_s
