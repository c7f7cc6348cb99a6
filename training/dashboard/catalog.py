"""The dashboard's read side: every experiment folder and checkpoint under a models root, as pandas.

Data flows one way (trainer -> files on disk -> catalog -> pages), so everything here is derived
from the files alone: checkpoint metadata through :mod:`training.checkpoint.reader` (sidecar or the
pickle only, never the tensors, never torch), curves from ``training_log.csv``, names through
:mod:`training.naming`, "running" from the folder's lock (:mod:`training.lock`) and the jobs
registry (:mod:`training.jobs.registry`). Importing this module does not import torch; only
:func:`delete_checkpoints` does, on first use, to reuse :func:`training.store.remove_checkpoint`.

Layout of a models root::

    models_root/
        .jobs/                      the jobs registry (not an experiment)
        <experiment>/               one folder per experiment (not starting with '.', not 'archive')
            checkpoint_epoch_N[_c].pth (+ .meta.json sidecar), best_checkpoint_eer[_c].pth,
            checkpoint_interrupt[_c].pth, training_log.csv, .lock, archive/...

Caching: a dashboard rescans on every rerun, so reading must cost about an ``os.stat`` per file
once nothing changed. CheckpointInfo and parsed logs are cached per file, keyed by
``(path, size, mtime_ns)`` (plus the sidecar's size and mtime_ns: the trainer writes the sidecar
*after* the ``.pth``, so a file first seen without one must be re-read once it appears). The cache
is bounded (LRU) and entries of files that vanished from a scanned folder are dropped. A rescan in
which every signature is unchanged returns a copy of the previous frame without rebuilding it.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from training.checkpoint.pool import ReadRequest, read_checkpoint_infos
from training.checkpoint.reader import (
    METRIC_KEYS,
    SIDECAR_SUFFIX,
    CheckpointInfo,
    clear_damage_mark,
    mark_damaged,
    read_checkpoint_info,
    sidecar_path,
    verify_checkpoint_file,
)
from training.checkpoint import resumable
from training.lock import read_lock_holder
from training.naming import (ARCHIVE_DIRNAME, CHECKPOINT_SUFFIX, LOG_NAME, checkpoint_sort_key, parse_checkpoint_name,
                             parse_experiment_name)

__all__ = [
    "CHECKPOINT_COLUMNS",
    "EXPERIMENT_COLUMNS",
    "HISTORY_COLUMNS",
    "HYPERPARAMETER_KEYS",
    "CatalogError",
    "scan_checkpoints",
    "scan_experiments",
    "experiment_history",
    "checkpoint_details",
    "verify_checkpoint",
    "hyperparameter_diff",
    "protected_checkpoints",
    "delete_checkpoints",
    "list_experiment_names",
    "cache_info",
    "clear_cache",
]

# Same names as training.trainer.LOG_NAME / LOG_COLUMNS (a test checks it): importing the
# trainer would import torch, which the dashboard's read path must not.
MISSING = "—"  # how hyperparameter_diff shows a key one side lacks

CHECKPOINT_COLUMNS = (
    "experiment", "file", "path", "role", "kind", "epoch", "step_in_epoch", *METRIC_KEYS,
    "size_bytes", "modified", "reason", "complete",
)
# Hyperparameter columns of scan_experiments -> the ``args`` key they come from.
HYPERPARAMETER_KEYS: dict[str, str] = {
    "model_type": "model_type", "track": "track", "loss": "loss", "num_epochs": "num_epochs",
    "batch_size": "batch_size", "lr": "lr", "group_size": "group_size",
    "contrastive": "use_contrastive", "comment": "comment",
}
EXPERIMENT_COLUMNS = (
    "name", "path", *HYPERPARAMETER_KEYS, "epochs_done", "best_val_eer", "best_epoch",
    "latest_val_eer", "latest_val_acc", "val_eer_history", "checkpoints", "size_bytes", "modified",
    "status", "has_lineage", "lineage_mode", "parent_experiment", "parent_epoch",
)
# epoch_seconds and timestamp (when the row was written) let the Jobs page estimate an ETA.
HISTORY_METRICS = ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer", "lr",
                   "epoch_seconds", "timestamp")
HISTORY_COLUMNS = ("epoch", *HISTORY_METRICS, "experiment")

# The catalog's kind: what a user can do with the file. Full files named best are "best".
# damaged: a verification (a training load, --list_checkpoints --verify, checkpoint_details(verify=True))
# found its bytes changed since the save; the mark lives in its sidecar (ckpt_reader "Damage marks").
_KIND_NAMES = {"full": "full", "weights_only": "legacy", "unreadable": "unreadable", "unsafe": "unsafe",
               "damaged": "damaged"}
_READABLE_KINDS = ("full", "weights_only")
# Cached infos carry no ``history`` (a 100-epoch history is ~100 KB of Python objects and every
# checkpoint repeats it), so an entry is a few KB: 20k entries stay well under 100 MB.
_CACHE_MAX_ENTRIES = 20_000
_RECENT_HISTORIES = 256  # raw histories read ahead by _read_histories, until converted
_FRAME_MEMO_ROOTS = 8


class CatalogError(Exception):
    """A catalog operation was refused; the message names the file or folder and says why."""


# --- the cache -------------------------------------------------------------------------------------

Signature = tuple[int, int, tuple[int, int] | None]  # size, mtime_ns, sidecar (size, mtime_ns)


class _FileCache:
    """LRU map path -> (signature, value), guarded by one lock (Streamlit runs pages in threads).

    Files are read outside the lock: two threads may read the same changed file once each,
    which is harmless, and a slow read never blocks other pages. ``_members`` indexes the keys
    by folder so that dropping a folder's vanished files costs that folder's size, not the cache's.
    """

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._members: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str, signature: Any) -> Any | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry[0] == signature:
                self._entries.move_to_end(path)
                self.hits += 1
                return entry[1]
            self.misses += 1
            return None

    def put(self, path: str, signature: Any, value: Any) -> None:
        with self._lock:
            self._entries[path] = (signature, value)
            self._entries.move_to_end(path)
            self._members.setdefault(os.path.dirname(path), set()).add(path)
            while len(self._entries) > self.max_entries:
                self._forget(next(iter(self._entries)))

    def _forget(self, path: str) -> None:
        del self._entries[path]
        folder = os.path.dirname(path)
        members = self._members.get(folder)
        if members is not None:
            members.discard(path)
            if not members:
                del self._members[folder]

    def prune_folder(self, folder: str, present: set[str]) -> None:
        """Drop entries of files directly in ``folder`` that are not in ``present`` (paths)."""
        with self._lock:
            for path in self._members.get(folder, set()) - present:
                self._forget(path)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._members.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


_INFO_CACHE = _FileCache(_CACHE_MAX_ENTRIES)
_LOG_CACHE = _FileCache(_CACHE_MAX_ENTRIES // 10)  # converted, deduplicated log rows
_HISTORY_CACHE = _FileCache(_CACHE_MAX_ENTRIES // 10)  # converted history of newest checkpoints
_RECENT_HISTORY = _FileCache(_RECENT_HISTORIES)  # raw history of recently read files
# The last checkpoint frame per models root, with the signatures it was built from.
_FRAME_MEMO: dict[str, tuple[tuple, pd.DataFrame]] = {}
_FRAME_LOCK = threading.Lock()


def cache_info() -> dict[str, int]:
    """Hit/miss counters and sizes: ``misses`` counts checkpoint files actually (re)read."""
    return {"hits": _INFO_CACHE.hits, "misses": _INFO_CACHE.misses, "entries": len(_INFO_CACHE),
            "log_hits": _LOG_CACHE.hits, "log_misses": _LOG_CACHE.misses,
            "log_entries": len(_LOG_CACHE)}


def clear_cache() -> None:
    """Forget every cached file and frame (the next scan re-reads everything)."""
    _INFO_CACHE.clear()
    _LOG_CACHE.clear()
    _HISTORY_CACHE.clear()
    _RECENT_HISTORY.clear()
    with _FRAME_LOCK:
        _FRAME_MEMO.clear()


def _sidecar_signature(path: Path | str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _cached_infos(files: list[tuple[str, Signature]]) -> list[CheckpointInfo]:
    """read_checkpoint_info of each (path, signature) through the cache, *without* ``history``
    (every checkpoint repeats its run's whole history, and converting it would be most of a
    first scan's work; see _checkpoint_history). The files not cached are read in one batch by
    the reader processes (training.checkpoint.pool)."""
    infos = [_INFO_CACHE.get(path, signature) for path, signature in files]
    missing = [n for n, info in enumerate(infos) if info is None]
    requests = [ReadRequest(files[n][0], with_history=False, use_sidecar=files[n][1][2] is not None)
                for n in missing]
    for n, info in zip(missing, read_checkpoint_infos(requests)):
        infos[n] = info
        _INFO_CACHE.put(*files[n], info)
    return infos  # type: ignore[return-value]


# Names repeat across folders and rescans: parse each once (regexes are the rescan's main cost).
_parsed_name = functools.lru_cache(maxsize=1 << 16)(parse_checkpoint_name)
_sort_key = functools.lru_cache(maxsize=1 << 16)(checkpoint_sort_key)


# --- folders -------------------------------------------------------------------------------------

def _is_experiment_name(name: str) -> bool:
    """A plain folder name that can be an experiment ('.', '..', dot-folders and paths cannot)."""
    return (bool(name) and not name.startswith(".") and name != ARCHIVE_DIRNAME
            and "/" not in name and os.sep not in name and "\0" not in name)


def list_experiment_names(models_root: Path | str) -> list[str]:
    """Sorted names of the experiment folders directly under ``models_root`` ([] if missing)."""
    try:
        entries = list(os.scandir(models_root))
    except OSError:
        return []
    names = []
    for entry in entries:
        try:
            if _is_experiment_name(entry.name) and entry.is_dir():
                names.append(entry.name)
        except OSError:
            continue
    return sorted(names)


def _experiment_dir(models_root: Path | str, experiment: str) -> Path:
    """``models_root/experiment``; CatalogError for a name that is not a plain folder name."""
    if not isinstance(experiment, str) or not _is_experiment_name(experiment):
        raise CatalogError(f"{experiment!r} is not an experiment folder name under {models_root}")
    return Path(models_root) / experiment


@dataclass
class _Checkpoint:
    """One checkpoint file as the catalog sees it."""

    path: Path
    info: CheckpointInfo
    role: str
    name_epoch: int | None
    signature: Signature  # what the cache keyed the info by

    @property
    def readable(self) -> bool:
        return self.info.kind in _READABLE_KINDS

    @property
    def epoch(self) -> int | None:
        """The epoch inside the file; for weights-only files, the one their name states."""
        if self.info.epoch is not None:
            return self.info.epoch
        return self.name_epoch if self.readable else None

    @property
    def kind(self) -> str:
        if self.info.kind == "full" and self.role == "best":
            return "best"
        return _KIND_NAMES[self.info.kind]


Listing = list[tuple[str, Signature]]


def _list_folder(exp_dir: Path) -> Listing:
    """(file name, signature) of each checkpoint in the folder, in checkpoint order.

    The rule is ckpt_reader.list_checkpoint_files' (``*.pth`` regular files, no dot-files; a
    test keeps them equal), but one directory read also tells which sidecars exist, so a
    rescan pays one ``stat`` per file (two with a sidecar) and no failing ``stat`` calls.
    """
    try:
        entries = list(os.scandir(exp_dir))
    except OSError:
        return []
    names = {entry.name for entry in entries}
    listing = []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith(CHECKPOINT_SUFFIX):
            continue
        try:
            if not entry.is_file():  # folders, FIFOs (open() would block), sockets
                continue
            st = entry.stat()
        except OSError:
            continue
        side = name + SIDECAR_SUFFIX
        side_sig = _sidecar_signature(os.path.join(exp_dir, side)) if side in names else None
        listing.append((name, (st.st_size, st.st_mtime_ns, side_sig)))
    listing.sort(key=lambda item: _sort_key(item[0]))
    return listing


def _all_checkpoints(root: Path, listings: list[tuple[str, Listing]]) -> dict[str, list[_Checkpoint]]:
    """Each listed folder's checkpoints in checkpoint order: infos from the cache where
    unchanged, the rest read in one batch across all folders (a first scan reads them all)."""
    files = [[(os.path.join(root, name, file), sig) for file, sig in listing] for name, listing in listings]
    infos = iter(_cached_infos([f for folder in files for f in folder]))
    out: dict[str, list[_Checkpoint]] = {}
    for (name, listing), folder_files in zip(listings, files):
        checkpoints = out[name] = []
        for (file, sig), info in zip(listing, infos):
            named = _parsed_name(file)
            checkpoints.append(_Checkpoint(info.path, info, named.role, named.epoch, sig))
        _INFO_CACHE.prune_folder(os.path.join(root, name), {path for path, _ in folder_files})
    return out


def _folder_checkpoints(exp_dir: Path, listing: Listing | None = None) -> list[_Checkpoint]:
    """One folder's checkpoints (see _all_checkpoints)."""
    if listing is None:
        listing = _list_folder(exp_dir)
    return _all_checkpoints(exp_dir.parent, [(exp_dir.name, listing)])[exp_dir.name]


