"""Crypto trading bot with an embedded order-book ML data collector.

Packages, top layer first (a layer imports only layers below it; ``.importlinter`` holds
the contract, see DESIGN.md §6.1): ``main`` and ``apps`` (command lines), ``web``,
``ml_engine.labelling`` / ``ml_engine.training_orchestrator`` / ``ml_engine.migration``,
``engine``, ``ml_engine.data_collection``, ``ml_engine.feature_store``,
``ml_engine.features``, ``venues``, ``metrics`` and ``config``, ``contracts``, ``symbols``.
"""
