#!/usr/bin/env python
"""Migrate legacy .npy/.json training batches into the parquet feature store.

Usage: python migrate_legacy_to_parquet.py [--data-dir DIR] [--symbols S1,S2] [--dry-run] [--strict | --map NAMES.json]
"""

from __future__ import annotations

import sys

from backend.apps.migrate import main

if __name__ == "__main__":
    sys.exit(main())
