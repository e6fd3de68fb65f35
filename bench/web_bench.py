"""Web app bench. Today: the Data panel's audit on a year x 10 symbols store beside a full read.

    .venv/bin/python bench/web_bench.py                 # builds the store in a temp dir (~1-2 min)
    .venv/bin/python bench/web_bench.py --store DIR     # reuse a store root built before (kept)

The store is the one ``bench/store_bench.py`` builds: 10 symbols x 365 days at one sample
per 5 minutes = 1,051,200 rows in 3,650 files. Measured:

* audit, cold: a fresh ``StoreInspector`` (every footer decoded; the web app does this once,
  in the background, when it starts);
* audit, one file changed: what a request costs after the labeller rewrote one file;
* audit, unchanged store: what a request costs otherwise (goal <= 1 s);
* ``read_offline_features`` of the whole group with every column, the alternative a user
  without the page would run.

To do (DESIGN §6.3 acceptance): loop lag p99 of a running bot with the page open and
``/metrics`` scraped every second vs without, once the bot serves the app (``--api-port``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend.ml_engine.feature_store.feature_store import FeatureStore  # noqa: E402
from backend.ml_engine.feature_store.inspect import StoreInspector  # noqa: E402

GROUP = "training_features"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=None, help="an existing store root (with training_features/)")
    p.add_argument("--symbols", type=int, default=10)
    args = p.parse_args()
    tmp = None
    root = args.store
    if root is None or not (root / GROUP).is_dir():
        import store_bench

        tmp = Path(tempfile.mkdtemp(prefix="web_bench_"))
        root = root or tmp / "store"
        print(f"building {args.symbols} symbols x 365 days at 1 sample / 5 min in {root} ...", flush=True)
        store_bench.build_year(root, args.symbols, 300)
    try:
        inspector = StoreInspector(root)
        cold, audit = timed(lambda: inspector.audit(GROUP))
        print(f"\nDATA PANEL AUDIT: {audit.total_rows:,} rows in {audit.files:,} files, {audit.bytes / 1e9:.2f} GB")
        print(f"  audit, cold (every footer)           {cold:8.3f} s")
        unchanged, _ = timed(lambda: inspector.audit(GROUP))
        one = inspector.store.list_files(GROUP)[len(audit.days) // 2]
        os.utime(one)
        changed, a2 = timed(lambda: inspector.audit(GROUP))
        assert a2.files_read == 1, a2.files_read
        print(f"  audit, one file changed              {changed:8.3f} s")
        print(f"  audit, unchanged store               {unchanged:8.3f} s   (goal <= 1 s)")
        store = FeatureStore(root)
        full, df = timed(lambda: store.read_offline_features(GROUP))
        print(f"  read_offline_features, whole group   {full:8.3f} s   ({len(df):,} rows x {df.shape[1]} columns)")
        print(f"  audit (one file changed) vs full read: {full / changed:.0f}x faster")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
