"""Reading ``trial score`` files (what ``--eval`` writes) for the dashboard: fast and strict.

A DF score file has 611,829 lines, so the common case is parsed by pandas' C parser (the file
read once as bytes, the checks vectorised): every line exactly two fields, every score a finite
number, every trial once. Whatever the fast path cannot vouch for (a parser error, a column that
did not come out as numbers, unusual spacing or bytes, a repeated trial) is read again line by
line with the rules of :mod:`training.evaluation.keys` (``line.split()``, ``float()``), which
either accepts the file exactly as ``--eval_scores`` does or names the file and the first bad
line. So the result never depends on which path ran, and bad input is always one line.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.evaluation.keys import EvalInputError, score_lines

SCORE_COLUMNS = ["utt_id", "score"]
# ASCII characters Python's str.split() treats as whitespace besides " ", "\n" and "\r\n", and
# NUL (which the C parser handles differently from Python): any of them sends a file the slow way.
_SPLIT_WHITESPACE = (b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\x00")


class ScoreFileError(Exception):
    """A score file the dashboard cannot use: one line naming the file (and the line)."""


@dataclass(frozen=True)
class ScoreFile:
    ids: pd.Index  # trial ids as str, file order, unique
    scores: np.ndarray  # float64 as written, finite

    def __len__(self) -> int:
        return len(self.scores)


def plain_ascii(data: bytes) -> bool:
    """ASCII whose only whitespace is " ", "\n" and "\r\n": then ``line.split()`` and splitting on
    " " differ only by empty fields. Single-byte scans (memchr) first; ``\r`` is counted only
    when there is one."""
    if not data.isascii() or any(ch in data for ch in _SPLIT_WHITESPACE):
        return False
    return b"\r" not in data or data.count(b"\r") == data.count(b"\r\n")


def single_spaced(data: bytes) -> bool:
    """Plain ASCII without leading, trailing or doubled spaces: no field can be empty, so the C
    parser's field count is the one ``line.split()`` gives, whichever columns are read. Done on
    the bytes as numpy arrays: substring search for two-byte patterns is 5x slower on a key full
    of spaces."""
    if not plain_ascii(data) or data.startswith(b" ") or data.endswith(b" "):
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    low = raw <= ord(" ")  # space, line ends, and control bytes (which only cost a closer look)
    if not (low[1:] & low[:-1]).any():
        return True  # no two neighbouring separators at all: the common LF-only file
    space = raw == ord(" ")
    line_end = (raw == ord("\n")) | (raw == ord("\r"))
    return not ((space[1:] & (space[:-1] | line_end[:-1])).any() or (space[:-1] & line_end[1:]).any())


def all_distinct(ids: pd.Index) -> bool:
    """No id twice. Files in key order are usually sorted, and a strictly increasing run is checked
    with one vectorised comparison of neighbours (~10 ms for 611,829 ids, against ~100 ms for
    hashing them all); anything else is hashed."""
    values = ids.array
    if len(values) < 2 or bool((values[:-1] < values[1:]).all()):
        return True
    # The array's own unique() (pyarrow's hash for pandas' string dtype) is 3x faster on
    # shuffled ids than Index.is_unique, which builds a Python-object hash table.
    return len(values.unique()) == len(values)


def first_line_fields(data: bytes) -> int:
    """Fields on the first line (0 when it is blank): pandas guesses an index column when the
    first line has more fields than names, instead of refusing it, so it is counted here."""
    end = data.find(b"\n")
    line = (data if end < 0 else data[:end]).rstrip(b"\r")
    return len(line.split(b" ")) if line else 0


def parse_score_file(data: bytes, path: Path) -> ScoreFile:
    """The ``trial score`` lines of ``data`` (the file at ``path``), or ScoreFileError."""
    fast = _parse_fast(data)
    return fast if fast is not None else _parse_lines(data, path)


def _parse_fast(data: bytes) -> ScoreFile | None:
    """pandas' C parser over the buffer; None when any check fails (the slow path says why)."""
    # A doubled, leading or trailing space makes an empty field: a third field the parser refuses,
    # an empty score it cannot convert, or an empty id (checked below); so plain ASCII suffices.
    if not plain_ascii(data) or first_line_fields(data) != 2:
        return None
    try:
        frame = _read_columns(data, infer_ids=True)
        if not pd.api.types.is_string_dtype(frame["utt_id"].dtype):
            frame = _read_columns(data, infer_ids=False)  # all-number trials (In-the-Wild): keep "007" as written
    except (ValueError, pd.errors.ParserError):  # too many fields, a missing score
        return None
    # Inferred, the column is float64 or int64 only when every score is a number as float() reads
    # it; dtype="float64" would also take TRUE / true as 1.0.
    if frame["score"].dtype.kind not in "if":
        return None
    scores = frame["score"].to_numpy(dtype=np.float64)
    ids = pd.Index(frame["utt_id"])
    if len(scores) == 0 or not np.isfinite(scores).all() or (ids == "").any() or not all_distinct(ids):
        return None
    return ScoreFile(ids, scores)


def _read_columns(data: bytes, infer_ids: bool) -> pd.DataFrame:
    # Letting pandas infer the id column (it comes out as its string dtype) is 3-4x faster than
    # asking for dtype=str; the caller re-reads with dtype=str when inference made numbers.
    dtypes = None if infer_ids else {"utt_id": str}
    return pd.read_csv(io.BytesIO(data), sep=" ", header=None, names=SCORE_COLUMNS, dtype=dtypes, engine="c",
                       on_bad_lines="error", quoting=csv.QUOTE_NONE, na_filter=False, encoding="ascii")


def _parse_lines(data: bytes, path: Path) -> ScoreFile:
    """Line by line with ``training.evaluation.keys``' own rules (``score_lines``): the file is
    accepted exactly when ``--eval_scores`` accepts it (and its scores are finite and trials unique)."""
    ids: list[str] = []
    scores: list[float] = []
    first_line: dict[str, int] = {}
    handle = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    try:
        for lineno, trial, value in score_lines(path, handle):
            if not math.isfinite(value):
                raise ScoreFileError(f"{path} line {lineno}: the score '{value}' is not a finite number")
            if trial in first_line:
                raise ScoreFileError(f"{path} line {lineno}: trial '{trial[:60]}' has a second score "
                                     f"(first on line {first_line[trial]})")
            first_line[trial] = lineno
            ids.append(trial)
            scores.append(value)
    except EvalInputError as exc:
        raise ScoreFileError(str(exc)) from None
    if not ids:
        raise ScoreFileError(f"{path}: the score file is empty")
    return ScoreFile(pd.Index(ids, dtype="str"), np.array(scores, dtype=np.float64))
