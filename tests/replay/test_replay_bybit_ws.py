"""A bybit-ws run against the fake exchange, recorded in the delta form, replays to its stored features bit for bit."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.testing.fake_server import fake_process
from tests.collector.bot_helpers import REPO, bot_env, run_bot
from tests.replay.test_replay_process import _assert_bit_equal, _samples

SYMBOLS = "BTCUSDT,ETHUSDT"


@pytest.fixture
def fake_exchange(tmp_path):
    with fake_process("backend.testing.fake_bybit", tmp_path / "fake.json", "--symbols", SYMBOLS,
                      "--ws-fault-rate", "0.1", "--seed", "9", "--push-interval", "0.05", cwd=REPO) as info:
        yield info


@pytest.mark.slow
def test_replay_of_a_bybit_ws_run_rebuilds_its_books_from_the_deltas_and_its_features_bit_for_bit(tmp_path, fake_exchange):
    data = tmp_path / "data"
    env = bot_env(BYBIT_REST_URL=fake_exchange["rest_url"], BYBIT_WS_URL=fake_exchange["ws_url"])
    # the features need 60 s of trades: 66 s of ticks leave a few seconds of samples
    res = run_bot(data, "--source", "bybit-ws", "--symbols", SYMBOLS, "--interval", "0.1", "--collection-interval", "3",
                  "--max-iterations", "660", "--stats-interval", "100000", env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in out, out[-4000:]

    raw = pq.read_table(data / "feature_store" / "offline" / "raw_events")
    kinds = raw.column("kind")
    counts = {k: pc.sum(pc.equal(kinds, k)).as_py() for k in ("book_snapshot", "book_delta", "book_ref", "book")}
    assert counts["book"] == 0 and counts["book_ref"] > 1000 and counts["book_delta"] > counts["book_ref"], counts
    assert counts["book_snapshot"] >= 2, counts  # one per symbol at least; the injected faults add resyncs
    deltas = raw.filter(pc.equal(kinds, "book_delta"))
    assert deltas.column("seq").null_count == 0 and deltas.column("venue_ts").null_count == 0

    res = run_bot(data, "--source", "replay", "--feature-store-group", "replayed", "--stats-interval", "100000")
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in out, out[-4000:]
    assert "cannot be rebuilt" not in out, out[-3000:]
    recorded, replayed = _samples(data, "training_features"), _samples(data, "replayed")
    assert set(recorded["symbol"]) == set(SYMBOLS.split(","))
    _assert_bit_equal(recorded, replayed)
    assert FeatureStore(data / "feature_store" / "offline").read_offline_features("replayed")["source"].eq("replay").all()
