"""One training run from store to tracked model: load -> folds -> per fold (normalise -> train ->
predict, baselines) -> assess -> log.

Folds (``DataConfig.folds``, ``sequences.walk_forward_splits``): K consecutive test windows
in time, each with a purged train/val split before it (a purge gap of one sequence span
plus the horizon between splits, so no training window overlaps a test label's future).
K=1 is the single chronological 70/15/15 split. Each fold starts from the raw features,
fits its normaliser on the rows its own training sequences read, trains a fresh model
(same seed) and refits the baselines on its own training rows. The model logged to
MLflow is the last fold's (trained on the most data, with the normaliser of its rows).

Evaluation (``evaluation.assess``): every fold's test predictions of the model and the
baselines go in; out come accuracy and macro-F1 per fold and pooled with 95 %
block-bootstrap intervals, the paired differences model - baseline at the Bonferroni
level over the baselines, a verdict per baseline ("beats", "not distinguishable from",
"worse than"), per-class precision/recall, the confusion matrix and calibration.
Progress lines go through the ``out`` callback; nothing here prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from backend.contracts.labels import DEFAULT_THRESHOLD_PCT, DEFAULT_TOLERANCE_S, LabelSetting
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from backend.ml_engine.feature_store.feature_store import FeatureStore
from backend.ml_engine.training_orchestrator import baselines
from backend.ml_engine.training_orchestrator.config import DataConfig, TrainConfig
from backend.ml_engine.training_orchestrator.data import LoadedData, load_training_data
from backend.ml_engine.training_orchestrator.evaluate import CLASS_NAMES, Scores, save_confusion_png, score
from backend.ml_engine.training_orchestrator.evaluation import report as eval_report
from backend.ml_engine.training_orchestrator.evaluation.assess import Assessment, FoldOutcome, assess
from backend.ml_engine.training_orchestrator.evaluation.calibration import softmax
from backend.ml_engine.training_orchestrator.sequences import (
    Normalizer,
    Split,
    apply_normalizer_inplace,
    find_segments,
    fit_normalizer,
    gather_windows,
    walk_forward_splits,
)
from backend.ml_engine.training_orchestrator.tracking import TrackingTarget, open_experiment


@dataclass
class PreparedData:
    """Loaded data, its walk-forward folds, and the features normalised in place for one fold.

    ``folds``: purged splits in time order (one for ``folds=1``). ``fold``: the fold whose
    training statistics the features are normalised with now (``normalizer``); ``use_fold``
    moves to another. ``raw_features``: an untouched copy of the features, kept only when
    there are several folds (each fold re-normalises from it; one more feature matrix in memory).
    """

    data: LoadedData
    folds: list[Split]
    normalizer: Normalizer
    example_window: np.ndarray  # (2, L, F) raw features of the last fold's first test sequences
    content_hash: str
    intervals_ms: dict[str, int]
    segments: int
    raw_features: np.ndarray | None = None  # (n, F) float32, only with several folds
    fold: int = 0

    @property
    def split(self) -> Split:
        """The split of the fold the features are normalised for now."""
        return self.folds[self.fold]


@dataclass
class RunSummary:
    """What a run produced: pooled test scores of the model and the baselines (all folds' test
    windows together), the assessment (intervals, verdicts), the last fold's best and run
    epochs, the MLflow run and model (None without tracking), the printed report and the dataset facts."""

    model_scores: Scores
    baseline_scores: dict[str, Scores]
    best_epoch: int
    epochs_run: int
    assessment: Assessment | None = None
    run_id: str | None = None
    model_uri: str | None = None
    report: str = ""
    facts: dict = field(default_factory=dict)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def prepare(store: FeatureStore, dcfg: DataConfig) -> PreparedData:
    """Load, segment, cut the walk-forward folds (purged) and normalise for the first fold.

    Raises ``TrainingDataError`` with the guide's messages (and, with several folds, one
    naming the fold that is too small).
    """
    data = load_training_data(store, dcfg)
    segments = find_segments(data, dcfg.gap_factor)
    folds = walk_forward_splits(data, dcfg, segments)
    content_hash = data.content_hash()
    # Two rows, not one: torch.export (MLflow's pt2 format) would pin a batch size of 1 as a constant.
    example = gather_windows(data.features, folds[-1].test[:2], dcfg.sequence_length).copy()
    raw = data.features.copy() if len(folds) > 1 else None
    norm = fit_normalizer(data.features, folds[0].train_rows_mask, dcfg.clip)
    apply_normalizer_inplace(data.features, norm)
    return PreparedData(data, folds, norm, example, content_hash, segments.interval_ms, segments.count, raw)


def use_fold(p: PreparedData, k: int, clip: float) -> Normalizer:
    """Normalise ``p.data.features`` in place for fold ``k``: raw values back, then the statistics of
    the rows fold ``k``'s training sequences read (no validation or test row). Returns the normaliser."""
    if k == p.fold:
        return p.normalizer
    if p.raw_features is None:
        raise ValueError("use_fold needs the raw features, which prepare keeps only with several folds")
    np.copyto(p.data.features, p.raw_features)
    p.normalizer = fit_normalizer(p.data.features, p.folds[k].train_rows_mask, clip)
    apply_normalizer_inplace(p.data.features, p.normalizer)
    p.fold = k
    return p.normalizer


