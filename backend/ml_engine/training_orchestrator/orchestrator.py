"""One training run from store to tracked model: load -> split -> normalise -> train -> evaluate -> log.

Metrics (``evaluate``): accuracy, macro-F1 (the unweighted mean of per-class F1,
scikit-learn's ``average="macro"``), per-class precision/recall and the confusion
matrix, for the model and each baseline on the same test split. The split is by time
with a purge gap of one sequence span plus the horizon between splits (see
``sequences.purged_split``), so no training window overlaps a test label's future.
Progress lines go through the ``out`` callback; nothing here prints.
"""

from __future__ import annotations

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
from backend.ml_engine.training_orchestrator.evaluate import (
    CLASS_NAMES,
    Scores,
    comparison_table,
    confusion_text,
    save_confusion_png,
    score,
)
from backend.ml_engine.training_orchestrator.sequences import (
    Normalizer,
    Split,
    apply_normalizer_inplace,
    find_segments,
    fit_normalizer,
    gather_windows,
    purged_split,
)
from backend.ml_engine.training_orchestrator.tracking import TrackingTarget, open_experiment


@dataclass
class PreparedData:
    """Loaded, split and normalised data of one run (features normalised in place with training statistics)."""

    data: LoadedData
    split: Split
    normalizer: Normalizer
    example_window: np.ndarray  # (2, L, F) raw features of the first test sequences
    content_hash: str
    intervals_ms: dict[str, int]
    segments: int


@dataclass
class RunSummary:
    """What a run produced: test scores of the model and the baselines, epochs, the MLflow
    run and model (None without tracking), the printed report and the dataset facts."""

    model_scores: Scores
    baseline_scores: dict[str, Scores]
    best_epoch: int
    epochs_run: int
    run_id: str | None = None
    model_uri: str | None = None
    report: str = ""
    facts: dict = field(default_factory=dict)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def prepare(store: FeatureStore, dcfg: DataConfig) -> PreparedData:
    """Load, segment, split (purged) and normalise; raises ``TrainingDataError`` with the guide's messages."""
    data = load_training_data(store, dcfg)
    segments = find_segments(data, dcfg.gap_factor)
    split = purged_split(data, dcfg, segments)
    content_hash = data.content_hash()
    # Two rows, not one: torch.export (MLflow's pt2 format) would pin a batch size of 1 as a constant.
    example = gather_windows(data.features, split.test[:2], dcfg.sequence_length).copy()
    norm = fit_normalizer(data.features, split.train_rows_mask, dcfg.clip)
    apply_normalizer_inplace(data.features, norm)
    return PreparedData(data, split, norm, example, content_hash, segments.interval_ms, segments.count)


def dataset_facts(p: PreparedData, dcfg: DataConfig) -> dict:
    """Flat facts about the data and the split, logged as MLflow parameters."""
    d, s = p.data, p.split
    sizes = s.sizes()
    label_facts = d.label_setting.facts() if d.label_setting is not None else {}
    return {
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
        "rows_train": sizes["train"],
        "rows_val": sizes["val"],
        "rows_test": sizes["test"],
        "train_end": _iso(s.train_end_ms),
        "val_start": _iso(s.val_start_ms),
        "test_start": _iso(s.test_start_ms),
        "purge_s": s.purge_ms / 1000,
        "class_balance_train": _balance(d.labels[s.train]),
        "class_balance_test": _balance(d.labels[s.test]),
    }


def _balance(labels: np.ndarray) -> str:
    counts = np.bincount(labels.astype(np.int64), minlength=3)
    total = max(int(counts.sum()), 1)
    return " ".join(f"{c}={n / total:.1%}" for c, n in zip(CLASS_NAMES, counts))


def baseline_setting(p: PreparedData, dcfg: DataConfig) -> LabelSetting:
    """The threshold and tolerance the persistence baseline uses (from the labels unless given)."""
    if p.data.label_setting is not None:
        return p.data.label_setting.setting
    return LabelSetting(
        DEFAULT_THRESHOLD_PCT if dcfg.threshold_pct is None else dcfg.threshold_pct,
        DEFAULT_TOLERANCE_S if dcfg.tolerance_s is None else dcfg.tolerance_s,
    )


