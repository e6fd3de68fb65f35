"""Market venues: the ``MarketSource`` interface and clocks, the exchange-neutral local book,
book records and validation, and one package per venue (``bybit/``, ``sim/``); ``factory``
builds the source the settings name."""
