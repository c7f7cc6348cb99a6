"""LFCC + LCNN: the ASVspoof 2019/2021 baseline countermeasure, small enough to train on a CPU.

The LFCC front-end runs inside ``forward`` (in torch, on the model's device), so the data pipeline
only ever hands raw waveforms to any model. LFCCs resolve high frequencies evenly (unlike MFCCs),
where many vocoder artefacts live; that is why the challenge baselines use them.

The LCNN follows the baseline's conv / Max-Feature-Map (MFM) / max-pool / batch-norm pattern
(Wang & Yamagishi's LFCC-LCNN for ASVspoof 2021) with the channel counts scaled by ``width``
(the original equals ``width=32``). Its two BLSTM layers are replaced by plain average pooling over
time: cheaper on a CPU, and the pooling is what makes the output length-independent either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.base import ModelOutput


def linear_filterbank(n_filters: int, n_fft: int, sample_rate: int) -> Tensor:
    """``[n_filters, n_fft // 2 + 1]`` triangular filters with centres evenly spaced in Hz."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.linspace(0, sample_rate / 2, n_filters + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0).float()


def dct_matrix(n: int) -> Tensor:
    """``[n, n]`` orthonormal DCT-II matrix: ``coefficients = dct_matrix(n) @ log_energies``."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi / n * (i + 0.5) * k) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.float()


def delta(x: Tensor) -> Tensor:
    """First-order difference over time (last dim): ``(x[t+1] - x[t-1]) / 2``, edges repeated.

    Built from ``cat`` rather than replicate padding, whose CUDA backward is non-deterministic.
    """
    padded = torch.cat([x[..., :1], x, x[..., -1:]], dim=-1)
    return (padded[..., 2:] - padded[..., :-2]) / 2


class LFCC(nn.Module):
    """Raw waveform ``[B, T]`` -> LFCC + deltas + double deltas ``[B, 3 * n_coeffs, frames]``."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160,
                 win_length: int = 320, n_filters: int = 20, n_coeffs: int = 20,
                 pre_emphasis: float = 0.97) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.pre_emphasis = pre_emphasis
        self.out_dim = 3 * n_coeffs
        # Fixed transforms: buffers follow .to(device) but stay out of checkpoints.
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.register_buffer("filterbank", linear_filterbank(n_filters, n_fft, sample_rate),
                             persistent=False)
        self.register_buffer("dct", dct_matrix(n_filters)[:n_coeffs], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # Float32 even under autocast: power spectra overflow float16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            x = torch.cat([x[:, :1], x[:, 1:] - self.pre_emphasis * x[:, :-1]], dim=1)
            spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window,
                              center=True, return_complex=True)
            power = torch.view_as_real(spec).square().sum(-1)  # [B, F, frames]
            log_energy = torch.matmul(self.filterbank, power).clamp(min=1e-10).log()
            coeffs = torch.matmul(self.dct, log_energy)  # [B, n_coeffs, frames]
            d1 = delta(coeffs)
            return torch.cat([coeffs, d1, delta(d1)], dim=1)


class MaxFeatureMap(nn.Module):
    """MFM activation: split the channels (``dim``) in two halves and keep the element-wise max.

    Written as ``b + relu(a - b)`` (equal to ``max(a, b)``): ``torch.maximum``'s backward splits
    ties with several masked ops and cost about a third of LCNN's CPU training step.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=self.dim)
        return b + F.relu(a - b)


def _conv_mfm(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    # The conv produces twice the channels; MFM halves them back.
    return [nn.Conv2d(c_in, 2 * c_out, kernel, padding=kernel // 2), MaxFeatureMap(1)]


def _pool() -> nn.Module:
    # ceil_mode keeps odd and very short inputs valid (a 1-frame map pools to 1 frame).
    return nn.MaxPool2d(2, 2, ceil_mode=True)


class LCNN(nn.Module):
    """LFCC front-end -> LCNN (conv + MFM, max-pool, batch-norm, dropout) -> mean over time -> head.

    Constructor arguments are the model hyperparameters stored in checkpoints.
    """

    def __init__(self, use_contrastive: bool = False, width: int = 16, emb_dim: int = 64,
                 proj_dim: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"width must be an even integer >= 2, got {width!r}")
        w, w15, w2 = width, width * 3 // 2, width * 2
        self.lfcc = LFCC()
        # Per-coefficient normalisation (not in the original recipe): c0 is a sum of log energies
        # and dwarfs the other coefficients, which slows training from scratch.
        self.input_norm = nn.BatchNorm1d(self.lfcc.out_dim)
        self.body = nn.Sequential(
            *_conv_mfm(1, w, 5), _pool(),
            *_conv_mfm(w, w, 1), nn.BatchNorm2d(w),
            *_conv_mfm(w, w15, 3), _pool(), nn.BatchNorm2d(w15),
            *_conv_mfm(w15, w15, 1), nn.BatchNorm2d(w15),
            *_conv_mfm(w15, w2, 3), _pool(),
            *_conv_mfm(w2, w2, 1), nn.BatchNorm2d(w2),
            *_conv_mfm(w2, w, 3), nn.BatchNorm2d(w),
            *_conv_mfm(w, w, 1), nn.BatchNorm2d(w),
            *_conv_mfm(w, w, 3), _pool(),
            nn.Dropout(dropout),
        )
        freq_bins = self.lfcc.out_dim
        for _ in range(4):  # four ceil-mode poolings
            freq_bins = math.ceil(freq_bins / 2)
        self.fc = nn.Sequential(nn.Linear(w * freq_bins, 2 * emb_dim), MaxFeatureMap(-1))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(emb_dim, 2)
        self.projector = (
            nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, proj_dim))
            if use_contrastive else None
        )

    def forward(self, x: Tensor, return_attention: bool = False) -> ModelOutput:
        """``return_attention`` is accepted for a uniform interface; LCNN has no attention maps."""
        if x.dim() == 3:  # accept [B, 1, T] as well as [B, T]
            x = x.squeeze(1)
        feats = self.input_norm(self.lfcc(x))  # [B, 60, frames]
        image = feats.transpose(1, 2).unsqueeze(1)  # [B, 1, frames, 60]
        # channels_last lets oneDNN pick a much faster kernel for the 1-channel 5x5 first conv
        # (about a third off a CPU training step); the values are the same.
        h = self.body(image.contiguous(memory_format=torch.channels_last))  # [B, C, frames', freq']
        h = h.permute(0, 2, 1, 3).flatten(2).mean(dim=1)  # average over time -> [B, C * freq']
        embedding = self.fc(h)
        log_probs = F.log_softmax(self.head(self.dropout(embedding)), dim=-1)
        projection = self.projector(embedding) if self.projector is not None else None
        return ModelOutput(log_probs, embedding, None, projection)