def _newest_full(checkpoints: list[_Checkpoint]) -> _Checkpoint | None:
    """The full checkpoint auto-resume would continue (``training.checkpoint.resumable``)."""
    return resumable.newest([c for c in checkpoints if c.info.kind == "full" and c.info.epoch is not None],
                            _resume_rank)


def _resume_rank(c: _Checkpoint) -> tuple[Any, ...]:
    return resumable.resume_rank(c.info.epoch, c.info.step_in_epoch, c.path.name, c.info.mtime)


def _local_timestamp(mtime: float | None) -> pd.Timestamp:
    """A file time as a naive local-time Timestamp (what a user reads off a clock); NaT if unknown."""
    if not mtime:
        return pd.NaT
    return pd.Timestamp(datetime.fromtimestamp(mtime))


# --- scan_checkpoints --------------------------------------------------------------------------------

def _typed_frame(rows: list[dict[str, Any]], columns: Iterable[str], dtypes: Mapping[str, str]) -> pd.DataFrame:
    """Rows -> a frame built column by column with fixed dtypes, so an empty scan has the same
    columns and dtypes as a full one. Columns not in ``dtypes`` are object columns holding
    None where a value is missing (pandas would otherwise turn None into NaN)."""
    data = {}
    for column in columns:
        values = [row[column] for row in rows]
        dtype = dtypes.get(column, "object")
        data[column] = pd.to_datetime(pd.Series(values, dtype=object)) if dtype == "datetime" \
            else pd.Series(values, dtype=dtype)
    return pd.DataFrame(data)


