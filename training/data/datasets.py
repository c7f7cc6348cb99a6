"""Datasets: a built-in synthetic anti-spoofing set and the real ASVspoof / In-the-Wild formats.

Every dataset yields ``(waveform, label, utt_id)``: a 1-D ``torch.float32`` waveform at 16 kHz,
``label`` 1 = bona fide, 0 = spoof (the ASVspoof 2021 baseline's convention, so the bona fide
log-probability, column 1, is the CM score), and the utterance id.

Synthetic data (``--dataset synthetic``)
    ``SyntheticSpoofDataset`` needs no files, so tests, demos and the dashboard work anywhere.
    Item ``i`` is a pure function of ``(seed, split, i)``: it draws from its own
    ``np.random.default_rng([seed, split_id, i])`` and never touches the global torch / numpy /
    ``random`` state, so shuffling, worker processes, caching or resuming cannot change the data.
    Bona fide clips imitate natural voiced speech; spoof clips imitate vocoded speech. Both share
    the same random speakers, vowels, loudness, background noise and channel, so they are not
    trivially separable: the spoof cues are subtle and their strength is drawn per clip from a
    range that reaches zero (see ``SyntheticSpoofDataset``).

ASVspoof files (``--dataset asvspoof``), layout expected by ``build_datasets``
    LA and DF tracks train and validate on ASVspoof 2019 LA train / dev, as the 2021 baselines do::

        {database_path}/ASVspoof2019_LA_train/flac/LA_T_1138215.flac ...
        {database_path}/ASVspoof2019_LA_dev/flac/LA_D_1047731.flac ...
        {protocols_path}/ASVspoof2019.LA.cm.train.trn.txt
        {protocols_path}/ASVspoof2019.LA.cm.dev.trl.txt

    (the protocols may also sit in ``{protocols_path}/ASVspoof2019_LA_cm_protocols/``, as in the
    official LA.zip, and the audio folders may lack the ``flac/`` level).

    In-the-Wild has no official split; its ``meta.csv`` is split 90 / 10 into train / val by a
    seeded permutation (``seed``)::

        {database_path}/release_in_the_wild/0.wav ... meta.csv   (the official zip, unpacked)
        or {database_path}/0.wav ... with meta.csv there or at --protocols_path
        (a meta.csv file, or a folder holding one)

Protocol formats read by ``read_protocol`` (blank lines ignored, anything else malformed is a
``DataError`` naming the file, line number and text):

    2019 LA/PA train/dev/eval   ``LA_0079 LA_T_1138215 - - bonafide``  (speaker utt - attack label)
    2021 LA/DF keys             ``LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress ...``
                                (speaker utt codec source attack label trim subset ...)
    In-the-Wild meta.csv        ``file,speaker,label`` header; label ``bona-fide`` or ``spoof``

Training clips can be augmented with RawBoost (``--algo``, ``training/rawboost.py``): the train
set of ``build_datasets`` carries a ``ClipAugmenter`` unless ``--algo 0``; the validation set only
with ``--augment_dev`` (the original's behaviour, off by default: it changes which epoch is "best").
Clip ``i`` of epoch ``e`` is augmented with a generator seeded by ``(seed, e, i)``, inside
``__getitem__`` (so in the data-loader workers); the trainer calls ``set_epoch(e)`` before each
epoch's loader starts. ASVspoof files are augmented before cutting, as the original recipe does.

Audio is read with soundfile as mono float32 and cut to ``clip_samples`` (64,600 by default,
about 4 s) or tiled when shorter, exactly like the 2021 baseline's ``pad``. ``--clip_samples``,
``--train_size`` and ``--val_size`` apply to the synthetic set only. With In-the-Wild only
``--database_path`` is required.
"""

from __future__ import annotations

import csv
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from training.labels import BONAFIDE, CSV_LABELS, PROTOCOL_LABELS, SPOOF

SAMPLE_RATE = 16000
DEFAULT_CLIP_SAMPLES = 64600  # the ASVspoof 2021 baseline's input length (~4 s)
AUDIO_EXTENSIONS = (".flac", ".wav")

Item = tuple[torch.Tensor, int, str]


class Augmentable:
    """Mixin: an optional RawBoost ``augmenter`` for training sets, and the epoch it draws for.

    ``set_epoch`` must be called before the epoch's ``DataLoader`` starts iterating: workers are
    started per loader and copy the data set (augmenter included) as it is then.
    """

    augmenter: Any = None  # a training.rawboost.ClipAugmenter, or None (no augmentation)

    def set_epoch(self, epoch: int) -> None:
        if self.augmenter is not None:
            self.augmenter.epoch = int(epoch)

    def _augmented(self, wave: np.ndarray, index: int) -> np.ndarray:
        return wave if self.augmenter is None else self.augmenter(wave, index)


