"""The built-in synthetic anti-spoofing set (``--dataset synthetic``).

``SyntheticSpoofDataset`` needs no files, so tests, demos and the dashboard work anywhere.
Item ``i`` is a pure function of ``(seed, split, i)``: it draws from its own
``np.random.default_rng([seed, split_id, i])`` and never touches the global torch / numpy /
``random`` state, so shuffling, worker processes, caching or resuming cannot change the data.
Bona fide clips imitate natural voiced speech; spoof clips imitate vocoded speech. Both share
the same random speakers, vowels, loudness, background noise and channel, so they are not
trivially separable: the spoof cues are subtle and their strength is drawn per clip from a
range that reaches zero (see ``SyntheticSpoofDataset``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.common import SAMPLE_RATE, Augmentable, Item
from training.labels import BONAFIDE, SPOOF

# (F1, F2, F3) of a few vowels for an adult male vocal tract, Hz (Peterson & Barney style).
_VOWELS = np.array(
    [
        [270, 2290, 3010],  # i
        [530, 1840, 2480],  # e
        [730, 1090, 2440],  # a
        [570, 840, 2410],  # o
        [300, 870, 2240],  # u
        [500, 1500, 2500],  # schwa
    ],
    dtype=np.float64,
)
_HIGHER_FORMANTS = np.array([3500.0, 4500.0, 5600.0, 6800.0])
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 220.0, 300.0, 400.0, 500.0])
# Parallel-formant gains: the upper formants keep harmonics visible up to ~7 kHz, as in real
# wide-band speech (a cascade of 2-pole resonances falls off far too steeply at 16 kHz).
_FORMANT_GAINS = np.array([1.0, 0.6, 0.35, 0.2, 0.14, 0.1, 0.07])

_FRAME = 512  # STFT frame for spectral shaping (32 ms); hop is half of it
_HOP = _FRAME // 2
_WINDOW = np.sqrt(np.hanning(_FRAME + 1)[:-1])  # sqrt-periodic-Hann: analysis x synthesis sums to 1
_FREQS = np.fft.rfftfreq(_FRAME, 1.0 / SAMPLE_RATE)

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def _split_id(split: str) -> int:
    """Stable integer for a split name (never Python's salted ``hash``)."""
    return _SPLIT_IDS.get(split, 1000 + zlib.crc32(split.encode()))


def _stft(x: np.ndarray) -> np.ndarray:
    """Frames of ``x`` (padded by one frame each side) -> ``(frames, bins)`` spectra."""
    padded = np.pad(x, (_FRAME, _FRAME + (-len(x)) % _HOP))
    frames = np.lib.stride_tricks.sliding_window_view(padded, _FRAME)[::_HOP]
    return np.fft.rfft(frames * _WINDOW, axis=1)


def _istft(spec: np.ndarray, n: int) -> np.ndarray:
    """Overlap-add inverse of ``_stft`` (50 % overlap: each hop-block = 2nd half of frame k-1 + 1st of k)."""
    frames = np.fft.irfft(spec, n=_FRAME, axis=1) * _WINDOW
    first, second = frames[:, :_HOP], frames[:, _HOP:]
    blocks = first[1:] + second[:-1]
    return blocks.reshape(-1)[_HOP : _HOP + n]


_CONTROL_STEP = 64  # samples per control point (250 Hz): pitch and loudness curves live here


def _smooth_noise(rng: np.random.Generator, n_points: int, n_knots: int) -> np.ndarray:
    """Zero-mean random curve with unit-variance knots, varying ``n_knots`` times over ``n_points``."""
    knots = rng.standard_normal(n_knots + 2)
    return np.interp(np.linspace(0, n_knots + 1, n_points), np.arange(n_knots + 2), knots)


def _vowel_envelope(formants: np.ndarray) -> np.ndarray:
    """|H(f)| on the STFT bins for each row of formant frequencies: a parallel bank of resonances.

    Each resonance is peak-normalised, ``1 / sqrt(1 + ((f^2 - F^2) / (f B))^2)``, and weighted
    by ``_FORMANT_GAINS``; summing magnitudes (not complex responses) is enough for an envelope.
    """
    f = np.maximum(_FREQS, 1.0)[None, :, None]
    q = (f * f - formants[:, None, :] ** 2) / (f * _BANDWIDTHS)
    return (_FORMANT_GAINS / np.sqrt(1.0 + q * q)).sum(axis=2)


@dataclass(frozen=True)
class _Voice:
    """One random speaker and recording condition, shared by both classes."""

    f0: float  # mean pitch, Hz
    tract: float  # formant scale: shorter vocal tracts have higher formants
    open_quotient: float
    jitter: float  # natural cycle-to-cycle F0 perturbation (fraction)
    shimmer: float  # natural cycle-to-cycle amplitude perturbation (fraction)
    breath: float  # aspiration-noise level relative to the voiced source
    syllable_rate: float  # Hz
    level_db: float  # output RMS, dBFS
    snr_db: float  # background noise
    noise_tilt: float  # background noise colour, dB per octave
    channel_tilt: float  # channel spectral tilt, dB per octave
    channel_cutoff: float  # channel low-pass corner, Hz (Nyquist = no low-pass)


def _draw_voice(rng: np.random.Generator) -> _Voice:
    female = rng.random() < 0.5
    return _Voice(
        f0=rng.uniform(165, 260) if female else rng.uniform(85, 155),
        tract=rng.uniform(1.05, 1.22) if female else rng.uniform(0.88, 1.05),
        open_quotient=rng.uniform(0.45, 0.75),
        jitter=rng.uniform(0.005, 0.02),
        shimmer=rng.uniform(0.03, 0.12),
        breath=rng.uniform(0.02, 0.12),
        syllable_rate=rng.uniform(3.0, 6.0),
        level_db=rng.uniform(-34.0, -17.0),
        snr_db=rng.uniform(12.0, 45.0),
        noise_tilt=rng.uniform(-6.0, 0.0),
        channel_tilt=rng.uniform(-3.0, 1.5),
        # a third of the recordings went through a band-limited channel: band limitation alone
        # must not give the spoof class away
        channel_cutoff=rng.uniform(3800, 7600) if rng.random() < 0.35 else SAMPLE_RATE / 2,
    )


def _octaves(freqs: np.ndarray) -> np.ndarray:
    """log2(f / 1 kHz), finite at DC."""
    return np.log2(np.maximum(freqs, 50.0) / 1000.0)


def synthesize_clip(
    rng: np.random.Generator, n: int, bonafide: bool, artefact_range: tuple[float, float] = (-0.03, 1.0)
) -> np.ndarray:
    """One synthetic utterance of ``n`` samples at 16 kHz (float64), drawn entirely from ``rng``.

    Natural (bona fide): glottal pulses with jitter, shimmer and micro-prosody; aspiration noise
    pulsed with the glottal cycle; vowel formants; fricative noise between syllables; full band.
    Vocoded (spoof), each cue scaled by a per-clip artefact strength
    ``s = sqrt(clip(U(*artefact_range), 0, 1))``: smoothed F0 (less jitter and micro-prosody)
    and steadier cycle amplitudes (over-regular harmonics); steady instead of pulsed aspiration;
    phase artefacts (a random dispersive phase response that blunts the glottal closures,
    frame-to-frame phase incoherence); a weaker, noise-filled high band above a random corner;
    a faint amplitude modulation at a vocoder frame rate. Speaker, vowels, loudness, background
    noise and channel are drawn the same way for both classes. Slow per-clip curves are computed
    on a 250 Hz control grid and interpolated, which keeps a 1 s clip at a few milliseconds.
    """
    voice = _draw_voice(rng)
    # sqrt: most spoofs carry clear artefacts, a tail carries faint ones, a few none at all
    strength = 0.0 if bonafide else float(np.sqrt(min(1.0, max(0.0, rng.uniform(*artefact_range)))))
    natural = 1.0 - strength
    seconds = n / SAMPLE_RATE
    n_ctrl = n // _CONTROL_STEP + 2
    t_ctrl = np.arange(n_ctrl) * (_CONTROL_STEP / SAMPLE_RATE)
    sample_pos = np.arange(n) / _CONTROL_STEP

    # --- pitch: declination + phrase intonation + micro-prosody (control rate), jitter per cycle
    log_f0 = (
        np.log(voice.f0)
        + rng.uniform(-0.15, 0.0) * t_ctrl
        + 0.08 * _smooth_noise(rng, n_ctrl, max(1, int(seconds * 2)))
        + 0.025 * (1.0 - 0.8 * strength) * _smooth_noise(rng, n_ctrl, max(2, int(seconds * 25)))
    )
    f0 = np.interp(sample_pos, np.arange(n_ctrl), np.exp(log_f0))
    cycle = (np.cumsum(f0) * (1.0 / SAMPLE_RATE)).astype(np.int64)
    cycle_noise = rng.standard_normal((2, cycle[-1] + 3))
    f0 *= 1.0 + voice.jitter * natural * cycle_noise[0, cycle]
    phase = np.cumsum(f0) * (1.0 / SAMPLE_RATE)
    cycle = phase.astype(np.int64)
    frac = phase - cycle

    # --- glottal flow (Rosenberg-like, abrupt closure); its derivative is the excitation
    a = np.minimum(frac * (1.0 / voice.open_quotient), 1.0)
    flow = 6.75 * a * a * (1.0 - a)
    shimmer = 1.0 + voice.shimmer * natural * cycle_noise[1, np.minimum(cycle, cycle_noise.shape[1] - 1)]
    excitation = np.diff(flow, prepend=0.0) * shimmer * (voice.f0 / 10.0)
    # aspiration: natural turbulence is gated by the open glottis; a vocoder's noise is steady
    gate = natural * flow + strength * (voice.open_quotient * 9.0 / 16.0)  # ~ same mean level
    excitation += (voice.breath * 0.5) * (rng.random(n) - 0.5) * gate

    # --- syllables: loudness envelope (control rate) and one vowel per syllable
    syl_pos = voice.syllable_rate * t_ctrl + rng.random()
    n_syl = int(syl_pos[-1]) + 2
    syl_gain = rng.uniform(0.4, 1.0, n_syl)
    env_ctrl = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * syl_pos)) * syl_gain[syl_pos.astype(np.int64)]
    envelope = np.interp(sample_pos, np.arange(n_ctrl), env_ctrl)
    if strength > 0:  # vocoder frame-rate modulation (hop of 80..256 samples), faint
        frame_rate = SAMPLE_RATE / rng.uniform(80, 256)
        t = np.arange(n) * (1.0 / SAMPLE_RATE)
        envelope *= 1.0 + 0.12 * strength * np.cos(2 * np.pi * frame_rate * t + rng.random() * 6.283)
    spec = _stft(excitation * envelope)
    n_frames, n_bins = spec.shape
    frame_ctrl = np.clip((np.arange(n_frames) - 1) * (_HOP / _CONTROL_STEP), 0, n_ctrl - 1)  # frame centres

    # --- vocal tract: the envelopes of the syllables' vowels, cross-faded along the syllables
    vowel_mag = _vowel_envelope(
        np.concatenate([_VOWELS[rng.integers(0, len(_VOWELS), n_syl + 1)],
                        np.broadcast_to(_HIGHER_FORMANTS, (n_syl + 1, 4))], axis=1) * voice.tract
    )
    frame_syl = np.clip(np.interp(frame_ctrl, np.arange(n_ctrl), syl_pos), 0, n_syl - 1e-6)
    lo = frame_syl.astype(np.int64)
    w = (frame_syl - lo)[:, None]
    spec *= (1 - w) * vowel_mag[lo] + w * vowel_mag[lo + 1]
    speech_level = np.sqrt(np.mean(spec.real**2 + spec.imag**2)) + 1e-12

    # --- vocoder phase: a smooth random phase response (disperses the sharp glottal closures,
    # as minimum/zero-phase or Griffin-Lim style reconstruction does) plus frame-to-frame
    # phase incoherence (multiplicative spectral noise)
    if strength > 0:
        dispersion = np.pi * strength * np.cumsum(rng.standard_normal(n_bins)) / np.sqrt(n_bins) * 3.0
        u = rng.random((2, n_frames, n_bins)) - 0.5
        incoherence = (0.35 * strength * np.sqrt(6.0)) * (u[0] + 1j * u[1])
        spec *= np.exp(1j * dispersion) * (1.0 + incoherence)

    # --- vocoder high band: noise with the speech's magnitude, above a corner frequency
    if strength > 0:
        band = np.clip((_FREQS - rng.uniform(3500, 7000)) / 500.0, 0.0, 1.0) * strength
        cols = band > 0
        sub = spec[:, cols]
        # random complex factor with E|z|^2 = 1 (uniform parts: much cheaper than exp(i*phase))
        u = rng.random((2, *sub.shape)) - 0.5
        z = np.sqrt(6.0) * (u[0] + 1j * u[1])
        # the noise-filled band also comes out a little weaker (band-limited vocoders)
        spec[:, cols] = sub * (1 - band[cols]) + (0.6 * np.abs(sub)) * z * band[cols]

    # --- noise, made directly in the STFT domain: fricatives between syllables (a speech
    # sound, both classes) plus stationary background noise at the drawn SNR
    env_frames = np.interp(frame_ctrl, np.arange(n_ctrl), env_ctrl)
    fricative_syllables = rng.random(n_syl) < 0.4
    frame_syl_index = np.minimum(frame_syl.astype(np.int64), n_syl - 1)
    fric_amp = 0.3 * (env_ctrl.max() - env_frames) * fricative_syllables[frame_syl_index]
    fric_shape = np.exp(-(((_FREQS - rng.uniform(3000, 6500)) / 2500.0) ** 2))
    colour = 10 ** (voice.noise_tilt * _octaves(_FREQS) / 20.0)
    colour *= 10 ** (-voice.snr_db / 20.0) / np.sqrt(np.mean(colour**2))
    noise_amp = fric_amp[:, None] * fric_shape[None, :] + colour[None, :]
    # uniform real and imaginary parts (variance 1/12 each): the inverse FFT sums hundreds of
    # bins, so the time-domain noise is Gaussian anyway, and uniform draws are 4x cheaper
    noise = rng.random((2, n_frames, n_bins)) - 0.5
    spec += (speech_level * np.sqrt(6.0)) * noise_amp * (noise[0] + 1j * noise[1])

    # --- the recording channel (both classes): spectral tilt and, for some, a low-pass
    channel = 10 ** (voice.channel_tilt * _octaves(_FREQS) / 20.0)
    channel /= 1.0 + (_FREQS / voice.channel_cutoff) ** 8
    spec *= channel

    y = _istft(spec, n)
    y *= 10 ** (voice.level_db / 20.0) / (np.sqrt(np.mean(y**2)) + 1e-12)
    return np.clip(y, -1.0, 1.0)


