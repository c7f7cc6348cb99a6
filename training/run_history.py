"""Where a run's per-epoch history lives: once, in its ``training_log.csv`` (``RunFolder`` owns
the log), not repeated in every checkpoint.

A checkpoint carries only what an exact resume needs from the history:

* ``history_row``: the row of the last completed epoch (None before the first one). A kill
  between a checkpoint and its log row leaves exactly that row missing from the log; the resumed
  run writes it back (``RunFolder.restore_log_rows``).
* ``history_log``: a compact reference, ``{"file": "training_log.csv", "experiment": ...}``:
  the earlier rows are in the log of the folder the checkpoint was written in.

Earlier versions stored the whole history in every checkpoint (``history``: a list of rows) and
in every sidecar, so reading N checkpoints parsed N^2/2 rows. Such files still resume: their
list is used as it is. Torch-free (the dashboard reads logs through the same helpers).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.naming import LOG_NAME

HISTORY_ROW_KEY = "history_row"
HISTORY_LOG_KEY = "history_log"
LEGACY_HISTORY_KEY = "history"  # the whole list, in files of earlier versions


def history_fields(last_row: Mapping[str, Any] | None, experiment: str) -> dict[str, Any]:
    """The checkpoint's history entries: its last row and where the rest is."""
    return {HISTORY_ROW_KEY: dict(last_row) if last_row else None,
            HISTORY_LOG_KEY: {"file": LOG_NAME, "experiment": experiment}}


def _epoch(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) and number >= 1 else None


def read_log(path: Path) -> list[dict[str, str]]:
    """A training log's rows as written (text values); [] when missing or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def latest_rows(rows: list[Mapping[str, Any]], before_epoch: int | None = None) -> list[dict[str, Any]]:
    """One row per epoch, the last one written wins (a resume after a kill, or a resumed earlier
    epoch, appends again), in epoch order; only epochs below ``before_epoch`` when given."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        epoch = _epoch(row.get("epoch"))
        if epoch is not None and (before_epoch is None or epoch < before_epoch):
            by_epoch[epoch] = dict(row)
    return [by_epoch[e] for e in sorted(by_epoch)]


def rows_to_restore(source: Path, checkpoint: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The history rows a run resumed from ``checkpoint`` (the file at ``source``) may have to
    write back into its log: an earlier version's whole list, else the rows of the log beside
    the source up to its epoch (what an archived file or one of another folder brings along)
    and the checkpoint's own last row (the one a kill can leave out of the log)."""
    legacy = checkpoint.get(LEGACY_HISTORY_KEY)
    if isinstance(legacy, list):
        return [dict(row) for row in legacy if isinstance(row, Mapping)]
    last = checkpoint.get(HISTORY_ROW_KEY)
    last_epoch = _epoch(last.get("epoch")) if isinstance(last, Mapping) else None
    upto = last_epoch or (_epoch(checkpoint.get("epoch")) or 0) + 1
    rows = latest_rows(read_log(source.parent / LOG_NAME), before_epoch=upto)
    if last_epoch is not None:
        rows.append(dict(last))
    return rows
