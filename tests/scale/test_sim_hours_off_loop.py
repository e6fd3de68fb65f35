"""The simulator makes its hours off the event loop without changing a single value (issue 13)."""

from __future__ import annotations


import numpy as np
import pytest

from backend.venues.sim.market import SimMarket
from backend.venues.sim.source import SimSource
from backend.venues.source import VirtualClock

START = 1_762_516_200_000  # 2025-11-07 11:50 UTC
HISTORY = 530  # the simulator's hours then begin at whole hours: the next one 10 minutes after the start
SYMBOLS = ["BTCUSDT", "ETHUSDT", "S001USDT", "S002USDT"]


async def _polls(wait_for_thread: bool) -> tuple[list, SimSource]:
    clock = VirtualClock(START)
    src = SimSource(SYMBOLS, clock, seed=7, history_minutes=HISTORY)
    await src.start()
    out = []
    for _ in range(240):  # 12 simulated minutes at 3 s: across 12:00
        await clock.sleep_until(clock.now_ms() + 3000)
        out.append((clock.now_ms(), await src.poll()))
        if wait_for_thread:
            await src.wait_next_hour()  # the thread made the next hour before the loop needs it
    await src.close()
    return out, src


@pytest.mark.parametrize("wait_for_thread", [True, False], ids=["thread-first", "loop-outpaces-thread"])
async def test_next_hour_made_on_a_thread_gives_the_same_books_trades_and_bars(wait_for_thread):
    polls, src = await _polls(wait_for_thread)
    assert src.next_hour_started  # the next hour was handed to the background thread
    # the reference: every hour made inline on this thread, in one go
    ref = SimMarket(SYMBOLS, seed=7, start_ms=START, history_minutes=HISTORY)
    prev = START
    crossed = False
    for now, snaps in polls:
        crossed |= now >= 1_762_516_800_000
        for sym in SYMBOLS:
            book, want = snaps[sym].book, ref[sym].book_at(now, depth=50, recv_ms=now)
            for side in ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"):
                np.testing.assert_array_equal(getattr(book, side), getattr(want, side))
            assert snaps[sym].trades == ref[sym].trades_between(prev, now)
            assert snaps[sym].candles == ref[sym].candles_closed_between(prev, now)
        prev = now
    assert crossed


async def test_start_makes_the_history_on_worker_threads_with_the_same_bars():
    clock = VirtualClock(START)
    src = SimSource(SYMBOLS, clock, seed=7, history_minutes=HISTORY)
    await src.start()
    ref = SimMarket(SYMBOLS, seed=7, start_ms=START, history_minutes=HISTORY)
    for sym in SYMBOLS:
        assert src.initial_candles(sym) == ref[sym].history()
    await src.close()
