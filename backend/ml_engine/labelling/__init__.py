"""Future-price labels (DESIGN §3.4): one vectorised core used by both labelling scripts."""

from backend.ml_engine.labelling.labels import (
    DEFAULT_HORIZONS_S,
    DEFAULT_THRESHOLD_PCT,
    DEFAULT_TOLERANCE_S,
    HorizonLabels,
    LabelConfig,
    PriceRows,
    class_balance,
    compute_labels,
)

__all__ = [
    "DEFAULT_HORIZONS_S",
    "DEFAULT_THRESHOLD_PCT",
    "DEFAULT_TOLERANCE_S",
    "HorizonLabels",
    "LabelConfig",
    "PriceRows",
    "class_balance",
    "compute_labels",
]
