"""The dashboard's read side as one module: every experiment folder and checkpoint under a models
root, as pandas; what pages import (``from training.dashboard import catalog``).

Data flows one way (trainer -> files on disk -> catalog -> pages), so everything is derived from
the files alone. This module owns the experiment table (:func:`scan_experiments`; an unchanged
folder's row comes from :mod:`training.dashboard.folder_memo`), one
checkpoint's details and verification, and the hyperparameter diff; it re-exports the rest:
scanning checkpoints and the per-file cache (:mod:`training.dashboard.scan`), histories and
lineage (:mod:`training.dashboard.history`), protection and deletion
(:mod:`training.dashboard.protection`). "Running" comes from the folder's lock
(:mod:`training.lock`) and the jobs registry (:mod:`training.jobs.registry`). Nothing here, deleting
included, imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from training import experiment_notes
from training.checkpoint import resumable
from training.checkpoint.fsutil import sidecar_path
from training.checkpoint.meta import read_checkpoint_info
from training.checkpoint.sidecar import clear_damage_mark, mark_damaged, verify_checkpoint_file
from training.dashboard import evaluation, folder_memo, history, scan
from training.dashboard.history import (HISTORY_COLUMNS, LOG_NAME, as_epoch, best_result, experiment_history,
                                        history_rows, own_history, read_histories_ahead, run_lineage)
from training.dashboard.protection import delete_checkpoints, protected_checkpoints
from training.dashboard.scan import (CHECKPOINT_COLUMNS, CatalogError, ScannedCheckpoint, all_checkpoints,
                                     list_experiment_names, list_folder, local_timestamp, newest_full,
                                     scan_checkpoints, typed_frame)
from training.lock import LOCK_NAME, read_lock_holder
from training.naming import parse_checkpoint_name, parse_experiment_name

__all__ = [
    "CHECKPOINT_COLUMNS",
    "EXPERIMENT_COLUMNS",
    "HISTORY_COLUMNS",
    "HYPERPARAMETER_KEYS",
    "LOG_NAME",
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

MISSING = "—"  # how hyperparameter_diff shows a key one side lacks
# Hyperparameter columns of scan_experiments -> the ``args`` key they come from.
HYPERPARAMETER_KEYS: dict[str, str] = {
    "model_type": "model_type", "track": "track", "loss": "loss", "num_epochs": "num_epochs",
    "batch_size": "batch_size", "lr": "lr", "group_size": "group_size",
    "contrastive": "use_contrastive", "comment": "comment",
}
EXPERIMENT_COLUMNS = (
    "name", "path", *HYPERPARAMETER_KEYS, "epochs_done", "best_val_eer", "best_epoch",
    "latest_val_eer", "latest_val_acc", "val_eer_history", "checkpoints", "size_bytes", "modified",
    "status", "has_lineage", "lineage_mode", "parent_experiment", "parent_epoch", "tags", "best_eval_eer",
)


def cache_info() -> dict[str, int]:
    """Hit/miss counters and sizes: ``misses`` counts checkpoint files actually (re)read."""
    return {**scan.cache_info(), **history.cache_info()}


def clear_cache() -> None:
    """Forget every cached file and frame (the next scan re-reads everything)."""
    scan.clear_cache()
    history.clear_cache()
    folder_memo.clear()


# --- scan_experiments ---------------------------------------------------------------------------------

def _hyperparameters(name: str, checkpoints: list[ScannedCheckpoint]) -> dict[str, Any]:
    """From the newest readable checkpoint's ``args`` where present, else the folder name."""
    with_args = [c for c in checkpoints if c.readable and isinstance(c.info.args, dict)]
    args: dict[str, Any] = {}
    if with_args:
        args = resumable.newest(with_args, scan.resume_rank).info.args or {}
    parsed = parse_experiment_name(name)
    return {column: args[key] if key in args else parsed.get(key)
            for column, key in HYPERPARAMETER_KEYS.items()}


def _status(exp_dir: Path, readable: bool, epochs_done: int | None, num_epochs: Any) -> str:
    if read_lock_holder(exp_dir) is not None:
        return "running"
    return _settled_status(readable, epochs_done, num_epochs)


def _settled_status(readable: bool, epochs_done: int | None, num_epochs: Any) -> str:
    """The status of a folder nobody holds."""
    if not readable:
        return "empty"
    target = as_epoch(num_epochs)
    if epochs_done is not None and target is not None and epochs_done >= target:
        return "finished"
    return "interrupted"