def dataset_facts(p: PreparedData, dcfg: DataConfig) -> dict:
    """Flat facts about the data and the folds, logged as MLflow parameters.

    ``rows_train`` / ``rows_val`` / ``train_end`` / ``val_start`` are the last fold's (the logged
    model's); ``rows_test`` / ``test_start`` / ``class_balance_test`` cover all test windows.
    """
    d, last = p.data, p.folds[-1]
    tests = np.concatenate([f.test for f in p.folds])
    label_facts = d.label_setting.facts() if d.label_setting is not None else {}
    out = {
        **label_facts,
        "data_start": _iso(int(d.timestamps_ms.min())),
        "data_end": _iso(int(d.timestamps_ms.max())),
        "symbols": ",".join(d.symbols),
        "rows": d.n,
        "duplicates_dropped": d.duplicates_dropped,
        "label_coverage": d.facts.get("label_coverage"),
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "content_sha256": p.content_hash,
        "segments": p.segments,
        "sampling_interval_s": ",".join(f"{k}={v / 1000:g}" for k, v in p.intervals_ms.items()),
        "folds": len(p.folds),
        "train_window": "expanding" if dcfg.window_s is None else f"rolling {dcfg.window_s:g} s",
        "rows_train": int(last.train.size),
        "rows_val": int(last.val.size),
        "rows_test": int(tests.size),
        "train_end": _iso(last.train_end_ms),
        "val_start": _iso(last.val_start_ms),
        "test_start": _iso(p.folds[0].test_start_ms),
        "purge_s": last.purge_ms / 1000,
        "class_balance_train": _balance(d.labels[last.train]),
        "class_balance_test": _balance(d.labels[tests]),
    }
    if len(p.folds) > 1:
        out["fold_sizes"] = "; ".join(
            f"{k + 1}: {f.train.size}/{f.val.size}/{f.test.size}" for k, f in enumerate(p.folds)
        )
    return out


def _balance(labels: np.ndarray) -> str:
    counts = np.bincount(labels.astype(np.int64), minlength=3)
    total = max(int(counts.sum()), 1)
    return " ".join(f"{c}={n / total:.1%}" for c, n in zip(CLASS_NAMES, counts))


def fold_line(p: PreparedData, k: int) -> str:
    """One console line about fold ``k``: its sizes and its test window."""
    f, t = p.folds[k], p.data.timestamps_ms
    return (
        f"Fold {k + 1}/{len(p.folds)}: train {f.train.size:,} / val {f.val.size:,} / test {f.test.size:,} sequences; "
        f"test window {_iso(int(t[f.test].min()))} .. {_iso(int(t[f.test].max()))}"
    )


