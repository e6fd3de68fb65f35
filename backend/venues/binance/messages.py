"""Parsing of Binance USD-M futures public REST and WebSocket payloads (sans I/O).

Already-decoded JSON (dicts and lists) becomes the project's records: ``DepthSnapshot``
(``GET /fapi/v1/depth``), ``DepthDiff`` (the ``<symbol>@depth@100ms`` diff stream),
``Trade`` (``<symbol>@aggTrade`` pushes, ``GET /fapi/v1/trades`` rows), ``Candle``
(``GET /fapi/v1/klines`` rows, ``<symbol>@kline_1m`` pushes) and the server time
(``GET /fapi/v1/time``). Field names follow Binance's USD-M futures API reference
("Market Data Endpoints", "Websocket Market Streams"). Every time is integer ms since
the epoch (Binance's own unit); prices in quote currency and quantities in base
currency, as the strings Binance sends.

A malformed payload raises ``BinanceMessageError`` naming the message, the field and
what is wrong, so callers count and skip it instead of crashing on a ``KeyError``.
An error body (``{"code": -1121, "msg": "Invalid symbol."}``) is ``BinanceApiError``.
The checks of JSON strings, numbers and book levels are shared with Bybit (``venues/wire.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.venues import wire
from backend.venues.types import CANDLE_MS, Candle, Trade

__all__ = ["AggTrade", "BinanceApiError", "BinanceMessageError", "DepthDiff", "DepthSnapshot", "decode_json",
           "parse_agg_trade", "parse_depth_diff", "parse_depth_snapshot", "parse_exchange_info", "parse_kline_push",
           "parse_kline_rows", "parse_levels", "parse_rest_trades", "parse_server_time", "split_combined"]

UNKNOWN_SYMBOL_CODE = -1121
"""Binance error code "Invalid symbol." (USD-M "Error Codes": -1121 BAD_SYMBOL)."""


class BinanceMessageError(ValueError):
    """A payload that does not have the shape Binance documents."""


class BinanceApiError(RuntimeError):
    """Binance answered with an error body ``{"code": <negative int>, "msg": ...}`` (or a bare HTTP error).

    ``code`` is Binance's code, or ``-status`` (e.g. -400) when the body had none;
    ``status`` the HTTP status.
    """

    def __init__(self, code: int, msg: str, status: int = 0, where: str = ""):
        self.code = code
        self.msg = msg
        self.status = status
        self.where = where
        super().__init__(f"Binance error {code} ({msg!r}, HTTP {status}){' from ' + where if where else ''}")


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """``GET /fapi/v1/depth``: the book as of update id ``last_update_id``; levels float64 ``(n, 2)``, best first.

    ``event_ms`` is ``E`` (message output time), ``transact_ms`` is ``T`` (matching-engine time).
    """

    symbol: str
    last_update_id: int
    bids: np.ndarray
    asks: np.ndarray
    event_ms: int
    transact_ms: int


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One ``depthUpdate`` event: updates ``U``..``u`` (first/final update id), ``pu`` the previous event's ``u``.

    Levels hold absolute quantities; quantity 0 removes the level. ``event_ms`` is ``E``,
    ``transact_ms`` is ``T``.
    """

    symbol: str
    first_id: int  # U
    final_id: int  # u
    prev_final_id: int  # pu
    bids: np.ndarray
    asks: np.ndarray
    event_ms: int
    transact_ms: int


@dataclass(frozen=True, slots=True)
class AggTrade:
    """One ``aggTrade`` push: aggregate trade id ``a`` and the ``Trade`` (side from ``m``: buyer is maker = taker sell)."""

    symbol: str
    agg_id: int
    trade: Trade
    event_ms: int


def decode_json(text: str | bytes, where: str = "message") -> Any:
    """``json.loads``, raising ``BinanceMessageError`` (naming ``where`` and the text's start) instead."""
    return wire.decode_json(text, where, BinanceMessageError)


