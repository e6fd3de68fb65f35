"""Test support that ships with the product.

``fake_bybit`` is a fake Bybit v5 REST and WebSocket server (also a command line, for
trying the bot without the real exchange); ``sim_fingerprint`` fingerprints the rows of a
simulated day so a re-layout can prove it writes the same data. Nothing in the product
imports this package; it may import any layer below ``backend.apps``.
"""