def baseline_setting(p: PreparedData, dcfg: DataConfig) -> LabelSetting:
    """The threshold and tolerance the persistence baseline uses (from the labels unless given)."""
    if p.data.label_setting is not None:
        return p.data.label_setting.setting
    return LabelSetting(
        DEFAULT_THRESHOLD_PCT if dcfg.threshold_pct is None else dcfg.threshold_pct,
        DEFAULT_TOLERANCE_S if dcfg.tolerance_s is None else dcfg.tolerance_s,
    )


def baseline_predictions(
    store: FeatureStore | None, p: PreparedData, split: Split, setting: LabelSetting, dcfg: DataConfig, tcfg: TrainConfig
) -> tuple[dict[str, np.ndarray], dict]:
    """(n_test,) class predictions of the majority, persistence and logistic-regression baselines on
    ``split.test``, each fitted on ``split``'s training rows only (features normalised for this
    split's fold), and where persistence found its past prices."""
    d, s = p.data, split
    maj, cls = baselines.majority_predictions(d.labels[s.train], s.test.size)
    t, c, mid = d.timestamps_ms[s.test], d.symbol_codes[s.test], d.mid_price[s.test]
    tape = None
    if store is not None:
        look_back = int((dcfg.horizon_s + setting.tolerance_s) * 1000) + 1
        tape = baselines.read_tape(store, d.symbols, int(t.min()) - look_back, int(t.max()))
    pers, info = baselines.persistence_predictions(
        t, c, mid, dcfg.horizon_s, setting.threshold_pct, setting.tolerance_s, tape=tape, samples=(d.timestamps_ms, d.symbol_codes, d.mid_price)
    )
    lr = baselines.logreg_predictions(d.features[s.train], d.labels[s.train], d.features[s.test], tcfg.seed, tcfg.logreg_max_rows)
    return {"majority": maj, "persistence": pers, "logreg": lr}, {"majority_class": CLASS_NAMES[cls], **info}


def build_report(a: Assessment, facts: dict, dcfg: DataConfig, threshold_pct: float) -> str:
    """The plain-text report printed after training and saved as ``report.txt``: the run's
    settings, then the evaluation (``evaluation.report.console_text``)."""
    folds = int(facts.get("folds", 1))
    where = f"{folds} walk-forward folds ({facts['train_window']} training)" if folds > 1 else "one chronological split"
    lines = [
        f"Test: {facts['rows_test']} sequences in {where}, end times {facts['test_start']} .. {facts['data_end']}",
        f"Horizon {dcfg.horizon_s}s, threshold {threshold_pct:g}%, sequence length {dcfg.sequence_length}, "
        f"symbols {facts['symbols']}",
        "",
        eval_report.console_text(a),
    ]
    return "\n".join(lines)