class DataError(Exception):
    """A data set cannot be used as given: a missing file or flag, a malformed protocol line.

    The message is one line that names the file (and line) so the user can fix it directly.
    """


# =============================================================================================
# Synthetic data
# =============================================================================================

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
        clip = clip.copy() if self.augmenter is None else self._augmented(clip, index)
        return torch.from_numpy(clip), self.label(index), self.utt_id(index)


# =============================================================================================
# ASVspoof / In-the-Wild protocols
# =============================================================================================

@dataclass(frozen=True)
class ProtocolEntry:
    """One trial of a protocol: ``label`` 1 = bona fide, 0 = spoof; ``attack`` '-' when none."""

    utt_id: str
    label: int
    speaker: str
    attack: str




def read_protocol(path: str | os.PathLike[str]) -> list[ProtocolEntry]:
    """Parse an ASVspoof 2019 protocol, an ASVspoof 2021 LA/DF key file or an In-the-Wild ``meta.csv``.

    The format is recognised from the first non-blank line: a comma means CSV (In-the-Wild),
    5 whitespace-separated fields the 2019 protocol, 7 or more a 2021 key. Every later line must
    follow the same format. Blank lines are skipped; anything else that does not parse raises
    ``DataError("<path> line <n>: <what was expected>, got '<text>'")``.
    """
    text = _read_text(path)
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise DataError(f"{path}: protocol file is empty")
    numbered = _parse_csv(path, text) if "," in first else _parse_whitespace(path, lines)
    first_line: dict[str, int] = {}
    for lineno, entry in numbered:
        if entry.utt_id in first_line:
            raise DataError(
                f"{path} line {lineno}: utterance '{entry.utt_id}' already listed on line {first_line[entry.utt_id]}"
            )
        first_line[entry.utt_id] = lineno
    return [entry for _, entry in numbered]


def _read_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: protocol file not found")
    if not p.is_file():
        raise DataError(f"{path}: expected a protocol file, found a folder")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text protocol file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read protocol file ({exc.strerror})") from None


def _parse_whitespace(path: str | os.PathLike[str], lines: Sequence[str]) -> list[tuple[int, ProtocolEntry]]:
    entries: list[tuple[int, ProtocolEntry]] = []
    n_fields: int | None = None  # fixed by the first line
    for lineno, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if n_fields is None:
            if len(fields) != 5 and len(fields) < 7:
                raise DataError(
                    f"{path} line {lineno}: expected 5 fields (2019 protocol) or at least 7 "
                    f"(2021 key), got {len(fields)}: '{line.strip()}'"
                )
            n_fields = len(fields)
        if len(fields) != n_fields:
            raise DataError(
                f"{path} line {lineno}: expected {n_fields} fields like the first line, "
                f"got {len(fields)}: '{line.strip()}'"
            )
        # 2019: SPEAKER UTT - ATTACK LABEL; 2021: SPEAKER UTT CODEC SOURCE ATTACK LABEL TRIM SUBSET ...
        label_field = 5 if n_fields == 5 else 6
        label_text = fields[label_field - 1]
        if label_text not in PROTOCOL_LABELS:
            raise DataError(
                f"{path} line {lineno}: expected 'bonafide' or 'spoof' in field {label_field}, got '{label_text}'"
            )
        entry = ProtocolEntry(fields[1], PROTOCOL_LABELS[label_text], fields[0], fields[label_field - 2])
        entries.append((lineno, entry))
    return entries


def _parse_csv(path: str | os.PathLike[str], text: str) -> list[tuple[int, ProtocolEntry]]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    if "file" not in header or "label" not in header:
        raise DataError(
            f"{path} line 1: expected a header with 'file' and 'label' columns (In-the-Wild meta.csv), "
            f"got '{','.join(header)}'"
        )
    entries: list[tuple[int, ProtocolEntry]] = []
    for row in reader:
        lineno = reader.line_num
        if None in row or None in row.values():
            raise DataError(
                f"{path} line {lineno}: expected {len(header)} comma-separated fields, got '{_row_text(row)}'"
            )
        label_text = row["label"].strip()
        if label_text not in CSV_LABELS:
            raise DataError(
                f"{path} line {lineno}: expected 'bona-fide' or 'spoof' in column 'label', got '{label_text}'"
            )
        file = row["file"].strip()
        if not file:
            raise DataError(f"{path} line {lineno}: empty 'file' column")
        utt_id = file[: -len(Path(file).suffix)] if Path(file).suffix.lower() in AUDIO_EXTENSIONS else file
        speaker = (row.get("speaker") or "-").strip() or "-"
        entries.append((lineno, ProtocolEntry(utt_id, CSV_LABELS[label_text], speaker, "-")))
    return entries


