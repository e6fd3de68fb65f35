"""Feature-store group names (folders under ``data/feature_store/offline/``).

``TRAINING_FEATURES`` is only the default of the configurable sample group
(``LOBBOT_FEATURE_STORE_GROUP``); the others are fixed names that the collector,
the labeller, training and the web app all read and write.
"""

from __future__ import annotations

import re

#: a group name becomes a folder name: lower-case letter first, then letters, digits, ``_``
GROUP_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: default group of collected samples (110 features + metadata + six label columns)
TRAINING_FEATURES = "training_features"
#: one row per symbol per tick: timestamp, symbol, mid_price, best_bid, best_ask
PRICE_TAPE = "price_tape"
#: the closed 1-minute bars the candle and indicator features were computed from
CANDLES = "candles"
#: what each venue delivered, one row per event, recorded with ``--record-raw`` (``contracts/raw_events.py``)
RAW_EVENTS = "raw_events"

#: the model in the loop (DESIGN.md §6.6): one row per prediction (labelled like samples, never trained on)
PREDICTIONS = "predictions"
#: the model in the loop: one row per simulated fill of paper trading
PAPER_TRADES = "paper_trades"

#: groups whose rows are market records, not samples; they are never labelled or trained on
MARKET_GROUPS: tuple[str, ...] = (PRICE_TAPE, CANDLES, RAW_EVENTS)


class InvalidGroupError(ValueError):
    """A feature-group name that cannot safely become a folder name."""


def validate_group_name(name: object) -> str:
    """Return ``name`` if it is a plain group name (``GROUP_NAME_RE``, matched in full).

    Raises:
        InvalidGroupError: anything else (``../x``, ``a/b``, upper case, a trailing newline).
    """
    if not isinstance(name, str) or not GROUP_NAME_RE.fullmatch(name):
        raise InvalidGroupError(
            f"invalid feature group {name!r}: use 1-64 lower-case letters, digits and _ starting with a letter, "
            "e.g. training_features (it becomes a folder name under the feature store)"
        )
    return name
