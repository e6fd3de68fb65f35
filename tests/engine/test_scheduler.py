"""The fixed-rate scheduler on a virtual clock (exact times) and on the wall clock (loop lag)."""

import asyncio

import pytest

from backend.engine.scheduler import Scheduler
from backend.metrics import Metrics
from backend.venues.source import Clock, VirtualClock

T0 = 1_700_000_000_000


async def run(scheduler, clock, work_ms=lambda k: 300):
    """Tick times seen by the body; the body 'works' by moving the virtual clock on."""
    seen = []
    async for k in scheduler:
        seen.append(clock.now_ms() - T0)
        await clock.sleep_until(clock.now_ms() + work_ms(k))
    return seen


async def test_ticks_are_due_at_t0_plus_k_intervals_without_drift():
    clock, m = VirtualClock(T0), Metrics()
    s = Scheduler(clock, 1.0, metrics=m, max_ticks=5)
    assert await run(s, clock) == [0, 1000, 2000, 3000, 4000]
    assert s.ticks == 5 and s.overruns == 0
    assert m.value("lobbot_ticks_total") == 5 and m.value("lobbot_tick_overruns_total") == 0


async def test_an_overrun_is_counted_and_skips_the_slots_it_ran_over():
    clock, m = VirtualClock(T0), Metrics()
    s = Scheduler(clock, 1.0, metrics=m, max_ticks=5)
    # tick 2 starts at 2000 and ends at 4500: the slots at 3000 and 4000 are gone
    assert await run(s, clock, lambda k: 2500 if k == 2 else 300) == [0, 1000, 2000, 5000, 6000]
    assert s.overruns == 1 and m.value("lobbot_tick_overruns_total") == 1


async def test_duration_ends_the_run_at_the_first_tick_due_at_or_after_it():
    clock = VirtualClock(T0)
    s = Scheduler(clock, 3.0, duration_s=30)
    assert await run(s, clock) == list(range(0, 30_000, 3000))


async def test_stop_ends_the_run_after_the_current_tick():
    clock, stop = VirtualClock(T0), asyncio.Event()
    s = Scheduler(clock, 1.0, stop=stop)
    seen = []
    async for k in s:
        seen.append(k)
        if k == 3:
            stop.set()
    assert seen == [0, 1, 2, 3]


async def test_stop_cuts_a_wall_clock_sleep_short():
    stop = asyncio.Event()
    s = Scheduler(Clock(), 60.0, stop=stop)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async for k in s:
        loop.call_later(0.05, stop.set)  # stop while it sleeps towards the tick due in 60 s
    assert s.ticks == 1 and loop.time() - started < 5


async def test_wall_clock_lag_is_observed_once_per_tick():
    m = Metrics()
    s = Scheduler(Clock(), 0.01, metrics=m, max_ticks=4)
    async for _ in s:
        pass
    assert m.value("lobbot_loop_lag_seconds_count") == 4
    assert 0 <= m.value("lobbot_loop_lag_seconds_sum") < 4.0


def test_interval_below_a_millisecond_is_refused():
    with pytest.raises(ValueError, match="at least 1 ms"):
        Scheduler(Clock(), 0.0001)
