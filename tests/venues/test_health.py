"""The pure connection-health objects: clock offset, ban, reconnect policy, heartbeat (no sockets, no sleeps)."""

import random

import numpy as np

from backend.venues.health import BYBIT_BAN_S, BanState, ClockOffsetEstimator, Heartbeat, ReconnectPolicy
from backend.venues.orderbook import BookInvalid, OrderBook, validate_book


def test_offset_takes_the_minimum_round_trip_sample_of_the_window():
    rng = np.random.default_rng(1)
    est = ClockOffsetEstimator(window_ms=60_000)
    true_offset = 8_000.0
    t = 1_000_000
    for _ in range(50):
        up, down = rng.exponential(40), rng.exponential(40)  # asymmetric, heavy delays
        server = t + up + true_offset
        est.add_round_trip(t, int(t + up + down), int(server))
        t += 1_000
    best = est.best(t)
    assert abs(est.offset_ms(t) - true_offset) <= best.rtt_ms / 2 + 1
    assert est.error_bound_ms(t) == best.rtt_ms / 2
    # a fast sample at the very start of the window would win; once it has expired it no longer counts
    est2 = ClockOffsetEstimator(window_ms=10_000)
    est2.add_round_trip(0, 2, 1 - 20_000)
    est2.add_round_trip(5_000, 5_300, 5_150 + 100)
    assert est2.offset_ms(5_300) == -20_000
    assert est2.offset_ms(12_000) == 100  # the first sample left the window


def test_one_way_stamps_only_raise_the_estimate_and_nothing_gives_none():
    est = ClockOffsetEstimator()
    assert est.offset_ms(0) is None and not est.should_warn(0)
    est.add_one_way(server_ms=1_500, recv_ms=1_000)  # stamped before it arrived: offset >= 500
    assert est.offset_ms(1_000) == 500
    est.add_round_trip(2_000, 2_010, 2_005 + 300)  # says 300, but the bound says at least 500
    assert est.offset_ms(2_010) == 500
    est.add_one_way(server_ms=2_000, recv_ms=3_000)  # a weaker bound changes nothing
    assert est.offset_ms(3_000) == 500


def test_clock_warning_is_given_once_and_only_above_one_second():
    est = ClockOffsetEstimator()
    est.add_round_trip(0, 10, 5 + 900)
    assert not est.should_warn(10)
    est2 = ClockOffsetEstimator()
    est2.add_round_trip(0, 10, 5 - 20_000)
    assert est2.should_warn(10) and not est2.should_warn(20)


def test_ban_lasts_the_documented_period_and_a_second_403_does_not_extend_it():
    ban = BanState()
    assert BYBIT_BAN_S == 600 and not ban.active(0)
    assert ban.ban(1_000) and ban.active(1_000) and ban.until_ms == 601_000
    assert not ban.ban(2_000) and ban.until_ms == 601_000 and ban.bans == 1
    assert ban.remaining_s(301_000) == 300
    assert not ban.active(601_000) and ban.remaining_s(700_000) == 0
    assert ban.ban(700_000) and ban.bans == 2


def test_reconnects_of_a_flapping_server_stay_under_the_bound_and_reset_only_after_60s_healthy():
    """A server that closes right after the snapshot (0.1 s up): over 60 s the policy allows few reconnects."""
    worst = []
    for seed in range(200):
        pol = ReconnectPolicy(base_s=0.5, max_s=30.0, rng=random.Random(seed))
        t, n = 0.0, 0
        while t < 60.0:
            pol.connected(t)
            t += 0.1  # up for the snapshot only
            t += pol.disconnected(t)
            n += 1
        worst.append(n)
    # the stated bound: delays are at least a tenth of min(30, 0.5 * 2**k) s, so even the shortest
    # draws pass 60 s by the 25th reconnect; the drawn delays average 55 % of the cap
    assert max(worst) <= 25 and max(worst) <= 13, max(worst)
    assert np.mean(worst) <= 10
    # the old behaviour (delay reset after every snapshot) gave ~110 per minute
    pol = ReconnectPolicy(base_s=0.5, max_s=30.0, rng=random.Random(0))
    pol.connected(0.0)
    pol.disconnected(30.0)  # 30 s up is not healthy enough: the next delay still grows
    pol.connected(31.0)
    pol.disconnected(61.0)
    assert pol.attempt == 2
    pol.connected(100.0)
    pol.disconnected(160.0)  # 60 s up: starts over
    assert pol.attempt == 1


def test_reconnect_alarm_fires_once_per_window_above_the_threshold():
    pol = ReconnectPolicy(rate_window_s=300.0, warn_per_window=5, rng=random.Random(0))
    alarms = []
    for i in range(12):
        pol.disconnected(float(i))
        alarms.append(pol.alarm(float(i)))
    assert alarms.count(True) == 1 and alarms.index(True) == 5
    assert pol.recent(11.0) == 12 and pol.recent(400.0) == 0


def test_heartbeat_is_silent_only_after_an_unanswered_ping_outlives_the_bound():
    hb = Heartbeat(timeout_s=2.0)
    hb.opened(0.0)
    assert not hb.silent(100.0)  # no ping outstanding: a quiet connection is not silent
    hb.ping_sent(100.0)
    assert not hb.silent(101.9)
    hb.ping_sent(101.0)  # a second ping does not restart the wait
    assert hb.silent(102.1)
    hb.pong(102.2)
    assert not hb.silent(110.0)


def test_books_whose_mid_or_notional_overflow_are_rejected_as_non_finite():
    huge = OrderBook.from_levels("BTCUSDT", [[1e308, 1.0]], [[1.7e308, 1.0]], ts_ms=1_000, recv_ms=1_000)
    assert np.isfinite(huge.bid_prices).all()  # every level is finite ...
    assert validate_book(huge, 1_000) is BookInvalid.NON_FINITE  # ... but the mid is inf
    notional = OrderBook.from_levels("BTCUSDT", [[100.0, 1e307], [99.0, 1e307]], [[101.0, 1.0]], ts_ms=1_000,
                                     recv_ms=1_000)
    assert validate_book(notional, 1_000) is BookInvalid.NON_FINITE
    ok = OrderBook.from_levels("BTCUSDT", [[100.0, 1.0]], [[101.0, 1.0]], ts_ms=1_000, recv_ms=1_000)
    assert validate_book(ok, 1_000) is None
    # exchange time: a book 20 s old on the local clock is fresh when the exchange is 20 s behind
    assert validate_book(ok, 21_000) is BookInvalid.STALE
    assert validate_book(ok, 21_000 - 20_000) is None
    assert validate_book(ok, 100_000, check_age=False) is None  # a live book: no age test
