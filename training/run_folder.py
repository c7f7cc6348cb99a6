"""A run's experiment folder, as that run sees it: which files are its own, and the housekeeping
it does there (archive, ``--keep_last`` pruning, the stale interrupt file, republishing the best
file, the training log).

"This run's files" are the checkpoints at the top of its experiment folder whose name carries
its tag (``--comment``; the original script's untagged names count as the folder's) and whose
``lineage`` is its own (:func:`lineage_key`). Only those are archived (moved to
``archive/<time>/``, never deleted), pruned, removed or published; files with another tag or
lineage are never touched.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from training.checkpoint.meta import CheckpointInfo, checkpoint_meta, list_checkpoint_files, read_checkpoint_info
from training.checkpoint.sidecar import file_sha256, read_sidecar
from training.checkpoint.torchfile import read_checkpoint_object
from training.checkpoint.fsutil import sidecar_path
from training.checkpoint.store import CheckpointError, link_or_copy
from training.checkpoint.fsutil import remove_checkpoint
from training.naming import (ARCHIVE_DIRNAME, LOG_NAME, STEPS_LOG_NAME, best_checkpoint_name, carries_run_tag, epoch_checkpoint_name,
                             interrupt_checkpoint_name, parse_checkpoint_name)

LOG_COLUMNS = ("epoch", "train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer",
               "lr", "epoch_seconds", "timestamp", "experiment")


# --- which run a checkpoint belongs to -------------------------------------------------------------

def lineage_key(lineage: Any) -> tuple[tuple[str, str], ...] | None:
    """How a run began, in a form two checkpoints compare by: None for a fresh start in its own
    folder, else the lineage's fields with the parent checkpoint by file name (the same parent
    given by a relative or an absolute path is the same run; JSON sidecars and pickles agree)."""
    if not isinstance(lineage, dict):
        return None
    fields = dict(lineage)
    if fields.get("parent_checkpoint"):
        fields["parent_checkpoint"] = Path(str(fields["parent_checkpoint"])).name
    return tuple(sorted((str(k), str(v)) for k, v in fields.items()))


def describe_lineage(lineage: Any) -> str:
    """How a run began, for messages: 'started fresh there', 'resumed from EXP/FILE', ..."""
    if not isinstance(lineage, dict):
        return "started fresh there"
    if not lineage.get("parent_checkpoint"):
        return f"lineage {lineage}"
    parent = f"{lineage.get('parent_experiment')}/{Path(str(lineage['parent_checkpoint'])).name}"
    return f"started from the weights of {parent}" if lineage.get("mode") == "pretrained" else f"resumed from {parent}"


def has_entries(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


class RunFolder:
    """``exp_dir`` as the run with ``comment`` and ``lineage`` sees it."""

    def __init__(self, exp_dir: Path, comment: str | None, lineage: dict[str, Any] | None,
                 echo: Callable[[str], None] = print):
        self.exp_dir = exp_dir
        self.comment = comment
        self.lineage = lineage
        self.echo = echo

    def epoch_path(self, epoch: int) -> Path:
        return self.exp_dir / epoch_checkpoint_name(epoch, self.comment)

    # -- which files are this run's -----------------------------------------------------------

    def is_own(self, info: CheckpointInfo) -> bool:
        """A readable checkpoint of this run: its tag, its lineage (unreadable files are nobody's)."""
        return (carries_run_tag(info.path.name, self.comment) and info.kind == "full"
                and lineage_key(info.lineage) == lineage_key(self.lineage))

    def other_runs_files(self, source: Path | None) -> list[CheckpointInfo]:
        """Checkpoints under this run's names, in its folder, that another run wrote (``source``:
        the file this run starts from, which is not in its way)."""
        source = source.resolve() if source is not None else None
        others = []
        for path in list_checkpoint_files(self.exp_dir):
            if path.resolve() == source or not carries_run_tag(path.name, self.comment):
                continue
            info = read_checkpoint_info(path)
            if info.kind == "full" and lineage_key(info.lineage) != lineage_key(self.lineage):
                others.append(info)
        return others

    # -- housekeeping after a save --------------------------------------------------------------

    def remove_stale_interrupt(self, completed_epochs: int) -> None:
        """This run's interrupt checkpoint, once an epoch checkpoint has superseded it."""
        stale = self.exp_dir / interrupt_checkpoint_name(self.comment)
        if stale.exists():
            info = read_checkpoint_info(stale)
            if self.is_own(info) and info.epoch is not None and info.epoch < completed_epochs:
                remove_checkpoint(stale)

    def republish_best(self, best_epoch: int) -> None:
        """Make the best file hold ``best_epoch`` (the best epoch a resumed checkpoint records).

        A kill between an improving epoch's checkpoint and the best link that follows it leaves
        the best file one improvement behind (or missing), and no later epoch may improve to
        fix it. Only a missing or older best file of this run is replaced, never a corrupt one or
        another run's, and only by this run's own epoch file.
        """
        best = self.exp_dir / best_checkpoint_name(self.comment)
        if best.exists():
            current = read_checkpoint_info(best)
            if not self.is_own(current) or current.epoch is None or current.epoch >= best_epoch:
                return
        source = read_checkpoint_info(self.epoch_path(best_epoch))
        if not self.is_own(source) or source.epoch != best_epoch:
            return  # pruned, unreadable or not this run's: nothing to publish
        # Killed before its sidecar too: hash and describe the file the slow way (rare).
        meta = read_sidecar(source.path) if source.complete else checkpoint_meta(read_checkpoint_object(source.path))
        link_or_copy(source.path, best, source.sha256 or file_sha256(source.path), meta)
        self.echo(f"{best.name} was behind the checkpoint resumed from (an interrupted save): "
                  f"republished it from {source.path.name}")

    def prune(self, keep: int, protected: Iterable[Path], best_epoch: int | None) -> None:
        """``--keep_last K``: after a save is complete, drop this run's older epoch checkpoints,
        never ``protected`` ones, the newest, the best epoch's, another run's (another tag or
        lineage) or an unreadable one."""
        epochs = sorted(((parse_checkpoint_name(p.name).epoch, p) for p in list_checkpoint_files(self.exp_dir)
                         if parse_checkpoint_name(p.name).role == "epoch" and self.is_own(read_checkpoint_info(p))),
                        key=lambda e: e[0])
        protected = set(protected)
        if epochs:
            protected.add(epochs[-1][1].resolve())  # the newest
        if best_epoch:
            protected.add(self.epoch_path(best_epoch).resolve())
        for _, path in epochs[:-keep] if len(epochs) > keep else []:
            if path.resolve() not in protected:
                remove_checkpoint(path)

    # -- the training log -------------------------------------------------------------------------

    def log_files(self) -> list[Path]:
        """The run's logs that exist (epoch log, step log): archived together with its checkpoints."""
        return [path for path in (self.exp_dir / LOG_NAME, self.exp_dir / STEPS_LOG_NAME) if path.exists()]

    def append_log(self, row: dict[str, Any]) -> None:
        log = self.exp_dir / LOG_NAME
        new = not log.exists()
        with open(log, "a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            if new:
                out.writeheader()
            out.writerow(row)
            f.flush()
            os.fsync(f.fileno())

    def restore_log_rows(self, history: list[dict[str, Any]], experiment: str) -> None:
        """A kill between a checkpoint and its log row leaves the row missing: add it back."""
        logged = set()
        log = self.exp_dir / LOG_NAME
        if log.exists():
            with open(log, newline="") as f:
                logged = {row.get("epoch") for row in csv.DictReader(f)}
        for row in history:
            if row.get("experiment", experiment) == experiment and str(row["epoch"]) not in logged:
                self.append_log(row)

    # -- moving files aside -------------------------------------------------------------------------

    def attention_past(self, attention_dir: str, epoch: int, abandoned_branch: bool) -> list[Path]:
        """``attention/epoch_K`` folders past the resume point that belong to an abandoned branch.
        The one of the next epoch alone, with no checkpoint ahead, is a render whose checkpoint a
        kill prevented: this run renders it again (the same maps), so it is not archived."""
        root = self.exp_dir / attention_dir
        past = []
        for path in sorted(root.glob("epoch_*")) if root.is_dir() else []:
            number = path.name.removeprefix("epoch_")
            if number.isdigit() and int(number) > epoch and (abandoned_branch or int(number) > epoch + 1):
                past.append(path)
        return past

    def archive(self, files: list[Path], why: str) -> None:
        """Move ``files`` (and their sidecars) to a new ``archive/<time>/``; nothing is deleted."""
        if not files:
            return
        archive = self.new_archive_folder()
        for path in files:
            sidecar = sidecar_path(path)
            if sidecar.exists():
                shutil.move(str(sidecar), archive / sidecar.name)
            target = archive / path.relative_to(self.exp_dir)  # attention/epoch_N keeps its parent
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
        names = ", ".join(p.name for p in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        self.echo(f"{why}; moved {names} to {archive} (nothing deleted)")

    def new_archive_folder(self) -> Path:
        """``archive/<time>/``, never one that exists: two archivings in one second must not
        move a file onto a same-named one archived before."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (self.exp_dir / ARCHIVE_DIRNAME).mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            folder = self.exp_dir / ARCHIVE_DIRNAME / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise CheckpointError(f"{self.exp_dir / ARCHIVE_DIRNAME}: no free folder name for {stamp}")
