"""The labels of an evaluation key, for the dashboard: trial -> bona fide / spoof, and the
subset each trial belongs to (so a DET curve covers the trials the pooled EER covers).

:func:`training.evaluation.keys.read_key` reads every condition column of a key in Python, about
9 s for the 611,829-line DF key; the page needs three columns. A 2021 LA / DF key or a 2019
protocol that is single-spaced ASCII (the official files are) is read here by pandas' C parser,
with the same checks vectorised: the field count of the first line on every line, known label
words, each trial once, a key for the result's track. Anything else (In-the-Wild's small
``meta.csv``, unusual spacing, a check that fails) goes through ``read_key`` itself, which reads
it or names the file and line. Both paths give the same labels; ``--eval`` still uses ``read_key``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.dashboard.score_files import all_distinct, first_line_fields, single_spaced
from training.evaluation.keys import LAYOUTS, TRACK_KINDS, TrialKey, read_key
from training.labels import PROTOCOL_LABELS


@dataclass(frozen=True)
class KeyLabels:
    """One row per trial, in key order."""

    path: Path
    ids: pd.Index  # str, unique
    labels: np.ndarray  # int8: 1 bona fide, 0 spoof
    subsets: pd.Series | None  # str; None when the key has no subset column (2019, In-the-Wild)

    def __len__(self) -> int:
        return len(self.labels)

    def subset_mask(self, subset: str) -> np.ndarray | None:
        """Trials of ``subset`` (``all``: every trial); None when the key has no subset column."""
        if subset == "all":
            return np.ones(len(self), dtype=bool)
        if self.subsets is None:
            return None
        return (self.subsets == subset).to_numpy(dtype=bool)

    def positions(self, ids: pd.Index) -> np.ndarray:
        """Row of each id in the key, -1 for ids it does not list."""
        return self.ids.get_indexer(ids)


def read_key_labels(path: Path, track: str) -> KeyLabels:
    """The labels of the key at ``path`` for ``--track``; EvalInputError (one line) when
    ``read_key`` would refuse the key."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        data = None  # read_key names what is wrong with the path
    fast = _read_fast(path, data, track) if data is not None else None
    return fast if fast is not None else labels_of(read_key(path, track))


def labels_of(key: TrialKey) -> KeyLabels:
    """The labels of a key ``read_key`` read."""
    subsets = None
    if "subset" in key.columns:
        column = key.columns["subset"]
        subsets = pd.Series(np.asarray(column.values, dtype=object)[column.codes], dtype="str")
    ids = pd.Index(np.char.decode(key.ids, "utf-8") if len(key) else [], dtype="str")
    return KeyLabels(key.path, ids, key.labels, subsets)


def _read_fast(path: Path, data: bytes, track: str) -> KeyLabels | None:
    """A whitespace key through pandas; None when read_key must decide."""
    if not single_spaced(data):
        return None
    layout = LAYOUTS.get(first_line_fields(data))
    if layout is None or layout.kind not in TRACK_KINDS[track]:
        return None
    subset_at = layout.columns.get("subset")
    wanted = sorted({1, layout.label_field, layout.n_fields - 1} | ({subset_at} if subset_at is not None else set()))
    try:
        frame = _read_columns(data, layout.n_fields, wanted, dtype=None)
        if not all(pd.api.types.is_string_dtype(frame[c].dtype) for c in wanted):
            frame = _read_columns(data, layout.n_fields, wanted, dtype=str)  # all-number ids: keep "007" as written
    except (ValueError, pd.errors.ParserError):  # a line with more fields than the first
        return None
    # Single-spaced, a line has one space fewer than fields. A short line leaves the last field
    # empty; with none short, the space count rules out long ones (which usecols lets through).
    if frame.empty or (frame[layout.n_fields - 1] == "").any() or data.count(b" ") != (layout.n_fields - 1) * len(frame):
        return None
    labels = _label_codes(frame[layout.label_field])
    ids = pd.Index(frame[1])
    if labels is None or not all_distinct(ids):
        return None
    subsets = frame[subset_at].reset_index(drop=True) if subset_at is not None else None
    return KeyLabels(path, ids, labels, subsets)


def _read_columns(data: bytes, n_fields: int, wanted: list[int], dtype) -> pd.DataFrame:
    # Inferred columns come out as pandas' string dtype 3-4x faster than with dtype=str.
    return pd.read_csv(io.BytesIO(data), sep=" ", header=None, names=range(n_fields), usecols=wanted, dtype=dtype,
                       engine="c", on_bad_lines="error", quoting=csv.QUOTE_NONE, na_filter=False, encoding="ascii")


def _label_codes(words: pd.Series) -> np.ndarray | None:
    """``bonafide`` / ``spoof`` -> 1 / 0 (two vectorised comparisons); None for any other word."""
    bonafide, spoof = (words == "bonafide").to_numpy(dtype=bool), (words == "spoof").to_numpy(dtype=bool)
    if not (bonafide | spoof).all():
        return None
    return np.where(bonafide, PROTOCOL_LABELS["bonafide"], PROTOCOL_LABELS["spoof"]).astype(np.int8)