def _checkpoint_row(experiment: str, ck: _Checkpoint) -> dict[str, Any]:
    info = ck.info
    row: dict[str, Any] = {
        "experiment": experiment, "file": ck.path.name, "path": str(ck.path), "role": ck.role,
        "kind": ck.kind, "epoch": ck.epoch, "step_in_epoch": int(info.step_in_epoch or 0),
    }
    for key in METRIC_KEYS:
        row[key] = info.metrics.get(key, math.nan)
    row.update(size_bytes=int(info.size_bytes), modified=_local_timestamp(info.mtime),
               reason=info.reason, complete=bool(info.complete))
    return row


_CHECKPOINT_DTYPES = {
    "experiment": "str", "file": "str", "path": "str", "role": "str", "kind": "str", "epoch": "Int64",
    "step_in_epoch": "int64", **{key: "float64" for key in METRIC_KEYS}, "size_bytes": "int64",
    "modified": "datetime", "complete": "bool",
}


def scan_checkpoints(models_root: Path | str) -> pd.DataFrame:
    """One row per ``.pth`` file in every experiment folder (columns: CHECKPOINT_COLUMNS).

    Sorted by experiment, then checkpoint order (numeric epochs, interrupt, best, others).
    A missing or empty root gives an empty frame with the same columns.
    """
    root = Path(models_root)
    listings = [(name, _list_folder(root / name)) for name in list_experiment_names(root)]
    signature = tuple((name, tuple(listing)) for name, listing in listings)
    key = os.path.realpath(root)
    with _FRAME_LOCK:
        memo = _FRAME_MEMO.get(key)
    if memo is not None and memo[0] == signature:  # nothing changed: no rows to rebuild
        return memo[1].copy()
    rows = [_checkpoint_row(name, ck) for name, checkpoints in _all_checkpoints(root, listings).items()
            for ck in checkpoints]
    frame = _typed_frame(rows, CHECKPOINT_COLUMNS, _CHECKPOINT_DTYPES)
    with _FRAME_LOCK:
        _FRAME_MEMO.pop(key, None)
        _FRAME_MEMO[key] = (signature, frame)
        while len(_FRAME_MEMO) > _FRAME_MEMO_ROOTS:  # bounded: the oldest root goes
            del _FRAME_MEMO[next(iter(_FRAME_MEMO))]
    return frame.copy()


