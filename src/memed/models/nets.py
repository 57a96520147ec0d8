"""Torch definitions of the sequence models (trainers only: the daemon serves their ONNX exports).

Both nets start with the training-fit scaler as buffers (double precision, exactly
:class:`memed.models.scaler.Scaler`'s arithmetic), so the exported graph takes the raw feature vector.

* :class:`LstmNet` — multi-horizon, **stateful**: ``forward`` runs a sequence from a given (h, c);
  :class:`LstmStep` is the one-step serving form (features, h, c in; p_up, h, c out) exported to ONNX.
* :class:`TransformerNet` — an encoder over a fixed window of the last ``window`` feature vectors with
  sinusoidal positions, one head per horizon read from the last position.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from memed.models.scaler import CLIP, Scaler


class ScaledInput(nn.Module):
    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, scaler: Scaler) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(scaler.mean, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(scaler.scale, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.clamp((x - self.mean) / self.scale, -CLIP, CLIP)
        return torch.where(torch.isnan(z), torch.zeros_like(z), z).float()


class LstmNet(nn.Module):
    def __init__(self, scaler: Scaler, n_horizons: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.inp = ScaledInput(scaler)
        self.hidden = hidden
        self.layers = layers
        self.lstm = nn.LSTM(len(scaler.mean), hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_horizons)

    def zero_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.layers, batch, self.hidden)
        return torch.zeros(shape), torch.zeros(shape)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` double [B, T, F] → logits float [B, T, H], and the state after the last step."""
        y, (h2, c2) = self.lstm(self.inp(x), (h, c))
        return self.head(y), h2, c2


class LstmStep(nn.Module):
    """One serving step: ``features`` [N, F], ``h``/``c`` [L, N, hidden] → ``p_up`` [N, H], new h, c."""

    def __init__(self, net: LstmNet) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, features: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, h2, c2 = self.net(features.unsqueeze(1), h, c)
        return torch.sigmoid(logits[:, 0]).double(), h2, c2


def positional_encoding(length: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe


class TransformerNet(nn.Module):
    def __init__(
        self, scaler: Scaler, n_horizons: int, window: int, d_model: int, heads: int, layers: int
    ) -> None:
        super().__init__()
        self.inp = ScaledInput(scaler)
        self.window = window
        self.proj = nn.Linear(len(scaler.mean), d_model)
        self.register_buffer("pos", positional_encoding(window, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_horizons)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """``window`` double [N, W, F] (oldest first) → logits float [N, H] at the last position."""
        z = self.proj(self.inp(window)) + self.pos
        out: torch.Tensor = self.head(self.encoder(z)[:, -1])
        return out


class TransformerServe(nn.Module):
    def __init__(self, net: TransformerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(window)).double()
