"""A small DeepLOB-family sequence classifier, sized to train on a CPU.

Temporal convolutions mix the 110 features of neighbouring samples, an LSTM reads
the sequence, and attention pooling lets the last steps or a past burst dominate
as the data asks. Input (B, L, F) float32, output (B, 3) logits: DOWN, NEUTRAL, UP.
"""

from __future__ import annotations

import torch
from torch import nn


class LOBSequenceClassifier(nn.Module):
    """Conv + LSTM + attention-pooling direction classifier (DeepLOB family, Zhang et al. 2019).

    Input (B, L, F) float32 normalised feature windows; output (B, n_classes) logits.
    """
    def __init__(self, n_features: int, conv_channels: int = 32, hidden_size: int = 48, dropout: float = 0.2, n_classes: int = 3):
        super().__init__()
        self.config = dict(
            n_features=n_features, conv_channels=conv_channels, hidden_size=hidden_size, dropout=dropout, n_classes=n_classes
        )
        self.conv = nn.Sequential(
            nn.Conv1d(n_features, conv_channels, kernel_size=1),  # per-step feature mixing (DeepLOB's 1x1 inception arm)
            nn.GELU(),
            nn.Conv1d(conv_channels, conv_channels, kernel_size=3, padding=1),
            nn.GELU(),
        )
        self.lstm = nn.LSTM(conv_channels, hidden_size, batch_first=True)
        self.attn = nn.Linear(hidden_size, 1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, F) windows -> (B, n_classes) logits."""
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.lstm(h)
        weights = torch.softmax(self.attn(out).squeeze(-1), dim=1)
        pooled = torch.bmm(weights.unsqueeze(1), out).squeeze(1)
        # The last hidden state is kept beside the pooled one: the newest sample matters most for short horizons.
        z = torch.cat([pooled, out[:, -1]], dim=1)
        return self.head(self.dropout(z))


class NormalizedModel(nn.Module):
    """What gets logged: raw feature windows in, logits out; the train-split statistics travel inside."""

    def __init__(self, core: nn.Module, mean, std, clip: float):
        super().__init__()
        self.core = core
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, F) raw feature windows -> (B, n_classes) logits: z-score with the stored statistics, clip, classify."""
        z = ((x - self.mean) / self.std).clamp(-self.clip, self.clip)
        return self.core(z)
