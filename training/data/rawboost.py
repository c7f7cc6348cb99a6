"""RawBoost data augmentation on the raw waveform (Tak, Kamble, Patino, Todisco, Evans, ICASSP 2022).

This module owns the three RawBoost algorithms, their combinations (``--algo``), the 16 options
that tune them (``RawBoostConfig``, the original recipe's names and defaults) and their
validation, and the per-clip random generator that keeps augmented training reproducible.
Self-contained: numpy and scipy only, no torch, no project imports.

Algorithms, as the paper describes them and the public recipe implements them (16 kHz audio):

1. Linear and non-linear convolutive noise. ``N_f`` stages; stage ``k`` (1-based) filters
   ``x ** k`` with its own notch-filter bank and the stages are summed, then the mean is removed
   and the peak limited to 1. A notch-filter bank is the cascade of ``nBands`` FIR band-stop
   filters (Hamming window), each with a random centre in [minF, maxF] Hz, bandwidth in
   [minBW, maxBW] Hz and tap count in [minCoeff, maxCoeff] (made odd), scaled to a peak gain of
   G dB, G from [minG, maxG]. From the second stage on the gain range is lowered by the bias:
   [minG - minBiasLinNonLin, maxG - maxBiasLinNonLin] (with the defaults [-5, -20] dB: the
   higher-order terms are quieter).
2. Impulsive signal-dependent noise. A share ``beta`` drawn from [0, P] % of the samples (so on
   average P/2 %) is picked at random; each picked sample becomes ``x + g_sd * x * f`` with ``f``
   the product of two uniform [-1, 1) draws. The peak is then limited to 1.
3. Stationary signal-independent additive noise. White Gaussian noise is coloured by one
   notch-filter bank (gain from [minG, maxG]) and added at an SNR drawn from [SNRmin, SNRmax] dB
   (the SNR of the whole clip: ``20 log10(||x|| / ||noise||)``).

Combinations (``--algo``): 0 none, 1, 2, 3, 4 = 1 then 2 then 3, 5 = 1 then 2, 6 = 1 then 3,
7 = 2 then 3, 8 = 1 and 2 in parallel (both applied to the input, summed, peak limited to 1).

Determinism: every draw comes from the ``numpy.random.Generator`` passed in, never from global
state. Training draws it from ``clip_generator(seed, epoch, index)``, so a clip's augmentation
does not depend on the worker that loads it, on the batch order or on a resume.

Where this differs from the public code, on purpose: the filters are applied as one full
convolution (FFT-based for long filters; the original's ``lfilter`` of the zero-padded signal
is the same convolution, so results agree up to rounding), and the coloured noise skips a peak
normalisation that its SNR scaling undoes anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
NYQUIST = SAMPLE_RATE / 2
ALGORITHMS = {
    0: "none",
    1: "linear and non-linear convolutive noise",
    2: "impulsive signal-dependent noise",
    3: "stationary coloured additive noise",
    4: "1 + 2 + 3 in series",
    5: "1 + 2 in series",
    6: "1 + 3 in series",
    7: "2 + 3 in series",
    8: "1 and 2 in parallel",
}
# Band edges are kept this far inside (0, Nyquist), as the original does, so firwin accepts them.
_EDGE_HZ = 1e-3
# Upper bounds on the counts: beyond them one clip would take seconds to minutes to augment (the
# filter length grows with nBands * maxCoeff), which would silently stall every data-loader worker.
_MAX_BANDS = 64
_MAX_STAGES = 64
_MAX_COEFF = 4096
# Tags this module's random streams, so they never coincide with the synthetic data set's
# ``default_rng([seed, split, index])`` streams.
_STREAM_TAG = 0x5241_5742  # "RAWB"


@dataclass(frozen=True)
class RawBoostConfig:
    """The RawBoost options, with the original recipe's names and defaults. Validated on creation:
    a bad value raises ``ValueError`` with one line naming the option."""

    algo: int = 3
    nBands: int = 5
    minF: float = 20.0
    maxF: float = 8000.0
    minBW: float = 100.0
    maxBW: float = 1000.0
    minCoeff: int = 10
    maxCoeff: int = 100
    minG: float = 0.0
    maxG: float = 0.0
    minBiasLinNonLin: float = 5.0
    maxBiasLinNonLin: float = 20.0
    N_f: int = 5
    P: float = 10.0
    g_sd: float = 2.0
    SNRmin: float = 10.0
    SNRmax: float = 40.0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _as_number(f.name, getattr(self, f.name), f.type == "int"))
        _check_ranges(self)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> "RawBoostConfig":
        """The options found in ``args`` (training arguments; other keys are ignored). A key that
        is missing or None takes the default."""
        return cls(**{f.name: args[f.name] for f in fields(cls) if args.get(f.name) is not None})


OPTION_NAMES = tuple(f.name for f in fields(RawBoostConfig))


def check_options(args: Mapping[str, Any]) -> None:
    """Validation hook for the entry points (CLI, jobs, Launch form): ``ValueError`` with one line
    naming the option when ``args`` holds an unusable RawBoost value."""
    RawBoostConfig.from_args(args)


def _as_number(name: str, value: Any, integer: bool) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"--{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"--{name} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"--{name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _check_ranges(cfg: RawBoostConfig) -> None:
    if cfg.algo not in ALGORITHMS:
        raise ValueError(f"--algo must be one of 0-8 (0 = no augmentation), got {cfg.algo}")
    for name, low, high in (("nBands", 0, _MAX_BANDS), ("N_f", 1, _MAX_STAGES), ("minCoeff", 1, _MAX_COEFF),
                            ("maxCoeff", 1, _MAX_COEFF)):
        value = getattr(cfg, name)
        if not low <= value <= high:
            raise ValueError(f"--{name} must be between {low} and {high}, got {value}")
    if not 0 <= cfg.minF <= NYQUIST or not 0 <= cfg.maxF <= NYQUIST:
        name = "minF" if not 0 <= cfg.minF <= NYQUIST else "maxF"
        raise ValueError(f"--{name} must be between 0 and {NYQUIST:g} Hz (the Nyquist frequency at "
                         f"{SAMPLE_RATE} Hz), got {getattr(cfg, name):g}")
    if cfg.minBW < 1:
        raise ValueError(f"--minBW must be at least 1 Hz, got {cfg.minBW:g}")
    if not 0 <= cfg.P <= 100:
        raise ValueError(f"--P is a percentage of samples and must be between 0 and 100, got {cfg.P:g}")
    if cfg.g_sd < 0:
        raise ValueError(f"--g_sd must not be negative, got {cfg.g_sd:g}")
    for low, high in (("minF", "maxF"), ("minBW", "maxBW"), ("minCoeff", "maxCoeff"), ("minG", "maxG"),
                      ("minBiasLinNonLin", "maxBiasLinNonLin"), ("SNRmin", "SNRmax")):
        if getattr(cfg, low) > getattr(cfg, high):
            raise ValueError(f"--{low} {getattr(cfg, low):g} is above --{high} {getattr(cfg, high):g}: "
                             f"{low} must not exceed {high}")


# --- random draws ----------------------------------------------------------------------------------

_SPLIT_TAGS = {"val": 1}


def clip_generator(seed: int, epoch: int, index: int, split: str = "train") -> np.random.Generator:
    """The generator of one clip's augmentation: a pure function of (seed, epoch, index), and of
    the split, so that validation clip i (``--augment_dev``) never draws training clip i's noise."""
    if epoch < 0 or index < 0:
        raise ValueError(f"epoch and clip index must not be negative, got epoch {epoch}, index {index}")
    key = [_STREAM_TAG, int(seed) % 2**64, int(epoch), int(index)]
    return np.random.default_rng(key if split == "train" else key + [_SPLIT_TAGS[split]])


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """U(low, high) written out, so that a reversed range (the original's bias-lowered gains can
    be, e.g. [-5, -20] dB) is well defined: it draws from [high, low]."""
    return low + (high - low) * rng.random()


