"""Reading a training child's console: per-epoch metrics and the MLflow run id.

The training CLI prints one line per epoch and, at the end, the run id
(``backend/ml_engine/training_orchestrator``)::

    epoch   3/20  train_loss 0.9871  val_loss 1.0023  val_acc 0.512  val_macro_f1 0.498  12,345 samples/s  *best
    ✓ MLflow run: 0123456789abcdef0123456789abcdef (experiment 'lob_direction', sqlite:///...)

These lines are the machine-readable channel: they are what a user sees too, and they
are printed (and flushed) as each epoch ends, so progress shows while the run lasts.
After the run, the same numbers are in MLflow (``train_loss``, ``val_loss``,
``val_accuracy``, ``val_macro_f1`` per step) and ``GET /api/runs/<id>`` reads them there.
Pure functions; unknown lines give ``None``.
"""

from __future__ import annotations

import re

_EPOCH_RE = re.compile(r"^\s*epoch\s+(\d+)\s*/\s*(\d+)\s+(.*)$")
_PAIR_RE = re.compile(r"\b([a-z][a-z0-9_]*)\s+(-?(?:\d+\.\d*|\d+|nan|inf)(?:e[-+]?\d+)?)\b", re.IGNORECASE)
_RUN_RE = re.compile(r"MLflow run:\s*([0-9a-f]{32})\b")
_NAMES = {"val_acc": "val_accuracy"}


def parse_epoch(line: str) -> dict | None:
    """``{"epoch": 3, "epochs": 20, "train_loss": ..., "val_macro_f1": ..., "best": bool}`` or ``None``."""
    m = _EPOCH_RE.match(line)
    if not m:
        return None
    out: dict = {"epoch": int(m.group(1)), "epochs": int(m.group(2))}
    for key, value in _PAIR_RE.findall(m.group(3)):
        out[_NAMES.get(key, key)] = float(value)
    out["best"] = "*best" in m.group(3)
    return out


def parse_run_id(line: str) -> str | None:
    """The 32-hex MLflow run id of a ``MLflow run: <id>`` line, else ``None``."""
    m = _RUN_RE.search(line)
    return m.group(1) if m else None
