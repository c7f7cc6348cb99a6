"""Which checkpoints of an experiment must be kept, and deleting the others.

Kept: best checkpoints (and the epoch file of the best epoch), the newest checkpoint, the
interrupt checkpoint, and anything a running run or an active job uses. Deleting checks every
name first and deletes nothing when one is refused; deleting imports no torch
(:func:`training.checkpoint.fsutil.remove_checkpoint`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.checkpoint.fsutil import remove_checkpoint
from training.dashboard.history import best_result, own_history
from training.dashboard.scan import CatalogError, experiment_dir, folder_checkpoints, newest_full
from training.lock import read_lock_holder
from training.naming import CHECKPOINT_SUFFIX


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


def jobs_using(models_root: Path, exp_dir: Path) -> Iterator[tuple[Any, str | None]]:
    """The active jobs that use the folder: ``(job, None)`` for one that trains in it, ``(job,
    file)`` for one that starts from the checkpoint ``file`` in it (the rule of both the
    checkpoints' and the whole experiment's protection)."""
    real_dir = os.path.realpath(exp_dir)
    for job in _active_jobs(models_root):
        if os.path.realpath(job.exp_dir) == real_dir:
            yield job, None
        model_path = _job_model_path(list(job.argv))
        if model_path and os.path.dirname(os.path.realpath(model_path)) == real_dir:
            yield job, os.path.basename(os.path.realpath(model_path))


def protected_checkpoints(models_root: Path | str, experiment: str) -> dict[str, str]:
    """File name -> why it must not be deleted: best checkpoints (and the epoch file of the best
    epoch), the newest checkpoint, the interrupt checkpoint, and anything a running job uses
    (all files while the experiment runs or has an active job; the ``--model_path`` of any
    active job)."""
    root = Path(models_root)
    exp_dir = experiment_dir(root, experiment)
    checkpoints = folder_checkpoints(exp_dir)
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
    newest = newest_full(checkpoints)
    if newest is not None and newest.info.best_epoch is not None:
        best_epochs.add(newest.info.best_epoch)
    _, history_best = best_result(own_history(exp_dir, checkpoints), newest)
    if history_best is not None:
        best_epochs.add(history_best)
    for ck in checkpoints:
        if ck.role == "epoch" and ck.epoch in best_epochs:
            _add_reason(reasons, ck.path.name, f"holds the best epoch ({ck.epoch})")
    latest = newest or max(checkpoints, key=lambda c: c.info.mtime, default=None)
    if latest is not None:
        _add_reason(reasons, latest.path.name, "newest checkpoint")
    for job, file in jobs_using(root, exp_dir):
        if file is None:
            for ck in checkpoints:
                _add_reason(reasons, ck.path.name, f"job #{job.id} is {job.state} in this experiment")
        else:
            _add_reason(reasons, file, f"used by job #{job.id} ({job.state})")
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
    exp_dir = experiment_dir(root, experiment)
    if not exp_dir.is_dir() or exp_dir.is_symlink():
        raise CatalogError(f"refusing to delete from {exp_dir}: not an experiment folder under {root}")
    names = list(dict.fromkeys(files))
    paths = [_deletable_path(root, exp_dir, name) for name in names]
    protected = protected_checkpoints(root, experiment)
    for name in names:
        if name in protected:
            raise CatalogError(f"refusing to delete {experiment}/{name}: {protected[name]}")

    for path in paths:
        remove_checkpoint(path)
    folder_checkpoints(exp_dir)  # drops the deleted files from the cache
    return names
