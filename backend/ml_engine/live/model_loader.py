"""Load a trained model from MLflow for live inference, and check it fits what the bot produces.

What training logs with each run (``training_orchestrator.orchestrator._log_results``), and
what is read back here:

* params: the ``DataConfig`` (``sequence_length``, ``horizon_s``, ``gap_factor``, ``clip``,
  ``threshold_pct``) and ``TrainConfig`` (``conv_channels``, ``hidden_size``, ``dropout``)
  fields, plus ``data_*`` facts (``data_sampling_interval_s`` = ``SYM=30,SYM2=30`` in
  seconds, ``data_label_thresholds_pct``, ``data_baseline_threshold_pct``, ``data_symbols``);
* ``normalization.json``: per-feature mean and std (float32 values written as JSON floats,
  which round-trip exactly) and the clip;
* ``features.json``: the feature list and ``feature_schema_version``;
* ``checkpoint/best.pt``: ``{"epoch", "val_macro_f1", "state_dict"}`` of the
  ``LOBSequenceClassifier`` of the logged (last) fold at its best epoch;
* the MLflow pytorch model (``model.pt2``, a ``torch.export`` program wrapping the same
  weights with the normaliser).

Loading avoids unpickling: the weights come from ``checkpoint/best.pt`` through
``torch.load(weights_only=True)`` (tensors and plain containers only, no arbitrary
objects), the architecture from the params, the normaliser from JSON; the result is the
training code's own ``NormalizedModel(LOBSequenceClassifier)``. Only a run without that
checkpoint falls back to ``mlflow.pytorch.load_model`` (for ``.pt2`` files that is
``torch.export.load``; for older pickled ``.pth`` models MLflow unpickles the file, so
load only models from a tracking store you trust).

Accepted URIs: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/model``
(and MLflow 3's ``models:/m-<model id>``), resolved against the tracking URI the caller
gives (the apps layer resolves it as training does: ``--tracking-uri``, then
``MLFLOW_TRACKING_URI``, then ``<data_dir>/mlflow/mlflow.db``).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from backend.contracts.labels import HORIZONS_S

_RUNS_RE = re.compile(r"runs:/(?P<run>[0-9a-zA-Z_-]+)(?:/(?P<path>.*))?")
_VERSION_RE = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")
_ALIAS_RE = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)")
_LOGGED_RE = re.compile(r"models:/(?P<id>m-[0-9a-f]{8,})")

#: relative difference allowed between the bot's sample spacing and the model's
INTERVAL_TOLERANCE = 0.05


class ModelLoadError(Exception):
    """The URI is malformed, names nothing, or its run lacks what live inference needs; the message says which."""


class ModelCompatibilityError(Exception):
    """The model was trained on samples unlike the bot's; ``mismatches`` lists each difference as one line."""

    def __init__(self, model_uri: str, mismatches: Sequence[str]):
        self.model_uri = model_uri
        self.mismatches = list(mismatches)
        body = "\n".join(f"  - {m}" for m in self.mismatches)
        super().__init__(f"Model {model_uri} does not match what this bot produces:\n{body}")


@dataclass(frozen=True)
class ModelSpec:
    """What a logged model expects and how its training windows were built.

    * ``feature_names`` (F,) in the order of the model's input; ``feature_version``: the
      feature schema version of its training data.
    * ``sequence_length`` L: samples per window; ``horizon_s``: seconds ahead the label looks.
    * ``gap_factor``: a spacing wider than ``gap_factor`` x the symbol's interval ends a
      window run (``sequences.find_segments``); ``interval_ms``: the training data's median
      sample spacing per symbol (ms).
    * ``label_threshold_pct``: percent move separating UP/DOWN from NEUTRAL in the labels the
      model learnt; ``threshold_known`` is False when the labels carried no provenance and
      the labeller's default was assumed.
    * ``mean``/``std`` (F,) float32 and ``clip``: the z-score applied inside the model.
    * ``test_metrics``: the run's ``test_*`` and ``baseline_*`` metrics (for the live panel).
    """

    model_uri: str
    run_id: str
    feature_names: tuple[str, ...]
    feature_version: int
    sequence_length: int
    horizon_s: int
    gap_factor: float
    interval_ms: Mapping[str, int]
    label_threshold_pct: float
    threshold_known: bool
    mean: np.ndarray
    std: np.ndarray
    clip: float
    architecture: Mapping[str, Any] = field(default_factory=dict)
    trained_symbols: tuple[str, ...] = ()
    test_metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """F, the width of one sample."""
        return len(self.feature_names)

    def symbol_interval_ms(self, symbol: str) -> int:
        """The training spacing of ``symbol`` (ms); a symbol not trained on gets the median over trained symbols."""
        if symbol in self.interval_ms:
            return int(self.interval_ms[symbol])
        values = [v for v in self.interval_ms.values() if v > 0]
        return int(np.median(values)) if values else 0


