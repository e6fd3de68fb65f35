"""The stored Live Model view's pure parts: round trips through a flip, the equity at each fill."""

import numpy as np
import pytest

from backend.ml_engine.live.live_metrics import equity_at_fills, round_trips
from backend.web.live_store import StoredLive


def test_round_trips_split_a_flip_and_leave_open_trips_out():
    sym = np.array(["A", "A", "A", "B"])
    q = np.array([1.0, -2.0, 1.0, 3.0])  # long 1, flip to short 1, close; B stays open
    px = np.array([100.0, 110.0, 105.0, 50.0])
    fee = np.array([0.2, 0.4, 0.1, 0.3])
    trips = round_trips(sym, q, px, fee)
    # long: +10 - entry fee - half the flip's fee; short: +5 - the other half - exit fee
    assert trips.tolist() == pytest.approx([10 - 0.2 - 0.2, 5 - 0.2 - 0.1])


def test_equity_marks_positions_at_their_last_fill_price():
    sym = np.array(["A", "B", "A"])
    q = np.array([1.0, -2.0, -1.0])
    px = np.array([100.0, 50.0, 104.0])
    fee = np.array([0.1, 0.1, 0.1])
    gross, net = equity_at_fills(sym, q, px, fee)
    assert gross.tolist() == pytest.approx([0.0, 0.0, 4.0])
    assert net.tolist() == pytest.approx([-0.1, -0.2, 3.7])


def test_no_stored_predictions(tmp_path):
    assert StoredLive(tmp_path).view() == {"loaded": False}
