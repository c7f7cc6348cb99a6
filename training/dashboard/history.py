"""Per-epoch histories of experiments and the lineage that joins a resumed run to its parent.

A folder's curve comes from the best source there is: its ``training_log.csv``, else the newest
full checkpoint's ``history`` (which also holds the rows a resumed run inherited), else each
checkpoint's own metrics. A run resumed into a new folder is prefixed by its parent's rows up to
the epoch it resumed from. Parsed logs and converted histories are cached per file version,
keyed by ``(path, size, mtime_ns)`` like :mod:`training.dashboard.scan`'s checkpoint infos, and
sized by the number of folders a scan finds (``FileCache.fit``), so that a root of 10,000
experiments is parsed once, not on every rerun.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.checkpoint.pool import ReadRequest, read_checkpoint_infos
from training.checkpoint.meta import read_checkpoint_info
from training.naming import LOG_NAME
from training.dashboard.scan import (CACHE_MAX_ENTRIES, FileCache, ScannedCheckpoint, experiment_dir,
                                     folder_checkpoints, is_experiment_name, newest_full, typed_frame)

# Same names as training.trainer.LOG_NAME / LOG_COLUMNS (a test checks it): importing the
# trainer would import torch, which the dashboard's read path must not.
# epoch_seconds and timestamp (when the row was written) let the Jobs page estimate an ETA.
HISTORY_METRICS = ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer", "lr",
                   "epoch_seconds", "timestamp")
HISTORY_COLUMNS = ("epoch", *HISTORY_METRICS, "experiment")
_RECENT_HISTORIES = 256  # raw histories read ahead by read_histories_ahead, until converted

_LOG_CACHE = FileCache(CACHE_MAX_ENTRIES // 10)  # converted, deduplicated log rows
_LOG_FRAMES = FileCache(64)  # typed frames of the logs the Curves page draws (a few at a time)
_LOGS_PARSED = 0  # logs parsed since start (tests pin that a rerun parses none)
_HISTORY_CACHE = FileCache(CACHE_MAX_ENTRIES // 10)  # converted history of newest checkpoints
_RECENT_HISTORY = FileCache(_RECENT_HISTORIES)  # raw history of recently read files


def cache_info() -> dict[str, int]:
    """Hit/miss counters and size of the parsed-log cache."""
    return {"log_hits": _LOG_CACHE.hits, "log_misses": _LOG_CACHE.misses, "log_entries": len(_LOG_CACHE),
            "logs_parsed": _LOGS_PARSED}


def clear_cache() -> None:
    """Forget every parsed log and history."""
    _LOG_CACHE.clear()
    _LOG_FRAMES.clear()
    _HISTORY_CACHE.clear()
    _RECENT_HISTORY.clear()


# --- histories ---------------------------------------------------------------------------------------

def _as_float(value: Any) -> float:
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_epoch(value: Any) -> int | None:
    """A positive integer epoch from a csv cell or a history row; None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != int(number) or number < 1:
        return None
    return int(number)


def _history_row(row: Mapping[str, Any], experiment: str) -> dict[str, Any] | None:
    epoch = as_epoch(row.get("epoch"))
    if epoch is None:
        return None
    out: dict[str, Any] = {"epoch": epoch}
    for key in HISTORY_METRICS:
        out[key] = _as_float(row.get(key))
    written_in = row.get("experiment")
    out["experiment"] = written_in if isinstance(written_in, str) and written_in else experiment
    return out