# --- histories ---------------------------------------------------------------------------------------

def _as_float(value: Any) -> float:
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_epoch(value: Any) -> int | None:
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
    epoch = _as_epoch(row.get("epoch"))
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


def _checkpoint_history(ck: _Checkpoint, experiment: str) -> list[dict[str, Any]]:
    """A checkpoint's ``history`` as rows, converted once per file version (rows are shared:
    callers must not modify them). Cached infos hold no history: the file is read again, with
    it, unless _read_histories just did."""
    key = str(ck.path)
    rows = _HISTORY_CACHE.get(key, (ck.signature, experiment))
    if rows is None:
        raw = _RECENT_HISTORY.get(key, ck.signature)
        if raw is None:
            raw = read_checkpoint_info(key).history
        found = (_history_row(r, experiment) for r in raw)
        rows = _dedupe_last(r for r in found if r is not None)
        _HISTORY_CACHE.put(key, (ck.signature, experiment), rows)
    return rows


def _read_histories(root: Path, by_folder: dict[str, list[_Checkpoint]]) -> None:
    """For the folders whose curve comes from their newest checkpoint (no training_log.csv), read
    those checkpoints' history in one batch, ahead of _checkpoint_history."""
    wanted = []
    for name, checkpoints in by_folder.items():
        if not checkpoints or (root / name / LOG_NAME).is_file():
            continue
        newest = _newest_full(checkpoints)
        if newest is not None and _HISTORY_CACHE.get(str(newest.path), (newest.signature, name)) is None:
            wanted.append(newest)
    requests = [ReadRequest(str(ck.path), use_sidecar=ck.signature[2] is not None) for ck in wanted]
    for ck, info in zip(wanted, read_checkpoint_infos(requests)):
        _RECENT_HISTORY.put(str(ck.path), ck.signature, info.history)