def _row_text(row: Mapping[Any, Any]) -> str:
    values = [v for k, v in row.items() if k is not None and v is not None]
    extra = row.get(None) or []
    return ",".join([*values, *extra])


# =============================================================================================
# ASVspoof audio
# =============================================================================================

def pad(x: np.ndarray, max_len: int = DEFAULT_CLIP_SAMPLES) -> np.ndarray:
    """The ASVspoof 2021 baseline's ``pad``: the first ``max_len`` samples, tiled when shorter."""
    x_len = x.shape[0]
    if x_len >= max_len:
        return x[:max_len]
    num_repeats = int(max_len / x_len) + 1
    return np.tile(x, num_repeats)[:max_len]


class ASVspoofDataset(Augmentable, Dataset):
    """Audio files named by a protocol: ``audio_dir/{utt_id}.flac`` (or ``.wav``), 16 kHz.

    All files are located when the dataset is built, so a wrong folder or an incomplete copy
    fails at start-up with the first missing path and the number missing, not hours into
    training. Each item is mono float32 (channels averaged), cut or tiled to ``clip_samples``.
    """

    def __init__(
        self,
        entries: Sequence[ProtocolEntry],
        audio_dir: str | os.PathLike[str],
        clip_samples: int = DEFAULT_CLIP_SAMPLES,
        sample_rate: int = SAMPLE_RATE,
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
    ) -> None:
        if clip_samples <= 0:
            raise ValueError(f"clip_samples must be positive, got {clip_samples}")
        self.entries = list(entries)
        self.audio_dir = Path(audio_dir)
        self.clip_samples = int(clip_samples)
        self.sample_rate = int(sample_rate)
        self.paths = _locate_audio(self.entries, self.audio_dir, tuple(extensions))
        if self.paths:
            self._check_sample_rate(self.paths[0], _info_rate(self.paths[0]))

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def _check_sample_rate(self, path: Path, rate: int) -> None:
        if rate != self.sample_rate:
            raise DataError(
                f"{path}: sample rate {rate} Hz, expected {self.sample_rate} Hz (resample the data set first)"
            )

    def load(self, index: int) -> np.ndarray:
        """The full, unpadded mono float32 waveform of item ``index``."""
        path = self.paths[index]
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise DataError(f"{path}: cannot read audio ({exc})") from None
        self._check_sample_rate(path, rate)
        if audio.shape[0] == 0:
            raise DataError(f"{path}: audio file has no samples")
        return audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1)

    def __getitem__(self, index: int) -> Item:
        entry = self.entries[index]
        clip = pad(self._augmented(self.load(index), index), self.clip_samples)
        return torch.from_numpy(np.ascontiguousarray(clip)), entry.label, entry.utt_id


