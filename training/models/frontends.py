"""Front-ends: raw waveform ``[B, T]`` -> stack of layer outputs ``[B, L, T', D]``.

``TinyConvEncoder`` is the built-in, randomly initialised wav2vec2-shaped encoder (no download,
trains from scratch on the synthetic data). The pretrained XLS-R / wav2vec2 front-end lives in
``training.models.ssl_frontend`` (it needs ``transformers``, imported only when asked for).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvFeatureExtractor(nn.Module):
    """wav2vec2's convolutional feature encoder, shrunk: raw waveform ``[B, T]`` -> ``[B, T', D]``."""

    # (kernel, stride) per layer. Total stride 5*4*4*2*2 = 320 samples = 20 ms at 16 kHz, as wav2vec2.
    LAYERS: tuple[tuple[int, int], ...] = ((10, 5), (8, 4), (4, 4), (4, 2), (4, 2))

    def __init__(self, channels: int, out_dim: int) -> None:
        super().__init__()
        chans = [1] + [channels] * len(self.LAYERS)
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, k, stride=s, bias=False)
            for (k, s), c_in, c_out in zip(self.LAYERS, chans[:-1], chans[1:])
        )
        # wav2vec2 "group norm" mode: one per-channel normalisation after the first conv only.
        self.norm = nn.GroupNorm(channels, channels)
        self.proj = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, out_dim))
        # Shortest input that yields one frame (825 samples, about 52 ms at 16 kHz).
        self.min_samples = 1
        for k, s in reversed(self.LAYERS):
            self.min_samples = (self.min_samples - 1) * s + k

    def forward(self, x: Tensor) -> Tensor:
        if x.size(-1) < self.min_samples:
            raise ValueError(f"input too short: {x.size(-1)} samples, need at least {self.min_samples}")
        h = x.unsqueeze(1)
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i == 0:
                h = self.norm(h)
            h = F.gelu(h)
        return self.proj(h.transpose(1, 2))


class TinyConvEncoder(nn.Module):
    """The built-in front-end: ``[B, T]`` waveform -> ``[B, L, T', D]`` stack of all L layer outputs.

    Front-end contract (what a drop-in SSL front-end must offer): attributes ``num_layers`` (L)
    and ``out_dim`` (D), and ``forward(x[B, T]) -> Tensor[B, L, T', D]``.
    """

    def __init__(self, num_layers: int, dim: int, dropout: float, conv_channels: int = 32,
                 num_heads: int = 4, ff_mult: int = 2, normalize_waveform: bool = True) -> None:
        super().__init__()
        self.num_layers, self.out_dim = num_layers, dim
        self.normalize_waveform = normalize_waveform
        self.features = ConvFeatureExtractor(conv_channels, dim)
        # Convolutional relative position embedding, as wav2vec2 (depthwise, so it stays cheap).
        self.pos_conv = nn.Conv1d(dim, dim, kernel_size=15, padding=7, groups=dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, num_heads, dim * ff_mult, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        # The first g3_heatmap (head_version 0) normalised each utterance (zero mean, unit
        # variance); the research model feeds the raw waveform, so the current head turns it off.
        if self.normalize_waveform:
            x = F.layer_norm(x, x.shape[-1:])
        h = self.features(x)
        h = self.dropout(h + F.gelu(self.pos_conv(h.transpose(1, 2)).transpose(1, 2)))
        hidden = []
        for layer in self.layers:
            h = layer(h)
            hidden.append(h)
        return torch.stack(hidden, dim=1)


# name -> constructor(num_layers=, dim=, dropout=) returning a module with the front-end contract.
FRONTENDS: dict[str, Callable[..., nn.Module]] = {
    "tiny_conv": TinyConvEncoder,
}
