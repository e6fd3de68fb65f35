"""The JSON checks both venues' message parsers share (sans I/O).

Bybit and Binance send numbers as JSON strings and book levels as ``[["price", "quantity"], ...]``
(Bybit v5 "Market > Get Orderbook"; Binance USD-M "Market Data Endpoints > Order Book"). The
parsers in ``venues/bybit/messages.py`` and ``venues/binance/messages.py`` check them with these
functions, each raising its own venue's message error (``error``), which names the field and what
is wrong, so callers count and skip a malformed payload instead of crashing on a ``KeyError``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["decode_json", "field", "levels", "number"]


def decode_json(text: str | bytes, where: str, error: type[Exception]) -> Any:
    """``json.loads``, raising ``error`` (naming ``where`` and the text's start) instead."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        preview = text[:80] if isinstance(text, str) else text[:80].decode("utf-8", "replace")
        raise error(f"{where}: malformed JSON ({exc}): {preview!r}") from None


def field(obj: Any, key: str, where: str, error: type[Exception]) -> Any:
    """``obj[key]``; ``error`` when ``obj`` is not an object or lacks ``key``."""
    if not isinstance(obj, dict):
        raise error(f"{where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise error(f"{where}: missing field {key!r}")
    return obj[key]


def number(value: Any, what: str, error: type[Exception]) -> float:
    """A finite float from a JSON string or number; ``error`` for anything else (booleans included)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        out = float(value)
    except (TypeError, ValueError):
        raise error(f"{what}: expected a number, got {value!r}") from None
    if not np.isfinite(out):
        raise error(f"{what}: not finite: {value!r}")
    return out


def levels(raw: Any, where: str, error: type[Exception], qty: str) -> np.ndarray:
    """``[["price", "<qty>"], ...]`` -> float64 ``(n, 2)``; ``error`` for junk, NaN, prices <= 0 and negative
    quantities (``qty`` is the venue's word for the quantity, for the message)."""
    if not isinstance(raw, list):
        raise error(f"{where}: expected a list of [price, {qty}], got {type(raw).__name__}")
    if not raw:
        return np.empty((0, 2), dtype=np.float64)
    try:
        arr = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        for i, level in enumerate(raw):
            if not isinstance(level, (list, tuple)) or len(level) != 2:
                raise error(f"{where}[{i}]: expected [price, {qty}], got {level!r}") from None
            number(level[0], f"{where}[{i}] price", error)
            number(level[1], f"{where}[{i}] {qty}", error)
        raise error(f"{where}: levels are not [price, {qty}] pairs") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise error(f"{where}: expected [price, {qty}] pairs, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1) | (arr[:, 0] <= 0) | (arr[:, 1] < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise error(f"{where}[{i}]: invalid level {raw[i]!r} (price must be > 0, {qty} >= 0)")
    return arr
