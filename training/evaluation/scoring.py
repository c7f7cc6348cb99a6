"""The streaming scorer: a verified checkpoint -> its model -> one bona fide log-probability per trial.

* The model is rebuilt from the checkpoint's stored args (``build_model``, the recorded
  ``head_version``, else what the weight names show, so first-head checkpoints rebuild the first
  head); a weights-only file takes its architecture from the command line. The file is loaded
  through ``read_verified_checkpoint`` (sidecar checksum, else zip CRCs; never unpickles code).
* Audio is located before anything is scored: one directory scan (no stat per file, which is
  slow on network file systems) matched against the key; every missing file is counted and the
  first few named in one line (exit 2).
* Scoring is batched, in ``model.eval()`` under ``torch.no_grad()``, with ``--num_workers``
  loader processes and a tqdm bar on stderr. Only the current batches' audio is in memory; the
  scores go into one preallocated float32 array (4 bytes a trial), so memory does not grow with
  the key beyond the key's own compact columns.
* The score file is written atomically (a temporary file, then a rename): ``trial score`` per
  line in key order, the score as the shortest text that reads back as the same float32. The
  metrics are computed from exactly those texts, read as float64 like the official package reads
  them, so its numbers and ours agree to the last digit.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint.fsutil import atomic_write
from training.evaluation.keys import EvalInputError, TrialKey

SUFFIXES = (".flac", ".wav")  # code 1, 2; 0 = missing
MISSING_NAMED = 5  # missing files named in the error line
_WRITE_CHUNK = 65536


class AudioReadError(Exception):
    """An audio file of the key cannot be read while scoring: one line naming it."""


# --- audio ---------------------------------------------------------------------------------------------

def locate_audio(key: TrialKey, audio_dir: Path) -> np.ndarray:
    """Per trial, which file holds its audio: 1 ``<trial>.flac``, 2 ``<trial>.wav`` (flac preferred).
    Raises ``EvalInputError`` naming the count and the first few missing files."""
    codes = np.zeros(len(key), dtype=np.int8)
    try:
        with os.scandir(audio_dir) as entries:
            stems: list[bytes] = []
            kinds: list[int] = []
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix in SUFFIXES:
                    stems.append(stem.encode("utf-8", "surrogateescape"))
                    kinds.append(SUFFIXES.index(suffix) + 1)
                    if len(stems) >= _WRITE_CHUNK:
                        _mark_found(key, codes, stems, kinds)
                        stems, kinds = [], []
            _mark_found(key, codes, stems, kinds)
    except OSError as exc:
        raise EvalInputError(f"{audio_dir}: cannot list the audio folder ({exc.strerror})") from None
    missing = np.flatnonzero(codes == 0)
    if missing.size:
        named = ", ".join(key.trial(int(i)) + SUFFIXES[0] for i in missing[:MISSING_NAMED])
        more = ", ..." if missing.size > MISSING_NAMED else ""
        raise EvalInputError(f"{missing.size} of {len(key)} audio files of the key {key.path} missing in "
                             f"{audio_dir}: {named}{more}")
    return codes


def _mark_found(key: TrialKey, codes: np.ndarray, stems: list[bytes], kinds: list[int]) -> None:
    if not stems:
        return
    rows = key.positions(np.array(stems, dtype=bytes))
    kinds_arr = np.array(kinds, dtype=np.int8)
    hit = rows >= 0
    rows, kinds_arr = rows[hit], kinds_arr[hit]
    current = codes[rows]
    # flac wins over wav; within one chunk the later duplicate is decided the same way
    better = (current == 0) | (kinds_arr < current)
    codes[rows[better]] = kinds_arr[better]


class EvalAudio:
    """The key's audio as a map-style dataset: item ``i`` = (clip, i), or (None, i, error)."""

    def __init__(self, key: TrialKey, suffix_codes: np.ndarray, audio_dir: Path, clip_samples: int,
                 sample_rate: int = 16000):
        self.ids = key.ids
        self.codes = suffix_codes
        self.audio_dir = Path(audio_dir)
        self.clip_samples = int(clip_samples)
        self.sample_rate = int(sample_rate)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def path(self, i: int) -> Path:
        return self.audio_dir / (self.ids[i].decode("utf-8", "surrogateescape") + SUFFIXES[int(self.codes[i]) - 1])

    def __getitem__(self, i: int):
        import soundfile as sf
        import torch

        from training.data.common import pad

        path = self.path(i)
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            return None, i, f"{path}: cannot read audio ({_reason(exc, path)})"
        if rate != self.sample_rate:
            return None, i, f"{path}: sample rate {rate} Hz, expected {self.sample_rate} Hz (resample the set first)"
        if audio.shape[0] == 0:
            return None, i, f"{path}: audio file has no samples"
        mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1)
        return torch.from_numpy(np.ascontiguousarray(pad(mono, self.clip_samples))), i, None