class SyntheticSpoofDataset(Augmentable, Dataset):
    """Built-in synthetic bona fide / spoof clips (16 kHz), deterministic per ``(seed, split, index)``.

    Even indices are bona fide, odd indices spoof: exactly balanced, and any two consecutive
    items contain both classes, so even a tiny validation set has a defined EER.

    ``artefact_range``: the difficulty knob. Each spoof clip's artefact strength is
    ``sqrt(clip(U(lo, hi), 0, 1))``; with the default (-0.03, 1.0) about 3 % of spoof clips carry
    no artefact at all (a floor of a few percent EER) and a tail carries faint ones. Measured
    with a 3-layer raw-audio CNN (Adam 1e-3, batch 16, one-second clips, 300 val clips), val EER
    by epoch: 2,000 train clips 25, 11, 13, 10, 10, 7 %; 1,000 clips 23 % after epoch 1 and
    below 10 % from epoch 7; 400 clips 47 % after epoch 1, 11 % after epoch 10.
    Raise ``lo`` for an easier set, lower it for a harder one.
    ``cache``: keep generated clips in memory (float32). It never changes what an index returns.
    """

    def __init__(
        self,
        size: int,
        clip_samples: int,
        seed: int,
        split: str,
        artefact_range: tuple[float, float] = (-0.03, 1.0),
        cache: bool = False,
    ) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        if clip_samples < _FRAME:
            raise ValueError(f"clip_samples must be at least {_FRAME}, got {clip_samples}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 for the synthetic data set, got {seed}")
        self.size = int(size)
        self.clip_samples = int(clip_samples)
        self.seed = int(seed)
        self.split = split
        self.artefact_range = (float(artefact_range[0]), float(artefact_range[1]))
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        return BONAFIDE if index % 2 == 0 else SPOOF

    def utt_id(self, index: int) -> str:
        return f"SYN_{self.split}_{index:07d}"

    @property
    def labels(self) -> list[int]:
        return [self.label(i) for i in range(self.size)]

    def waveform(self, index: int) -> np.ndarray:
        """The clip as float32 numpy, a pure function of ``(seed, split, index)``."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng([self.seed, _split_id(self.split), index])
        clip = synthesize_clip(rng, self.clip_samples, self.label(index) == BONAFIDE, self.artefact_range)
        clip = clip.astype(np.float32)
        if self._cache is not None:
            self._cache[index] = clip
        return clip

    def __getitem__(self, index: int) -> Item:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        index %= self.size
        clip = self.waveform(index)
        # a copy (augmenting makes a new array), so callers modifying the tensor in place cannot
        # corrupt the cache
        clip = clip.copy() if self.augmenter is None else self.augmented(clip, index)
        return torch.from_numpy(clip), self.label(index), self.utt_id(index)
