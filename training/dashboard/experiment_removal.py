"""Archiving or deleting a whole experiment folder from the dashboard, with the protections the
checkpoint deletion has (:mod:`training.dashboard.protection`).

Refused while anything uses the folder: a live run holding its lock, an active job writing it, an
active job starting from one of its files (``--model_path``). The folder must be a real folder
directly under the models root (no symlink, no path). While the folder is moved or deleted this
process holds its lock, so a run cannot start in it half-way. Archiving moves it to
``<models_root>/archive/<name>__<time>/`` (the catalog does not list ``archive``; nothing is lost);
deleting removes it for good. Torch-free.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

from training.dashboard.protection import jobs_using
from training.dashboard.scan import CatalogError, experiment_dir
from training.lock import ExperimentBusy, ExperimentLock, describe_holder, read_lock_holder
from training.naming import ARCHIVE_DIRNAME


def _checked_folder(root: Path, experiment: str) -> Path:
    folder = experiment_dir(root, experiment)
    try:
        st = os.lstat(folder)
    except OSError:
        raise CatalogError(f"{experiment}: no such experiment folder under {root}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CatalogError(f"{experiment}: not a folder (a symlink or a file) under {root}")
    if os.path.dirname(os.path.realpath(folder)) != os.path.realpath(root):
        raise CatalogError(f"{experiment}: outside the models root {root}")
    return folder


def removal_refusal(models_root: Path | str, experiment: str) -> str | None:
    """Why the folder may not be archived or deleted now; None when it may."""
    root = Path(models_root)
    try:
        folder = _checked_folder(root, experiment)
    except CatalogError as exc:
        return str(exc)
    holder = read_lock_holder(folder)
    if holder is not None:
        return f"{experiment} is running ({describe_holder(holder)})"
    for job, file in jobs_using(root, folder):
        if file is None:
            return f"job #{job.id} is {job.state} in {experiment}"
        return f"job #{job.id} ({job.state}) starts from {file} in {experiment}"
    return None


def _locked(root: Path, experiment: str) -> tuple[Path, ExperimentLock]:
    refusal = removal_refusal(root, experiment)
    if refusal:
        raise CatalogError(f"refusing to remove {experiment}: {refusal}")
    folder = _checked_folder(root, experiment)
    lock = ExperimentLock(folder)
    try:
        lock.acquire()
    except ExperimentBusy as exc:
        raise CatalogError(f"refusing to remove {experiment}: {exc}") from None
    return folder, lock


def archive_experiment(models_root: Path | str, experiment: str) -> Path:
    """Move the folder under ``<root>/archive/``; returns where it went. CatalogError on refusal."""
    root = Path(models_root)
    folder, lock = _locked(root, experiment)
    try:
        target = root / ARCHIVE_DIRNAME / f"{experiment}__{time.strftime('%Y%m%d-%H%M%S')}"
        suffix = 1
        while os.path.lexists(target):
            target = target.with_name(f"{target.name.split('~')[0]}~{suffix}")
            suffix += 1
        target.parent.mkdir(exist_ok=True)
        os.rename(folder, target)
        return target
    finally:
        lock.release()


def delete_experiment(models_root: Path | str, experiment: str) -> None:
    """Delete the folder and everything in it (symlinks inside are removed, never followed)."""
    root = Path(models_root)
    folder, lock = _locked(root, experiment)
    try:
        shutil.rmtree(folder)
    finally:
        lock.release()
