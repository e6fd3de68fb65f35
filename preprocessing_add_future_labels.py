#!/usr/bin/env python
"""Add the same future-price labels to the legacy labels JSON files (data/ml_training/<SYMBOL>/labels/).

Usage: python preprocessing_add_future_labels.py [--symbols S1,S2] [--start-date D] [--end-date D]
"""

from __future__ import annotations

import sys

from backend.apps.label import main_legacy

if __name__ == "__main__":
    sys.exit(main_legacy())
