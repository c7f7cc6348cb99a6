"""The real data sets' formats: ASVspoof 2019 / 2021 and In-the-Wild protocols and audio files.

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

Audio is read with soundfile as mono float32 and cut to ``clip_samples`` (64,600 by default,
about 4 s) or tiled when shorter, exactly like the 2021 baseline's ``pad``. ``--clip_samples``,
``--train_size`` and ``--val_size`` apply to the synthetic set only. With In-the-Wild only
``--database_path`` is required.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from training.data.common import (AUDIO_EXTENSIONS, DEFAULT_CLIP_SAMPLES, SAMPLE_RATE, Augmentable, DataError, Item,
                                  pad)
from training.labels import CSV_LABELS, PROTOCOL_LABELS

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
        clip = pad(self.augmented(self.load(index), index), self.clip_samples)
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
