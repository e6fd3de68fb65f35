"""The fixed-rate tick scheduler: tick k is due at t0 + k * interval, never "sleep after work".

A tick that ends after the next one was due is an overrun: it is logged, counted in
``lobbot_tick_overruns_total``, and the slots it ran over are skipped, so the schedule
never drifts. How late each wake-up ran (local time at wake-up minus the due time) is
observed in ``lobbot_loop_lag_seconds`` (not on a virtual clock, where it is always 0).
Every tick started is counted in ``lobbot_ticks_total``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

from backend.metrics import Metrics
from backend.venues.source import Clock

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


class Scheduler:
    """Yields tick numbers 0, 1, 2, ... at fixed rate on ``clock`` until stopped.

    ``interval_s`` seconds between ticks (rounded to whole ms); the run ends when
    ``stop`` is set (a sleep in progress is cut short), when the next due time reaches
    ``end_ms`` (ms since the epoch), or after ``max_ticks`` ticks. ``ticks`` and
    ``overruns`` say how many ticks ran and how many overran.
    """

    def __init__(self, clock: Clock, interval_s: float, *, metrics: Metrics | None = None,
                 stop: asyncio.Event | None = None, duration_s: float | None = None, max_ticks: int | None = None):
        self.clock = clock
        self.interval_ms = int(round(interval_s * 1000))
        if self.interval_ms <= 0:
            raise ValueError(f"tick interval must be at least 1 ms, got {interval_s} s")
        self.metrics = metrics if metrics is not None else Metrics()
        self.stop = stop if stop is not None else asyncio.Event()
        self.duration_s = duration_s
        self.max_ticks = max_ticks
        self.ticks = 0
        self.overruns = 0

    async def __aiter__(self) -> AsyncIterator[int]:
        clock, interval = self.clock, self.interval_ms
        t0 = clock.now_ms()
        end_ms = t0 + int(self.duration_s * 1000) if self.duration_s is not None else None
        k = 0
        while not self.stop.is_set():
            due = t0 + k * interval
            if end_ms is not None and due >= end_ms:
                return
            if self.max_ticks is not None and self.ticks >= self.max_ticks:
                return
            await self._sleep_until(due)
            if self.stop.is_set():
                return
            if not clock.virtual:
                self.metrics.loop_lag.observe(max(0, clock.now_ms() - due) / 1000.0)
            self.metrics.ticks.inc()
            yield self.ticks
            self.ticks += 1
            k += 1
            now = clock.now_ms()
            next_due = t0 + k * interval
            if now > next_due:
                missed = (now - next_due) // interval + 1
                self.overruns += 1
                self.metrics.tick_overruns.inc()
                log.warning("Tick overrun: tick %d ended %d ms after the next tick was due; skipping %d slot(s)",
                            self.ticks, now - next_due, missed)
                k += int(missed)

    async def _sleep_until(self, t_ms: int) -> None:
        if self.clock.virtual:
            await self.clock.sleep_until(t_ms)
            return
        delay = (t_ms - self.clock.now_ms()) / 1000.0
        if delay > 0:
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
