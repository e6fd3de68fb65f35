"""Which threshold and tolerance the training data's labels were made with, and which the baseline uses.

Each labelled file records its labels' provenance (``backend.contracts.labels``): per
horizon, the settings (threshold %, tolerance s) its labels came from, ``None`` for
labels made before provenance was recorded. Training must not silently mix labels of
different thresholds (a 0.02 % UP and a 0.05 % UP are different classes), and the
persistence baseline must classify past moves with the threshold the labels used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from backend.contracts.labels import DEFAULT_THRESHOLD_PCT, DEFAULT_TOLERANCE_S, LabelSetting
from backend.ml_engine.training_orchestrator.errors import TrainingDataError

ALLOW_MIXED_FLAG = "--allow-mixed-label-thresholds"
LABELLER_SCRIPT = "preprocessing_add_future_labels_parquet.py"


@dataclass
class LabelSettingChoice:
    """``setting``: what the persistence baseline uses; ``stored``: every setting found in
    the labels (None = unknown); ``notes``: warnings for the user, one line each."""

    setting: LabelSetting
    stored: frozenset
    notes: list[str] = field(default_factory=list)

    def facts(self) -> dict:
        """Flat values for the run's parameters."""
        known = sorted(s for s in self.stored if s is not None)
        return {
            "label_thresholds_pct": ",".join(f"{s.threshold_pct:g}" for s in known) or "unknown",
            "label_tolerances_s": ",".join(f"{s.tolerance_s:g}" for s in known) or "unknown",
            "label_provenance_unknown": None in self.stored,
            "baseline_threshold_pct": self.setting.threshold_pct,
            "baseline_tolerance_s": self.setting.tolerance_s,
        }


def choose_label_setting(
    per_file: list[frozenset],
    horizon_s: int,
    threshold_pct: float | None,
    tolerance_s: float | None,
    *,
    allow_mixed: bool = False,
) -> LabelSettingChoice:
    """Check the labels' settings at ``horizon_s`` and pick the baseline's.

    ``per_file``: for each file holding labels at the horizon, its settings (None =
    unknown). ``threshold_pct`` / ``tolerance_s``: what the user passed, None if
    nothing. Raises ``TrainingDataError`` when the known thresholds differ and
    ``allow_mixed`` is False. A passed value that differs from the single stored one
    is used as asked, with a note saying so.
    """
    counts: Counter = Counter(s for settings in per_file for s in settings)
    known = sorted(s for s in counts if s is not None)
    thresholds = sorted({s.threshold_pct for s in known})
    unknown_files = sum(1 for settings in per_file if None in settings)
    notes: list[str] = []
    if len(thresholds) > 1:
        files_at = Counter()
        for settings in per_file:
            for t in {s.threshold_pct for s in settings if s is not None}:
                files_at[t] += 1
        listing = ", ".join(f"±{t:g}% ({files_at[t]} files)" for t in thresholds)
        if not allow_mixed:
            raise TrainingDataError(
                f"Labels of the {horizon_s}s horizon were made with different thresholds: {listing}.\n"
                f"A sample that is UP at one threshold is NEUTRAL at another, so they are not one target. "
                f"Re-label the range with one threshold (python {LABELLER_SCRIPT} --threshold T), "
                f"or pass {ALLOW_MIXED_FLAG} to train on them anyway."
            )
        notes.append(f"labels mix thresholds {listing} ({ALLOW_MIXED_FLAG})")
    tolerances = sorted({s.tolerance_s for s in known})
    if len(tolerances) > 1:
        notes.append(f"labels were made with different tolerances: {', '.join(f'{t:g} s' for t in tolerances)}")
    if unknown_files:
        notes.append(
            f"{unknown_files} file(s) hold {horizon_s}s labels made before the labeller recorded its threshold "
            f"(unknown settings); re-run python {LABELLER_SCRIPT} to record them"
        )

    # The most common known setting is what the labels mostly mean; the labeller's defaults otherwise.
    common = max(known, key=lambda s: (counts[s], s)) if known else None
    if threshold_pct is None:
        if common is not None:
            threshold = common.threshold_pct
        else:
            threshold = DEFAULT_THRESHOLD_PCT
            if unknown_files:
                notes.append(f"the persistence baseline assumes the labeller's default threshold ±{threshold:g}%")
    else:
        threshold = float(threshold_pct)
        if len(thresholds) == 1 and threshold != thresholds[0]:
            notes.append(
                f"--threshold {threshold:g} differs from the ±{thresholds[0]:g}% the labels were made with; "
                f"the persistence baseline uses {threshold:g} as asked, so it does not classify as the labels do"
            )
    if tolerance_s is None:
        tolerance = common.tolerance_s if common is not None else DEFAULT_TOLERANCE_S
    else:
        tolerance = float(tolerance_s)
    return LabelSettingChoice(LabelSetting(threshold, tolerance), frozenset(counts), notes)