# --- building blocks -------------------------------------------------------------------------------

def _notch_filter(cfg: RawBoostConfig, rng: np.random.Generator, min_gain: float, max_gain: float) -> np.ndarray:
    """A random bank of ``nBands`` FIR band-stop filters in cascade, scaled to a peak gain drawn
    from [min_gain, max_gain] dB."""
    from scipy import signal  # here, not at the top: the CLI imports this module to validate options

    taps = np.ones(1)
    for _ in range(cfg.nBands):
        centre = _uniform(rng, cfg.minF, cfg.maxF)
        width = _uniform(rng, cfg.minBW, cfg.maxBW)
        count = int(_uniform(rng, cfg.minCoeff, cfg.maxCoeff))
        count += 1 - count % 2  # a band-stop FIR needs an odd tap count
        low = max(centre - width / 2, _EDGE_HZ)
        high = min(centre + width / 2, NYQUIST - _EDGE_HZ)
        band_stop = signal.firwin(count, [low, high], window="hamming", fs=SAMPLE_RATE)
        taps = np.convolve(band_stop, taps)
    gain_db = _uniform(rng, min_gain, max_gain)
    _, response = signal.freqz(taps, 1, fs=SAMPLE_RATE)
    return (10 ** (gain_db / 20) / np.max(np.abs(response))) * taps


