"""Classification metrics, the comparison table and the confusion-matrix figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.contracts.labels import CLASS_NAMES


@dataclass
class Scores:
    """Scores of one predictor on the test split: confusion (3, 3) rows = true class, columns =
    predicted; accuracy; macro-F1 (unweighted mean of the per-class F1); per-class precision,
    recall, F1 (3,) each, indexed by class code; ``n`` test sequences."""

    name: str
    confusion: np.ndarray  # (3, 3) rows = true class, columns = predicted
    accuracy: float
    macro_f1: float
    precision: np.ndarray  # (3,)
    recall: np.ndarray  # (3,)
    f1: np.ndarray  # (3,)
    n: int

    def as_dict(self) -> dict:
        """Flat JSON-ready form (per-class values keyed by lower-case class name)."""
        out = {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n, "confusion": self.confusion.tolist()}
        for i, c in enumerate(CLASS_NAMES):
            out[f"precision_{c.lower()}"] = float(self.precision[i])
            out[f"recall_{c.lower()}"] = float(self.recall[i])
            out[f"f1_{c.lower()}"] = float(self.f1[i])
        return out


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int = 3) -> np.ndarray:
    """(k, k) int64 counts: row = true class, column = predicted class (one bincount)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def score(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> Scores:
    """Macro-F1 over all three classes; a class never predicted (or absent) scores 0, as in sklearn's zero_division=0."""
    cm = confusion_matrix(y_true, y_pred)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = int(cm.sum())
    accuracy = float(tp.sum() / n) if n else 0.0
    return Scores(name, cm, accuracy, float(f1.mean()), precision, recall, f1, n)


def comparison_table(rows: list[Scores]) -> str:
    """Plain-text table: accuracy, macro-F1 and per-class precision/recall of each predictor."""
    head = f"{'model':<14}{'accuracy':>9}{'macro-F1':>10}" + "".join(f"{'P/R ' + c:>16}" for c in CLASS_NAMES)
    lines = [head, "-" * len(head)]
    for s in rows:
        pr = "".join(f"{f'{p:.3f}/{r:.3f}':>16}" for p, r in zip(s.precision, s.recall))
        lines.append(f"{s.name:<14}{s.accuracy:>9.3f}{s.macro_f1:>10.3f}{pr}")
    return "\n".join(lines)


def confusion_text(s: Scores) -> str:
    """The confusion matrix of ``s`` as plain text with class names."""
    width = max(9, len(str(int(s.confusion.max()))) + 2)
    lines = [f"Confusion matrix ({s.name}; rows = true, columns = predicted)"]
    lines.append(" " * 9 + "".join(f"{c:>{width}}" for c in CLASS_NAMES))
    for i, c in enumerate(CLASS_NAMES):
        lines.append(f"{c:<9}" + "".join(f"{int(v):>{width}}" for v in s.confusion[i]))
    return "\n".join(lines)


def save_confusion_png(s: Scores, path: Path) -> Path:
    """Save the confusion matrix of ``s`` as a PNG at ``path`` (matplotlib, no display); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    ax.imshow(s.confusion, cmap="Blues")
    ax.set_xticks(range(3), CLASS_NAMES)
    ax.set_yticks(range(3), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{s.name}: acc {s.accuracy:.3f}, macro-F1 {s.macro_f1:.3f}", fontsize=9)
    top = s.confusion.max() or 1
    for i in range(3):
        for j in range(3):
            v = int(s.confusion[i, j])
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
