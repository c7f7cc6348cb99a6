"""Keys, score files and ASV files of the evaluation sets, read into compact columns; where they lie.

Formats (whitespace separated unless noted; field names as the ASVspoof 2021 eval package's
``config.py`` gives them):

    2021 LA CM key   spk trial codec trans attack label trim subset                  (8 fields)
    2021 DF CM key   speaker trial compr source attack label trim subset vocoder
                     task team gender-pair language                                  (13 fields)
    2019 protocol    spk trial - attack label                                        (5 fields)
    In-the-Wild      meta.csv, comma separated, header ``file,speaker,label``; label bona-fide | spoof
    2021 LA ASV key  as the LA CM key, label target | nontarget | spoof
    ASV score file   asv_spk trial score, joined with the ASV key line by line (as the package does)
    CM score file    trial score: what ``--eval`` writes and the package reads

A key is held as numpy columns (ids as bytes, labels as int8, each condition as int32 codes plus
its distinct values), so a 600,000-trial DF key costs tens of megabytes, not a Python object per
field. In-the-Wild trials are named by the file's stem (``0.wav`` -> ``0``), as in training.
Every problem is an ``EvalInputError``: one line naming the file (and line), exit code 2.
"""

from __future__ import annotations

import csv
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.labels import CSV_LABELS, PROTOCOL_LABELS

AUDIO_SUFFIXES = (".flac", ".wav")
_CHUNK = 65536  # lines converted to numpy at a time


class EvalInputError(Exception):
    """A key, score file, audio folder or option that cannot be used: one line, exit code 2."""


@dataclass(frozen=True)
class KeyLayout:
    """Where a whitespace key keeps its fields (0-based), and which condition columns it has."""

    kind: str
    n_fields: int
    label_field: int
    columns: dict[str, int]


LAYOUTS = {
    8: KeyLayout("LA", 8, 5, {"codec": 2, "attack": 4, "subset": 7}),
    13: KeyLayout("DF", 13, 5, {"compr": 2, "source": 3, "attack": 4, "subset": 7, "vocoder": 8}),
    5: KeyLayout("2019", 5, 4, {"attack": 3}),
}
# Which key layouts each --track accepts (2019 protocols: scoring the 2019 LA eval set).
TRACK_KINDS = {"LA": ("LA", "2019"), "DF": ("DF", "2019"), "In-the-Wild": ("In-the-Wild",)}
ASV_LABELS = {"target": 0, "nontarget": 1, "spoof": 2}


@dataclass
class Column:
    """One condition column: ``codes[i]`` indexes ``values``."""

    codes: np.ndarray
    values: tuple[str, ...]

    def mask(self, value: str) -> np.ndarray:
        if value not in self.values:
            return np.zeros(self.codes.shape[0], dtype=bool)
        return self.codes == self.values.index(value)

    def __getitem__(self, i: int) -> str:
        return self.values[int(self.codes[i])]


class _ColumnBuilder:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.codes = array("i")

    def add(self, value: str) -> None:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.index)
        self.codes.append(code)

    def build(self) -> Column:
        return Column(np.frombuffer(self.codes, dtype=np.int32).copy(), tuple(self.index))


