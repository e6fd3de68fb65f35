"""Trustworthy evaluation: walk-forward folds, block-bootstrap intervals, a verdict against every baseline.

Modules, each with one job and no I/O but ``report.save_plots``:
    folds        walk-forward train/val/test boundaries with the purge gap
    metrics      accuracy and macro-F1 from (stacks of) confusion matrices
    bootstrap    moving-block bootstrap intervals, paired differences on shared resamples
    verdict      beats / not distinguishable from / worse than, and the persistence warning
    calibration  Brier score and reliability bins
    assess       from each fold's test predictions to one ``Assessment``
    report       console text, evaluation.md, plots, MLflow metric and tag dicts
See docs/evaluation.md for how to read the result.
"""
