"""One writer per experiment folder.

The lock is ``flock`` on ``<experiment>/.lock``: the kernel releases it when the holder dies,
even by SIGKILL, so a stale lock never blocks. The file's content (pid, start time, command)
is only for messages and for the dashboard's "running" status; it is never trusted alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from training.proc import current_identity, is_alive

LOCK_NAME = ".lock"
# The locks this process holds, by file descriptor. A forked child (a data-loader worker) inherits
# the descriptors, and with them a share of the flock: after a SIGKILL of the trainer its workers
# would keep the folder locked until they notice and exit (seconds later), refusing the resume.
_HELD: dict[int, "ExperimentLock"] = {}


def _drop_inherited_locks() -> None:
    """In a forked child: close the copies without unlocking (``LOCK_UN`` would unlock the
    parent's lock too, since both descriptors share one open file)."""
    for fd, lock in list(_HELD.items()):
        lock._fd = None
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class ExperimentBusy(RuntimeError):
    """Another live process is writing this experiment folder."""


def read_lock_holder(exp_dir: Path | str) -> dict[str, Any] | None:
    """The live process that holds the folder's lock, or None. Never takes the lock itself."""
    try:
        holder = json.loads((Path(exp_dir) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(holder, dict) or not is_alive(holder.get("pid"), holder.get("start_time")):
        return None
    return holder


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started_at", 0)))
    return f"pid {holder.get('pid')} (started {started}: {' '.join(holder.get('argv', []))})"


class ExperimentLock:
    """``with ExperimentLock(folder):`` — refuses at once (ExperimentBusy) if a live run holds it."""

    def __init__(self, exp_dir: Path | str):
        self.path = Path(exp_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_lock_holder(self.path.parent)
            raise ExperimentBusy(
                f"{self.path.parent} is in use by {describe_holder(holder)}; "
                "wait for it to finish or stop it first"
            ) from None
        pid, start_time = current_identity()
        record = {"pid": pid, "start_time": start_time, "argv": sys.argv, "started_at": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        _HELD[fd] = self

    def release(self) -> None:
        if self._fd is None:
            return
        # Empty the record before unlocking so nobody reads a finished run as the holder.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        _HELD.pop(self._fd, None)
        self._fd = None

    def __enter__(self) -> "ExperimentLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