def _dedupe_last(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch, the last one written wins (a resume after a kill may re-append)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_epoch[row["epoch"]] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _parse_log(path: Path) -> list[dict[str, Any]]:
    global _LOGS_PARSED
    _LOGS_PARSED += 1
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def _log_rows(exp_dir: Path) -> list[dict[str, Any]]:
    """The folder's training_log.csv as history rows (written in this folder), deduplicated."""
    path = exp_dir / LOG_NAME
    try:
        st = os.stat(path)
    except OSError:
        return []
    if not stat.S_ISREG(st.st_mode):
        return []
    key, signature = str(path), (st.st_size, st.st_mtime_ns)
    rows = _LOG_CACHE.get(key, signature)
    if rows is None:
        found = (_history_row(r, exp_dir.name) for r in _parse_log(path))
        rows = _dedupe_last(dict(r, experiment=exp_dir.name) for r in found if r is not None)
        _LOG_CACHE.put(key, signature, rows)
    return rows


def _checkpoint_history(ck: ScannedCheckpoint, experiment: str) -> list[dict[str, Any]]:
    """A checkpoint's ``history`` as rows, converted once per file version (rows are shared:
    callers must not modify them). Cached infos hold no history: the file is read again, with
    it, unless read_histories_ahead just did."""
    key = str(ck.path)
    rows = _HISTORY_CACHE.get(key, (ck.signature, experiment))
    if rows is None:
        raw = _RECENT_HISTORY.get(key, ck.signature)
        if raw is None:
            raw = read_checkpoint_info(key, with_history=True).history
        found = (_history_row(r, experiment) for r in raw)
        rows = _dedupe_last(r for r in found if r is not None)
        _HISTORY_CACHE.put(key, (ck.signature, experiment), rows)
    return rows


def read_histories_ahead(root: Path, by_folder: dict[str, list[ScannedCheckpoint]]) -> None:
    """For the folders whose curve comes from their newest checkpoint (no training_log.csv), read
    those checkpoints' history in one batch, ahead of _checkpoint_history."""
    for cache in (_LOG_CACHE, _HISTORY_CACHE):  # one entry per folder under the root
        cache.fit(len(by_folder))
    wanted = []
    for name, checkpoints in by_folder.items():
        if not checkpoints or (root / name / LOG_NAME).is_file():
            continue
        newest = newest_full(checkpoints)
        if newest is not None and _HISTORY_CACHE.get(str(newest.path), (newest.signature, name)) is None:
            wanted.append(newest)
    requests = [ReadRequest(str(ck.path), with_history=True, use_sidecar=ck.signature[2] is not None) for ck in wanted]
    for ck, info in zip(wanted, read_checkpoint_infos(requests)):
        _RECENT_HISTORY.put(str(ck.path), ck.signature, info.history)


def own_history(exp_dir: Path, checkpoints: list[ScannedCheckpoint]) -> list[dict[str, Any]]:
    """Per-epoch rows from the best source there is: the log, the newest full checkpoint's
    ``history`` (which also holds the rows a resumed run inherited), else each file's metrics."""
    rows = _log_rows(exp_dir)
    if rows:
        return rows
    newest = newest_full(checkpoints)
    rows = _checkpoint_history(newest, exp_dir.name) if newest is not None else []
    if rows:
        return rows
    found = []
    for ck in checkpoints:
        if ck.readable and ck.epoch is not None and ck.info.step_in_epoch == 0 and ck.info.metrics:
            found.append(_history_row({"epoch": ck.epoch, **ck.info.metrics}, exp_dir.name))
    return _dedupe_last(r for r in found if r is not None)


def run_lineage(checkpoints: list[ScannedCheckpoint]) -> dict[str, Any] | None:
    newest = newest_full(checkpoints)
    lineage = newest.info.lineage if newest is not None else None
    return lineage if isinstance(lineage, dict) and lineage.get("mode") in ("resume", "pretrained") else None


def _resume_parent(lineage: dict[str, Any] | None) -> tuple[str, int] | None:
    """(parent folder, parent epoch) of a run resumed from another folder, else None."""
    if not lineage or lineage.get("mode") != "resume":
        return None
    parent, epoch = lineage.get("parent_experiment"), as_epoch(lineage.get("parent_epoch"))
    if not isinstance(parent, str) or not is_experiment_name(parent) or epoch is None:
        return None
    return parent, epoch


def history_rows(root: Path, experiment: str, follow_lineage: bool, seen: set[str],
                  checkpoints: list[ScannedCheckpoint] | None = None,
                  own_rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The folder's rows, prefixed by its resume parents' (``seen``: folders on the path)."""
    exp_dir = root / experiment
    if checkpoints is None:
        checkpoints = folder_checkpoints(exp_dir)
    rows = own_history(exp_dir, checkpoints) if own_rows is None else own_rows
    parent = _resume_parent(run_lineage(checkpoints))
    if parent is None:
        return rows
    parent_name, parent_epoch = parent
    own = [r for r in rows if r["epoch"] > parent_epoch]
    if not follow_lineage:
        return own
    prefix: list[dict[str, Any]] = []
    if parent_name not in seen and (root / parent_name).is_dir():
        prefix = [r for r in history_rows(root, parent_name, True, seen | {parent_name})
                  if r["epoch"] <= parent_epoch]
    if not prefix:  # parent folder gone: the rows the checkpoint inherited still tell the story
        prefix = [r for r in rows if r["epoch"] <= parent_epoch]
    return prefix + own


_HISTORY_DTYPES = {"epoch": "int64", **{key: "float64" for key in HISTORY_METRICS}, "experiment": "str"}


def experiment_history(models_root: Path | str, experiment: str, follow_lineage: bool = True) -> pd.DataFrame:
    """Per-epoch rows (HISTORY_COLUMNS) of one experiment, ``experiment`` = folder the row was
    written in. With ``follow_lineage`` a run resumed from another folder is prefixed by its
    parent's rows up to the epoch it resumed from (recursively; a cycle stops the walk).
    A folder that does not exist gives an empty frame."""
    exp_dir = experiment_dir(models_root, experiment)
    if not exp_dir.is_dir():
        return typed_frame([], HISTORY_COLUMNS, _HISTORY_DTYPES)
    checkpoints = folder_checkpoints(exp_dir)
    if _resume_parent(run_lineage(checkpoints)) is None:  # the common case: the log alone, vectorised
        frame = _log_frame(exp_dir)
        if frame is not None:
            return frame.copy()
    rows = history_rows(Path(models_root), experiment, follow_lineage, {experiment}, checkpoints)
    return typed_frame(rows, HISTORY_COLUMNS, _HISTORY_DTYPES)


def _log_frame(exp_dir: Path) -> pd.DataFrame | None:
    """The folder's training_log.csv as a typed history frame, parsed by pandas (a 100,000-row
    log in a fraction of a second) and cached per file version; None when there is no log, no
    valid row, or pandas cannot parse it (the row-by-row reader then decides)."""
    path = exp_dir / LOG_NAME
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    key, signature = str(path), (st.st_size, st.st_mtime_ns)
    frame = _LOG_FRAMES.get(key, signature)
    if frame is None:
        frame = _parse_log_frame(path, exp_dir.name)
        _LOG_FRAMES.put(key, signature, frame)
    return frame if len(frame) else None


def _parse_log_frame(path: Path, experiment: str) -> pd.DataFrame:
    """Same rows as _log_rows gives (epochs as_epoch accepts, numbers or NaN, last row per epoch)."""
    global _LOGS_PARSED
    _LOGS_PARSED += 1
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    except Exception:  # ragged or binary: an empty frame sends the caller to the row-by-row reader
        return typed_frame([], HISTORY_COLUMNS, _HISTORY_DTYPES)
    epoch = pd.to_numeric(raw["epoch"], errors="coerce") if "epoch" in raw else pd.Series(dtype=float)
    valid = epoch.notna() & np.isfinite(epoch) & (epoch >= 1) & (epoch == np.floor(epoch))
    data = {"epoch": epoch[valid].astype("int64")}
    for key in HISTORY_METRICS:
        column = raw[key][valid] if key in raw else pd.Series(np.nan, index=data["epoch"].index)
        data[key] = pd.to_numeric(column, errors="coerce").astype("float64")
    frame = pd.DataFrame(data)
    frame["experiment"] = pd.Series(experiment, index=frame.index, dtype="str")
    frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable")
    return frame.reset_index(drop=True)[list(HISTORY_COLUMNS)]


def best_result(rows: list[dict[str, Any]], newest: ScannedCheckpoint | None) -> tuple[float, int | None]:
    """(best val EER, its epoch): the first minimum of the curve (the trainer keeps the first)."""
    scored = [r for r in rows if not math.isnan(r["val_eer"])]
    if scored:
        best = min(scored, key=lambda r: r["val_eer"])  # min keeps the first of equal values
        return best["val_eer"], best["epoch"]
    if newest is not None:
        return newest.info.metrics.get("best_val_eer", math.nan), newest.info.best_epoch
    return math.nan, None
