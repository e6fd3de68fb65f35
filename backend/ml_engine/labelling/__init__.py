"""Future-price labels (DESIGN §3.4): one vectorised core and one apply loop with two adapters.

* ``labels``: the core (``compute_labels``, ``LabelConfig``, the window search);
* ``apply``: the loop over days, files and merges; ``store_labelling.StoreAdapter``
  and ``legacy_labelling.LegacyAdapter`` do its I/O for the parquet store and the
  legacy batches;
* ``merge``: new labels combined with existing ones, and their provenance;
* ``symbol_codes``: the one symbol-to-code mapping;
* ``summary``: what a run did (``backend.apps.label`` prints it).
"""

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
