"""Rendering of an ``Assessment``: console text, ``evaluation.md``, plots, and MLflow metric/tag dicts.

Everything here is a pure function of the assessment except ``save_plots``, which
writes PNG files with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np

from backend.contracts.labels import CLASS_NAMES
from backend.ml_engine.training_orchestrator.evaluation.assess import Assessment
from backend.ml_engine.training_orchestrator.evaluation.bootstrap import Interval
from backend.ml_engine.training_orchestrator.evaluation.verdict import PHRASES, percent, summary_line


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _ci(i: Interval, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{i.estimate:{f}} [{i.low:{f}}, {i.high:{f}}]"


def _metric_label(metric: str) -> str:
    return metric.replace("macro_f1", "macro-F1")


def _header(a: Assessment) -> str:
    o = a.overall
    return (
        f"Evaluation: {len(a.folds)} fold{'s' if len(a.folds) > 1 else ''}, {o.n} test sequences, "
        f"{percent(o.level)} intervals from {o.resamples} block-bootstrap resamples, blocks of {o.block} samples "
        f"(>= {a.facts.get('block_factor', 1):g} x {a.dependence_ms / 1000:g} s of sequence span + horizon; {o.n_blocks:.1f} blocks)"
    )


def _levels(a: Assessment) -> str:
    o = a.overall
    m = len(o.diffs)
    return (
        f"Scores: {percent(o.level)} intervals. Verdicts: {percent(o.difference_level)} intervals of the paired difference "
        f"model - baseline (Bonferroni over {m} baseline{'s' if m != 1 else ''}: all {m} verdicts hold together at {percent(o.level)})."
    )


def fold_table(a: Assessment) -> str:
    """Per fold and pooled: test window, n, the model's and each baseline's verdict metric with intervals."""
    names = list(a.overall.scores)
    head = f"{'fold':<5}{'test window (UTC)':<36}{'n':>7}" + "".join(f"{n + ' ' + _metric_label(a.metric):>27}" for n in names)
    lines = [head, "-" * len(head)]
    for f in a.folds:
        window = f"{_utc(f.start_ms)} .. {_utc(f.end_ms)}"
        cells = "".join(f"{_ci(f.comparison.scores[n][a.metric]):>27}" for n in names)
        lines.append(f"{f.index + 1:<5}{window:<36}{f.comparison.n:>7}{cells}")
    if len(a.folds) > 1:
        cells = "".join(f"{_ci(a.overall.scores[n][a.metric]):>27}" for n in names)
        lines.append(f"{'all':<5}{'':<36}{a.overall.n:>7}{cells}")
    return "\n".join(lines)


def comparison_table(a: Assessment) -> str:
    """Pooled: accuracy and macro-F1 with intervals, model - baseline on the verdict metric, per-class P/R."""
    head = (
        f"{'':<13}{'accuracy':>24}{'macro-F1':>24}{'model - this (' + _metric_label(a.metric) + ', ' + percent(a.overall.difference_level) + ')':>34}"
        + "".join(f"{'P/R ' + c:>14}" for c in CLASS_NAMES)
    )
    lines = [head, "-" * len(head)]
    for name, s in a.overall.scores.items():
        diff = a.overall.diffs.get(name, {}).get(a.metric)
        p, r = a.precision_recall(name)
        pr = "".join(f"{f'{pi:.2f}/{ri:.2f}':>14}" for pi, ri in zip(p, r))
        lines.append(f"{name:<13}{_ci(s['accuracy']):>24}{_ci(s['macro_f1']):>24}{(_ci(diff, True) if diff else ''):>34}{pr}")
    return "\n".join(lines)


def confusion_table(a: Assessment, name: str | None = None) -> str:
    """The confusion matrix of ``name`` (default: the model) as a fixed-width text table, rows true, columns predicted."""
    name = name or a.model
    cm = a.confusion[name]
    width = max(9, len(str(int(cm.max()))) + 2)
    lines = [f"Confusion matrix ({name}, pooled test set; rows = true, columns = predicted)"]
    lines.append(" " * 9 + "".join(f"{c:>{width}}" for c in CLASS_NAMES))
    for i, c in enumerate(CLASS_NAMES):
        lines.append(f"{c:<9}" + "".join(f"{int(v):>{width}}" for v in cm[i]))
    return "\n".join(lines)


def calibration_line(a: Assessment) -> str | None:
    """One console line with the Brier score and expected calibration error, or None without probabilities."""
    if a.brier is None or a.reliability is None:
        return None
    return (
        f"Calibration: Brier score {a.brier:.3f} (0 perfect, 0.667 = always 1/3 each), "
        f"expected calibration error {a.reliability.ece:.3f}"
    )


def console_text(a: Assessment) -> str:
    """The whole report for the terminal."""
    parts = [_header(a), _levels(a), "", fold_table(a), "", comparison_table(a), "", confusion_table(a)]
    cal = calibration_line(a)
    if cal:
        parts += ["", cal]
    parts += ["", summary_line(a.model, a.overall.scores[a.model][a.metric], a.verdicts)]
    parts += [f"  {v.text()}" for v in a.verdicts.values()]
    if a.warning:
        parts += ["", a.warning]
    return "\n".join(parts)


def markdown(a: Assessment, plots: list[str] | None = None) -> str:
    """``evaluation.md``: the same content as tables, plus links to the plot files named in ``plots``."""
    o = a.overall
    names = list(o.scores)
    lv = percent(o.level)
    out = ["# Evaluation", "", _header(a) + ".", "", _levels(a), ""]
    out += ["## Verdict", "", f"**{summary_line(a.model, o.scores[a.model][a.metric], a.verdicts)}**", ""]
    out += [f"- {v.text()}" for v in a.verdicts.values()]
    if a.warning:
        out += ["", f"> {a.warning}"]
    out += ["", "## Pooled test set", "", f"| | accuracy ({lv} interval) | macro-F1 ({lv} interval) | model - this, {_metric_label(a.metric)} ({percent(o.difference_level)} interval) |"]
    out += ["|---|---|---|---|"]
    for name, s in o.scores.items():
        diff = o.diffs.get(name, {}).get(a.metric)
        out.append(f"| {name} | {_ci(s['accuracy'])} | {_ci(s['macro_f1'])} | {_ci(diff, True) if diff else ''} |")
    out += ["", "## Per fold", "", "| fold | test window (UTC) | n | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for f in a.folds:
        cells = " | ".join(_ci(f.comparison.scores[n][a.metric]) for n in names)
        out.append(f"| {f.index + 1} | {_utc(f.start_ms)} .. {_utc(f.end_ms)} | {f.comparison.n} | {cells} |")
    out += ["", f"Cells: {_metric_label(a.metric)} [{lv} interval]."]
    out += ["", "## Per class (pooled)", "", "| | " + " | ".join(f"P {c} | R {c}" for c in CLASS_NAMES) + " |", "|---" * 7 + "|"]
    for name in names:
        p, r = a.precision_recall(name)
        out.append(f"| {name} | " + " | ".join(f"{pi:.3f} | {ri:.3f}" for pi, ri in zip(p, r)) + " |")
    out += ["", "## Confusion matrix", "", "```", confusion_table(a), "```"]
    cal = calibration_line(a)
    if cal:
        out += ["", "## Calibration", "", cal + ".", "", "| confidence bin | mean confidence | accuracy | n |", "|---|---|---|---|"]
        out += [f"| {lo:.1f} .. {hi:.1f} | {c:.3f} | {acc:.3f} | {n} |" for lo, hi, c, acc, n in a.reliability.rows()]
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(out) + "\n"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", name.lower())


def mlflow_metrics(a: Assessment) -> dict[str, float]:
    """Metric name -> value: the model's intervals, each baseline's, each paired difference's, verdict codes.

    Names: ``test_<metric>_ci_low/high`` (model), ``baseline_<b>_<metric>_ci_low/high``,
    ``diff_<b>_ci_low/high`` (the verdict metric), ``diff_<b>_<metric>_ci_low/high`` (every metric),
    ``verdict_<b>_code`` (+1 beats, 0 not distinguishable, -1 worse), ``fold_<k>_test_<metric>`` per fold,
    ``eval_level`` (coverage of the score intervals, 0.95) and ``eval_diff_level`` (coverage of every
    ``diff_*`` interval: the Bonferroni level the verdicts are read at).
    """
    o = a.overall
    out: dict[str, float] = {}
    for m, i in o.scores[a.model].items():
        out[f"test_{m}_ci_low"], out[f"test_{m}_ci_high"] = i.low, i.high
    for b, by_metric in o.diffs.items():
        k = _key(b)
        for m, i in o.scores[b].items():
            out[f"baseline_{k}_{m}_ci_low"], out[f"baseline_{k}_{m}_ci_high"] = i.low, i.high
        for m, i in by_metric.items():
            out[f"diff_{k}_{m}_ci_low"], out[f"diff_{k}_{m}_ci_high"] = i.low, i.high
        out[f"diff_{k}_ci_low"], out[f"diff_{k}_ci_high"] = by_metric[a.metric].low, by_metric[a.metric].high
        out[f"verdict_{k}_code"] = float(a.verdicts[b].code)
    for f in a.folds:
        for m, i in f.comparison.scores[a.model].items():
            out[f"fold_{f.index + 1}_test_{m}"] = i.estimate
    out["eval_level"] = float(o.level)
    out["eval_diff_level"] = float(o.difference_level)
    out["eval_block_samples"] = float(o.block)
    out["eval_blocks"] = float(o.n_blocks)
    if a.brier is not None:
        out["test_brier"] = a.brier
        out["test_ece"] = a.reliability.ece
    return out


def description(a: Assessment) -> str:
    """The run's description (MLflow ``mlflow.note.content``, markdown): the warning first when there
    is one, then the verdict line and one line per baseline with its interval."""
    lines = [f"**{a.warning}**", ""] if a.warning else []
    lines.append(summary_line(a.model, a.overall.scores[a.model][a.metric], a.verdicts))
    lines += [""] + [f"- {v.text()}" for v in a.verdicts.values()]
    lines += ["", f"{len(a.folds)} walk-forward fold(s), {a.overall.n} test sequences; see evaluation.md."]
    return "\n".join(lines)


def mlflow_tags(a: Assessment) -> dict[str, str]:
    """Tag name -> text: ``verdict_<b>`` ("beats", "not distinguishable from", "worse than"),
    ``verdict_summary``, ``evaluation_warning`` when persistence is not beaten, and
    ``mlflow.note.content`` (the run's description in the MLflow UI, see ``description``)."""
    out = {f"verdict_{_key(b)}": PHRASES[v.outcome] for b, v in a.verdicts.items()}
    out["verdict_summary"] = summary_line(a.model, a.overall.scores[a.model][a.metric], a.verdicts)
    if a.warning:
        out["evaluation_warning"] = a.warning
    out["mlflow.note.content"] = description(a)
    return out


def save_plots(a: Assessment, out_dir: Path) -> list[Path]:
    """Write ``folds.png`` (verdict metric per fold and pooled, with interval bars) and, when the
    model's probabilities were given, ``reliability.png``. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    names = list(a.overall.scores)
    groups = [(f"fold {f.index + 1}", f.comparison) for f in a.folds] + ([("all", a.overall)] if len(a.folds) > 1 else [])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(groups) + 2), 3.6), dpi=120)
    for j, name in enumerate(names):
        iv = [c.scores[name][a.metric] for _, c in groups]
        x = np.arange(len(groups)) + (j - (len(names) - 1) / 2) * width
        est = np.array([i.estimate for i in iv])
        err = np.array([[i.estimate - i.low for i in iv], [i.high - i.estimate for i in iv]])
        ax.bar(x, est, width, yerr=np.clip(err, 0, None), capsize=2, label=name)
    ax.set_xticks(np.arange(len(groups)), [g for g, _ in groups])
    ax.set_ylabel(_metric_label(a.metric))
    ax.set_title(f"{_metric_label(a.metric)} per fold, {percent(a.overall.level)} block-bootstrap intervals", fontsize=9)
    ax.legend(fontsize=7, ncols=min(len(names), 4))
    fig.tight_layout()
    path = out_dir / "folds.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    if a.reliability is not None:
        r = a.reliability
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        keep = r.count > 0
        ax.plot(r.confidence[keep], r.accuracy[keep], marker="o", label="model")
        for c, acc, n in zip(r.confidence[keep], r.accuracy[keep], r.count[keep]):
            ax.annotate(str(int(n)), (c, acc), fontsize=6, textcoords="offset points", xytext=(3, -8))
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (probability of the predicted class)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"Reliability: Brier {a.brier:.3f}, ECE {r.ece:.3f}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = out_dir / "reliability.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