def _apply_filter(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``x`` filtered by ``taps``, same length, shifted back by about the filter's delay exactly as
    the original (its output starts ``(len(taps) + 1) // 2`` samples into the full convolution)."""
    from scipy import signal

    full = signal.convolve(x, taps, mode="full")  # FFT or direct, chosen from the sizes alone
    start = (len(taps) + 1) // 2
    if len(full) < start + len(x):  # a filter of one tap: the original reads into its zero padding
        full = np.pad(full, (0, start + len(x) - len(full)))
    return full[start:start + len(x)]


def _limit_peak(x: np.ndarray) -> np.ndarray:
    """Scale down to a peak of 1 when louder; leave it alone otherwise (the original's normWav)."""
    peak = np.max(np.abs(x)) if len(x) else 0.0
    return x / peak if peak > 1 else x


# --- the three algorithms ----------------------------------------------------------------------------

def convolutive_noise(x: np.ndarray, cfg: RawBoostConfig, rng: np.random.Generator) -> np.ndarray:
    """Algorithm 1: linear and non-linear convolutive noise (see the module docstring)."""
    y = np.zeros_like(x)
    min_gain, max_gain = cfg.minG, cfg.maxG
    for stage in range(1, cfg.N_f + 1):
        if stage == 2:  # the non-linear terms are attenuated by the bias
            min_gain, max_gain = cfg.minG - cfg.minBiasLinNonLin, cfg.maxG - cfg.maxBiasLinNonLin
        y += _apply_filter(x ** stage, _notch_filter(cfg, rng, min_gain, max_gain))
    y -= y.mean() if len(y) else 0.0
    return _limit_peak(y)


def impulsive_noise(x: np.ndarray, cfg: RawBoostConfig, rng: np.random.Generator) -> np.ndarray:
    """Algorithm 2: impulsive signal-dependent noise on a random [0, P] % of the samples."""
    share = _uniform(rng, 0.0, cfg.P)
    count = int(len(x) * share / 100)
    picked = rng.permutation(len(x))[:count]
    factor = (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1)
    y = x.copy()
    y[picked] += cfg.g_sd * x[picked] * factor
    return _limit_peak(y)


def coloured_noise(x: np.ndarray, cfg: RawBoostConfig, rng: np.random.Generator) -> np.ndarray:
    """Algorithm 3: stationary coloured noise added at an SNR from [SNRmin, SNRmax] dB."""
    noise = _apply_filter(rng.standard_normal(len(x)), _notch_filter(cfg, rng, cfg.minG, cfg.maxG))
    snr_db = _uniform(rng, cfg.SNRmin, cfg.SNRmax)
    noise_norm = np.linalg.norm(noise)
    if noise_norm == 0:  # an empty clip: nothing to add
        return x.copy()
    return x + noise * (np.linalg.norm(x) / noise_norm / 10 ** (snr_db / 20))


_SERIES = {
    1: (convolutive_noise,),
    2: (impulsive_noise,),
    3: (coloured_noise,),
    4: (convolutive_noise, impulsive_noise, coloured_noise),
    5: (convolutive_noise, impulsive_noise),
    6: (convolutive_noise, coloured_noise),
    7: (impulsive_noise, coloured_noise),
}


def augment(wave: np.ndarray, cfg: RawBoostConfig, rng: np.random.Generator) -> np.ndarray:
    """``wave`` (1-D) augmented as ``cfg.algo`` says, float32, same length; draws only from ``rng``.

    Computed in float64 (the original computes in float64 as well, from scipy's filters)."""
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"RawBoost expects a 1-D waveform, got shape {x.shape}")
    if cfg.algo == 8:
        y = _limit_peak(convolutive_noise(x, cfg, rng) + impulsive_noise(x, cfg, rng))
    else:
        y = x
        for step in _SERIES.get(cfg.algo, ()):
            y = step(y, cfg, rng)
    return y.astype(np.float32)  # always a new array: the caller's clip (maybe cached) is untouched


@dataclass
class ClipAugmenter:
    """``augmenter(wave, index)``: a training clip augmented with ``clip_generator(seed, epoch, index)``.

    The data set holds one; the trainer sets ``epoch`` (through the data set's ``set_epoch``)
    before each epoch's loader starts its workers, which copy it."""

    cfg: RawBoostConfig
    seed: int
    epoch: int = 0
    split: str = "train"  # "val" with --augment_dev

    def __call__(self, wave: np.ndarray, index: int) -> np.ndarray:
        return augment(wave, self.cfg, clip_generator(self.seed, self.epoch, index, self.split))
