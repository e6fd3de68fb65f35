"""The training loop: class-weighted loss, early stopping on validation macro-F1, best epoch kept.

Batches are gathered from one feature tensor by window-end indices, so only the
batch is ever copied. On CUDA the whole feature matrix moves to the device once
and the forward pass runs under autocast (bf16 where supported).
"""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from backend.ml_engine.training_orchestrator.config import TrainConfig
from backend.ml_engine.training_orchestrator.evaluate import score
from backend.ml_engine.training_orchestrator.sequences import gather_windows


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; raises ``ValueError`` for ``cuda`` without a CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch sees no CUDA device (use --device auto or cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels (same seed and data, same model)."""
    # cuBLAS needs this before its first use to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # warn_only: a few CUDA kernels have no deterministic version; they warn instead of failing the run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights (sklearn's "balanced"); a class absent from training gets weight 0."""
    counts = np.bincount(labels.astype(np.int64), minlength=3).astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, counts.sum() / (3 * counts), 0.0)
    return w.astype(np.float32)


@dataclass
class EpochStats:
    """One epoch: mean train loss, validation loss, accuracy and macro-F1, seconds and training samples per second."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    samples_per_s: float


@dataclass
class TrainResult:
    """The best model (by validation macro-F1), its epoch and score, the per-epoch history,
    whether early stopping ended the run, the device and the autocast dtype used."""

    model: nn.Module
    best_epoch: int
    best_val_macro_f1: float
    history: list[EpochStats] = field(default_factory=list)
    stopped_early: bool = False
    device: str = "cpu"
    amp_dtype: str | None = None


class Trainer:
    """Trains a classifier on windows of one contiguous (n, F) float32 feature matrix.

    Sequences are named by their end row; each batch gathers its windows (B, L, F) on
    the fly. Class-weighted cross-entropy (``class_weights``), AdamW, gradient clipping,
    early stopping on validation macro-F1; CUDA runs with bf16 (or fp16 + loss scaling)
    autocast. Raises ``ValueError`` for ``--device cuda`` without CUDA.
    """

    def __init__(self, model: nn.Module, features: np.ndarray, labels: np.ndarray, sequence_length: int, cfg: TrainConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.L = sequence_length
        self.model = model.to(self.device)
        # from_numpy shares memory: on CPU there is still exactly one feature matrix.
        self.X = torch.from_numpy(features).to(self.device)
        self.y = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        self.amp_dtype = None
        if self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def predict_logits(self, ends: np.ndarray, model: nn.Module | None = None) -> np.ndarray:
        """(len(ends), 3) float32 logits of the sequences ending at ``ends``."""
        model = model or self.model
        model.eval()
        out = []
        ends_t = torch.as_tensor(ends, dtype=torch.int64, device=self.device)
        step = max(self.cfg.batch_size, 1024)
        with torch.inference_mode(), self._autocast():
            for lo in range(0, ends_t.shape[0], step):
                xb = gather_windows(self.X, ends_t[lo : lo + step], self.L)
                out.append(model(xb).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 3), dtype=np.float32)

    def fit(
        self,
        train_ends: np.ndarray,
        val_ends: np.ndarray,
        on_epoch: Callable[[EpochStats, bool], None] | None = None,
        checkpoint_path: Path | None = None,
        progress: Callable | None = None,
    ) -> TrainResult:
        """Train on the windows ending at ``train_ends`` with early stopping on validation macro-F1.

        One loop per epoch: shuffled mini-batches of windows gathered from the contiguous
        feature array (never materialised), class-weighted cross-entropy, AdamW; after each
        epoch the validation windows (``val_ends``) are scored, ``on_epoch(stats, improved)``
        is called, and the best epoch's weights are kept (written to ``checkpoint_path`` when
        given) and restored at the end. Returns the ``TrainResult`` with per-epoch stats and
        the best epoch.
        """
        cfg = self.cfg
        y_np = self.y.cpu().numpy() if self.device.type != "cpu" else self.y.numpy()
        weights = torch.as_tensor(class_weights(y_np[train_ends]), device=self.device)
        loss_fn = nn.CrossEntropyLoss(weight=weights)
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        train_t = torch.as_tensor(train_ends, dtype=torch.int64)
        val_t = torch.as_tensor(val_ends, dtype=torch.int64, device=self.device)
        y_val = y_np[val_ends]
        n_batches = (train_t.shape[0] + cfg.batch_size - 1) // cfg.batch_size

        best_f1, best_epoch, best_state, bad_epochs = -1.0, 0, None, 0
        history: list[EpochStats] = []
        stopped_early = False
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            self.model.train()
            order = train_t[torch.randperm(train_t.shape[0], generator=gen)].to(self.device)
            total_loss, seen = 0.0, 0
            bar = progress(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}") if progress else None
            for b in range(n_batches):
                ends_b = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                xb = gather_windows(self.X, ends_b, self.L)
                yb = self.y[ends_b]
                with self._autocast():
                    loss = loss_fn(self.model(xb).float(), yb)
                opt.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.scaler.step(opt)
                self.scaler.update()
                total_loss += float(loss.detach()) * ends_b.shape[0]
                seen += ends_b.shape[0]
                if bar is not None:
                    bar.update(1)
                    if b % 20 == 0:
                        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - t0
            logits = self.predict_logits(val_ends)
            with torch.no_grad():
                val_loss = float(loss_fn(torch.from_numpy(logits).to(self.device), self.y[val_t]))
            s = score("val", y_val, logits.argmax(axis=1))
            stats = EpochStats(
                epoch, total_loss / max(seen, 1), val_loss, s.accuracy, s.macro_f1, time.perf_counter() - t0, seen / max(train_time, 1e-9)
            )
            history.append(stats)
            improved = s.macro_f1 > best_f1
            if improved:
                best_f1, best_epoch, bad_epochs = s.macro_f1, epoch, 0
                best_state = copy.deepcopy(self.model.state_dict())
                if checkpoint_path is not None:
                    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save({"epoch": epoch, "val_macro_f1": best_f1, "state_dict": best_state}, checkpoint_path)
            else:
                bad_epochs += 1
            if on_epoch:
                on_epoch(stats, improved)
            if bad_epochs >= cfg.patience:
                stopped_early = epoch < cfg.epochs
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return TrainResult(
            self.model, best_epoch, best_f1, history, stopped_early, str(self.device), str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None
        )
