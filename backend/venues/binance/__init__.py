"""Binance USD-M futures: messages, sans-I/O protocol, REST client, WebSocket driver and the two sources."""
