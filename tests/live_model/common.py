"""Constants shared by the live-model tests (the trained run's settings)."""

INTERVAL_MS = 30_000
SEQ_LEN = 6
