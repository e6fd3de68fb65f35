"""Label vocabulary: horizons, column names, class codes, the threshold rule and provenance.

The label definition (DESIGN §3.4): for a sample at time t and horizon h,
``future_movement_<h>s = (p_future / mid_price_t - 1) * 100`` in percent, and
``future_direction_<h>s`` is 2 (UP) above ``+threshold``, 0 (DOWN) below
``-threshold``, else 1 (NEUTRAL). Both are null until labelled.

Provenance: the threshold and tolerance a label was made with are stored beside it,
per horizon (parquet key-value metadata under ``LABEL_PROVENANCE_KEY``; the legacy
batch's metadata JSON under the same key). A horizon whose labels came from more than
one setting records every setting; ``None`` stands for labels made before provenance
was recorded (unknown settings).

Pure: numpy and the standard library only; nothing here does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

#: label horizons in seconds; one direction and one movement column each
HORIZONS_S: tuple[int, ...] = (10, 30, 60)

#: class codes of ``future_direction_<h>s`` (int8)
DIRECTION_DOWN, DIRECTION_NEUTRAL, DIRECTION_UP = 0, 1, 2
#: class names indexed by code
CLASS_NAMES: tuple[str, ...] = ("DOWN", "NEUTRAL", "UP")

#: seconds after t+h in which a future price must be found (one 3 s tape interval plus jitter)
DEFAULT_TOLERANCE_S = 5.0
#: percent move separating UP/DOWN from NEUTRAL (rationale in ``backend.ml_engine.labelling.labels``)
DEFAULT_THRESHOLD_PCT = 0.02

#: parquet key-value metadata key (bytes) and legacy metadata JSON key of the provenance record
LABEL_PROVENANCE_KEY = "lobbot.label_provenance"


def direction_column(horizon_s: int) -> str:
    """Name of the int8 direction column for ``horizon_s`` seconds, e.g. ``future_direction_60s``."""
    return f"future_direction_{int(horizon_s)}s"


def movement_column(horizon_s: int) -> str:
    """Name of the float64 movement column (percent) for ``horizon_s`` seconds, e.g. ``future_movement_60s``."""
    return f"future_movement_{int(horizon_s)}s"


DIRECTION_COLUMNS: tuple[str, ...] = tuple(direction_column(h) for h in HORIZONS_S)
MOVEMENT_COLUMNS: tuple[str, ...] = tuple(movement_column(h) for h in HORIZONS_S)
#: the six label columns, in schema order: directions, then movements
LABEL_COLUMNS: tuple[str, ...] = DIRECTION_COLUMNS + MOVEMENT_COLUMNS


def direction_from_movement(movement_pct: np.ndarray, threshold_pct: float) -> np.ndarray:
    """Class codes for movements in percent: UP where ``> +threshold``, DOWN where ``< -threshold``.

    ``movement_pct``: float array of any shape; NaN (no price) gives NEUTRAL, so callers
    mask it with their own validity. Returns int8 of the same shape. This is the one
    threshold rule: the labeller classifies future moves with it and training's
    persistence baseline classifies past moves with it.
    """
    movement_pct = np.asarray(movement_pct, dtype=np.float64)
    out = np.full(movement_pct.shape, DIRECTION_NEUTRAL, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        out[movement_pct > threshold_pct] = DIRECTION_UP
        out[movement_pct < -threshold_pct] = DIRECTION_DOWN
    return out


@dataclass(frozen=True, order=True)
class LabelSetting:
    """The settings one label was made with: threshold (percent) and tolerance (seconds)."""

    threshold_pct: float
    tolerance_s: float

    def describe(self) -> str:
        """Human form, e.g. ``threshold ±0.02%, tolerance 5 s``."""
        return f"threshold ±{self.threshold_pct:g}%, tolerance {self.tolerance_s:g} s"


#: per horizon (seconds): the settings present in the labels; ``None`` marks unknown (pre-provenance) labels
Provenance = dict[int, frozenset]


class ProvenanceError(ValueError):
    """A stored provenance record is not valid JSON of the expected shape."""


def merge_provenance(*records: Mapping[int, Iterable]) -> Provenance:
    """Union per horizon of several provenance records (e.g. the files a run reads)."""
    out: dict[int, set] = {}
    for record in records:
        for h, settings in record.items():
            out.setdefault(int(h), set()).update(settings)
    return {h: frozenset(s) for h, s in out.items()}


def encode_provenance(record: Mapping[int, Iterable]) -> str:
    """Compact JSON text: ``{"version": 1, "horizons": {"10": [{"threshold_pct": .., "tolerance_s": ..} | null]}}``."""

    def one(s: LabelSetting | None):
        return None if s is None else {"threshold_pct": s.threshold_pct, "tolerance_s": s.tolerance_s}

    horizons = {
        str(h): [one(s) for s in sorted(settings, key=lambda s: (s is not None, s or LabelSetting(0, 0)))]
        for h, settings in sorted(record.items())
    }
    return json.dumps({"version": 1, "horizons": horizons}, separators=(",", ":"), allow_nan=False)


def decode_provenance(text: str | bytes | Mapping | None) -> Provenance:
    """Parse what ``encode_provenance`` wrote (text, bytes or the already parsed JSON object).

    ``None`` (no record) gives ``{}``. Raises ``ProvenanceError`` on anything malformed.
    """
    if text is None:
        return {}
    try:
        obj = json.loads(text) if isinstance(text, (str, bytes)) else text
        horizons = obj["horizons"]
        out: dict[int, frozenset] = {}
        for h, settings in horizons.items():
            items = set()
            for s in settings:
                if s is None:
                    items.add(None)
                else:
                    threshold, tolerance = float(s["threshold_pct"]), float(s["tolerance_s"])
                    if not (np.isfinite(threshold) and np.isfinite(tolerance)):
                        raise ValueError("non-finite setting")
                    items.add(LabelSetting(threshold, tolerance))
            out[int(h)] = frozenset(items)
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProvenanceError(f"unreadable label provenance record: {exc}") from None
