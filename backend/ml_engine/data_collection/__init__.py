"""Collected rows on their way to disk: ``MLDataCollector``, its write-ahead spool, stream specs and sinks.

Modules, one job each: ``ml_data_collector`` (the public collector), ``streams`` (one spec
per stream), ``records`` (keys and row layouts), ``buffers`` (columnar RAM buffers),
``tables`` (rows -> Arrow), ``sinks`` (parquet and legacy writers), ``flushing`` (flush
jobs and their worker thread), ``spool`` / ``spool_format`` / ``spool_recovery`` (the
versioned write-ahead log), ``stats`` (counts read back from the metrics registry).
"""

from backend.ml_engine.data_collection.ml_data_collector import MLDataCollector

__all__ = ["MLDataCollector"]