def _field(obj: Any, key: str, where: str) -> Any:
    return wire.field(obj, key, where, BinanceMessageError)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise BinanceMessageError(f"{what}: expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BinanceMessageError(f"{what}: expected an integer, got {value!r}") from None


def _float(value: Any, what: str) -> float:
    return wire.number(value, what, BinanceMessageError)


def parse_levels(raw: Any, where: str) -> np.ndarray:
    """``[["price", "qty"], ...]`` -> float64 ``(n, 2)``; rejects junk, NaN, prices <= 0 and negative quantities."""
    return wire.levels(raw, where, BinanceMessageError, "qty")


# --- REST ---------------------------------------------------------------------------------


def parse_error_body(payload: Any, status: int, where: str) -> BinanceApiError:
    """An error reply's body ``{"code", "msg"}`` -> ``BinanceApiError`` (``code`` = ``-status`` when absent)."""
    if isinstance(payload, dict) and "code" in payload:
        try:
            code = int(payload["code"])
        except (TypeError, ValueError):
            code = -status
        return BinanceApiError(code, str(payload.get("msg", "")), status, where)
    return BinanceApiError(-status, f"HTTP {status}", status, where)


def parse_depth_snapshot(payload: Any, symbol: str) -> DepthSnapshot:
    """``GET /fapi/v1/depth`` -> ``DepthSnapshot``; fields ``lastUpdateId``, ``E``, ``T``, ``bids``, ``asks``.

    The reply does not name its symbol; ``symbol`` is the one asked for.
    """
    where = f"depth {symbol}"
    return DepthSnapshot(
        symbol=symbol,
        last_update_id=_int(_field(payload, "lastUpdateId", where), f"{where} lastUpdateId"),
        bids=parse_levels(_field(payload, "bids", where), f"{where} bids"),
        asks=parse_levels(_field(payload, "asks", where), f"{where} asks"),
        event_ms=_int(_field(payload, "E", where), f"{where} E"),
        transact_ms=_int(_field(payload, "T", where), f"{where} T"),
    )


def parse_server_time(payload: Any) -> int:
    """``GET /fapi/v1/time`` -> ``serverTime`` (ms since the epoch)."""
    return _int(_field(payload, "serverTime", "time"), "time serverTime")


def parse_kline_rows(payload: Any, symbol: str) -> list[Candle]:
    """``GET /fapi/v1/klines`` rows ``[openTime, open, high, low, close, volume, closeTime, quoteVolume, ...]``
    -> candles oldest first (Binance sends them oldest first; sorted anyway). The forming bar is included."""
    where = f"klines {symbol}"
    if not isinstance(payload, list):
        raise BinanceMessageError(f"{where}: expected a list of rows, got {type(payload).__name__}")
    out = []
    for i, row in enumerate(payload):
        w = f"{where} row {i}"
        if not isinstance(row, list) or len(row) < 8:
            raise BinanceMessageError(f"{w}: expected [openTime, open, high, low, close, volume, closeTime, "
                                      f"quoteVolume, ...], got {row!r}")
        start = _int(row[0], f"{w} openTime")
        close_ms = _int(row[6], f"{w} closeTime")
        if close_ms - start + 1 != CANDLE_MS:
            raise BinanceMessageError(f"{w}: not a 1-minute bar (openTime={start}, closeTime={close_ms})")
        out.append(Candle(start_ms=start, open=_float(row[1], f"{w} open"), high=_float(row[2], f"{w} high"),
                          low=_float(row[3], f"{w} low"), close=_float(row[4], f"{w} close"),
                          volume=_float(row[5], f"{w} volume"), turnover=_float(row[7], f"{w} quoteVolume")))
    out.sort(key=lambda c: c.start_ms)
    return out


def parse_rest_trades(payload: Any, symbol: str) -> list[tuple[int, Trade]]:
    """``GET /fapi/v1/trades`` rows ``{id, price, qty, quoteQty, time, isBuyerMaker}`` -> ``[(id, Trade)]`` oldest first.

    ``isBuyerMaker`` true means the seller took liquidity: side -1.
    """
    where = f"trades {symbol}"
    if not isinstance(payload, list):
        raise BinanceMessageError(f"{where}: expected a list of trades, got {type(payload).__name__}")
    out = []
    for i, row in enumerate(payload):
        w = f"{where} [{i}]"
        maker = _field(row, "isBuyerMaker", w)
        if not isinstance(maker, bool):
            raise BinanceMessageError(f"{w} isBuyerMaker: expected true or false, got {maker!r}")
        out.append((_int(_field(row, "id", w), f"{w} id"),
                    Trade(ts_ms=_int(_field(row, "time", w), f"{w} time"),
                          price=_float(_field(row, "price", w), f"{w} price"),
                          size=_float(_field(row, "qty", w), f"{w} qty"), side=-1 if maker else 1)))
    out.sort(key=lambda it: (it[1].ts_ms, it[0]))
    return out


def parse_exchange_info(payload: Any) -> dict[str, tuple[str, str]]:
    """``GET /fapi/v1/exchangeInfo`` -> ``{symbol: (status, contractType)}`` (status ``TRADING``, ``SETTLING``, ...)."""
    rows = _field(payload, "symbols", "exchangeInfo")
    if not isinstance(rows, list):
        raise BinanceMessageError("exchangeInfo symbols: expected a list")
    out = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("symbol"), str):
            out[row["symbol"]] = (str(row.get("status", "")), str(row.get("contractType", "")))
    return out


