"""Migration of legacy .npy/.json batches into the parquet feature store."""