def _own_history(exp_dir: Path, checkpoints: list[_Checkpoint]) -> list[dict[str, Any]]:
    """Per-epoch rows from the best source there is: the log, the newest full checkpoint's
    ``history`` (which also holds the rows a resumed run inherited), else each file's metrics."""
    rows = _log_rows(exp_dir)
    if rows:
        return rows
    newest = _newest_full(checkpoints)
    rows = _checkpoint_history(newest, exp_dir.name) if newest is not None else []
    if rows:
        return rows
    found = []
    for ck in checkpoints:
        if ck.readable and ck.epoch is not None and ck.info.step_in_epoch == 0 and ck.info.metrics:
            found.append(_history_row({"epoch": ck.epoch, **ck.info.metrics}, exp_dir.name))
    return _dedupe_last(r for r in found if r is not None)


def _lineage(checkpoints: list[_Checkpoint]) -> dict[str, Any] | None:
    newest = _newest_full(checkpoints)
    lineage = newest.info.lineage if newest is not None else None
    return lineage if isinstance(lineage, dict) and lineage.get("mode") in ("resume", "pretrained") else None


def _resume_parent(lineage: dict[str, Any] | None) -> tuple[str, int] | None:
    """(parent folder, parent epoch) of a run resumed from another folder, else None."""
    if not lineage or lineage.get("mode") != "resume":
        return None
    parent, epoch = lineage.get("parent_experiment"), _as_epoch(lineage.get("parent_epoch"))
    if not isinstance(parent, str) or not _is_experiment_name(parent) or epoch is None:
        return None
    return parent, epoch


