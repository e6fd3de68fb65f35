"""The 110 model features: order-book (batched over symbols), candle and indicator (TA-Lib).

The schema module (``feature_store/feature_schema.py``) documents every feature;
``FeaturePipeline`` computes them tick by tick.
"""

from backend.ml_engine.features.pipeline import MIN_CANDLES, FeatureBatch, FeaturePipeline
from backend.ml_engine.features.tick_state import TICKS_NEEDED

__all__ = ["FeatureBatch", "FeaturePipeline", "MIN_CANDLES", "TICKS_NEEDED"]
