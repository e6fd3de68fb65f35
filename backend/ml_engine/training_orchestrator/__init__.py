"""Training orchestrator: feature store -> purged sequences -> torch model -> MLflow.

Entry point: ``python -m backend.ml_engine.training_orchestrator --epochs 50``.
"""

from backend.ml_engine.training_orchestrator.config import DEFAULT_THRESHOLD_PCT, DataConfig, TrainConfig
from backend.ml_engine.training_orchestrator.errors import TrackingError, TrainingDataError

__all__ = ["DataConfig", "TrainConfig", "DEFAULT_THRESHOLD_PCT", "TrainingDataError", "TrackingError"]