def _history_rows(root: Path, experiment: str, follow_lineage: bool, seen: set[str],
                  checkpoints: list[_Checkpoint] | None = None,
                  own_rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The folder's rows, prefixed by its resume parents' (``seen``: folders on the path)."""
    exp_dir = root / experiment
    if checkpoints is None:
        checkpoints = _folder_checkpoints(exp_dir)
    rows = _own_history(exp_dir, checkpoints) if own_rows is None else own_rows
    parent = _resume_parent(_lineage(checkpoints))
    if parent is None:
        return rows
    parent_name, parent_epoch = parent
    own = [r for r in rows if r["epoch"] > parent_epoch]
    if not follow_lineage:
        return own
    prefix: list[dict[str, Any]] = []
    if parent_name not in seen and (root / parent_name).is_dir():
        prefix = [r for r in _history_rows(root, parent_name, True, seen | {parent_name})
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
    exp_dir = _experiment_dir(models_root, experiment)
    if not exp_dir.is_dir():
        return _typed_frame([], HISTORY_COLUMNS, _HISTORY_DTYPES)
    rows = _history_rows(Path(models_root), experiment, follow_lineage, {experiment})
    return _typed_frame(rows, HISTORY_COLUMNS, _HISTORY_DTYPES)


# --- scan_experiments ---------------------------------------------------------------------------------

def _folder_usage(folder: Path) -> tuple[int, float]:
    """(bytes of every file under the folder, newest file mtime); symlinks are not followed and
    hard links (the best checkpoint is one) count once, as on the disk."""
    total, newest = 0, 0.0
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest


def _hyperparameters(name: str, checkpoints: list[_Checkpoint]) -> dict[str, Any]:
    """From the newest readable checkpoint's ``args`` where present, else the folder name."""
    with_args = [c for c in checkpoints if c.readable and isinstance(c.info.args, dict)]
    args: dict[str, Any] = {}
    if with_args:
        args = resumable.newest(with_args, _resume_rank).info.args or {}
    parsed = parse_experiment_name(name)
    return {column: args[key] if key in args else parsed.get(key)
            for column, key in HYPERPARAMETER_KEYS.items()}


def _best(rows: list[dict[str, Any]], newest: _Checkpoint | None) -> tuple[float, int | None]:
    """(best val EER, its epoch): the first minimum of the curve (the trainer keeps the first)."""
    scored = [r for r in rows if not math.isnan(r["val_eer"])]
    if scored:
        best = min(scored, key=lambda r: r["val_eer"])  # min keeps the first of equal values
        return best["val_eer"], best["epoch"]
    if newest is not None:
        return newest.info.metrics.get("best_val_eer", math.nan), newest.info.best_epoch
    return math.nan, None


def _status(exp_dir: Path, readable: bool, epochs_done: int | None, num_epochs: Any) -> str:
    if read_lock_holder(exp_dir) is not None:
        return "running"
    if not readable:
        return "empty"
    target = _as_epoch(num_epochs)
    if epochs_done is not None and target is not None and epochs_done >= target:
        return "finished"
    return "interrupted"


def _experiment_row(root: Path, name: str, checkpoints: list[_Checkpoint]) -> dict[str, Any]:
    exp_dir = root / name
    own = _own_history(exp_dir, checkpoints)
    rows = _history_rows(root, name, True, {name}, checkpoints, own)
    newest = _newest_full(checkpoints)
    epochs = [r["epoch"] for r in own] + [c.epoch for c in checkpoints if c.readable and c.epoch is not None]
    epochs_done = max(epochs) if epochs else None
    hyper = _hyperparameters(name, checkpoints)
    best_eer, best_epoch = _best(rows, newest)
    last = rows[-1] if rows else {}
    lineage = _lineage(checkpoints) or {}
    size, modified = _folder_usage(exp_dir)
    readable = bool(own) or any(c.readable for c in checkpoints)
    return {
        "name": name, "path": str(exp_dir), **hyper, "epochs_done": epochs_done,
        "best_val_eer": best_eer, "best_epoch": best_epoch,
        "latest_val_eer": last.get("val_eer", math.nan), "latest_val_acc": last.get("val_acc", math.nan),
        "val_eer_history": [r["val_eer"] for r in rows], "checkpoints": len(checkpoints),
        "size_bytes": size, "modified": _local_timestamp(modified),
        "status": _status(exp_dir, readable, epochs_done, hyper["num_epochs"]),
        "has_lineage": bool(lineage), "lineage_mode": lineage.get("mode"),
        "parent_experiment": lineage.get("parent_experiment"),
        "parent_epoch": _as_epoch(lineage.get("parent_epoch")),
    }


_EXPERIMENT_DTYPES = {
    "name": "str", "path": "str", "epochs_done": "Int64", "best_val_eer": "float64", "best_epoch": "Int64",
    "latest_val_eer": "float64", "latest_val_acc": "float64", "checkpoints": "Int64", "size_bytes": "int64",
    "modified": "datetime", "status": "str", "has_lineage": "bool", "parent_epoch": "Int64",
}


def scan_experiments(models_root: Path | str) -> pd.DataFrame:
    """One row per experiment folder (columns: EXPERIMENT_COLUMNS), sorted by name.

    status: running (a live process holds the folder's lock), finished (epochs_done >=
    num_epochs), interrupted (otherwise), empty (no readable checkpoint and no log rows).
    """
    root = Path(models_root)
    listings = [(name, _list_folder(root / name)) for name in list_experiment_names(root)]
    by_folder = _all_checkpoints(root, listings)
    _read_histories(root, by_folder)
    rows = [_experiment_row(root, name, checkpoints) for name, checkpoints in by_folder.items()]
    return _typed_frame(rows, EXPERIMENT_COLUMNS, _EXPERIMENT_DTYPES)


# --- one checkpoint ----------------------------------------------------------------------------------

def verify_checkpoint(path: Path | str) -> str | None:
    """Hash one file against its sidecar (else its zip CRCs), as a training load would; mark it
    damaged when it fails (the next scan shows kind 'damaged'), clear an old mark when it passes.
    Returns the reason it is damaged, or None. Reads the whole file: for one selected file."""
    path = Path(path)
    try:
        verified, problem = verify_checkpoint_file(path)
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    if problem is None:
        clear_damage_mark(path)
    else:
        mark_damaged(path, problem, verified)
    return problem


def checkpoint_details(path: Path | str, verify: bool = False) -> dict[str, Any]:
    """Everything the reader knows about one file: CheckpointInfo as a dict (``kind`` is the
    reader's: full | weights_only | unreadable | unsafe | damaged) plus ``catalog_kind`` (the
    table's), ``role``, ``file``, ``size``, ``modified`` and ``sidecar`` (path, exists, matches).
    ``verify``: hash the file first (:func:`verify_checkpoint`); ``verified`` then says whether it
    passed. Scans never hash: they show the marks earlier verifications left."""
    path = Path(path)
    problem = verify_checkpoint(path) if verify else None
    info = read_checkpoint_info(path)  # one file, with its history: not through the cache
    named = parse_checkpoint_name(path.name)
    ck = _Checkpoint(path, info, named.role, named.epoch, None)
    details = info.to_dict()
    side = sidecar_path(path)
    details.update(
        file=path.name, role=named.role, catalog_kind=ck.kind, size=info.size_bytes,
        modified=_local_timestamp(info.mtime),
        sidecar={"path": str(side), "exists": side.is_file(), "matches": info.complete},
    )
    if verify:
        details["verified"] = problem is None
    return details


def hyperparameter_diff(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None,
                        only_differences: bool = True) -> pd.DataFrame:
    """Keys of both argument sets, sorted, values as text ("—" where a side lacks the key);
    ``differs`` compares the values themselves (1e-06 == 0.000001)."""
    a, b = dict(a or {}), dict(b or {})
    rows = []
    for key in sorted(set(a) | set(b), key=str):
        in_a, in_b = key in a, key in b
        differs = in_a != in_b or (in_a and in_b and not _same_value(a[key], b[key]))
        rows.append({"key": str(key), "a": str(a[key]) if in_a else MISSING,
                     "b": str(b[key]) if in_b else MISSING, "differs": bool(differs)})
    frame = pd.DataFrame(rows, columns=["key", "a", "b", "differs"])
    frame["differs"] = frame["differs"].astype(bool)
    if only_differences:
        frame = frame[frame["differs"]].reset_index(drop=True)
    return frame


def _same_value(x: Any, y: Any) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):  # True == 1 in Python, not in a config
        return type(x) is type(y) and x == y
    try:
        return bool(x == y)
    except Exception:  # values that refuse comparison: fall back to their text
        return str(x) == str(y)


