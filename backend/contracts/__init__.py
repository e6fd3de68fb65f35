"""The vocabulary every stage shares: group names, label names, record types, versions.

Nothing here does I/O or imports any part of the product except the feature schema
module (``backend.ml_engine.feature_store.feature_schema``), which the user's guide
names as the place to read the 110 features. Every other package may import from here;
this package imports from none of them (checked by the import-linter contract in
``.importlinter``).
"""
