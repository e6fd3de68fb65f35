"""The verdict against each baseline, read off the interval of the paired difference model - baseline.

* "beats X": the whole interval is above zero.
* "worse than X": the whole interval is below zero.
* "not distinguishable from X": the interval holds zero, so this test set cannot tell
  the two apart; it does not say they are equal. Also given, whatever the interval,
  when the test set holds fewer than ``MIN_BLOCKS`` blocks: with so few independent
  stretches the bootstrap's spread is itself too uncertain to trust.

The multiple-comparison decision. With a 95 % interval per baseline, a model no better
than a baseline still "beats" it about 2.5 % of the time (one tail of the interval), and
with m baselines the chance of at least one false "beats" grows to about m x 2.5 %. The
verdicts are one family of m statements, so each is read off an interval at the
family-wise level ``1 - (1 - level) / m`` (Bonferroni 1936; Dunn 1961, "Multiple
comparisons among means", JASA 56): with level 0.95 and three baselines, 98.33 %
intervals, so the chance that any of the three verdicts is a false "beats" or a false
"worse" stays at most 5 % (at most 2.5 % for a false "beats"). Scores keep their 95 %
intervals; only the paired differences, which decide, are widened (``bonferroni_level``,
used by ``assess``). Bonferroni needs no assumption about how the comparisons depend on
each other (they share the model and the test set); it is conservative when they are
strongly dependent, which costs a little power, never a false claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.ml_engine.training_orchestrator.evaluation.bootstrap import Comparison, Interval

BEATS = "beats"
NOT_DISTINGUISHABLE = "not_distinguishable"
WORSE = "worse"
# Signed code for MLflow metrics and sorting: +1 beats, 0 not distinguishable, -1 worse.
CODES = {BEATS: 1, NOT_DISTINGUISHABLE: 0, WORSE: -1}
PHRASES = {BEATS: "beats", NOT_DISTINGUISHABLE: "not distinguishable from", WORSE: "worse than"}
MIN_BLOCKS = 8
DEFAULT_METRIC = "macro_f1"


@dataclass(frozen=True)
class Verdict:
    """The verdict against one baseline: beats, not distinguishable or worse, with the interval it rests on."""
    baseline: str
    outcome: str  # BEATS | NOT_DISTINGUISHABLE | WORSE
    metric: str
    diff: Interval  # model - baseline
    reason: str = ""  # set when the outcome is forced by too few blocks
    level: float | None = None  # two-sided coverage of ``diff`` (the comparison's difference level)

    @property
    def code(self) -> int:
        """+1 beats, 0 not distinguishable, -1 worse (logged as ``verdict_<baseline>_code``)."""
        return CODES[self.outcome]

    def text(self) -> str:
        """E.g. "beats persistence (macro-F1 +0.041, 98.3 % interval +0.012 .. +0.070)"."""
        d = self.diff
        label = self.metric.replace("macro_f1", "macro-F1")
        tail = f"; {self.reason}" if self.reason else ""
        return f"{PHRASES[self.outcome]} {self.baseline} ({label} {d.estimate:+.3f}, {_interval_name(self.level)} {d.low:+.3f} .. {d.high:+.3f}{tail})"


def _interval_name(level: float | None) -> str:
    return "interval" if level is None else f"{percent(level)} interval"


def percent(level: float) -> str:
    """0.95 -> "95 %", 0.98333 -> "98.3 %" (three significant digits)."""
    return f"{level * 100:.3g} %"


def bonferroni_level(level: float, comparisons: int) -> float:
    """Two-sided level of each of ``comparisons`` intervals so that all hold together with
    probability >= ``level``: ``1 - (1 - level) / comparisons`` (Bonferroni). 0.95, 3 -> 0.98333.

    Raises:
        ValueError: level not in (0, 1) or fewer than one comparison.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if comparisons < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons}")
    return 1 - (1 - level) / comparisons


def judge(diff: Interval) -> str:
    """BEATS when ``diff.low > 0``, WORSE when ``diff.high < 0``, else NOT_DISTINGUISHABLE."""
    if diff.low > 0:
        return BEATS
    if diff.high < 0:
        return WORSE
    return NOT_DISTINGUISHABLE


def verdicts(comparison: Comparison, metric: str = DEFAULT_METRIC, min_blocks: float = MIN_BLOCKS) -> dict[str, Verdict]:
    """Baseline name -> verdict on ``metric``, in the comparison's baseline order.

    Raises:
        KeyError: when the comparison has no intervals for ``metric``.
    """
    out: dict[str, Verdict] = {}
    for name, by_metric in comparison.diffs.items():
        diff = by_metric[metric]
        if comparison.n_blocks < min_blocks:
            reason = f"only {comparison.n_blocks:.1f} blocks of {comparison.block} samples in the test set, need {min_blocks:g}"
            out[name] = Verdict(name, NOT_DISTINGUISHABLE, metric, diff, reason, comparison.difference_level)
        else:
            out[name] = Verdict(name, judge(diff), metric, diff, level=comparison.difference_level)
    return out


def summary_line(model_name: str, estimate: Interval, found: dict[str, Verdict]) -> str:
    """One line for the console, e.g. "Model macro-F1 0.548 [0.521, 0.575]: beats majority; not distinguishable from logreg"."""
    head = f"{model_name.capitalize()} macro-F1 {estimate.estimate:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
    groups = []
    for outcome in (BEATS, NOT_DISTINGUISHABLE, WORSE):
        names = [v.baseline for v in found.values() if v.outcome == outcome]
        if names:
            groups.append(f"{PHRASES[outcome]} {', '.join(names)}")
    return f"{head}: {'; '.join(groups) if groups else 'no baselines'}"


def persistence_warning(found: dict[str, Verdict], baseline: str = "persistence") -> str | None:
    """The warning for the console and the run description when the model does not beat ``baseline``; None when it does."""
    v = found.get(baseline)
    if v is None or v.outcome == BEATS:
        return None
    how = "scores below" if v.outcome == WORSE else "cannot be told apart from"
    label = v.metric.replace("macro_f1", "macro-F1")
    return (
        f"WARNING: the model {how} the {baseline} baseline on {label} (difference {v.diff.estimate:+.3f}, "
        f"{_interval_name(v.level)} {v.diff.low:+.3f} .. {v.diff.high:+.3f}{'; ' + v.reason if v.reason else ''}). "
        f"{baseline.capitalize()} only says the price keeps moving as it just did; a model that does not beat it "
        "has shown no skill of its own: do not trade on it. Collect more data, evaluate with --folds 5, "
        "or revisit the features and the horizon."
    )
