"""The machine-learning side of the bot: features, collection, store, labels, training.

``features`` turns books and trades into the 110-value vectors of
``feature_store.feature_schema``; ``data_collection`` spools and writes them;
``feature_store`` keeps them as hive-partitioned parquet; ``labelling`` adds future-price
direction labels; ``training_orchestrator`` trains and tracks models in MLflow;
``migration`` converts legacy batches into the store.
"""
