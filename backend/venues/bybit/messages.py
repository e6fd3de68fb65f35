"""Parsing of Bybit v5 public REST and WebSocket payloads (sans I/O).

Everything here turns already-decoded JSON (dicts and lists) into the
project's records: ``OrderBook``, ``Trade``, ``Candle`` and ``BookMessage``
(one order-book snapshot or delta). Malformed payloads raise
``BybitMessageError`` naming the field and what is wrong, so the caller can
count and skip them instead of crashing on a ``KeyError``. The checks of JSON strings,
numbers and book levels are shared with Binance (``venues/wire.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.symbols import SYMBOL_RE
from backend.venues.orderbook import OrderBook
from backend.venues import wire
from backend.venues.types import CANDLE_MS, Candle, Trade

# retCodes that mean "slow down / try again": 10006 per-UID rate limit,
# 10018 per-IP rate limit, 10016 internal error or service restarting.
RETRYABLE_RET_CODES = frozenset({10006, 10016, 10018})


class BybitMessageError(ValueError):
    """A payload that does not have the shape Bybit documents."""


class BybitApiError(RuntimeError):
    """Bybit answered with a non-zero ``retCode``."""

    def __init__(self, ret_code: int, ret_msg: str, where: str = ""):
        self.ret_code = ret_code
        self.ret_msg = ret_msg
        self.where = where
        super().__init__(f"Bybit retCode {ret_code} ({ret_msg!r}){' from ' + where if where else ''}")

    @property
    def retryable(self) -> bool:
        """True for the rate-limit / service-restart codes that asking again can fix."""
        return self.ret_code in RETRYABLE_RET_CODES


@dataclass(frozen=True, slots=True)
class BookMessage:
    """One ``orderbook.<depth>.<symbol>`` push, levels as float64 ``(n, 2)`` arrays."""

    symbol: str
    kind: str  # "snapshot" | "delta"
    bids: np.ndarray
    asks: np.ndarray
    u: int
    seq: int | None
    ts_ms: int
    cts_ms: int | None


def decode_json(text: str | bytes, where: str = "message") -> Any:
    """``json.loads``, raising ``BybitMessageError`` (naming ``where`` and the text's start) instead."""
    return wire.decode_json(text, where, BybitMessageError)


def _field(obj: Any, key: str, where: str) -> Any:
    return wire.field(obj, key, where, BybitMessageError)


def _int(value: Any, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise BybitMessageError(f"{what}: expected an integer, got {value!r}") from None


def _float(value: Any, what: str) -> float:
    return wire.number(value, what, BybitMessageError)


def parse_levels(raw: Any, where: str) -> np.ndarray:
    """``[["price", "size"], ...]`` -> float64 ``(n, 2)``; rejects junk, NaN and negatives."""
    return wire.levels(raw, where, BybitMessageError, "size")


# --- REST ----------------------------------------------------------------------


def unwrap_envelope(payload: Any, where: str) -> tuple[Any, int | None]:
    """Return ``(result, server_time_ms)`` or raise ``BybitApiError`` for ``retCode != 0``."""
    code = _int(_field(payload, "retCode", where), f"{where} retCode")
    if code != 0:
        raise BybitApiError(code, str(payload.get("retMsg", "")), where)
    result = _field(payload, "result", where)
    t = payload.get("time")
    return result, (None if t is None else _int(t, f"{where} time"))


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of ``/v5/market/instruments-info``: the fields the symbol universe needs."""

    symbol: str
    status: str  # Trading, PreLaunch, Delivering, Closed, ...
    contract_type: str  # LinearPerpetual, LinearFutures, ...
    quote_coin: str  # USDT, USDC, ...

    @property
    def trading_usdt_perpetual(self) -> bool:
        """A linear USDT perpetual open for trading (what ``--symbols all`` collects)."""
        return self.status == "Trading" and self.contract_type == "LinearPerpetual" and self.quote_coin == "USDT"


def parse_instruments(result: Any) -> tuple[list[Instrument], str]:
    """``/v5/market/instruments-info`` ``result`` -> (its rows, ``nextPageCursor`` or ``""`` on the last page).

    Rows without a string ``symbol`` are skipped; a missing ``list`` raises ``BybitMessageError``.
    """
    rows = _field(result, "list", "instruments-info")
    if not isinstance(rows, list):
        raise BybitMessageError("instruments-info: 'list' is not a list")
    out = [Instrument(row["symbol"], str(row.get("status", "")), str(row.get("contractType", "")),
                      str(row.get("quoteCoin", "")))
           for row in rows if isinstance(row, dict) and isinstance(row.get("symbol"), str)]
    return out, str(result.get("nextPageCursor") or "")


def trading_usdt_perpetuals(instruments: list[Instrument]) -> list[str]:
    """The symbols of the trading linear USDT perpetuals among ``instruments``, sorted, each once.

    A name that is not a plain ticker (``backend.symbols``) is left out: it could not become a folder name.
    """
    return sorted({i.symbol for i in instruments if i.trading_usdt_perpetual and SYMBOL_RE.fullmatch(i.symbol)})


def parse_rest_orderbook(result: Any, symbol: str, recv_ms: int, depth: int | None = None) -> OrderBook:
    """``/v5/market/orderbook`` ``result`` -> ``OrderBook`` (top ``depth`` levels), as sent: not validated.

    ``ts`` is Bybit's system time of the book, ``cts`` the matching-engine time, ``u``
    the update id (Bybit v5 docs, "Get Orderbook"). Raises ``BybitMessageError`` for a
    missing field, another symbol or a bad level.
    """
    where = f"orderbook {symbol}"
    s = _field(result, "s", where)
    if s != symbol:
        raise BybitMessageError(f"{where}: answer is for symbol {s!r}")
    bids = parse_levels(_field(result, "b", where), f"{where} b")
    asks = parse_levels(_field(result, "a", where), f"{where} a")
    if depth is not None:
        bids, asks = bids[:depth], asks[:depth]
    cts = result.get("cts")
    u = result.get("u")
    return OrderBook(
        symbol,
        np.ascontiguousarray(bids[:, 0]),
        np.ascontiguousarray(bids[:, 1]),
        np.ascontiguousarray(asks[:, 0]),
        np.ascontiguousarray(asks[:, 1]),
        ts_ms=_int(_field(result, "ts", where), f"{where} ts"),
        recv_ms=int(recv_ms),
        cts_ms=None if cts is None else _int(cts, f"{where} cts"),
        update_id=None if u is None else _int(u, f"{where} u"),
    )


def parse_kline_rows(result: Any, symbol: str) -> list[Candle]:
    """``/v5/market/kline`` rows (newest first on the wire) -> candles oldest first.

    The still-forming bar is included; callers keep only bars that have closed.
    """
    where = f"kline {symbol}"
    rows = _field(result, "list", where)
    if not isinstance(rows, list):
        raise BybitMessageError(f"{where}: 'list' is not a list")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 6:
            raise BybitMessageError(f"{where} row {i}: expected [start, open, high, low, close, volume, turnover], got {row!r}")
        w = f"{where} row {i}"
        out.append(
            Candle(
                start_ms=_int(row[0], f"{w} start"),
                open=_float(row[1], f"{w} open"),
                high=_float(row[2], f"{w} high"),
                low=_float(row[3], f"{w} low"),
                close=_float(row[4], f"{w} close"),
                volume=_float(row[5], f"{w} volume"),
                turnover=_float(row[6], f"{w} turnover") if len(row) > 6 else 0.0,
            )
        )
    out.sort(key=lambda c: c.start_ms)
    return out


def _side(value: Any, what: str) -> int:
    if value == "Buy":
        return 1
    if value == "Sell":
        return -1
    raise BybitMessageError(f"{what}: side must be 'Buy' or 'Sell', got {value!r}")


def _trade_rows(rows: Any, where: str, keys: tuple[str, str, str, str, str]) -> list[tuple[str, Trade]]:
    """Trades from REST or WS rows; ``keys`` name the (id, time, price, size, side) fields."""
    if not isinstance(rows, list):
        raise BybitMessageError(f"{where}: list of trades expected, got {type(rows).__name__}")
    k_id, k_ts, k_price, k_size, k_side = keys
    out = []
    for i, row in enumerate(rows):
        w = f"{where} [{i}]"
        trade = Trade(
            ts_ms=_int(_field(row, k_ts, w), f"{w} {k_ts}"),
            price=_float(_field(row, k_price, w), f"{w} {k_price}"),
            size=_float(_field(row, k_size, w), f"{w} {k_size}"),
            side=_side(_field(row, k_side, w), f"{w} {k_side}"),
        )
        out.append((str(_field(row, k_id, w)), trade))
    out.sort(key=lambda it: it[1].ts_ms)
    return out


def parse_rest_trades(result: Any, symbol: str) -> list[tuple[str, Trade]]:
    """``/v5/market/recent-trade`` -> ``[(execId, Trade)]`` oldest first."""
    where = f"recent-trade {symbol}"
    return _trade_rows(_field(result, "list", where), where, ("execId", "time", "price", "size", "side"))


def topic_kind(msg: dict) -> tuple[str, str] | None:
    """``("orderbook"|"publicTrade"|"kline", symbol)`` for a data push, else None."""
    topic = msg.get("topic")
    if not isinstance(topic, str):
        return None
    parts = topic.split(".")
    if len(parts) < 2:
        return None
    return parts[0], parts[-1]


def parse_ws_book(msg: dict) -> BookMessage:
    """An ``orderbook.<depth>.<SYM>`` push -> ``BookMessage``; raises ``BybitMessageError`` when malformed.

    Fields per Bybit v5 docs ("WebSocket Stream > Public > Orderbook"): ``type``
    snapshot/delta, ``ts`` system time, ``cts`` matching-engine time, ``data.u`` update
    id, ``data.seq`` cross sequence, ``data.b`` / ``data.a`` ``[price, size]`` strings.
    """
    topic = msg.get("topic", "?")
    where = f"{topic}"
    kind = _field(msg, "type", where)
    if kind not in ("snapshot", "delta"):
        raise BybitMessageError(f"{where}: type must be snapshot or delta, got {kind!r}")
    data = _field(msg, "data", where)
    cts = msg.get("cts")
    seq = data.get("seq") if isinstance(data, dict) else None
    return BookMessage(
        symbol=str(_field(data, "s", f"{where} data")),
        kind=kind,
        bids=parse_levels(_field(data, "b", f"{where} data"), f"{where} b"),
        asks=parse_levels(_field(data, "a", f"{where} data"), f"{where} a"),
        u=_int(_field(data, "u", f"{where} data"), f"{where} u"),
        seq=None if seq is None else _int(seq, f"{where} seq"),
        ts_ms=_int(_field(msg, "ts", where), f"{where} ts"),
        cts_ms=None if cts is None else _int(cts, f"{where} cts"),
    )


def parse_ws_trades(msg: dict) -> list[tuple[str, Trade]]:
    """``publicTrade.<SYM>`` push -> ``[(trade id, Trade)]`` oldest first."""
    where = str(msg.get("topic", "publicTrade"))
    return _trade_rows(_field(msg, "data", where), where, ("i", "T", "p", "v", "S"))


def parse_ws_klines(msg: dict, confirmed_only: bool = True) -> list[Candle]:
    """``kline.1.<SYM>`` push -> closed candles (``confirm: true``) only, by default."""
    where = str(msg.get("topic", "kline"))
    rows = _field(msg, "data", where)
    if not isinstance(rows, list):
        raise BybitMessageError(f"{where}: data is not a list")
    out = []
    for i, row in enumerate(rows):
        w = f"{where} data[{i}]"
        if confirmed_only and _field(row, "confirm", w) is not True:
            continue
        start = _int(_field(row, "start", w), f"{w} start")
        end = row.get("end")
        if end is not None and _int(end, f"{w} end") - start + 1 != CANDLE_MS and _int(end, f"{w} end") - start != CANDLE_MS:
            raise BybitMessageError(f"{w}: not a 1-minute bar (start={start}, end={end})")
        out.append(
            Candle(
                start_ms=start,
                open=_float(_field(row, "open", w), f"{w} open"),
                high=_float(_field(row, "high", w), f"{w} high"),
                low=_float(_field(row, "low", w), f"{w} low"),
                close=_float(_field(row, "close", w), f"{w} close"),
                volume=_float(_field(row, "volume", w), f"{w} volume"),
                turnover=_float(row.get("turnover", 0.0), f"{w} turnover"),
            )
        )
    return out
