"""Scanning a models root: its experiment folders, their checkpoint files (one row each, as
pandas), and the per-file cache that makes a rescan cost about one ``os.stat`` per file.

Checkpoint metadata comes through :mod:`training.checkpoint.meta` (sidecar or the pickle only,
never the tensors, never torch), read in batches by the reader processes of
:mod:`training.checkpoint.pool`. Layout of a models root::

    models_root/
        .jobs/                      the jobs registry (not an experiment)
        <experiment>/               one folder per experiment (not starting with '.', not 'archive')
            checkpoint_epoch_N[_c].pth (+ .meta.json sidecar), best_checkpoint_eer[_c].pth,
            checkpoint_interrupt[_c].pth, training_log.csv, .lock, archive/...

Caching: CheckpointInfo is cached per file, keyed by ``(path, size, mtime_ns)`` plus the
sidecar's size and mtime_ns (the trainer writes the sidecar *after* the ``.pth``, so a file first
seen without one must be re-read once it appears). The cache is bounded (LRU), sized by what the
scans find under the root (``FileCache.fit``), and entries of files that vanished from a scanned folder are dropped. A rescan in which every signature is
unchanged returns a copy of the previous frame without rebuilding it.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from training.checkpoint.pool import ReadRequest, read_checkpoint_infos
from training.checkpoint import resumable
from training.checkpoint.fsutil import SIDECAR_SUFFIX
from training.checkpoint.meta import METRIC_KEYS, CheckpointInfo
from training.naming import ARCHIVE_DIRNAME, CHECKPOINT_SUFFIX, checkpoint_sort_key, parse_checkpoint_name

CHECKPOINT_COLUMNS = (
    "experiment", "file", "path", "role", "kind", "epoch", "step_in_epoch", *METRIC_KEYS,
    "size_bytes", "modified", "reason", "complete",
)

# The catalog's kind: what a user can do with the file. Full files named best are "best".
# damaged: a verification (a training load, --list_checkpoints --verify, checkpoint_details(verify=True))
# found its bytes changed since the save; the mark lives in its sidecar (training.checkpoint.sidecar).
_KIND_NAMES = {"full": "full", "weights_only": "legacy", "unreadable": "unreadable", "unsafe": "unsafe",
               "damaged": "damaged"}
_READABLE_KINDS = ("full", "weights_only")
# Cached infos carry no ``history`` (a 100-epoch history is ~100 KB of Python objects and every
# checkpoint repeats it), so an entry is a few KB: 20k entries stay well under 100 MB.
CACHE_MAX_ENTRIES = 20_000  # the starting size; FileCache.fit grows it to what a root holds
FIT_LIMIT = 1_000_000  # entries of a few KB: a bound on memory, far above any real root
_FRAME_MEMO_ROOTS = 8


class CatalogError(Exception):
    """A catalog operation was refused; the message names the file or folder and says why."""


# --- the cache -------------------------------------------------------------------------------------

Signature = tuple[int, int, tuple[int, int] | None]  # size, mtime_ns, sidecar (size, mtime_ns)


class FileCache:
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

    def fit(self, wanted: int) -> None:
        """Hold at least ``wanted`` entries (what a scan found under its root) plus a quarter for
        what appears next: a constant that a large root exceeds would make every rerun re-read
        every file. Never shrinks, and stops at FIT_LIMIT (a memory bound, not a root's size)."""
        with self._lock:
            self.max_entries = max(self.max_entries, min(wanted + wanted // 4, FIT_LIMIT))

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


_INFO_CACHE = FileCache(CACHE_MAX_ENTRIES)
# The last checkpoint frame per models root, with the signatures it was built from.
_FRAME_MEMO: dict[str, tuple[tuple, pd.DataFrame]] = {}
_FRAME_LOCK = threading.Lock()


def cache_info() -> dict[str, int]:
    """Hit/miss counters and size of the checkpoint-info cache: ``misses`` counts files (re)read."""
    return {"hits": _INFO_CACHE.hits, "misses": _INFO_CACHE.misses, "entries": len(_INFO_CACHE)}


def clear_cache() -> None:
    """Forget every cached checkpoint info and frame (the next scan re-reads everything)."""
    _INFO_CACHE.clear()
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
    first scan's work; see training.dashboard.history). The files not cached are read in one batch by
    the reader processes (training.checkpoint.pool)."""
    _INFO_CACHE.fit(len(files))
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

def is_experiment_name(name: str) -> bool:
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
            if is_experiment_name(entry.name) and entry.is_dir():
                names.append(entry.name)
        except OSError:
            continue
    return sorted(names)


def experiment_dir(models_root: Path | str, experiment: str) -> Path:
    """``models_root/experiment``; CatalogError for a name that is not a plain folder name."""
    if not isinstance(experiment, str) or not is_experiment_name(experiment):
        raise CatalogError(f"{experiment!r} is not an experiment folder name under {models_root}")
    return Path(models_root) / experiment


@dataclass
class ScannedCheckpoint:
    """One checkpoint file as the catalog sees it."""

    path: Path
    info: CheckpointInfo
    role: str
    name_epoch: int | None  # completed epochs the name states (CheckpointName.completed_epochs)
    signature: Signature  # what the cache keyed the info by

    @property
    def readable(self) -> bool:
        return self.info.kind in _READABLE_KINDS

    @property
    def epoch(self) -> int | None:
        """The epoch inside the file; for weights-only files, the completed epochs their name
        states (the original script's ``epoch_3.pth`` is 4 epochs done)."""
        if self.info.epoch is not None:
            return self.info.epoch
        return self.name_epoch if self.readable else None

    @property
    def kind(self) -> str:
        if self.info.kind == "full" and self.role == "best":
            return "best"
        return _KIND_NAMES[self.info.kind]


Listing = list[tuple[str, Signature]]


def list_folder(exp_dir: Path) -> Listing:
    """(file name, signature) of each checkpoint in the folder, in checkpoint order.

    The rule is training.checkpoint.meta.list_checkpoint_files' (``*.pth`` regular files, no dot-files; a
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


def all_checkpoints(root: Path, listings: list[tuple[str, Listing]]) -> dict[str, list[ScannedCheckpoint]]:
    """Each listed folder's checkpoints in checkpoint order: infos from the cache where
    unchanged, the rest read in one batch across all folders (a first scan reads them all)."""
    files = [[(os.path.join(root, name, file), sig) for file, sig in listing] for name, listing in listings]
    infos = iter(_cached_infos([f for folder in files for f in folder]))
    out: dict[str, list[ScannedCheckpoint]] = {}
    for (name, listing), folder_files in zip(listings, files):
        checkpoints = out[name] = []
        for (file, sig), info in zip(listing, infos):
            named = _parsed_name(file)
            checkpoints.append(ScannedCheckpoint(info.path, info, named.role, named.completed_epochs, sig))
        _INFO_CACHE.prune_folder(os.path.join(root, name), {path for path, _ in folder_files})
    return out


def folder_checkpoints(exp_dir: Path, listing: Listing | None = None) -> list[ScannedCheckpoint]:
    """One folder's checkpoints (see all_checkpoints)."""
    if listing is None:
        listing = list_folder(exp_dir)
    return all_checkpoints(exp_dir.parent, [(exp_dir.name, listing)])[exp_dir.name]


def newest_full(checkpoints: list[ScannedCheckpoint]) -> ScannedCheckpoint | None:
    """The full checkpoint auto-resume would continue (``training.checkpoint.resumable``)."""
    return resumable.newest([c for c in checkpoints if c.info.kind == "full" and c.info.epoch is not None],
                            resume_rank)


def resume_rank(c: ScannedCheckpoint) -> tuple[Any, ...]:
    """A scanned checkpoint's place in auto-resume's order."""
    return resumable.resume_rank(c.info.epoch, c.info.step_in_epoch, c.path.name, c.info.mtime)


def local_timestamp(mtime: float | None) -> pd.Timestamp:
    """A file time as a naive local-time Timestamp (what a user reads off a clock); NaT if unknown."""
    if not mtime:
        return pd.NaT
    return pd.Timestamp(datetime.fromtimestamp(mtime))


# --- scan_checkpoints --------------------------------------------------------------------------------

def typed_frame(rows: list[dict[str, Any]], columns: Iterable[str], dtypes: Mapping[str, str]) -> pd.DataFrame:
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


def _checkpoint_row(experiment: str, ck: ScannedCheckpoint) -> dict[str, Any]:
    info = ck.info
    row: dict[str, Any] = {
        "experiment": experiment, "file": ck.path.name, "path": str(ck.path), "role": ck.role,
        "kind": ck.kind, "epoch": ck.epoch, "step_in_epoch": int(info.step_in_epoch or 0),
    }
    for key in METRIC_KEYS:
        row[key] = info.metrics.get(key, math.nan)
    row.update(size_bytes=int(info.size_bytes), modified=local_timestamp(info.mtime),
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
    listings = [(name, list_folder(root / name)) for name in list_experiment_names(root)]
    signature = tuple((name, tuple(listing)) for name, listing in listings)
    key = os.path.realpath(root)
    with _FRAME_LOCK:
        memo = _FRAME_MEMO.get(key)
    if memo is not None and memo[0] == signature:  # nothing changed: no rows to rebuild
        return memo[1].copy()
    rows = [_checkpoint_row(name, ck) for name, checkpoints in all_checkpoints(root, listings).items()
            for ck in checkpoints]
    frame = typed_frame(rows, CHECKPOINT_COLUMNS, _CHECKPOINT_DTYPES)
    with _FRAME_LOCK:
        _FRAME_MEMO.pop(key, None)
        _FRAME_MEMO[key] = (signature, frame)
        while len(_FRAME_MEMO) > _FRAME_MEMO_ROOTS:  # bounded: the oldest root goes
            del _FRAME_MEMO[next(iter(_FRAME_MEMO))]
    return frame.copy()