def _experiment_row(root: Path, name: str, checkpoints: list[ScannedCheckpoint]) -> folder_memo.FolderEntry:
    """The folder's memo entry: its row, keyed by the folder's state *after* the reads (a change
    during them is within the memo's racy window, so such an entry is not kept)."""
    exp_dir = root / name
    own = own_history(exp_dir, checkpoints)
    rows = history_rows(root, name, True, {name}, checkpoints, own)
    newest = newest_full(checkpoints)
    epochs = [r["epoch"] for r in own] + [c.epoch for c in checkpoints if c.readable and c.epoch is not None]
    epochs_done = max(epochs) if epochs else None
    hyper = _hyperparameters(name, checkpoints)
    best_eer, best_epoch = best_result(rows, newest)
    last = rows[-1] if rows else {}
    lineage = run_lineage(checkpoints) or {}
    size, modified, subdirs = folder_memo.folder_usage(exp_dir)
    readable = bool(own) or any(c.readable for c in checkpoints)
    row = {
        "name": name, "path": str(exp_dir), **hyper, "epochs_done": epochs_done,
        "best_val_eer": best_eer, "best_epoch": best_epoch,
        "latest_val_eer": last.get("val_eer", math.nan), "latest_val_acc": last.get("val_acc", math.nan),
        "val_eer_history": [r["val_eer"] for r in rows], "checkpoints": len(checkpoints),
        "size_bytes": size, "modified": local_timestamp(modified),
        "status": None,  # from the lock, on every scan: _current_status
        "has_lineage": bool(lineage), "lineage_mode": lineage.get("mode"),
        "parent_experiment": lineage.get("parent_experiment"),
        "parent_epoch": as_epoch(lineage.get("parent_epoch")),
        # notes.json and eval/*.metrics.json are placed by a rename: the memo's folder keys see them
        "tags": experiment_notes.tags_text(exp_dir),
        "best_eval_eer": evaluation.best_eval_text(evaluation.experiment_results(root, name)),
    }
    paths = folder_memo.watched_paths(str(exp_dir), subdirs, LOG_NAME, LOCK_NAME)
    return folder_memo.FolderEntry(folder_memo.key_of(paths), paths, (), row,
                                        (readable, epochs_done, hyper["num_epochs"]))


_EXPERIMENT_DTYPES = {
    "name": "str", "path": "str", "epochs_done": "Int64", "best_val_eer": "float64", "best_epoch": "Int64",
    "latest_val_eer": "float64", "latest_val_acc": "float64", "checkpoints": "Int64", "size_bytes": "int64",
    "modified": "datetime", "status": "str", "has_lineage": "bool", "parent_epoch": "Int64",
    "tags": "str", "best_eval_eer": "str",
}


def scan_experiments(models_root: Path | str) -> pd.DataFrame:
    """One row per experiment folder (columns: EXPERIMENT_COLUMNS), sorted by name.

    status: running (a live process holds the folder's lock), finished (epochs_done >=
    num_epochs), interrupted (otherwise), empty (no readable checkpoint and no log rows).
    Rows of folders unchanged since the last scan come from :mod:`training.dashboard.folder_memo`
    (a few ``os.stat`` calls each); only changed folders are read again.
    """
    root = Path(models_root)
    memo = folder_memo.memo_for(root, LOG_NAME, LOCK_NAME)
    with memo.lock:
        started = folder_memo.now_ns()
        names = list_experiment_names(root)
        keys = memo.current_keys(names)
        entries = {name: memo.valid(name, keys) for name in names}
        changed = [name for name, entry in entries.items() if entry is None]
        by_folder = all_checkpoints(root, [(name, list_folder(root / name)) for name in changed])
        read_histories_ahead(root, by_folder)
        for name, checkpoints in by_folder.items():
            entries[name] = _experiment_row(root, name, checkpoints)
            keys[name] = entries[name].key
        _remember(memo, entries, keys, changed, started)
        statuses = [_current_status(entry) for entry in entries.values()]
        built_from = (tuple(names), tuple(id(entries[n].row) for n in names), tuple(statuses))
        if memo.frame is None or memo.frame[0] != built_from or changed:
            frame = typed_frame([entry.row for entry in entries.values()], EXPERIMENT_COLUMNS, _EXPERIMENT_DTYPES)
            frame["status"] = pd.Series(statuses, index=frame.index, dtype="str")
            memo.frame = (built_from, frame)
        return memo.frame[1].copy()


def _remember(memo: folder_memo.FolderMemo, entries: dict[str, folder_memo.FolderEntry],
              keys: dict[str, folder_memo.FolderKey], changed: list[str], started: int) -> None:
    """Keep the rebuilt entries, each with the keys of the resume parents its curve reads."""
    def parent_of(name: str) -> str | None:
        entry = entries.get(name)
        parent = entry.row.get("parent_experiment") if entry is not None else None
        return parent if isinstance(parent, str) else None

    for name in changed:
        entry = entries[name]
        entry.deps = tuple((dep, keys.get(dep)) for dep in folder_memo.resume_chain(name, parent_of))
        memo.store(name, entry, started)
    memo.keep_only(entries)


def _current_status(entry: folder_memo.FolderEntry) -> str:
    """The stored status, unless the lock file holds a record: its holder may have died since."""
    if entry.key.locked:
        return _status(Path(entry.paths[0]), *entry.status_inputs)
    return _settled_status(*entry.status_inputs)


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
    info = read_checkpoint_info(path, with_history=True)  # one file, with an old file's history
    named = parse_checkpoint_name(path.name)
    ck = ScannedCheckpoint(path, info, named.role, named.completed_epochs, None)
    details = info.to_dict()
    side = sidecar_path(path)
    details.update(
        file=path.name, role=named.role, catalog_kind=ck.kind, size=info.size_bytes,
        modified=local_timestamp(info.mtime),
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
