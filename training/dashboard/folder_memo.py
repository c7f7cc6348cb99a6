"""The Experiments table's per-folder memo: a folder that did not change since the last scan
costs a few ``os.stat`` calls on a rerun (its directories, its log, its lock file) instead of
a directory walk, a lock read, a history and a row rebuilt.

What a folder's row depends on, and how a change shows in its :class:`FolderKey`:

* its files and sub-folders (checkpoints, sidecars, archive/, attention/): every file is
  written by a rename (``training.checkpoint.fsutil.atomic_place``) or created, deleted or
  moved, and each of those changes the mtime of the directory holding it; the key holds the
  ``(inode, mtime_ns)`` of the folder and of every sub-folder the last walk found;
* ``training_log.csv``, appended in place: its ``(size, mtime_ns)``;
* ``.lock``, written and emptied in place: its ``(size, mtime_ns)``; a non-empty lock is
  re-checked on every rerun all the same (its holder can die without touching the file);
* the folders of the run's resume parents, whose rows prefix its curve: their keys.

Not seen: a file rewritten in place with its directory untouched (nothing here writes that way;
the checkpoint info cache of :mod:`training.dashboard.scan` still catches it on the Checkpoints
page). Timestamps are coarse (a few ms on ext4), so a change right after a scan may keep the
mtime that scan saw: an entry whose newest time is within ``RACY_WINDOW_NS`` of the scan's
start is not kept (as git's "racy clean" rule); folders being written are rebuilt every rerun.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RACY_WINDOW_NS = 2_000_000_000  # above any filesystem's timestamp granularity (FAT: 2 s)
_MEMO_ROOTS = 8

FileState = tuple[int, int] | None  # (size, mtime_ns), None when missing


@dataclass(frozen=True)
class FolderKey:
    dirs: tuple[tuple[int, int] | None, ...]  # (inode, mtime_ns) of the folder and each known sub-folder
    log: FileState
    lock: FileState

    def newest_ns(self) -> int:
        times = [d[1] for d in self.dirs if d] + [f[1] for f in (self.log, self.lock) if f]
        return max(times, default=0)

    @property
    def locked(self) -> bool:
        """The lock file holds a record: someone holds it, or held it and died."""
        return bool(self.lock and self.lock[0] > 0)


@dataclass
class FolderEntry:
    key: FolderKey
    paths: tuple[str, ...]                # watched_paths: what ``key`` was taken over
    deps: tuple[tuple[str, FolderKey | None], ...]  # resume parents and their keys
    row: dict[str, Any]
    status_inputs: tuple[Any, ...] = field(default=())  # what the status needs besides the lock


def _state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _dir_state(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def watched_paths(folder: str, subdirs: Iterable[str], log_name: str, lock_name: str) -> tuple[str, ...]:
    """What a folder's key stats: the folder, its sub-folders (paths), then its log and lock file."""
    return (folder, *subdirs, os.path.join(folder, log_name), os.path.join(folder, lock_name))


def key_of(paths: tuple[str, ...]) -> FolderKey:
    """The key over :func:`watched_paths`."""
    return FolderKey(tuple(map(_dir_state, paths[:-2])), _state(paths[-2]), _state(paths[-1]))


def folder_usage(folder: Path) -> tuple[int, float, tuple[str, ...]]:
    """(bytes of every file under the folder, newest file mtime, the paths of its sub-folders);
    symlinks are not followed and hard links (the best checkpoint is one) count once, as on the
    disk."""
    total, newest = 0, 0.0
    seen: set[tuple[int, int]] = set()
    subdirs: list[str] = []
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    subdirs.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            newest = max(newest, st.st_mtime)
    return total, newest, tuple(sorted(subdirs))


class FolderMemo:
    """name -> FolderEntry for the folders of one models root."""

    def __init__(self, root: Path, log_name: str, lock_name: str):
        self.root = str(root)
        self.log_name, self.lock_name = log_name, lock_name
        self._entries: dict[str, FolderEntry] = {}
        self.frame: tuple[tuple, Any] | None = None  # (what it was built from, the frame)
        self.lock = threading.Lock()  # Streamlit runs pages in threads: one scan of a root at a time

    def current_keys(self, names: Iterable[str]) -> dict[str, FolderKey]:
        """Each folder's key now, over the sub-folders its entry knows (none for a new folder)."""
        keys = {}
        entries = self._entries
        for name in names:
            entry = entries.get(name)
            keys[name] = key_of(entry.paths if entry is not None else
                                watched_paths(os.path.join(self.root, name), (), self.log_name, self.lock_name))
        return keys

    def valid(self, name: str, keys: Mapping[str, FolderKey]) -> FolderEntry | None:
        entry = self._entries.get(name)
        if entry is None or entry.key != keys[name]:
            return None
        if any(keys.get(dep) != key for dep, key in entry.deps):
            return None
        return entry

    def store(self, name: str, entry: FolderEntry, started_ns: int) -> None:
        """Keep the entry unless one of its times is too close to the scan's start to tell a
        later change apart (see the module docstring)."""
        newest = max([entry.key.newest_ns(), *(k.newest_ns() for _, k in entry.deps if k)])
        if newest < started_ns - RACY_WINDOW_NS:
            self._entries[name] = entry
        else:
            self._entries.pop(name, None)

    def keep_only(self, names: Iterable[str]) -> None:
        wanted = set(names)
        for name in [n for n in self._entries if n not in wanted]:
            del self._entries[name]

    def __len__(self) -> int:
        return len(self._entries)


_MEMOS: dict[str, FolderMemo] = {}
_LOCK = threading.Lock()  # guards _MEMOS


def memo_for(root: Path, log_name: str, lock_name: str) -> FolderMemo:
    """The memo of a models root as given (rows hold paths under it; the last few roots are
    kept). Scan with its ``lock`` held."""
    key = os.fspath(root)
    with _LOCK:
        memo = _MEMOS.pop(key, None) or FolderMemo(root, log_name, lock_name)
        _MEMOS[key] = memo
        while len(_MEMOS) > _MEMO_ROOTS:
            del _MEMOS[next(iter(_MEMOS))]
    return memo


def clear() -> None:
    with _LOCK:
        _MEMOS.clear()


def resume_chain(name: str, parent_of: Callable[[str], str | None]) -> list[str]:
    """The resume parents a folder's curve is prefixed by, nearest first (a cycle stops it)."""
    chain: list[str] = []
    seen = {name}
    parent = parent_of(name)
    while parent is not None and parent not in seen:
        chain.append(parent)
        seen.add(parent)
        parent = parent_of(parent)
    return chain


def now_ns() -> int:
    return time.time_ns()