def _reason(exc: Exception, path: Path) -> str:
    """soundfile's message without the path it repeats ("Error opening '<path>': Format not recognised.")."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    prefix = f"Error opening {str(path)!r}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def collate_clips(batch: list[tuple[Any, int, str | None]]):
    """(waves [B, T], indices [B]); the first read error instead, as text (raised in the main
    process: an exception raised in a loader worker comes back with its traceback in the message)."""
    import torch

    for _, _, error in batch:
        if error is not None:
            return error
    waves, indices, _ = zip(*batch)
    return torch.stack(waves), torch.tensor(indices, dtype=torch.long)


# --- the model -------------------------------------------------------------------------------------------

@dataclass
class ScoringModel:
    model: Any
    path: Path
    sha256: str
    epoch: int | None
    args: dict[str, Any]


def file_sha256(path: Path) -> str:
    """The checkpoint's sha256: its sidecar's when the sidecar vouches for the file (it was
    verified by the load), else hashed here."""
    from training.checkpoint.meta import read_checkpoint_info

    info = read_checkpoint_info(path)
    if info.source == "sidecar" and info.sha256:
        return info.sha256
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_scoring_model(path: Path, cli_args: dict[str, Any], explicit: set[str], device: Any) -> ScoringModel:
    """Verify and load ``path``; rebuild its model from the stored args (a weights-only file: from
    the command line's). ``--ssl_path`` on the command line replaces a stored front-end folder
    that moved. Raises ``CheckpointError`` (one line) for a file that does not fit."""
    import argparse

    from training.models import build_model, check_model_args, with_head_version
    from training.checkpoint.store import CheckpointError, read_verified_checkpoint

    loaded = read_verified_checkpoint(path)
    stored = loaded.full.get("args") if loaded.full else None
    if isinstance(stored, argparse.Namespace):
        stored = vars(stored)
    stored = dict(stored) if isinstance(stored, dict) else None
    base = dict(stored) if stored is not None else dict(cli_args)
    if "ssl_path" in explicit:
        base["ssl_path"] = cli_args["ssl_path"]
    args = with_head_version(base, stored, loaded.model_state)
    check_model_args(args)
    try:
        model = build_model(args)
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model ({exc})") from None
    result = model.load_state_dict(loaded.model_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        detail = []
        if result.missing_keys:
            detail.append(f"missing {len(result.missing_keys)} weights (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            detail.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
        raise CheckpointError(f"{path}: does not fit model {args.get('model_type')} with its stored "
                              f"arguments: {', '.join(detail)}")
    epoch = loaded.full.get("epoch") if loaded.full else None
    del loaded
    return ScoringModel(model.to(device).eval(), path, file_sha256(path),
                        int(epoch) if isinstance(epoch, int) else None, args)


def eval_clip_samples(model_args: dict[str, Any], cli_args: dict[str, Any], explicit: set[str]) -> int:
    """Clip length the audio is cut or tiled to: ``--clip_samples`` when typed; the model's own
    training length for a model trained on the synthetic set; else 64,600 (the 2021 baselines')."""
    from training.data.common import DEFAULT_CLIP_SAMPLES

    if "clip_samples" in explicit:
        return int(cli_args["clip_samples"])
    if model_args.get("dataset") == "synthetic" and model_args.get("clip_samples"):
        return int(model_args["clip_samples"])
    return DEFAULT_CLIP_SAMPLES


# --- scoring ----------------------------------------------------------------------------------------------

def score_audio(model: Any, audio: EvalAudio, *, batch_size: int, num_workers: int, device: Any,
                amp: bool = False, progress: bool = True) -> np.ndarray:
    """The bona fide log-probability of every item, float32, in item order."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    loader = DataLoader(audio, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_clips, pin_memory=device.type == "cuda")
    scores = np.empty(len(audio), dtype=np.float32)
    model.eval()
    with torch.no_grad(), tqdm(total=len(audio), unit="utt", desc="Scoring", file=sys.stderr,
                               disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            if isinstance(batch, str):
                raise AudioReadError(batch)
            waves, indices = batch
            with torch.autocast(device.type, enabled=amp):
                out = model(waves.to(device, non_blocking=True))
            log_probs = out.log_probs if hasattr(out, "log_probs") else out
            scores[indices.numpy()] = log_probs[:, 1].float().cpu().numpy()
            bar.update(indices.shape[0])
    return scores


# --- the score file ------------------------------------------------------------------------------------

def format_score(value: np.float32) -> str:
    """The shortest decimal that reads back as the same float32 (``-0.6931472``)."""
    return np.format_float_positional(np.float32(value), unique=True, trim="0")


def write_score_file(path: Path, key: TrialKey, scores: np.ndarray) -> np.ndarray:
    """Write ``trial score`` lines in key order (atomically) and return the scores exactly as the
    file states them, read as float64: what the official package computes with."""
    as_written = np.empty(len(key), dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: Any) -> None:
        for start in range(0, len(key), _WRITE_CHUNK):
            texts = [format_score(v) for v in scores[start:start + _WRITE_CHUNK]]
            as_written[start:start + len(texts)] = [float(t) for t in texts]
            ids = key.ids[start:start + len(texts)]
            f.write("".join(f"{trial.decode('utf-8')} {text}\n" for trial, text in zip(ids, texts)).encode("utf-8"))

    atomic_write(path, write)
    return as_written