@dataclass(frozen=True)
class BotProfile:
    """What the running bot produces, to check a model against.

    ``feature_names`` / ``feature_version``: the feature pipeline's; ``sample_interval_ms``:
    spacing of collected samples (poll interval x collection interval, ms);
    ``label_threshold_pct``: the threshold the labeller will apply to the predictions;
    ``horizons_s``: the horizons the labeller produces.
    """

    feature_names: tuple[str, ...]
    feature_version: int
    sample_interval_ms: int
    label_threshold_pct: float
    horizons_s: tuple[int, ...] = HORIZONS_S


@dataclass
class LiveModel:
    """A loaded model ready for ``inference.LivePredictor``: ``module`` maps raw windows
    (B, L, F) float32 to (B, 3) logits (normalisation inside), in eval mode on the CPU;
    ``spec`` says how its windows must be built; ``source`` says how the weights were read
    (``checkpoint`` = state_dict, no unpickling; ``mlflow`` = MLflow's pytorch loader)."""

    module: Any
    spec: ModelSpec
    source: str
    warnings: list[str] = field(default_factory=list)


# --- URI ------------------------------------------------------------------------------------


def parse_model_uri(uri: str) -> tuple[str, dict[str, str]]:
    """Kind and parts of a model URI: ``("runs", {run, path})``, ``("version", {name, version})``,
    ``("alias", {name, alias})`` or ``("logged", {id})``. Raises ``ModelLoadError`` for anything else."""
    for kind, pattern in (("runs", _RUNS_RE), ("logged", _LOGGED_RE), ("version", _VERSION_RE), ("alias", _ALIAS_RE)):
        m = pattern.fullmatch(uri or "")
        if m:
            return kind, {k: v for k, v in m.groupdict().items() if v is not None}
    raise ModelLoadError(
        f"not a model URI: {uri!r}; use models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model"
    )


def resolve_run_id(client, uri: str) -> str:
    """The MLflow run that logged the model ``uri`` names (``client``: an ``MlflowClient``)."""
    kind, parts = parse_model_uri(uri)
    try:
        if kind == "runs":
            return parts["run"]
        if kind == "logged":
            return client.get_logged_model(parts["id"]).source_run_id
        if kind == "version":
            mv = client.get_model_version(parts["name"], parts["version"])
        else:
            mv = client.get_model_version_by_alias(parts["name"], parts["alias"])
    except Exception as exc:  # MLflow raises RestException/MlflowException with a readable message
        raise ModelLoadError(f"cannot resolve {uri}: {_first_line(exc)}") from None
    if not mv.run_id:
        raise ModelLoadError(f"{uri} has no source run, so its normaliser and settings cannot be found")
    return mv.run_id


# --- pure: from what was logged to a spec and a module -----------------------------------------


def _param(params: Mapping[str, str], key: str, cast, uri: str):
    if key not in params:
        raise ModelLoadError(f"{uri}: the run has no parameter {key!r}; was it logged by this training code?")
    try:
        return cast(params[key])
    except (TypeError, ValueError):
        raise ModelLoadError(f"{uri}: parameter {key}={params[key]!r} is not a valid {cast.__name__}") from None


