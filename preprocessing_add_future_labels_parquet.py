#!/usr/bin/env python
"""Add future-price labels (10/30/60 s) to the parquet feature store, in place.

Usage: python preprocessing_add_future_labels_parquet.py [--start-date D] [--end-date D] [--feature-group G]
"""

from __future__ import annotations

import sys

from backend.apps.label import main_parquet

if __name__ == "__main__":
    sys.exit(main_parquet())
