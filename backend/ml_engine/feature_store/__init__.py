"""The offline feature store and the feature schema every stage shares.

``feature_schema`` names the 110 features (read it to learn what each one is);
``feature_store`` reads and writes hive-partitioned parquet groups (``get_feature_store``);
``atomic`` makes every write all-or-nothing; ``legacy_format`` reads and writes the
round-1 ``.npy``/``.json`` batches.
"""
