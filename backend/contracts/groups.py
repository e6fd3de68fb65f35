"""Feature-store group names (folders under ``data/feature_store/offline/``).

``TRAINING_FEATURES`` is only the default of the configurable sample group
(``LOBBOT_FEATURE_STORE_GROUP``); the others are fixed names that the collector,
the labeller, training and the web app all read and write.
"""

from __future__ import annotations

#: default group of collected samples (110 features + metadata + six label columns)
TRAINING_FEATURES = "training_features"
#: one row per symbol per tick: timestamp, symbol, mid_price, best_bid, best_ask
PRICE_TAPE = "price_tape"
#: the closed 1-minute bars the candle and indicator features were computed from
CANDLES = "candles"

#: groups whose rows are market records, not samples; they are never labelled or trained on
MARKET_GROUPS: tuple[str, ...] = (PRICE_TAPE, CANDLES)