def _info_rate(path: Path) -> int:
    try:
        return int(sf.info(str(path)).samplerate)
    except (sf.SoundFileError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read audio ({exc})") from None


def _locate_audio(entries: Sequence[ProtocolEntry], audio_dir: Path, extensions: tuple[str, ...]) -> list[Path]:
    """The audio file of every entry; ``DataError`` with the first missing path and the count."""
    if not audio_dir.is_dir():
        raise DataError(f"{audio_dir}: audio folder not found")
    # one directory listing instead of a stat per file: ASVspoof folders hold ~25k-600k files
    present = set(os.listdir(audio_dir))
    paths: list[Path] = []
    missing: list[str] = []
    for entry in entries:
        found = None
        for ext in extensions:
            name = entry.utt_id + ext
            if name in present or ("/" in name and (audio_dir / name).is_file()):
                found = audio_dir / name
                break
        if found is None:
            missing.append(entry.utt_id)
        else:
            paths.append(found)
    if missing:
        first = audio_dir / (missing[0] + extensions[0])
        others = " or ".join(extensions[1:])
        also = f" (or {others})" if others else ""
        raise DataError(f"{len(missing)} of {len(entries)} audio files missing in {audio_dir}; first: {first}{also}")
    return paths


# =============================================================================================
# From training arguments to datasets
# =============================================================================================

_CACHE_BUDGET_BYTES = 256 * 2**20  # synthetic clips are cached in memory when they fit in this
_LA_PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
_LA_TRAIN_PROTOCOL = "ASVspoof2019.LA.cm.train.trn.txt"
_LA_DEV_PROTOCOL = "ASVspoof2019.LA.cm.dev.trl.txt"
ITW_VAL_FRACTION = 0.1


def build_datasets(args: Mapping[str, Any] | Any) -> tuple[Dataset, Dataset]:
    """``(train, val)`` datasets for the training arguments (a dict of ``training.config`` options).

    Missing keys take their ``training.config`` defaults. See the module docstring for the
    folder layout expected with ``dataset='asvspoof'``.
    """
    from training.config import DEFAULTS

    given = args if isinstance(args, Mapping) else vars(args)  # a dict or an argparse namespace
    a = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    train, val = _datasets(a)
    _attach_augmenter(train, a, "train")
    if a.get("augment_dev"):
        _attach_augmenter(val, a, "val")
    return train, val


def _attach_augmenter(dataset: Dataset, a: Mapping[str, Any], split: str) -> None:
    """RawBoost (``--algo``) for a data set, seeded by ``seed``; ``--algo 0`` attaches nothing.
    The validation set gets one only with ``--augment_dev`` (what the original script did)."""
    from training.data.rawboost import ClipAugmenter, RawBoostConfig

    try:
        cfg = RawBoostConfig.from_args(a)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if cfg.algo != 0:
        dataset.augmenter = ClipAugmenter(cfg, int(a["seed"]), split=split)


def _datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    if a["dataset"] == "synthetic":
        return _synthetic_datasets(a)
    if a["dataset"] == "asvspoof":
        if not a.get("database_path"):
            raise DataError(
                "--dataset asvspoof needs --database_path (the folder that holds the ASVspoof audio folders)"
            )
        if a["track"] == "In-the-Wild":
            return _in_the_wild_datasets(a)
        if not a.get("protocols_path"):
            raise DataError(f"--dataset asvspoof needs --protocols_path (the folder that holds {_LA_TRAIN_PROTOCOL})")
        return _asvspoof2019_la_datasets(a)
    raise DataError(f"unknown dataset '{a['dataset']}': expected 'synthetic' or 'asvspoof'")


def _synthetic_datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    train_size, val_size, clip = int(a["train_size"]), int(a["val_size"]), int(a["clip_samples"])
    cache = (train_size + val_size) * clip * 4 <= _CACHE_BUDGET_BYTES
    return (
        SyntheticSpoofDataset(train_size, clip, int(a["seed"]), "train", cache=cache),
        SyntheticSpoofDataset(val_size, clip, int(a["seed"]), "val", cache=cache),
    )


def _first_existing(candidates: Sequence[Path], what: str, flag: str) -> Path:
    for c in candidates:
        if c.exists():
            return c
    tried = " or ".join(str(c) for c in candidates)
    raise DataError(f"{what} not found: expected {tried} (check {flag})")


def _asvspoof2019_la_datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    """LA and DF tracks: train on ASVspoof 2019 LA train, validate on 2019 LA dev (the 2021 baselines' recipe)."""
    db, proto = Path(a["database_path"]), Path(a["protocols_path"])
    out = []
    for part, protocol in (("train", _LA_TRAIN_PROTOCOL), ("dev", _LA_DEV_PROTOCOL)):
        folder = db / f"ASVspoof2019_LA_{part}"
        audio_dir = _first_existing([folder / "flac", folder], f"ASVspoof 2019 LA {part} audio", "--database_path")
        protocol_file = _first_existing(
            [proto / protocol, proto / _LA_PROTOCOL_DIR / protocol],
            f"ASVspoof 2019 LA {part} protocol",
            "--protocols_path",
        )
        out.append(ASVspoofDataset(read_protocol(protocol_file), audio_dir))
    return out[0], out[1]


def _in_the_wild_datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    """In-the-Wild: one ``meta.csv``, split 90 / 10 into train / val by a permutation seeded with ``seed``."""
    db = Path(a["database_path"])
    audio_dir = db / "release_in_the_wild" if (db / "release_in_the_wild").is_dir() else db
    proto = Path(a["protocols_path"]) if a.get("protocols_path") else audio_dir
    meta = proto / "meta.csv" if proto.is_dir() else proto
    entries = read_protocol(meta)
    if len(entries) < 2:
        raise DataError(f"{meta}: In-the-Wild needs at least 2 entries to split into train and val, got {len(entries)}")
    order = np.random.default_rng(int(a["seed"])).permutation(len(entries))
    n_val = max(1, int(round(ITW_VAL_FRACTION * len(entries))))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])  # keep file order inside each part
    return (
        ASVspoofDataset([entries[i] for i in train_idx], audio_dir),
        ASVspoofDataset([entries[i] for i in val_idx], audio_dir),
    )
