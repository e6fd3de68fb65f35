"""Configuration of one training run: what data to use (``DataConfig``) and how to train (``TrainConfig``).

Both raise ``ValueError`` with the offending value when constructed with an invalid one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from backend.contracts.groups import TRAINING_FEATURES
from backend.contracts.labels import (
    DEFAULT_THRESHOLD_PCT,
    DEFAULT_TOLERANCE_S,
    HORIZONS_S,
    direction_column,
    movement_column,
)

DEFAULT_MIN_SAMPLES = 600
DEFAULT_MIN_LABEL_COVERAGE = 0.80
DEFAULT_SEQUENCE_LENGTH = 30
SOURCES_FLAG = "--sources"
ALLOW_MIXED_SOURCES_FLAG = "--allow-mixed-sources"


@dataclass
class DataConfig:
    """What to train on.

    ``threshold_pct`` / ``tolerance_s`` (percent / seconds) classify past moves for the
    persistence baseline; None (the default) takes them from the labels' provenance,
    so the baseline classifies exactly as the labeller did (falling back to the
    labeller's defaults, with a warning, for labels made before provenance existed).
    ``allow_mixed_label_thresholds`` trains on labels made with different thresholds
    instead of refusing. ``sources``: train only on samples whose ``source`` column is
    one of these; without it a group holding several sources (a simulator run beside a
    live one) is refused unless ``allow_mixed_sources``. Split fractions are of the time-ordered sequences; the purge
    gap between splits is one sequence span plus the horizon (see ``sequences``).

    ``folds``: K walk-forward folds (``evaluation.folds.walk_forward``); 1 is the single
    70/15/15 split. With K > 1 the K test windows together cover ``test_fraction`` x K of
    the time line, at most half (0.15 x 5 -> five windows of 10 %), and each fold trains a
    model from scratch on what lies before its window: everything (expanding, the default)
    or only the last ``window_s`` seconds (rolling).
    """

    feature_group: str = TRAINING_FEATURES
    start_date: str | None = None
    end_date: str | None = None
    symbols: list[str] | None = None
    horizon_s: int = 60
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH
    threshold_pct: float | None = None
    tolerance_s: float | None = None
    allow_mixed_label_thresholds: bool = False
    min_samples: int = DEFAULT_MIN_SAMPLES
    min_label_coverage: float = DEFAULT_MIN_LABEL_COVERAGE
    # Each split needs enough sequences for its metric to mean something.
    min_split_sequences: int = 30
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # A hole in the sampling wider than this many sampling intervals ends a segment.
    gap_factor: float = 2.0
    # Normalised features are clipped so a single outlier cannot dominate a batch.
    clip: float = 10.0
    folds: int = 1
    window_s: float | None = None  # rolling training window in seconds; None = expanding
    # Samples of these ``source`` values only (None: all, refused when there are several unless allowed).
    sources: list[str] | None = None
    allow_mixed_sources: bool = False

    def __post_init__(self) -> None:
        if self.horizon_s not in HORIZONS_S:
            raise ValueError(f"horizon must be one of {HORIZONS_S} seconds, got {self.horizon_s}")
        if self.sequence_length < 1:
            raise ValueError(f"sequence_length must be >= 1, got {self.sequence_length}")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1 and self.val_fraction + self.test_fraction < 0.9):
            raise ValueError("val_fraction and test_fraction must be in (0, 1) and leave >= 10% for training")
        if self.threshold_pct is not None and not self.threshold_pct >= 0:
            raise ValueError(f"threshold must be >= 0 percent, got {self.threshold_pct}")
        if self.tolerance_s is not None and not self.tolerance_s >= 0:
            raise ValueError(f"tolerance must be >= 0 seconds, got {self.tolerance_s}")
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")
        if self.window_s is not None and not self.window_s > 0:
            raise ValueError(f"window must be > 0 seconds, got {self.window_s}")
        if not 0 <= self.min_label_coverage <= 1:
            raise ValueError(f"min_label_coverage must be in [0, 1], got {self.min_label_coverage}")

    @property
    def direction_column(self) -> str:
        """The label column trained on, e.g. ``future_direction_60s``."""
        return direction_column(self.horizon_s)

    @property
    def movement_column(self) -> str:
        """The movement column of the horizon, e.g. ``future_movement_60s``."""
        return movement_column(self.horizon_s)

    def as_params(self) -> dict[str, Any]:
        """Flat parameters for MLflow (None shown as "from labels")."""
        out = asdict(self)
        for key in ("threshold_pct", "tolerance_s"):
            if out[key] is None:
                out[key] = "from labels"
        out["symbols"] = ",".join(self.symbols) if self.symbols else "all"
        out["window_s"] = "expanding" if self.window_s is None else self.window_s
        out["sources"] = ",".join(self.sources) if self.sources else "all"
        return out


@dataclass
class TrainConfig:
    """How to train: epochs, batch size (sequences), AdamW learning rate and weight decay,
    early-stopping patience (epochs without a better validation macro-F1), seed, device
    ("auto" | "cpu" | "cuda") and model sizes; ``extra`` adds parameters to the MLflow log."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    conv_channels: int = 32
    hidden_size: int = 48
    dropout: float = 0.2
    # Logistic-regression baseline: at most this many training rows (it is a sanity bar, not a contender).
    logreg_max_rows: int = 200_000
    num_threads: int | None = None
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def as_params(self) -> dict[str, Any]:
        """Flat parameters for MLflow (``extra`` merged in, display-only fields left out)."""
        out = asdict(self)
        out.pop("extra")
        out.pop("show_progress")
        out.update(self.extra)
        return out