class _IdBuilder:
    """Trial ids gathered as fixed-width bytes arrays, a chunk at a time."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.pending: list[bytes] = []

    def add(self, trial: str) -> None:
        self.pending.append(trial.encode("utf-8"))
        if len(self.pending) >= _CHUNK:
            self.chunks.append(np.array(self.pending, dtype=bytes))
            self.pending = []

    def build(self) -> np.ndarray:
        if self.pending:
            self.chunks.append(np.array(self.pending, dtype=bytes))
        if not self.chunks:
            return np.array([], dtype="S1")
        return np.concatenate(self.chunks)


@dataclass
class TrialKey:
    """A key: one row per trial, in file order."""

    path: Path
    kind: str  # LA | DF | 2019 | In-the-Wild
    ids: np.ndarray  # bytes
    labels: np.ndarray  # int8: 1 bona fide, 0 spoof
    columns: dict[str, Column]
    _sorted: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def trial(self, i: int) -> str:
        return self.ids[i].decode("utf-8")

    @property
    def subsets(self) -> tuple[str, ...]:
        return self.columns["subset"].values if "subset" in self.columns else ()

    def subset_mask(self, subset: str) -> np.ndarray:
        """Trials of ``subset`` (the package's ``subset == "eval"``); ``all``: every trial."""
        if subset == "all":
            return np.ones(len(self), dtype=bool)
        if "subset" not in self.columns:
            raise EvalInputError(f"{self.path}: this key has no subset column; use --eval_subset all")
        return self.columns["subset"].mask(subset)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in ``ids`` (bytes), -1 for ids not in the key."""
        if self._sorted is None:
            order = np.argsort(self.ids, kind="stable")
            self._sorted = (order, self.ids[order])
        order, sorted_ids = self._sorted
        if len(self) == 0:
            return np.full(ids.shape[0], -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(self) - 1)
        found = sorted_ids[at] == ids
        return np.where(found, order[at], -1)


# --- reading keys ----------------------------------------------------------------------------------

def _open_text(path: Path, what: str):
    if not path.exists():
        raise EvalInputError(f"{path}: {what} not found")
    if not path.is_file():
        raise EvalInputError(f"{path}: expected the {what}, found a folder")
    try:  # utf-8-sig: a byte-order mark (spreadsheet exports of meta.csv) is not part of the header
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise EvalInputError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def _numbered_lines(path: Path, handle) -> Iterator[tuple[int, str]]:
    try:
        for lineno, line in enumerate(handle, start=1):
            yield lineno, line
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{path}: not a text file ({exc.reason} at byte {exc.start})") from None


def _first_line(path: Path, what: str) -> str:
    with _open_text(path, what) as handle:
        for _, line in _numbered_lines(path, handle):
            if line.strip():
                return line
    raise EvalInputError(f"{path}: the {what} is empty")


def read_key(path: str | os.PathLike[str], track: str) -> TrialKey:
    """The key at ``path`` for ``--track``: a 2021 LA / DF ``trial_metadata.txt``, a 2019 protocol
    or an In-the-Wild ``meta.csv``, recognised by its first line."""
    path = Path(path)
    first = _first_line(path, "key")
    key = _read_csv_key(path) if "," in first else _read_whitespace_key(path, len(first.split()))
    if key.kind not in TRACK_KINDS[track]:
        raise EvalInputError(f"{path}: an {_kind_name(key.kind)}, not a key for --track {track}")
    _refuse_duplicates(key)
    return key


def _kind_name(kind: str) -> str:
    return {"LA": "ASVspoof 2021 LA key", "DF": "ASVspoof 2021 DF key", "2019": "ASVspoof 2019 protocol",
            "In-the-Wild": "In-the-Wild meta.csv"}[kind]


def _read_whitespace_key(path: Path, n_fields: int) -> TrialKey:
    layout = LAYOUTS.get(n_fields)
    if layout is None:
        hint = (" (a list of trials without labels? the key is trial_metadata.txt from the "
                "LA-keys-full / DF-keys-full archive)" if n_fields == 1 else "")
        raise EvalInputError(f"{path} line 1: expected 8 fields (2021 LA key), 13 (2021 DF key) or 5 "
                             f"(2019 protocol), got {n_fields}{hint}")
    ids, labels = _IdBuilder(), array("b")
    columns = {name: _ColumnBuilder() for name in layout.columns}
    with _open_text(path, "key") as handle:
        for lineno, line in _numbered_lines(path, handle):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != layout.n_fields:
                raise EvalInputError(f"{path} line {lineno}: expected {layout.n_fields} fields like the first "
                                     f"line, got {len(fields)}: '{line.strip()[:120]}'")
            label = PROTOCOL_LABELS.get(fields[layout.label_field])
            if label is None:
                raise EvalInputError(f"{path} line {lineno}: expected 'bonafide' or 'spoof' in field "
                                     f"{layout.label_field + 1}, got '{fields[layout.label_field][:60]}'")
            ids.add(fields[1])
            labels.append(label)
            for name, index in layout.columns.items():
                columns[name].add(fields[index])
    return TrialKey(path, layout.kind, ids.build(), np.frombuffer(labels, dtype=np.int8).copy(),
                    {name: b.build() for name, b in columns.items()})


def trial_from_file_name(name: str) -> str:
    """In-the-Wild names trials by file; the trial id is the file's stem, as in training."""
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in AUDIO_SUFFIXES else name


def _read_csv_key(path: Path) -> TrialKey:
    ids, labels = _IdBuilder(), array("b")
    with _open_text(path, "key") as handle:
        rows = csv.reader(line for _, line in _numbered_lines(path, handle))
        header = [h.strip() for h in next(rows, [])]
        if "file" not in header or "label" not in header:
            raise EvalInputError(f"{path} line 1: expected a header with 'file' and 'label' columns "
                                 f"(In-the-Wild meta.csv), got '{','.join(header)[:120]}'")
        file_at, label_at = header.index("file"), header.index("label")
        for row in rows:
            lineno = rows.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise EvalInputError(f"{path} line {lineno}: expected {len(header)} comma-separated fields, "
                                     f"got {len(row)}: '{','.join(row)[:120]}'")
            label = CSV_LABELS.get(row[label_at].strip())
            if label is None:
                raise EvalInputError(f"{path} line {lineno}: expected 'bona-fide' or 'spoof' in column "
                                     f"'label', got '{row[label_at].strip()[:60]}'")
            name = row[file_at].strip()
            if not name:
                raise EvalInputError(f"{path} line {lineno}: empty 'file' column")
            ids.add(trial_from_file_name(name))
            labels.append(label)
    return TrialKey(path, "In-the-Wild", ids.build(), np.frombuffer(labels, dtype=np.int8).copy(), {})


def _refuse_duplicates(key: TrialKey) -> None:
    """The package indexes the key by trial: a trial listed twice breaks its join."""
    if len(key) < 2:
        return
    sorted_ids = np.sort(key.ids)
    same = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if same.size:
        trial = sorted_ids[same[0]].decode("utf-8")
        raise EvalInputError(f"{key.path}: trial '{trial}' is listed more than once")


# --- score files ---------------------------------------------------------------------------------------

def read_score_file(path: str | os.PathLike[str], key: TrialKey) -> np.ndarray:
    """The scores of ``path`` (``trial score`` lines) in key order, float64 as written.

    The file must hold exactly one score per trial of the key, in any order (the package joins
    on the trial); anything else is one line naming what does not match."""
    path = Path(path)
    scores = np.full(len(key), np.nan)
    seen = np.zeros(len(key), dtype=bool)
    unknown: list[str] = []
    n_unknown = n_lines = 0
    with _open_text(path, "score file") as handle:
        for chunk in _score_chunks(path, handle):
            n_lines += len(chunk)
            ids = np.array([trial.encode("utf-8") for _, trial, _ in chunk], dtype=bytes)
            rows = key.positions(ids)
            for (lineno, trial, value), row in zip(chunk, rows.tolist()):
                if row < 0:
                    n_unknown += 1
                    if len(unknown) < 3:
                        unknown.append(trial)
                    continue
                if seen[row]:
                    raise EvalInputError(f"{path} line {lineno}: trial '{trial}' has a second score")
                seen[row] = True
                scores[row] = value
    if n_lines == 0:
        raise EvalInputError(f"{path}: the score file is empty; the key {key.path} has {len(key)} trials")
    missing = int(len(key) - seen.sum())
    if missing or n_unknown:
        parts = []
        if missing:
            parts.append(f"{missing} trial(s) of the key have no score (first: {key.trial(int(np.argmin(seen)))})")
        if n_unknown:
            parts.append(f"{n_unknown} score(s) name trials not in the key (first: {', '.join(unknown)})")
        raise EvalInputError(f"{path} does not match the key {key.path}: {n_lines} scores for {len(key)} "
                             f"trials; {'; '.join(parts)}")
    return scores


def score_lines(path: Path, handle) -> Iterator[tuple[int, str, float]]:
    """(line number, trial, score) of each non-blank line of the score file open as ``handle``,
    checked as ``--eval_scores`` checks them (two fields, a number); EvalInputError naming the
    line otherwise. The dashboard's strict reader (training.dashboard.score_files) uses it too."""
    for chunk in _score_chunks(path, handle):
        yield from chunk


def _score_chunks(path: Path, handle) -> Iterator[list[tuple[int, str, float]]]:
    chunk: list[tuple[int, str, float]] = []
    for lineno, line in _numbered_lines(path, handle):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise EvalInputError(f"{path} line {lineno}: expected 'trial score' (2 fields), got "
                                 f"{len(fields)}: '{line.strip()[:120]}'")
        try:
            value = float(fields[1])
        except ValueError:
            raise EvalInputError(f"{path} line {lineno}: the score '{fields[1][:60]}' is not a number") from None
        chunk.append((lineno, fields[0], value))
        if len(chunk) >= _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- ASV files (min t-DCF, LA) ---------------------------------------------------------------------

@dataclass
class AsvTrials:
    """The organisers' ASV trials: label 0 target, 1 nontarget, 2 spoof; their scores."""

    key_path: Path
    score_path: Path
    labels: np.ndarray
    scores: np.ndarray
    columns: dict[str, Column]

    def subset_mask(self, subset: str) -> np.ndarray:
        if subset == "all":
            return np.ones(self.labels.shape[0], dtype=bool)
        return self.columns["subset"].mask(subset)


def read_asv(key_path: Path, score_path: Path) -> AsvTrials:
    """The LA ASV key and the ASV score file, joined line by line (the package joins them by
    position; a trial that differs between the two lines is refused here)."""
    layout = LAYOUTS[8]
    labels, scores = array("b"), array("d")
    columns = {name: _ColumnBuilder() for name in ("codec", "attack", "subset")}
    with _open_text(key_path, "ASV key") as keys, _open_text(score_path, "ASV score file") as lines:
        key_lines = ((n, ln) for n, ln in _numbered_lines(key_path, keys) if ln.strip())
        score_lines = ((n, ln) for n, ln in _numbered_lines(score_path, lines) if ln.strip())
        for key_line, score_line in _zip_counted(key_lines, score_lines, key_path, score_path):
            (klineno, kline), (slineno, sline) = key_line, score_line
            kfields, sfields = kline.split(), sline.split()
            if len(kfields) != layout.n_fields:
                raise EvalInputError(f"{key_path} line {klineno}: expected 8 fields (the LA ASV key), got "
                                     f"{len(kfields)}: '{kline.strip()[:120]}'")
            label = ASV_LABELS.get(kfields[layout.label_field])
            if label is None:
                raise EvalInputError(f"{key_path} line {klineno}: expected target, nontarget or spoof in "
                                     f"field 6, got '{kfields[layout.label_field][:60]}'")
            if len(sfields) != 3:
                raise EvalInputError(f"{score_path} line {slineno}: expected 'speaker trial score' (3 fields), "
                                     f"got {len(sfields)}: '{sline.strip()[:120]}'")
            if sfields[1] != kfields[1]:
                raise EvalInputError(f"{score_path} line {slineno}: trial '{sfields[1][:60]}', but line {klineno} "
                                     f"of {key_path} is trial '{kfields[1][:60]}' (the files are joined line by line)")
            try:
                scores.append(float(sfields[2]))
            except ValueError:
                raise EvalInputError(f"{score_path} line {slineno}: the score '{sfields[2][:60]}' is not a number") from None
            labels.append(label)
            for name, index in (("codec", 2), ("attack", 4), ("subset", 7)):
                columns[name].add(kfields[index])
    return AsvTrials(key_path, score_path, np.frombuffer(labels, dtype=np.int8).copy(),
                     np.frombuffer(scores, dtype=np.float64).copy(), {n: b.build() for n, b in columns.items()})


def _zip_counted(a: Iterator, b: Iterator, a_path: Path, b_path: Path) -> Iterator[tuple]:
    n = 0
    while True:
        x, y = next(a, None), next(b, None)
        if x is None and y is None:
            return
        if x is None or y is None:
            longer = b_path if x is None else a_path
            rest = 1 + sum(1 for _ in (b if x is None else a))
            raise EvalInputError(f"{b_path} does not match {a_path}: {longer.name} has {rest} more line(s) "
                                 f"after the {n} the two share")
        n += 1
        yield x, y


# --- where the files lie -----------------------------------------------------------------------------

def _first_file(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def find_key(protocols_path: str | None, database_path: str | None, track: str) -> Path:
    """The key file: ``--protocols_path`` itself, or in the folder it names (the official
    layouts: ``keys/{LA,DF}/CM/trial_metadata.txt``, or ``meta.csv`` for In-the-Wild)."""
    if track == "In-the-Wild":
        names = ["meta.csv", "release_in_the_wild/meta.csv"]
    else:
        names = ["trial_metadata.txt", f"keys/{track}/CM/trial_metadata.txt", f"{track}/CM/trial_metadata.txt",
                 "CM/trial_metadata.txt"]
    if protocols_path is None:
        if track != "In-the-Wild" or database_path is None:
            raise EvalInputError(f"--track {track} needs --protocols_path: the key (trial_metadata.txt) or the "
                                 "folder holding it (keys/, from the keys-full archive)")
        folder = Path(database_path)
    else:
        folder = Path(protocols_path)
        if folder.is_file():
            return folder
        if not folder.exists():
            raise EvalInputError(f"--protocols_path {folder}: not found")
    found = _first_file([folder / n for n in names])
    if found is None:
        flag = "--protocols_path" if protocols_path is not None else "--database_path"
        raise EvalInputError(f"{flag} {folder}: no key there (looked for {', '.join(names)})")
    return found


def find_audio_dir(database_path: str | None, track: str) -> Path:
    """The folder of audio files: ``ASVspoof2021_{LA,DF}_eval/flac`` (or ``release_in_the_wild``)
    under ``--database_path``, or that folder itself."""
    if database_path is None:
        raise EvalInputError("--eval needs --database_path: the folder holding the evaluation audio")
    root = Path(database_path)
    if not root.is_dir():
        raise EvalInputError(f"--database_path {root}: not a folder")
    if track == "In-the-Wild":
        candidates = [root / "release_in_the_wild", root]
    else:
        part = root / f"ASVspoof2021_{track}_eval"
        candidates = [part / "flac", part, root / "flac", root]
    return next(c for c in candidates if c.is_dir())


ASV_SCORE_FOLDERS = ("ASVTorch_Kaldi", "ASVtorch_kaldi")


def find_asv_files(key_path: Path, protocols_path: str | None) -> tuple[Path, Path] | None:
    """The organisers' LA ASV key and scores next to the CM key (``keys/LA/ASV/trial_metadata.txt``
    and ``keys/LA/ASV/ASVTorch_Kaldi/score.txt``), or None when they are not there."""
    folders = [key_path.parent.parent / "ASV"]
    if protocols_path is not None and Path(protocols_path).is_dir():
        root = Path(protocols_path)
        folders += [root / "ASV", root / "LA" / "ASV", root / "keys" / "LA" / "ASV"]
    for folder in folders:
        key = folder / "trial_metadata.txt"
        score = _first_file([folder / name / "score.txt" for name in ASV_SCORE_FOLDERS])
        if key.is_file() and score is not None:
            return key, score
    return None
