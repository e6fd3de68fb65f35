"""Test doubles that are part of the product (the fake Bybit server is also a CLI)."""
