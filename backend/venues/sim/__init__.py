"""The simulated market (``market``: deterministic books, trades and bars with a known,
learnable signal) and its ``MarketSource`` (``source``)."""