def train_and_track(
    store: FeatureStore,
    dcfg: DataConfig,
    tcfg: TrainConfig,
    target: TrackingTarget | None,
    experiment: str,
    register_model: str | None = None,
    out: Callable[[str], None] = print,
    progress: Callable | None = None,
) -> RunSummary:
    """Train on ``store`` as configured (one model per walk-forward fold), assess, and with a
    ``target`` log the run to MLflow.

    ``out`` receives one progress line at a time (data, folds, per-epoch metrics);
    ``progress`` wraps batch iterables (e.g. a tqdm factory). Raises
    ``TrainingDataError`` for data that cannot train a model, ``TrackingError`` when
    MLflow cannot be used, ``ValueError`` for an unusable device.
    """
    t_start = time.perf_counter()
    p = prepare(store, dcfg)
    t_prepared = time.perf_counter() - t_start
    # torch is imported only now so that data problems are reported without its start-up cost.
    import torch

    from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier, NormalizedModel
    from backend.ml_engine.training_orchestrator.train import Trainer, seed_everything

    facts = dataset_facts(p, dcfg)
    K = len(p.folds)
    out(
        f"Loaded {facts['rows']:,} samples of {facts['symbols']} ({facts['data_start']} .. {facts['data_end']}), "
        f"label coverage {facts['label_coverage']:.1%}, {facts['segments']} gap-free segments"
    )
    if K == 1:
        out(
            f"Sequences: train {facts['rows_train']:,} / val {facts['rows_val']:,} / test {facts['rows_test']:,} "
            f"(purge {facts['purge_s']:g} s between splits; train classes {facts['class_balance_train']})"
        )
    else:
        out(
            f"Walk-forward: {K} folds, {facts['train_window']} training, purge {facts['purge_s']:g} s between splits; "
            f"each fold trains a new model on what lies before its test window"
        )
    setting = baseline_setting(p, dcfg)
    out(f"Labels: {facts.get('label_thresholds_pct', 'unknown')} % threshold; persistence baseline uses {setting.describe()}")
    for note in p.data.label_setting.notes if p.data.label_setting is not None else []:
        out(f"WARNING: {note}")

    mlflow = None
    experiment_id = None
    if target is not None:
        experiment_id = open_experiment(target, experiment)
        import mlflow  # noqa: F811  (imported after the URI checks so data errors stay fast)

        out(f"MLflow: {target.shown} (experiment {experiment!r}, artifacts in {target.artifact_location})")

    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    labels = np.where(p.data.labels < 0, 0, p.data.labels)
    # Where the time goes (bench/eval_bench.py reads these): prepare (load, folds, first
    # normalisation), folds (re-normalising per fold), train (fit + predict), baselines, evaluation.
    seconds = {"prepare": t_prepared, "folds": 0.0, "train": 0.0, "baselines": 0.0, "evaluation": 0.0}
    outcomes: list[FoldOutcome] = []
    base_info: dict = {}

    with tempfile.TemporaryDirectory(prefix="lob_train_") as tmp_name:
        tmp = Path(tmp_name)
        with tracked_run(mlflow, experiment_id) as run:
            if mlflow:
                mlflow.log_params({**dcfg.as_params(), **tcfg.as_params()})
                mlflow.log_params({f"data_{k}": v for k, v in facts.items()})
                mlflow.set_tags({"feature_schema_version": str(FEATURE_SCHEMA_VERSION), "content_sha256": p.content_hash})

            for k, split in enumerate(p.folds):
                # Fold bookkeeping: raw features back, normaliser fitted on this fold's training rows.
                t0 = time.perf_counter()
                use_fold(p, k, dcfg.clip)
                seconds["folds"] += time.perf_counter() - t0
                if K > 1:
                    out(fold_line(p, k))

                # A fresh model per fold, from the same seed: fold k knows nothing of later data.
                t0 = time.perf_counter()
                seed_everything(tcfg.seed)
                core = LOBSequenceClassifier(len(FEATURE_NAMES), tcfg.conv_channels, tcfg.hidden_size, tcfg.dropout)
                trainer = Trainer(core, p.data.features, labels, dcfg.sequence_length, tcfg)
                if k == 0:
                    out(f"Training on {trainer.device}" + (f" with {trainer.amp_dtype} autocast" if trainer.amp_dtype else ""))
                on_epoch = _epoch_logger(out, mlflow, tcfg.epochs, k, K)
                result = trainer.fit(split.train, split.val, on_epoch, tmp / "checkpoint" / "best.pt", progress)
                logits = trainer.predict_logits(split.test)
                seconds["train"] += time.perf_counter() - t0

                t0 = time.perf_counter()
                preds, info = baseline_predictions(store, p, split, setting, dcfg, tcfg)
                seconds["baselines"] += time.perf_counter() - t0
                for key, v in info.items():  # counts add up over folds; the majority class is listed per fold
                    base_info[key] = v if key not in base_info else (base_info[key] + v if isinstance(v, int) else f"{base_info[key]},{v}")
                d = p.data
                outcomes.append(
                    FoldOutcome(
                        d.labels[split.test],
                        {"model": logits.argmax(axis=1), **preds},
                        d.timestamps_ms[split.test],
                        d.symbol_codes[split.test],
                        softmax(logits),
                    )
                )
                if mlflow and K > 1:
                    mlflow.log_metrics({f"fold_{k + 1}_best_epoch": result.best_epoch, f"fold_{k + 1}_best_val_macro_f1": result.best_val_macro_f1})

            t0 = time.perf_counter()
            assessment = assess(outcomes, dependence_ms=p.folds[0].purge_ms, seed=tcfg.seed)
            facts.update({"majority_class" if key == "majority_class" else f"persistence_{key}": v for key, v in base_info.items()})
            report = build_report(assessment, facts, dcfg, setting.threshold_pct)
            seconds["evaluation"] += time.perf_counter() - t0

            y = np.concatenate([o.y_true for o in outcomes])
            pooled = {name: np.concatenate([o.predictions[name] for o in outcomes]) for name in outcomes[0].predictions}
            model_scores = score("model", y, pooled.pop("model"))
            base = {name: score(name, y, pred) for name, pred in pooled.items()}
            summary = RunSummary(model_scores, base, result.best_epoch, len(result.history), assessment, report=report, facts=facts)

            if mlflow:
                _log_results(mlflow, tmp, summary, p, dcfg, tcfg, result, register_model, NormalizedModel, seconds)
                summary.run_id = run.info.run_id
                summary.model_uri = summary.facts.get("model_uri")
    summary.facts["seconds"] = round(time.perf_counter() - t_start, 1)
    summary.facts.update({f"seconds_{k}": round(v, 3) for k, v in seconds.items()})
    return summary


