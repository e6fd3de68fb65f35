"""Bybit v5 public market data: payload parsing (``messages``), the sans-I/O WebSocket
protocol (``protocol``), its async driver (``ws``), the REST client (``rest``) and the two
``MarketSource``s (``source``)."""