def run_baselines(store: FeatureStore | None, p: PreparedData, dcfg: DataConfig, tcfg: TrainConfig) -> tuple[dict[str, Scores], dict]:
    """Score the majority, persistence and logistic-regression baselines on the test split."""
    d, s = p.data, p.split
    setting = baseline_setting(p, dcfg)
    y_test = d.labels[s.test]
    out: dict[str, Scores] = {}
    maj, cls = baselines.majority_predictions(d.labels[s.train], s.test.size)
    out["majority"] = score("majority", y_test, maj)
    t, c, mid = d.timestamps_ms[s.test], d.symbol_codes[s.test], d.mid_price[s.test]
    tape = None
    if store is not None:
        look_back = int((dcfg.horizon_s + setting.tolerance_s) * 1000) + 1
        tape = baselines.read_tape(store, d.symbols, int(t.min()) - look_back, int(t.max()))
    pers, info = baselines.persistence_predictions(
        t, c, mid, dcfg.horizon_s, setting.threshold_pct, setting.tolerance_s, tape=tape, samples=(d.timestamps_ms, d.symbol_codes, d.mid_price)
    )
    out["persistence"] = score("persistence", y_test, pers)
    lr = baselines.logreg_predictions(d.features[s.train], d.labels[s.train], d.features[s.test], tcfg.seed, tcfg.logreg_max_rows)
    out["logreg"] = score("logreg", y_test, lr)
    return out, {"majority_class": CLASS_NAMES[cls], **{f"persistence_{k}": v for k, v in info.items()}}


