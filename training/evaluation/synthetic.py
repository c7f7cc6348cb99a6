"""A synthetic evaluation split in the official layouts, so every path of ``--eval`` runs anywhere.

    python -m training.evaluation.synthetic OUT --track LA|DF|In-the-Wild [--size 200]
                                             [--clip_samples 16000] [--seed 1234]

writes, under OUT, exactly what the real sets look like once unpacked:

    LA           ASVspoof2021_LA_eval/flac/LA_E_0000000.flac ...   keys/LA/CM/trial_metadata.txt
                 keys/LA/ASV/trial_metadata.txt  keys/LA/ASV/ASVTorch_Kaldi/score.txt (for min t-DCF)
    DF           ASVspoof2021_DF_eval/flac/DF_E_0000000.flac ...   keys/DF/CM/trial_metadata.txt
    In-the-Wild  release_in_the_wild/0.wav ...  release_in_the_wild/meta.csv

Trial ``i`` is a pure function of ``(seed, track, i)``: even trials bona fide, odd spoofed (the
training set's synthetic speech, ``training.data.synthesize_clip``), each with condition labels
drawn from the official values: LA attack A07-A19 x codec (none alaw pstn g722 ulaw gsm opus),
DF vocoder type x compression (nocodec low_mp3 ... oggm4a), and a subset (eval / progress /
hidden, 6 : 2 : 2 by trial pair). A codec is imitated by band-limiting the clip (and mu-law
quantisation for the telephone codecs); attacks differ in how strong the spoofing artefacts are,
so the per-condition tables are not flat. The ASV scores are drawn per trial: target high,
nontarget low, spoofs in between. Nothing here touches the training or validation splits.
"""

from __future__ import annotations

import argparse
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.evaluation.official import DF_COMPRESSIONS, DF_VOCODERS, LA_ATTACKS, LA_CODECS

SAMPLE_RATE = 16000
SUBSET_PATTERN = ("eval",) * 6 + ("progress",) * 2 + ("hidden",) * 2
# Band limit (Hz) and mu-law quantisation of each imitated codec.
CODEC_EFFECTS: dict[str, tuple[float | None, bool]] = {
    "none": (None, False), "nocodec": (None, False),
    "alaw": (4000, True), "ulaw": (4000, True), "pstn": (3400, True), "gsm": (3400, True),
    "g722": (7000, False), "opus": (6000, False),
    "low_mp3": (4000, False), "high_mp3": (7000, False), "low_m4a": (3500, False), "high_m4a": (6500, False),
    "low_ogg": (5000, False), "high_ogg": (7500, False), "mp3m4a": (3800, False), "oggm4a": (4500, False),
}
DF_SOURCES = ("asvspoof", "vcc2018", "vcc2020")


@dataclass(frozen=True)
class SyntheticTrial:
    trial: str
    bonafide: bool
    speaker: str
    codec: str  # LA codec / DF compression / '-' for In-the-Wild
    attack: str  # 'bonafide' for bona fide trials
    vocoder: str  # DF only
    source: str
    subset: str
    difficulty: int  # 0..: the attack's index; later attacks carry fainter artefacts


def _stream(seed: int, track: str, i: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"eval-{track}".encode()), i, purpose])


