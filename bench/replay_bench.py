"""Raw-event recording and replay: bytes per symbol-hour, recording overhead, replay speed.

    .venv/bin/python bench/replay_bench.py               # 2 simulated hours, 3 symbols
    .venv/bin/python bench/replay_bench.py --hours 6
    .venv/bin/python bench/replay_bench.py --symbols 50 --hours 0.5
    .venv/bin/python bench/replay_bench.py --ws 120      # also: delta-form bytes from a bybit-ws run (real time)

Three in-process bot runs on a temporary data folder, each timed from ``Bot.run()`` to
its return (imports excluded; source start, recovery and the final flush included):

1. ``--source sim --fast`` for 3 symbols without raw events: the live pipeline's cost per
   tick (simulated venue, validation, features, sampling, spool, flushes): the baseline.
2. The same run with ``--record-raw``: the per-tick cost of recording (the wall difference,
   and the time inside the recording calls themselves: ``encode_tick`` and the
   collector's ``add_raw_events``, which spools and buffers each symbol's tick as one
   block), and the stored ``raw_events`` bytes per symbol-hour. The simulated BTCUSDT book is BTCUSDT-like
   (50 levels a side at 0.1 tick, a few trades a second, 1-minute bars) and is polled
   every 3 s like the REST source, so every tick stores a full book.
3. ``--source replay`` of run 2 into a second group, in a fresh process: simulated hours
   per wall second, the cost per replayed tick and the process's peak RSS (the replay
   decodes one group of raw-event files at a time, so the peak does not grow with the
   range), checked bit-equal with run 2's samples.
4. With ``--ws S``: a ``bybit-ws`` bot recording for S seconds (real time, 3 s ticks)
   against the fake exchange pushing ``orderbook.50`` every 20 ms (Bybit's rate for
   that depth on linear contracts): the stored bytes of the *delta form* (every applied
   snapshot and delta with its ids and times) per symbol-hour, and the events stored.
   The fake's deltas are small (one jittered level a side, and a whole-book move once a
   second), so a real BTCUSDT stream, whose deltas carry more levels, stores more.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import json
import multiprocessing as mp
import os
import signal
import subprocess
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.config import configure  # noqa: E402
import backend.engine.bot as bot_module  # noqa: E402
from backend.engine.bot import Bot  # noqa: E402
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES  # noqa: E402
from backend.ml_engine.feature_store.feature_store import FeatureStore  # noqa: E402

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
START = "2025-11-07T00:00:00Z"


class _Timed:
    """Wraps a callable and sums the wall time spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def _run(data: Path, symbols: str, timed: bool = False, **settings) -> tuple[float, int, float]:
    s = configure(data_dir=str(data), symbols=symbols, use_legacy_format=False, stats_interval=10**9, seed=3,
                  **settings)
    bot = Bot(s)
    enc = add = None
    if timed:  # time the recording calls themselves
        enc = bot_module.encode_tick = _Timed(bot_module.encode_tick)
        add = bot.ml_data_collector.add_raw_events = _Timed(bot.ml_data_collector.add_raw_events)
    t0 = time.perf_counter()
    try:
        code = asyncio.run(bot.run())
    finally:
        if enc is not None:
            bot_module.encode_tick = enc.fn
    wall = time.perf_counter() - t0
    assert code == 0, bot.summary
    return wall, bot.ticks, (enc.seconds + add.seconds) if timed else 0.0


def _samples(data: Path, group: str):
    df = FeatureStore(data / "feature_store" / "offline").read_offline_features(group)
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def _replay_child(conn, data: str, symbols: str, day: str) -> None:
    logging.disable(logging.WARNING)
    wall, ticks, _ = _run(Path(data), symbols, source="replay", replay_from=day, replay_to=day,
                          feature_store_group="replayed")
    conn.send((wall, ticks))


