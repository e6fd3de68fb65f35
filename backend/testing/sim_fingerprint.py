"""Fingerprint of what a simulated run stored: ``python -m backend.testing.sim_fingerprint DATA_DIR``.

Prints one JSON object: per stored group (training features, price tape, candles) and per
symbol, the row count and a SHA-256 over the rows sorted by (symbol, timestamp):
timestamps in ms, mid prices and every feature as raw float bits. Two runs of the
same seeded simulation that write bit-identical rows print identical fingerprints,
so a refactoring can be shown not to change what the bot stores
(``tests/collector/test_bot_process.py`` compares against ``tests/data/sim24h_fingerprint.json``).
Columns that legitimately differ between runs (``collected_at``, file names) are left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

_SKIP = {"collected_at", "date", "source"}


def fingerprint_group(root: Path) -> dict[str, dict[str, object]]:
    """Per-symbol ``{"rows": n, "sha256": hex}`` over one hive-partitioned group folder."""
    files = sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return {}
    table = ds.dataset(files, format="parquet").to_table()
    cols = [c for c in table.column_names if c not in _SKIP]
    table = table.select(cols)
    table = table.sort_by([("symbol", "ascending"), ("timestamp", "ascending")])
    out: dict[str, dict[str, object]] = {}
    symbols = table.column("symbol").to_pylist()
    for sym in sorted(set(symbols)):
        sub = table.filter(pc.equal(table.column("symbol"), sym))
        h = hashlib.sha256()
        for name in sorted(sub.column_names):
            if name == "symbol":
                continue
            col = sub.column(name)
            if pa.types.is_timestamp(col.type):
                col = pc.cast(col, pa.timestamp("ms", tz="UTC")).cast(pa.int64())
            if pa.types.is_string(col.type) or pa.types.is_dictionary(col.type):
                h.update(name.encode() + b"=" + "\x00".join(map(str, col.to_pylist())).encode())
                continue
            arr = col.to_numpy(zero_copy_only=False)
            if arr.dtype == object:
                arr = np.array([np.nan if v is None else v for v in arr], dtype=np.float64)
            h.update(name.encode() + b"=" + np.ascontiguousarray(arr).tobytes())
        out[sym] = {"rows": sub.num_rows, "sha256": h.hexdigest()}
    return out


def fingerprint(data_dir: Path, groups: tuple[str, ...] = ("training_features", "price_tape", "candles")) -> dict[str, object]:
    """Fingerprints of ``groups`` under ``DATA_DIR/feature_store/offline``."""
    root = data_dir / "feature_store" / "offline"
    return {g: fingerprint_group(root / g) for g in groups}


def main(argv: list[str] | None = None) -> int:
    """Print the fingerprint of ``DATA_DIR``; exit 2 when it holds no feature store."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", type=Path, help="the --data-dir of a finished simulated run")
    args = p.parse_args(argv)
    if not (args.data_dir / "feature_store" / "offline").is_dir():
        print(f"error: {args.data_dir} holds no feature store (expected feature_store/offline inside)", file=sys.stderr)
        return 2
    print(json.dumps(fingerprint(args.data_dir), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