def synthetic_trial(track: str, i: int, seed: int) -> SyntheticTrial:
    """The labels of trial ``i`` (no audio)."""
    rng = _stream(seed, track, i, 0)
    bonafide = i % 2 == 0
    subset = SUBSET_PATTERN[(i // 2) % len(SUBSET_PATTERN)]
    speaker_no = int(rng.integers(0, 40))
    if track == "In-the-Wild":
        return SyntheticTrial(str(i), bonafide, f"Speaker {speaker_no}", "-", "bonafide" if bonafide else "spoof",
                              "-", "-", subset, 0)
    if track == "LA":
        codec = LA_CODECS[int(rng.integers(0, len(LA_CODECS)))]
        k = int(rng.integers(0, len(LA_ATTACKS)))
        attack, vocoder, source = ("bonafide" if bonafide else LA_ATTACKS[k]), "-", "-"
    else:
        codec = DF_COMPRESSIONS[int(rng.integers(0, len(DF_COMPRESSIONS)))]
        k = int(rng.integers(0, len(DF_VOCODERS)))
        attack = "bonafide" if bonafide else LA_ATTACKS[k]
        vocoder = "bonafide" if bonafide else DF_VOCODERS[k]
        source = DF_SOURCES[int(rng.integers(0, len(DF_SOURCES)))]
    return SyntheticTrial(f"{track}_E_{i:07d}", bonafide, f"{track}_{speaker_no:04d}", codec, attack, vocoder,
                          source, subset, 0 if bonafide else k)


def synthetic_clip(track: str, i: int, seed: int, clip_samples: int) -> np.ndarray:
    """Trial ``i``'s audio: float32 in [-1, 1], ``clip_samples`` long."""
    from training.data.synthetic import synthesize_clip

    trial = synthetic_trial(track, i, seed)
    rng = _stream(seed, track, i, 1)
    artefacts = (-0.03 - 0.04 * trial.difficulty, 1.0)
    clip = synthesize_clip(rng, clip_samples, trial.bonafide, artefacts)
    return _imitate_codec(clip, trial.codec).astype(np.float32)


def _imitate_codec(x: np.ndarray, codec: str) -> np.ndarray:
    cutoff, companded = CODEC_EFFECTS.get(codec, (None, False))
    if cutoff is not None:
        spectrum = np.fft.rfft(x)
        spectrum[np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE) > cutoff] = 0
        x = np.fft.irfft(spectrum, n=x.size)
    if companded:  # 8-bit mu-law, as G.711
        mu = 255.0
        y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
        y = np.round(y * 127.0) / 127.0
        x = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return np.clip(x, -1.0, 1.0)


# --- key lines ---------------------------------------------------------------------------------------

def key_line(track: str, t: SyntheticTrial) -> str:
    label = "bonafide" if t.bonafide else "spoof"
    if track == "LA":  # spk trial codec trans attack label trim subset
        return f"{t.speaker} {t.trial} {t.codec} syn_tx {t.attack} {label} notrim {t.subset}"
    # speaker trial compr source attack label trim subset vocoder task team gender-pair language
    return f"{t.speaker} {t.trial} {t.codec} {t.source} {t.attack} {label} notrim {t.subset} {t.vocoder} - - - -"


def asv_lines(t: SyntheticTrial, i: int, seed: int) -> list[tuple[str, str]]:
    """(ASV key line, ASV score line) pairs: a bona fide trial is tried against its own speaker
    (target) and another (nontarget); a spoofed one against the speaker it imitates."""
    rng = _stream(seed, "LA-ASV", i, 2)
    out = []
    if t.bonafide:
        other = f"LA_{(int(t.speaker[3:]) + 1) % 40:04d}"
        pairs = [("target", t.speaker, rng.normal(3.0, 1.0)), ("nontarget", other, rng.normal(-3.0, 1.0))]
    else:
        pairs = [("spoof", t.speaker, rng.normal(1.0 - 0.1 * t.difficulty, 1.5))]
    for label, speaker, score in pairs:
        out.append((f"{speaker} {t.trial} {t.codec} syn_tx {t.attack} {label} notrim {t.subset}",
                    f"{speaker} {t.trial} {score:.6f}"))
    return out


# --- writing the set ------------------------------------------------------------------------------------

def layout_paths(root: Path, track: str) -> tuple[Path, Path]:
    """(audio folder, key file) of the official layout under ``root``."""
    if track == "In-the-Wild":
        audio = root / "release_in_the_wild"
        return audio, audio / "meta.csv"
    return root / f"ASVspoof2021_{track}_eval" / "flac", root / "keys" / track / "CM" / "trial_metadata.txt"


def write_synthetic_eval_set(root: Path, track: str, size: int, clip_samples: int = 16000, seed: int = 1234,
                             asv: bool = True) -> tuple[Path, Path]:
    """Write the set (audio + key, and for LA the ASV files) under ``root``; returns (audio, key)."""
    import soundfile as sf

    root = Path(root)
    audio_dir, key_path = layout_paths(root, track)
    if key_path.exists():
        raise FileExistsError(f"{key_path} already exists: choose an empty folder")
    audio_dir.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    suffix, subtype = (".wav", "PCM_16") if track == "In-the-Wild" else (".flac", "PCM_16")
    key_lines, asv_key, asv_scores = [], [], []
    if track == "In-the-Wild":
        key_lines.append("file,speaker,label")
    for i in range(size):
        t = synthetic_trial(track, i, seed)
        sf.write(audio_dir / f"{t.trial}{suffix}", synthetic_clip(track, i, seed, clip_samples), SAMPLE_RATE,
                 subtype=subtype)
        if track == "In-the-Wild":
            key_lines.append(f"{t.trial}{suffix},{t.speaker},{'bona-fide' if t.bonafide else 'spoof'}")
        else:
            key_lines.append(key_line(track, t))
        if track == "LA" and asv:
            for k, s in asv_lines(t, i, seed):
                asv_key.append(k)
                asv_scores.append(s)
    key_path.write_text("\n".join(key_lines) + "\n", encoding="utf-8")
    if asv_key:
        asv_dir = key_path.parent.parent / "ASV"
        (asv_dir / "ASVTorch_Kaldi").mkdir(parents=True, exist_ok=True)
        (asv_dir / "trial_metadata.txt").write_text("\n".join(asv_key) + "\n", encoding="utf-8")
        (asv_dir / "ASVTorch_Kaldi" / "score.txt").write_text("\n".join(asv_scores) + "\n", encoding="utf-8")
    return audio_dir, key_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluation.synthetic",
                                     description="Write a synthetic evaluation set in the official layout.")
    parser.add_argument("out", help="folder to write into")
    parser.add_argument("--track", required=True, choices=("LA", "DF", "In-the-Wild"))
    parser.add_argument("--size", type=int, default=200, help="trials (half bona fide)")
    parser.add_argument("--clip_samples", type=int, default=16000)
    parser.add_argument("--seed", type=int, default=1234)
    a = parser.parse_args(argv)
    if a.size < 2 or a.clip_samples < 1024 or a.seed < 0:
        print("error: --size must be at least 2, --clip_samples at least 1024, --seed 0 or more", file=sys.stderr)
        return 2
    try:
        audio, key = write_synthetic_eval_set(Path(a.out), a.track, a.size, a.clip_samples, a.seed)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {a.size} trials: audio {audio}, key {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