def _replay_in_child(data: Path, symbols: str, day: str) -> tuple[float, int, float]:
    """Replay in a spawned interpreter: (wall s, ticks, peak RSS MB of that process)."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_replay_child, args=(send, str(data), symbols, day))
    proc.start()
    wall, ticks = recv.recv()
    proc.join()
    return wall, ticks, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _ws_delta_bytes(tmp: Path, seconds: float) -> tuple[float, int, dict[str, int]]:
    """A bybit-ws recording against the fake exchange: (bytes per symbol-hour, raw files, events by kind)."""
    import pyarrow.parquet as pq

    repo = Path(__file__).resolve().parents[1]
    port_file = tmp / "fake.json"
    fake = subprocess.Popen([sys.executable, "-m", "backend.testing.fake_bybit", "--symbols", "BTCUSDT,ETHUSDT",
                             "--port-file", str(port_file), "--push-interval", "0.02", "--log-level", "WARNING"],
                            cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if fake.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fake exchange did not start")
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOBBOT_")}
        env.update(BYBIT_REST_URL=info["rest_url"], BYBIT_WS_URL=info["ws_url"])
        data = tmp / "ws"
        subprocess.run([sys.executable, "-m", "backend.main", "--data-dir", str(data), "--source", "bybit-ws",
                        "--symbols", "BTCUSDT,ETHUSDT", "--interval", "3", "--max-iterations", str(int(seconds // 3)),
                        "--stats-interval", "100000"], cwd=repo, env=env, check=True, capture_output=True)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=20)
    files = sorted((data / "feature_store" / "offline" / "raw_events").glob("date=*/*.parquet"))
    table = pq.read_table(files[0].parent.parent, columns=["kind"])
    kinds = {k: int(n) for k, n in zip(*np.unique(table.column("kind").to_numpy(zero_copy_only=False), return_counts=True))}
    hours = (seconds // 3) * 3 / 3600
    return sum(f.stat().st_size for f in files) / (2 * hours), len(files), kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0, help="simulated hours per run (default: 2)")
    ap.add_argument("--symbols", type=int, default=3,
                    help="symbols (default: 3, BTCUSDT-like books; more are named S000USDT ...)")
    ap.add_argument("--ws", type=float, default=0, metavar="S",
                    help="also record a bybit-ws run against the fake exchange for S seconds (delta-form bytes)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    n_sym = args.symbols
    symbols = SYMBOLS if n_sym == 3 else ",".join(f"S{i:03d}USDT" for i in range(n_sym))
    sim = dict(source="sim", fast=True, duration=f"{args.hours:g}h", sim_start=START)
    with tempfile.TemporaryDirectory() as tmp:
        base_wall, ticks, _ = _run(Path(tmp) / "base", symbols, **sim, record_raw=False)
        data = Path(tmp) / "rec"
        rec_wall, _, rec_calls = _run(data, symbols, timed=True, **sim, record_raw=True)
        raw_files = sorted((data / "feature_store" / "offline" / "raw_events").glob("date=*/*.parquet"))
        raw_bytes = sum(f.stat().st_size for f in raw_files)
        rep_wall, rep_ticks, rep_rss = _replay_in_child(data, symbols, START[:10])
        a, b = _samples(data, "training_features"), _samples(data, "replayed")
        fa, fb = a[list(FEATURE_NAMES)].to_numpy(np.float32), b[list(FEATURE_NAMES)].to_numpy(np.float32)
        exact = len(a) == len(b) and fa.view(np.uint32).tobytes() == fb.view(np.uint32).tobytes() and \
            (a["timestamp"].to_numpy() == b["timestamp"].to_numpy()).all()
    print(f"{n_sym} symbols, {args.hours:g} simulated hours ({ticks} ticks of 3 s), {len(a)} samples")
    print(f"live pipeline (sim --fast, no raw):  {base_wall:7.2f} s wall  {1000 * base_wall / ticks:6.3f} ms/tick")
    print(f"live pipeline with --record-raw:     {rec_wall:7.2f} s wall  {1000 * rec_wall / ticks:6.3f} ms/tick "
          f"(+{1000 * (rec_wall - base_wall) / ticks:.3f} ms/tick for recording; "
          f"{1000 * rec_calls / ticks:.3f} ms/tick inside encode_tick + add_raw_events)")
    print(f"raw_events stored: {raw_bytes / 1e6:.2f} MB in {len(raw_files)} file(s) = "
          f"{raw_bytes / (n_sym * args.hours) / 1e6:.3f} MB per symbol-hour (50-level books every 3 s, trades, bars; zstd)")
    print(f"replay:                              {rep_wall:7.2f} s wall  {1000 * rep_wall / rep_ticks:6.3f} ms/tick  "
          f"= {args.hours / rep_wall:.2f} simulated hours per wall second; bit-equal features: {exact}; "
          f"peak RSS {rep_rss:.0f} MB")
    if args.ws:
        with tempfile.TemporaryDirectory() as tmp:
            per_hour, n_files, kinds = _ws_delta_bytes(Path(tmp), args.ws)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        print(f"delta form (bybit-ws vs fake, orderbook.50 every 20 ms, {args.ws:g} s, 2 symbols): "
              f"{per_hour / 1e6:.3f} MB per symbol-hour in {n_files} file(s); events: {shown}")


if __name__ == "__main__":
    main()
