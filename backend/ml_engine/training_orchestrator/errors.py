"""Errors that stop a run with one of the user guide's messages (printed without a traceback)."""

from __future__ import annotations


class TrainingDataError(Exception):
    """The data cannot train a model; ``str(err)`` is the guide's message plus what to do."""


class TrackingError(Exception):
    """MLflow tracking cannot be used (driver, database, schema); the message has the fix."""
