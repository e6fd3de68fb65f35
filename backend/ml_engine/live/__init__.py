"""The model in the loop (DESIGN.md §6.6): a trained model back in the bot, paper trading only.

* ``model_loader``: an MLflow model URI -> the model, its normaliser, feature list and the
  settings it was trained with (``ModelSpec``); ``check_compatibility`` against what the
  bot produces.
* ``inference``: per-symbol windows of the last ``sequence_length`` samples built exactly
  as training builds them (same spacing and gap rule), one batched forward pass per tick.
* ``paper``: a documented policy, fills that walk the book, positions, PnL gross and net,
  hit rate, turnover, max drawdown.
* ``live_metrics``: realised accuracy and macro-F1 of labelled predictions, per model.
* ``records``: the Arrow schemas and tables of the ``predictions`` and ``paper_trades`` groups.

Everything but ``model_loader.load_live_model`` (which talks to MLflow) is sans-I/O: no
clock, no socket, no file; time comes in with the data.
"""