def _epoch_logger(out: Callable[[str], None], mlflow, epochs: int, k: int, K: int) -> Callable:
    """The per-epoch callback of fold ``k`` of ``K``: one console line and, with MLflow, the epoch's metrics.

    The plain names (``train_loss``, ``val_macro_f1`` ...) are the logged model's curves: the only
    fold's, or the last fold's with several; with several folds every fold's are also logged as
    ``fold_<k>_<name>`` (1-based k).
    """
    suffix = f"  fold {k + 1}/{K}" if K > 1 else ""

    def on_epoch(stats, improved):
        out(
            f"epoch {stats.epoch:>3}/{epochs}  train_loss {stats.train_loss:.4f}  val_loss {stats.val_loss:.4f}  "
            f"val_acc {stats.val_accuracy:.3f}  val_macro_f1 {stats.val_macro_f1:.3f}  "
            f"{stats.samples_per_s:,.0f} samples/s{'  *best' if improved else ''}{suffix}"
        )
        if mlflow:
            values = {
                "train_loss": stats.train_loss,
                "val_loss": stats.val_loss,
                "val_accuracy": stats.val_accuracy,
                "val_macro_f1": stats.val_macro_f1,
                "train_samples_per_s": stats.samples_per_s,
            }
            logged = {f"fold_{k + 1}_{n}": v for n, v in values.items()} if K > 1 else {}
            if k == K - 1:
                logged.update(values)
            mlflow.log_metrics(logged, step=stats.epoch)

    return on_epoch


@contextlib.contextmanager
def tracked_run(mlflow, experiment_id: str | None):
    """An MLflow run around the block (nothing when ``mlflow`` is None), ended with the status it earned.

    FINISHED when the block completes; KILLED when it is interrupted (``KeyboardInterrupt``:
    SIGINT, or SIGTERM through the training app's handler), and then the run id is set on the
    exception as ``mlflow_run_id`` so the app can say which run it marked; FAILED for any
    other exception. (MLflow's own context manager records FAILED for an interrupt too.)
    """
    if mlflow is None:
        yield None
        return
    run = mlflow.start_run(experiment_id=experiment_id)
    try:
        yield run
    except KeyboardInterrupt as exc:
        mlflow.end_run(status="KILLED")
        exc.mlflow_run_id = run.info.run_id
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run()