# --- protecting and deleting ------------------------------------------------------------------------

def _add_reason(out: dict[str, list[str]], name: str, why: str) -> None:
    reasons = out.setdefault(name, [])
    if why not in reasons:
        reasons.append(why)


def _job_model_path(argv: list[str]) -> str | None:
    """The ``--model_path`` value in an argv (``--model_path X`` or ``--model_path=X``)."""
    for i, arg in enumerate(argv):
        if arg == "--model_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model_path="):
            return arg.split("=", 1)[1]
    return None


def _active_jobs(models_root: Path) -> list[Any]:
    """Active jobs of the registry; [] without one (never creates the registry by reading)."""
    from training.jobs.registry import db_path, list_jobs

    if not db_path(models_root).is_file():
        return []
    return [job for job in list_jobs(models_root) if job.is_active]


def protected_checkpoints(models_root: Path | str, experiment: str) -> dict[str, str]:
    """File name -> why it must not be deleted: best checkpoints (and the epoch file of the best
    epoch), the newest checkpoint, the interrupt checkpoint, and anything a running job uses
    (all files while the experiment runs or has an active job; the ``--model_path`` of any
    active job)."""
    root = Path(models_root)
    exp_dir = _experiment_dir(root, experiment)
    checkpoints = _folder_checkpoints(exp_dir)
    reasons: dict[str, list[str]] = {}
    holder = read_lock_holder(exp_dir)
    if holder is not None:
        for ck in checkpoints:
            _add_reason(reasons, ck.path.name, f"the experiment is running (pid {holder.get('pid')})")
    best_epochs: set[int] = set()
    for ck in checkpoints:
        if ck.role == "best":
            _add_reason(reasons, ck.path.name, "best checkpoint")
            if ck.epoch is not None:
                best_epochs.add(ck.epoch)
        elif ck.role == "interrupt":
            _add_reason(reasons, ck.path.name, "interrupt checkpoint (resumes mid-epoch)")
    newest = _newest_full(checkpoints)
    if newest is not None and newest.info.best_epoch is not None:
        best_epochs.add(newest.info.best_epoch)
    _, history_best = _best(_own_history(exp_dir, checkpoints), newest)
    if history_best is not None:
        best_epochs.add(history_best)
    for ck in checkpoints:
        if ck.role == "epoch" and ck.epoch in best_epochs:
            _add_reason(reasons, ck.path.name, f"holds the best epoch ({ck.epoch})")
    latest = newest or max(checkpoints, key=lambda c: c.info.mtime, default=None)
    if latest is not None:
        _add_reason(reasons, latest.path.name, "newest checkpoint")
    real_dir = os.path.realpath(exp_dir)
    for job in _active_jobs(root):
        if os.path.realpath(job.exp_dir) == real_dir:
            for ck in checkpoints:
                _add_reason(reasons, ck.path.name, f"job #{job.id} is {job.state} in this experiment")
        model_path = _job_model_path(list(job.argv))
        if model_path and os.path.dirname(os.path.realpath(model_path)) == real_dir:
            _add_reason(reasons, os.path.basename(os.path.realpath(model_path)),
                        f"used by job #{job.id} ({job.state})")
    return {name: "; ".join(why) for name, why in reasons.items()}