def build_report(model: Scores, base: dict[str, Scores], facts: dict, dcfg: DataConfig, threshold_pct: float) -> str:
    """The plain-text comparison printed after training and saved as ``report.txt``."""
    lines = [
        f"Test split: {model.n} sequences, end times {facts['test_start']} .. {facts['data_end']}",
        f"Horizon {dcfg.horizon_s}s, threshold {threshold_pct:g}%, sequence length {dcfg.sequence_length}, "
        f"symbols {facts['symbols']}",
        "",
        comparison_table([model, *base.values()]),
        "",
        confusion_text(model),
    ]
    beaten = [n for n, b in base.items() if model.macro_f1 > b.macro_f1]
    lines += ["", f"Model macro-F1 {model.macro_f1:.3f} beats: {', '.join(beaten) if beaten else 'no baseline'}"]
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
    """Train on ``store`` as configured and, with a ``target``, log the run to MLflow.

    ``out`` receives one progress line at a time (data, split, per-epoch metrics);
    ``progress`` wraps batch iterables (e.g. a tqdm factory). Raises
    ``TrainingDataError`` for data that cannot train a model, ``TrackingError`` when
    MLflow cannot be used, ``ValueError`` for an unusable device.
    """
    t_start = time.perf_counter()
    p = prepare(store, dcfg)
    # torch is imported only now so that data problems are reported without its start-up cost.
    import torch

    from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier, NormalizedModel
    from backend.ml_engine.training_orchestrator.train import Trainer, seed_everything

    facts = dataset_facts(p, dcfg)
    out(
        f"Loaded {facts['rows']:,} samples of {facts['symbols']} ({facts['data_start']} .. {facts['data_end']}), "
        f"label coverage {facts['label_coverage']:.1%}, {facts['segments']} gap-free segments"
    )
    out(
        f"Sequences: train {facts['rows_train']:,} / val {facts['rows_val']:,} / test {facts['rows_test']:,} "
        f"(purge {facts['purge_s']:g} s between splits; train classes {facts['class_balance_train']})"
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

    seed_everything(tcfg.seed)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    core = LOBSequenceClassifier(len(FEATURE_NAMES), tcfg.conv_channels, tcfg.hidden_size, tcfg.dropout)
    trainer = Trainer(core, p.data.features, np.where(p.data.labels < 0, 0, p.data.labels), dcfg.sequence_length, tcfg)
    out(f"Training on {trainer.device}" + (f" with {trainer.amp_dtype} autocast" if trainer.amp_dtype else ""))

    with tempfile.TemporaryDirectory(prefix="lob_train_") as tmp_name:
        tmp = Path(tmp_name)
        run_ctx = mlflow.start_run(experiment_id=experiment_id) if mlflow else _NullCtx()
        with run_ctx as run:
            if mlflow:
                mlflow.log_params({**dcfg.as_params(), **tcfg.as_params()})
                mlflow.log_params({f"data_{k}": v for k, v in facts.items()})
                mlflow.set_tags({"feature_schema_version": str(FEATURE_SCHEMA_VERSION), "content_sha256": p.content_hash})

            def on_epoch(stats, improved):
                line = (
                    f"epoch {stats.epoch:>3}/{tcfg.epochs}  train_loss {stats.train_loss:.4f}  val_loss {stats.val_loss:.4f}  "
                    f"val_acc {stats.val_accuracy:.3f}  val_macro_f1 {stats.val_macro_f1:.3f}  "
                    f"{stats.samples_per_s:,.0f} samples/s{'  *best' if improved else ''}"
                )
                out(line)
                if mlflow:
                    mlflow.log_metrics(
                        {
                            "train_loss": stats.train_loss,
                            "val_loss": stats.val_loss,
                            "val_accuracy": stats.val_accuracy,
                            "val_macro_f1": stats.val_macro_f1,
                            "train_samples_per_s": stats.samples_per_s,
                        },
                        step=stats.epoch,
                    )

            result = trainer.fit(p.split.train, p.split.val, on_epoch, tmp / "checkpoint" / "best.pt", progress)
            logits = trainer.predict_logits(p.split.test)
            y_test = p.data.labels[p.split.test]
            model_scores = score("model", y_test, logits.argmax(axis=1))
            base, base_info = run_baselines(store, p, dcfg, tcfg)
            facts.update(base_info)
            report = build_report(model_scores, base, facts, dcfg, baseline_setting(p, dcfg).threshold_pct)
            summary = RunSummary(model_scores, base, result.best_epoch, len(result.history), report=report, facts=facts)

            if mlflow:
                _log_results(mlflow, tmp, summary, p, dcfg, tcfg, result, register_model, NormalizedModel)
                summary.run_id = run.info.run_id
                summary.model_uri = summary.facts.get("model_uri")
    summary.facts["seconds"] = round(time.perf_counter() - t_start, 1)
    return summary


class _NullCtx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _log_results(mlflow, tmp: Path, summary: RunSummary, p: PreparedData, dcfg, tcfg, result, register_model, NormalizedModel) -> None:
    import torch
    from mlflow.models import infer_signature

    m, base = summary.model_scores, summary.baseline_scores
    metrics = {"test_accuracy": m.accuracy, "test_macro_f1": m.macro_f1, "best_epoch": result.best_epoch, "best_val_macro_f1": result.best_val_macro_f1}
    for i, c in enumerate(CLASS_NAMES):
        metrics[f"test_precision_{c.lower()}"] = float(m.precision[i])
        metrics[f"test_recall_{c.lower()}"] = float(m.recall[i])
    for name, s in base.items():
        metrics[f"baseline_{name}_macro_f1"] = s.macro_f1
        metrics[f"baseline_{name}_accuracy"] = s.accuracy
    mlflow.log_metrics(metrics)

    art = tmp / "artifacts"
    art.mkdir()
    save_confusion_png(m, art / "confusion_matrix.png")
    (art / "normalization.json").write_text(json.dumps(p.normalizer.to_dict(FEATURE_NAMES), indent=1))
    (art / "features.json").write_text(json.dumps({"feature_schema_version": FEATURE_SCHEMA_VERSION, "features": list(FEATURE_NAMES)}, indent=1))
    (art / "report.txt").write_text(summary.report + "\n")
    report_json = {
        "model": m.as_dict(),
        "baselines": {k: v.as_dict() for k, v in base.items()},
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