def _log_results(mlflow, tmp: Path, summary: RunSummary, p: PreparedData, dcfg, tcfg, result, register_model, NormalizedModel, seconds) -> None:
    import torch
    from mlflow.models import infer_signature

    m, base, a = summary.model_scores, summary.baseline_scores, summary.assessment
    metrics = {"test_accuracy": m.accuracy, "test_macro_f1": m.macro_f1, "best_epoch": result.best_epoch, "best_val_macro_f1": result.best_val_macro_f1}
    for i, c in enumerate(CLASS_NAMES):
        metrics[f"test_precision_{c.lower()}"] = float(m.precision[i])
        metrics[f"test_recall_{c.lower()}"] = float(m.recall[i])
    for name, s in base.items():
        metrics[f"baseline_{name}_macro_f1"] = s.macro_f1
        metrics[f"baseline_{name}_accuracy"] = s.accuracy
    art = tmp / "artifacts"
    art.mkdir()
    t0 = time.perf_counter()
    plots = eval_report.save_plots(a, art)
    (art / "evaluation.md").write_text(eval_report.markdown(a, [str(x) for x in plots]))
    seconds["evaluation"] += time.perf_counter() - t0
    metrics.update(eval_report.mlflow_metrics(a))
    metrics.update({f"time_{k}_s": v for k, v in seconds.items()})
    mlflow.log_metrics(metrics)
    mlflow.set_tags(eval_report.mlflow_tags(a))
    save_confusion_png(m, art / "confusion_matrix.png")
    (art / "normalization.json").write_text(json.dumps(p.normalizer.to_dict(FEATURE_NAMES), indent=1))
    (art / "features.json").write_text(json.dumps({"feature_schema_version": FEATURE_SCHEMA_VERSION, "features": list(FEATURE_NAMES)}, indent=1))
    (art / "report.txt").write_text(summary.report + "\n")
    report_json = {
        "model": m.as_dict(),
        "baselines": {k: v.as_dict() for k, v in base.items()},
        "evaluation": eval_report.mlflow_metrics(a),
        "verdicts": eval_report.mlflow_tags(a),
        "dataset": summary.facts,
        "history": [vars(h) for h in result.history],
        "data_config": dcfg.as_params(),
        "train_config": tcfg.as_params(),
    }
    (art / "report.json").write_text(json.dumps(report_json, indent=1, default=str))
    mlflow.log_artifacts(str(art))
    mlflow.log_artifact(str(tmp / "checkpoint" / "best.pt"), artifact_path="checkpoint")

    exported = NormalizedModel(result.model, p.normalizer.mean, p.normalizer.std, p.normalizer.clip).to("cpu").eval()
    with torch.inference_mode():
        example_out = exported(torch.from_numpy(p.example_window)).numpy()
    signature = infer_signature(p.example_window, example_out)
    torch_version = torch.__version__.split("+")[0]
    with warnings.catch_warnings():
        # torch.export notes that the LSTM's flat weights are plain attributes; harmless for inference.
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        logging.getLogger("torch._export").setLevel(logging.ERROR)
        info = _log_model(mlflow, exported, signature, p.example_window, register_model, torch_version)
    summary.facts["model_uri"] = info.model_uri
    if register_model and getattr(info, "registered_model_version", None) is not None:
        summary.facts["registered_model_version"] = int(info.registered_model_version)


def _log_model(mlflow, exported, signature, example, register_model, torch_version):
    return mlflow.pytorch.log_model(
        exported,
        name="model",
        signature=signature,
        input_example=example,
        registered_model_name=register_model,
        # Explicit requirements skip MLflow's slow import-tracing subprocess.
        pip_requirements=[f"torch=={torch_version}", f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"],
    )