def _deletable_path(root: Path, exp_dir: Path, name: str) -> Path:
    """The checkpoint ``name`` directly in ``exp_dir``, or CatalogError saying why not."""
    where = f"{exp_dir.name}/{name}"
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
        raise CatalogError(f"refusing to delete {name!r}: not a file name directly in {exp_dir}")
    if name.startswith(".") or not name.endswith(CHECKPOINT_SUFFIX):
        raise CatalogError(f"refusing to delete {where}: not a checkpoint (.pth) file")
    path = exp_dir / name
    try:
        st = os.lstat(path)
    except OSError:
        raise CatalogError(f"refusing to delete {where}: no such file") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise CatalogError(f"refusing to delete {where}: not a regular file (a symlink or folder)")
    if os.path.realpath(path.parent) != os.path.realpath(exp_dir) or \
            os.path.dirname(os.path.realpath(exp_dir)) != os.path.realpath(root):
        raise CatalogError(f"refusing to delete {where}: outside the models root {root}")
    return path


def delete_checkpoints(models_root: Path | str, experiment: str, files: list[str]) -> list[str]:
    """Delete intermediate checkpoints (each with its sidecar); returns the deleted names.

    Every name is checked before anything is deleted: a protected file (see
    :func:`protected_checkpoints`) or anything that is not a ``.pth`` file directly in the
    experiment folder (path traversal, symlinks, folders) raises CatalogError and deletes nothing.
    """
    root = Path(models_root)
    exp_dir = _experiment_dir(root, experiment)
    if not exp_dir.is_dir() or exp_dir.is_symlink():
        raise CatalogError(f"refusing to delete from {exp_dir}: not an experiment folder under {root}")
    names = list(dict.fromkeys(files))
    paths = [_deletable_path(root, exp_dir, name) for name in names]
    protected = protected_checkpoints(root, experiment)
    for name in names:
        if name in protected:
            raise CatalogError(f"refusing to delete {experiment}/{name}: {protected[name]}")
    from training.checkpoint.store import remove_checkpoint  # imports torch: only when deleting

    for path in paths:
        remove_checkpoint(path)
    _folder_checkpoints(exp_dir)  # drops the deleted files from the cache
    return names
