"""The files a checkpoint is made of on disk, and how they are written and removed, without torch.

A checkpoint is ``X.pth`` plus its sidecar ``X.pth.meta.json`` (:func:`sidecar_path`). Both are
written the one crash-safe way (:func:`atomic_write`, :func:`atomic_place`): the bytes go to a
temporary dot-file in the same folder (same filesystem for ``os.replace``; listings skip
dot-files), are fsynced, then renamed over the target and the folder is fsynced. A reader sees
the old file or the new one, never a part of either. A process killed inside a save leaves its
temporary file behind; :func:`remove_stale_temp_files` recognises those by the one temporary
name every writer here uses: ``.<target name>.tmp.<pid>.<8 hex digits>``.

Deleting (:func:`remove_checkpoint`) takes the sidecar first: a ``.pth`` without its sidecar is
still a valid checkpoint, a sidecar without its ``.pth`` would vouch for nothing.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from training.naming import CHECKPOINT_SUFFIX

SIDECAR_SUFFIX = ".meta.json"

# The temporary name of a file being written: see the module docstring. training.config's
# longest_file_name assembles the longest one a run writes (a test keeps the two in step).
_TEMP_NAME = ".{name}.tmp.{pid}.{token}"
_STALE_TEMP = re.compile(
    rf"^\..+{re.escape(CHECKPOINT_SUFFIX)}(?:{re.escape(SIDECAR_SUFFIX)})?\.tmp\.\d+\.[0-9a-f]{{8}}$")


def sidecar_path(pth: Path | str) -> Path:
    """``X.pth.meta.json`` for ``X.pth``."""
    p = Path(pth)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (pid and a random token: two writers never share
    one, and a crashed writer's leftover is recognisable)."""
    return path.with_name(_TEMP_NAME.format(name=path.name, pid=os.getpid(), token=secrets.token_hex(4)))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable. Filesystems that cannot fsync a folder (EINVAL) are
    skipped: the rename itself is still atomic there."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def atomic_place(path: Path, make: Callable[[Path], None]) -> None:
    """Put a new file at ``path`` atomically: ``make(tmp)`` creates it, durably, under a temporary
    name; it is then renamed over ``path`` and the folder fsynced. On any failure the temporary
    file is removed and the error raised; ``path`` is as it was."""
    tmp = temp_path(path)
    try:
        make(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` by what ``write(f)`` writes into a new binary file (see atomic_place)."""

    def make(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    atomic_place(path, make)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and its sidecar (sidecar first: a .pth without one is still valid)."""
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that killed saves of checkpoints or sidecars left in ``folder``
    and return them.

    A process killed inside a save cannot clean up after itself, and each leftover is as large
    as a checkpoint. Call this only while holding the folder's lock: then no save is in flight.
    """
    removed = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if _STALE_TEMP.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
