"""Replay of recorded raw venue events (``--source replay``, DESIGN.md §6.4)."""