def parse_intervals(text: str | None) -> dict[str, int]:
    """``"BTCUSDT=30,ETHUSDT=2.5"`` (seconds, as training logs ``data_sampling_interval_s``) -> ``{sym: ms}``."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if "=" not in item:
            continue
        sym, value = item.split("=", 1)
        try:
            out[sym.strip()] = int(round(float(value) * 1000))
        except ValueError:
            continue
    return out


def label_threshold(params: Mapping[str, str]) -> tuple[float, bool]:
    """(threshold percent, known) of the labels a run trained on.

    An explicit ``threshold_pct`` param wins; else the single threshold in the labels'
    provenance (``data_label_thresholds_pct``); else the baseline's (the labeller's default,
    assumed when labels carry no provenance: known=False). Several thresholds (a run with
    ``--allow-mixed-label-thresholds``) raise ``ModelLoadError``.
    """
    explicit = params.get("threshold_pct")
    if explicit not in (None, "", "from labels", "None"):
        return float(explicit), True
    stored = params.get("data_label_thresholds_pct", "unknown")
    if stored and stored != "unknown":
        values = {float(v) for v in stored.split(",")}
        if len(values) > 1:
            raise ModelLoadError(
                f"the model learnt labels made with several thresholds ({stored} %); its classes have no single meaning"
            )
        return values.pop(), True
    return float(params.get("data_baseline_threshold_pct", "nan")), False


def spec_from_logged(
    uri: str,
    run_id: str,
    params: Mapping[str, str],
    normalization: Mapping[str, Any],
    features: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
) -> ModelSpec:
    """Build a ``ModelSpec`` from a run's params and its ``normalization.json``/``features.json``
    contents (parsed JSON). Pure; raises ``ModelLoadError`` naming what is missing or inconsistent."""
    names = tuple(features.get("features") or ())
    if not names:
        raise ModelLoadError(f"{uri}: features.json lists no features")
    if tuple(normalization.get("features") or names) != names:
        raise ModelLoadError(f"{uri}: normalization.json and features.json list different features")
    mean = np.asarray(normalization.get("mean", ()), dtype=np.float32)
    std = np.asarray(normalization.get("std", ()), dtype=np.float32)
    if mean.shape != (len(names),) or std.shape != (len(names),):
        raise ModelLoadError(f"{uri}: normalization.json has {mean.size} means and {std.size} stds for {len(names)} features")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ModelLoadError(f"{uri}: normalization.json holds non-finite means or non-positive stds")
    threshold, known = label_threshold(params)
    version = features.get("feature_schema_version", params.get("data_feature_schema_version"))
    if version is None:
        raise ModelLoadError(f"{uri}: no feature_schema_version in features.json or the run's parameters")
    arch = {
        "conv_channels": _param(params, "conv_channels", int, uri),
        "hidden_size": _param(params, "hidden_size", int, uri),
        "dropout": _param(params, "dropout", float, uri),
    }
    symbols = tuple(s for s in params.get("data_symbols", "").split(",") if s)
    wanted = {k: float(v) for k, v in (metrics or {}).items() if k.startswith(("test_", "baseline_"))}
    return ModelSpec(
        model_uri=uri,
        run_id=run_id,
        feature_names=names,
        feature_version=int(version),
        sequence_length=_param(params, "sequence_length", int, uri),
        horizon_s=_param(params, "horizon_s", int, uri),
        gap_factor=_param(params, "gap_factor", float, uri),
        interval_ms=parse_intervals(params.get("data_sampling_interval_s")),
        label_threshold_pct=threshold,
        threshold_known=known,
        mean=mean,
        std=std,
        clip=float(normalization.get("clip", params.get("clip", "nan"))),
        architecture=arch,
        trained_symbols=symbols,
        test_metrics=wanted,
    )


def build_module(spec: ModelSpec, state_dict: Mapping[str, Any]):
    """The training code's ``NormalizedModel(LOBSequenceClassifier)`` with ``state_dict`` loaded (strict),
    in eval mode on the CPU. Raises ``ModelLoadError`` when the weights do not fit the logged architecture."""
    from backend.ml_engine.training_orchestrator.model import LOBSequenceClassifier, NormalizedModel

    core = LOBSequenceClassifier(spec.n_features, **spec.architecture)
    try:
        core.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{spec.model_uri}: the checkpoint does not fit the logged architecture: {_first_line(exc)}") from None
    return NormalizedModel(core, spec.mean, spec.std, spec.clip).to("cpu").eval()


def check_compatibility(spec: ModelSpec, bot: BotProfile) -> list[str]:
    """Compare a model with what the bot produces.

    Raises ``ModelCompatibilityError`` listing every mismatch (feature version, feature list,
    horizon the labeller cannot produce, label threshold, sample spacing beyond
    ``INTERVAL_TOLERANCE``, a sequence length below 1). Returns warnings that do not stop
    the bot (labels without provenance, symbols the model never saw are added by the caller).
    """
    problems: list[str] = []
    notes: list[str] = []
    if spec.feature_version != bot.feature_version:
        problems.append(f"feature version: model {spec.feature_version}, bot {bot.feature_version}")
    if tuple(spec.feature_names) != tuple(bot.feature_names):
        if len(spec.feature_names) != len(bot.feature_names):
            problems.append(f"feature count: model {len(spec.feature_names)}, bot {len(bot.feature_names)}")
        else:
            i = next(i for i, (a, b) in enumerate(zip(spec.feature_names, bot.feature_names)) if a != b)
            problems.append(f"feature list differs first at position {i}: model {spec.feature_names[i]!r}, bot {bot.feature_names[i]!r}")
    if spec.horizon_s not in bot.horizons_s:
        problems.append(f"horizon: model {spec.horizon_s} s, the labeller produces {list(bot.horizons_s)} s")
    if spec.sequence_length < 1:
        problems.append(f"sequence length {spec.sequence_length} < 1")
    if not math.isfinite(spec.label_threshold_pct) or not math.isclose(spec.label_threshold_pct, bot.label_threshold_pct, rel_tol=1e-9, abs_tol=1e-12):
        problems.append(f"label threshold: model trained on labels made with {spec.label_threshold_pct:g} %, the "
                        f"predictions would be labelled with {bot.label_threshold_pct:g} % (to run this model, pass "
                        f"--label-threshold {spec.label_threshold_pct:g} and label the predictions group with "
                        f"--threshold {spec.label_threshold_pct:g})")
    elif not spec.threshold_known:
        notes.append(f"the model's labels carried no threshold provenance; assumed {spec.label_threshold_pct:g} %")
    intervals = [v for v in spec.interval_ms.values() if v > 0]
    if intervals:
        model_ms = float(np.median(intervals))
        if abs(model_ms - bot.sample_interval_ms) > INTERVAL_TOLERANCE * model_ms:
            problems.append(
                f"sample spacing: model trained on samples {model_ms / 1000:g} s apart, bot collects every "
                f"{bot.sample_interval_ms / 1000:g} s (windows of {spec.sequence_length} samples would span a different time)"
            )
    else:
        notes.append("the run logged no sampling interval; the bot's spacing is assumed")
    if problems:
        raise ModelCompatibilityError(spec.model_uri, problems)
    return notes


# --- I/O shell: MLflow ------------------------------------------------------------------------


def load_live_model(uri: str, tracking_uri: str, bot: BotProfile | None = None, symbols: Sequence[str] = ()) -> LiveModel:
    """Resolve ``uri`` against ``tracking_uri``, read what training logged, rebuild the model and,
    with ``bot``, check it (``check_compatibility``; raises ``ModelCompatibilityError``).

    ``symbols``: the bot's symbols; those the model never saw are named in ``warnings``.
    Raises ``ModelLoadError`` for a bad URI, an unknown model, version, alias or run, or a run
    lacking params or artifacts.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = resolve_run_id(client, uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise ModelLoadError(f"{uri}: run {run_id} not found: {_first_line(exc)}") from None
    with tempfile.TemporaryDirectory(prefix="lob_live_model_") as tmp:
        normalization = _download_json(client, run_id, "normalization.json", tmp, uri)
        features = _download_json(client, run_id, "features.json", tmp, uri)
        spec = spec_from_logged(uri, run_id, run.data.params, normalization, features, run.data.metrics)
        state, source = _checkpoint_state(client, run_id, tmp)
        if state is not None:
            module = build_module(spec, state)
        else:
            module, source = _mlflow_module(uri, tracking_uri, tmp), "mlflow"
    warnings = check_compatibility(spec, bot) if bot is not None else []
    unseen = [s for s in symbols if spec.trained_symbols and s not in spec.trained_symbols]
    if unseen:
        warnings.append(f"the model never saw {', '.join(unseen)} (trained on {', '.join(spec.trained_symbols)})")
    return LiveModel(module, spec, source, warnings)


def _download_json(client, run_id: str, name: str, tmp: str, uri: str) -> dict:
    try:
        path = client.download_artifacts(run_id, name, tmp)
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as exc:
        raise ModelLoadError(f"{uri}: the run has no readable {name} ({_first_line(exc)}); was it logged by this training code?") from None


def _checkpoint_state(client, run_id: str, tmp: str):
    import torch

    try:
        path = client.download_artifacts(run_id, "checkpoint/best.pt", tmp)
    except Exception:
        return None, "mlflow"
    # weights_only: tensors and plain containers only, nothing is unpickled as an object.
    blob = torch.load(path, map_location="cpu", weights_only=True)
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    return (state, "checkpoint") if state is not None else (None, "mlflow")


def _mlflow_module(uri: str, tracking_uri: str, tmp: str):
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(Path(tmp) / "model"), tracking_uri=tracking_uri)
        module = mlflow.pytorch.load_model(local, map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"{uri}: MLflow cannot load the model: {_first_line(exc)}") from None
    try:
        module.eval()
    except Exception:  # an exported (torch.export) module refuses train/eval switches; it is inference-only already
        pass
    return module


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