# --- WebSocket ------------------------------------------------------------------------------


def split_combined(msg: Any) -> tuple[str, Any]:
    """A combined-stream message ``{"stream": name, "data": payload}`` -> ``(name, payload)``."""
    stream = _field(msg, "stream", "combined stream message")
    if not isinstance(stream, str):
        raise BinanceMessageError(f"combined stream message: 'stream' is not a string: {stream!r}")
    return stream, _field(msg, "data", f"stream {stream}")


def parse_depth_diff(data: Any) -> DepthDiff:
    """A ``depthUpdate`` event (fields ``e, E, T, s, U, u, pu, b, a``) -> ``DepthDiff``."""
    where = "depthUpdate"
    if _field(data, "e", where) != "depthUpdate":
        raise BinanceMessageError(f"{where}: event type is {data.get('e')!r}")
    sym = str(_field(data, "s", where))
    where = f"depthUpdate {sym}"
    first = _int(_field(data, "U", where), f"{where} U")
    final = _int(_field(data, "u", where), f"{where} u")
    if final < first:
        raise BinanceMessageError(f"{where}: u={final} is below U={first}")
    return DepthDiff(
        symbol=sym, first_id=first, final_id=final, prev_final_id=_int(_field(data, "pu", where), f"{where} pu"),
        bids=parse_levels(_field(data, "b", where), f"{where} b"),
        asks=parse_levels(_field(data, "a", where), f"{where} a"),
        event_ms=_int(_field(data, "E", where), f"{where} E"),
        transact_ms=_int(_field(data, "T", where), f"{where} T"),
    )


def parse_agg_trade(data: Any) -> AggTrade:
    """An ``aggTrade`` event (fields ``e, E, s, a, p, q, f, l, T, m``) -> ``AggTrade``."""
    where = "aggTrade"
    if _field(data, "e", where) != "aggTrade":
        raise BinanceMessageError(f"{where}: event type is {data.get('e')!r}")
    sym = str(_field(data, "s", where))
    where = f"aggTrade {sym}"
    maker = _field(data, "m", where)
    if not isinstance(maker, bool):
        raise BinanceMessageError(f"{where} m: expected true or false, got {maker!r}")
    return AggTrade(sym, _int(_field(data, "a", where), f"{where} a"),
                    Trade(ts_ms=_int(_field(data, "T", where), f"{where} T"),
                          price=_float(_field(data, "p", where), f"{where} p"),
                          size=_float(_field(data, "q", where), f"{where} q"), side=-1 if maker else 1),
                    _int(_field(data, "E", where), f"{where} E"))


def parse_kline_push(data: Any) -> tuple[str, Candle, bool]:
    """A ``kline`` event -> ``(symbol, candle, closed)``; only 1-minute bars (``k.i == "1m"``) are accepted.

    ``closed`` is ``k.x`` (this bar is final).
    """
    where = "kline"
    if _field(data, "e", where) != "kline":
        raise BinanceMessageError(f"{where}: event type is {data.get('e')!r}")
    sym = str(_field(data, "s", where))
    k = _field(data, "k", f"kline {sym}")
    w = f"kline {sym} k"
    if _field(k, "i", w) != "1m":
        raise BinanceMessageError(f"{w}: interval {k.get('i')!r}, expected '1m'")
    closed = _field(k, "x", w)
    if not isinstance(closed, bool):
        raise BinanceMessageError(f"{w} x: expected true or false, got {closed!r}")
    candle = Candle(start_ms=_int(_field(k, "t", w), f"{w} t"), open=_float(_field(k, "o", w), f"{w} o"),
                    high=_float(_field(k, "h", w), f"{w} h"), low=_float(_field(k, "l", w), f"{w} l"),
                    close=_float(_field(k, "c", w), f"{w} c"), volume=_float(_field(k, "v", w), f"{w} v"),
                    turnover=_float(k.get("q", 0.0), f"{w} q"))
    return sym, candle, closed
