from backend.ml_engine.data_collection.ml_data_collector import MLDataCollector

__all__ = ["MLDataCollector"]
