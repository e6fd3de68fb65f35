"""Raw-event recording and replay: bytes per symbol-hour, recording overhead, replay speed.

    .venv/bin/python bench/replay_bench.py               # 2 simulated hours, 3 symbols
    .venv/bin/python bench/replay_bench.py --hours 6

Three in-process bot runs on a temporary data folder, each timed from ``Bot.run()`` to
its return (imports excluded; source start, recovery and the final flush included):

1. ``--source sim --fast`` for 3 symbols without raw events: the live pipeline's cost per
   tick (simulated venue, validation, features, sampling, spool, flushes): the baseline.
2. The same run with ``--record-raw``: the per-tick cost of recording, and the stored
   ``raw_events`` bytes per symbol-hour. The simulated BTCUSDT book is BTCUSDT-like
   (50 levels a side at 0.1 tick, a few trades a second, 1-minute bars) and is polled
   every 3 s like the REST source, so every tick stores a full book.
3. ``--source replay`` of run 2 into a second group: simulated hours per wall second
   and the cost per replayed tick, checked bit-equal with run 2's samples.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.config import configure  # noqa: E402
from backend.engine.bot import Bot  # noqa: E402
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES  # noqa: E402
from backend.ml_engine.feature_store.feature_store import FeatureStore  # noqa: E402

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
START = "2025-11-07T00:00:00Z"


def _run(data: Path, **settings) -> tuple[float, int]:
    s = configure(data_dir=str(data), symbols=SYMBOLS, use_legacy_format=False, stats_interval=10**9, seed=3,
                  **settings)
    bot = Bot(s)
    t0 = time.perf_counter()
    code = asyncio.run(bot.run())
    wall = time.perf_counter() - t0
    assert code == 0, bot.summary
    return wall, bot.ticks


def _samples(data: Path, group: str):
    df = FeatureStore(data / "feature_store" / "offline").read_offline_features(group)
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=2.0, help="simulated hours per run (default: 2)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    n_sym = len(SYMBOLS.split(","))
    sim = dict(source="sim", fast=True, duration=f"{args.hours:g}h", sim_start=START)
    with tempfile.TemporaryDirectory() as tmp:
        base_wall, ticks = _run(Path(tmp) / "base", **sim, record_raw=False)
        data = Path(tmp) / "rec"
        rec_wall, _ = _run(data, **sim, record_raw=True)
        raw_files = sorted((data / "feature_store" / "offline" / "raw_events").glob("date=*/*.parquet"))
        raw_bytes = sum(f.stat().st_size for f in raw_files)
        rep_wall, rep_ticks = _run(data, source="replay", replay_from=START[:10], replay_to=START[:10],
                                   feature_store_group="replayed")
        a, b = _samples(data, "training_features"), _samples(data, "replayed")
        fa, fb = a[list(FEATURE_NAMES)].to_numpy(np.float32), b[list(FEATURE_NAMES)].to_numpy(np.float32)
        exact = len(a) == len(b) and fa.view(np.uint32).tobytes() == fb.view(np.uint32).tobytes() and \
            (a["timestamp"].to_numpy() == b["timestamp"].to_numpy()).all()
    print(f"{n_sym} symbols, {args.hours:g} simulated hours ({ticks} ticks of 3 s), {len(a)} samples")
    print(f"live pipeline (sim --fast, no raw):  {base_wall:7.2f} s wall  {1000 * base_wall / ticks:6.3f} ms/tick")
    print(f"live pipeline with --record-raw:     {rec_wall:7.2f} s wall  {1000 * rec_wall / ticks:6.3f} ms/tick "
          f"(+{1000 * (rec_wall - base_wall) / ticks:.3f} ms/tick for recording)")
    print(f"raw_events stored: {raw_bytes / 1e6:.2f} MB in {len(raw_files)} file(s) = "
          f"{raw_bytes / (n_sym * args.hours) / 1e6:.3f} MB per symbol-hour (50-level books every 3 s, trades, bars; zstd)")
    print(f"replay:                              {rep_wall:7.2f} s wall  {1000 * rep_wall / rep_ticks:6.3f} ms/tick  "
          f"= {args.hours / rep_wall:.2f} simulated hours per wall second; bit-equal features: {exact}")


if __name__ == "__main__":
    main()
