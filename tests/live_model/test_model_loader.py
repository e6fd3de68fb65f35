"""A model logged by the real training run comes back with its normaliser, features and settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from backend.contracts.labels import DEFAULT_THRESHOLD_PCT
from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION
from backend.ml_engine.live.model_loader import (
    BotProfile,
    ModelCompatibilityError,
    ModelLoadError,
    check_compatibility,
    load_live_model,
    parse_model_uri,
)
from live_model.common import INTERVAL_MS, SEQ_LEN


def _bot(**changes) -> BotProfile:
    base = BotProfile(tuple(FEATURE_NAMES), FEATURE_SCHEMA_VERSION, INTERVAL_MS, DEFAULT_THRESHOLD_PCT)
    return dataclasses.replace(base, **changes)


def test_every_uri_form_names_the_same_run_and_model(trained_run):
    uris = [f"models:/{trained_run.name}/1", f"models:/{trained_run.name}@champion", f"runs:/{trained_run.run_id}/model", trained_run.logged_uri]
    models = [load_live_model(u, trained_run.tracking_uri, bot=_bot(), symbols=["BTCUSDT", "SOLUSDT"]) for u in uris]
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(4, SEQ_LEN, len(FEATURE_NAMES))).astype(np.float32))
    with torch.inference_mode():
        outs = [m.module(x).numpy() for m in models]
    for m, out in zip(models, outs):
        assert m.spec.run_id == trained_run.run_id and m.source == "checkpoint"
        np.testing.assert_array_equal(out, outs[0])
    spec = models[0].spec
    assert spec.sequence_length == SEQ_LEN and spec.horizon_s == 60 and spec.gap_factor == 2.0
    assert spec.feature_names == tuple(FEATURE_NAMES) and spec.feature_version == FEATURE_SCHEMA_VERSION
    assert dict(spec.interval_ms) == {"BTCUSDT": INTERVAL_MS, "ETHUSDT": INTERVAL_MS}
    assert spec.trained_symbols == ("BTCUSDT", "ETHUSDT")
    # The synthetic labels carry no provenance: the labeller's default is assumed, and said.
    assert spec.label_threshold_pct == DEFAULT_THRESHOLD_PCT and not spec.threshold_known
    assert any("provenance" in w for w in models[0].warnings) and any("SOLUSDT" in w for w in models[0].warnings)
    assert 0 <= spec.test_metrics["test_macro_f1"] <= 1 and "baseline_persistence_macro_f1" in spec.test_metrics


def test_rebuilt_model_equals_the_logged_mlflow_model(trained_run):
    """The state_dict route (no unpickling) gives the same function as MLflow's own loader (pt2)."""
    import mlflow

    live = load_live_model(f"models:/{trained_run.name}/1", trained_run.tracking_uri)
    mlflow.set_tracking_uri(trained_run.tracking_uri)
    logged = mlflow.pytorch.load_model(f"models:/{trained_run.name}/1")
    raw = trained_run.store.read_offline_features("training_features")[list(FEATURE_NAMES)].to_numpy(np.float32)
    windows = np.stack([raw[i : i + SEQ_LEN] for i in range(0, 200, 7)])
    with torch.inference_mode():
        a = live.module(torch.from_numpy(windows)).numpy()
        b = logged(torch.from_numpy(windows)).numpy()
    assert np.abs(a - b).max() <= 1e-5


def test_normaliser_is_the_training_one(trained_run):
    import json

    import mlflow

    live = load_live_model(f"runs:/{trained_run.run_id}/model", trained_run.tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=trained_run.tracking_uri)
    norm = json.loads(open(client.download_artifacts(trained_run.run_id, "normalization.json")).read())
    np.testing.assert_array_equal(live.spec.mean, np.asarray(norm["mean"], dtype=np.float32))
    np.testing.assert_array_equal(live.module.mean.numpy(), np.asarray(norm["mean"], dtype=np.float32))
    np.testing.assert_array_equal(live.module.std.numpy(), np.asarray(norm["std"], dtype=np.float32))
    assert live.module.clip == norm["clip"] and not live.module.training


def test_every_mismatch_is_named_at_once(trained_run):
    live = load_live_model(f"models:/{trained_run.name}/1", trained_run.tracking_uri)
    swapped = list(FEATURE_NAMES)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    bot = _bot(feature_version=FEATURE_SCHEMA_VERSION + 1, feature_names=tuple(swapped), sample_interval_ms=3_000,
               label_threshold_pct=0.05, horizons_s=(10, 30))
    with pytest.raises(ModelCompatibilityError) as err:
        check_compatibility(live.spec, bot)
    text = str(err.value)
    assert len(err.value.mismatches) == 5, text
    for piece in ("feature version: model 1, bot 2", f"position 3: model {FEATURE_NAMES[3]!r}", "horizon: model 60 s",
                  "label threshold: model trained on labels made with 0.02 %, the predictions would be labelled with 0.05 % (to run this model, pass --label-threshold 0.02", "samples 30 s apart, bot collects every 3 s"):
        assert piece in text, text
    with pytest.raises(ModelCompatibilityError, match="feature count: model 110, bot 109"):
        check_compatibility(live.spec, _bot(feature_names=tuple(FEATURE_NAMES[:-1])))
    # Jitter within 5 % of the spacing is the same spacing.
    assert check_compatibility(live.spec, _bot(sample_interval_ms=31_000))
    with pytest.raises(ModelCompatibilityError):
        load_live_model(f"models:/{trained_run.name}/1", trained_run.tracking_uri, bot=_bot(sample_interval_ms=60_000))


@pytest.mark.parametrize(
    "uri, message",
    [
        ("live_test", "not a model URI"),
        ("models:/live_test", "not a model URI"),
        ("models:/live_test/7", "cannot resolve models:/live_test/7"),
        ("models:/live_test@nobody", "cannot resolve models:/live_test@nobody"),
        ("models:/no_such_model/1", "cannot resolve"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "not found"),
    ],
)
def test_bad_uris_say_what_is_wrong(trained_run, uri, message):
    with pytest.raises(ModelLoadError, match=message):
        load_live_model(uri, trained_run.tracking_uri)


def test_uri_forms_parse():
    assert parse_model_uri("models:/lob/3") == ("version", {"name": "lob", "version": "3"})
    assert parse_model_uri("models:/lob@champion") == ("alias", {"name": "lob", "alias": "champion"})
    assert parse_model_uri("runs:/abc123/model") == ("runs", {"run": "abc123", "path": "model"})
    assert parse_model_uri("models:/m-0123456789abcdef")[0] == "logged"
