"""Step logs (``training_steps.csv``, :mod:`training.step_log`) as the dashboard reads them.

A page following a running job re-reads the log every few seconds while the trainer appends to
it, so each file is parsed incrementally: the cache keeps, per path, the file's identity (device,
inode), the bytes already parsed and the rows they held; a file that grew is read from where the
last read stopped, a file replaced (a resume's clean-up, a fresh start's archive) or shrunk is
read again from the start, and an unchanged one (same size and mtime) costs one ``os.stat``. A
last line without its newline (a row being written, or torn by a kill) is left for the next
read. Frames are built once per file version.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training.naming import STEPS_LOG_NAME
from training.step_log import STEP_COLUMNS, StepRow, parse_rows

CACHE_MAX_FILES = 512
STEP_FRAME_COLUMNS = (*STEP_COLUMNS, "epoch_x")  # epoch_x: the epoch as a fraction (1.5 = half of epoch 2)


@dataclass
class _Parsed:
    identity: tuple[int, int]
    signature: tuple[int, int]  # (size, mtime_ns) when last read
    consumed: int               # bytes of whole lines parsed
    rows: list[StepRow] = field(default_factory=list)
    frame: pd.DataFrame | None = None


_CACHE: OrderedDict[str, _Parsed] = OrderedDict()
_COUNTS = {"bytes_read": 0, "full_reads": 0}


def cache_info() -> dict[str, int]:
    """How many bytes the step logs cost so far, and how many were read from the start."""
    return {**_COUNTS, "step_logs": len(_CACHE)}


def clear_cache() -> None:
    _CACHE.clear()


def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    _COUNTS["bytes_read"] += len(data)
    return data


def step_rows(exp_dir: Path | str) -> list[StepRow]:
    """The folder's step-log rows (shared: callers must not modify the list); [] without one."""
    entry = _entry(Path(exp_dir) / STEPS_LOG_NAME)
    return entry.rows if entry is not None else []


def _entry(path: Path) -> _Parsed | None:
    key = str(path)
    try:
        st = os.stat(path)
    except OSError:
        _CACHE.pop(key, None)
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    identity, signature = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns)
    entry = _CACHE.get(key)
    try:
        if entry is not None and entry.identity == identity and entry.signature == signature:
            pass
        elif entry is not None and entry.identity == identity and st.st_size >= entry.consumed:
            rows, consumed = parse_rows(_read_from(path, entry.consumed))  # appended since
            if rows or consumed:
                entry.rows = entry.rows + rows  # a new list: frames and callers keep the old one
                entry.frame = None
            entry.consumed += consumed
            entry.signature = signature
        else:
            _COUNTS["full_reads"] += 1
            rows, consumed = parse_rows(_read_from(path, 0))
            entry = _Parsed(identity, signature, consumed, rows)
    except OSError:
        return None
    _CACHE[key] = entry
    _CACHE.move_to_end(key)
    while len(_CACHE) > CACHE_MAX_FILES:
        _CACHE.popitem(last=False)
    return entry


_INT_COLUMNS = ("epoch", "step", "steps_in_epoch", "global_step")
_FLOAT_COLUMNS = ("loss", "lr", "samples_per_s", "elapsed_s", "timestamp")


def _frame(rows: list[StepRow]) -> pd.DataFrame:
    columns = list(zip(*((r.epoch, r.step, r.steps_in_epoch, r.global_step, r.loss, r.lr, r.samples_per_s,
                          r.elapsed_s, r.timestamp, r.experiment) for r in rows))) or [()] * len(STEP_COLUMNS)
    data = {name: np.asarray(values, dtype="int64") for name, values in zip(_INT_COLUMNS, columns[:4])}
    data.update({name: np.asarray(values, dtype="float64") for name, values in zip(_FLOAT_COLUMNS, columns[4:9])})
    data["experiment"] = np.asarray(columns[9], dtype=object)
    frame = pd.DataFrame(data, columns=list(STEP_COLUMNS))
    frame["epoch_x"] = frame["epoch"] - 1 + frame["step"] / frame["steps_in_epoch"].clip(lower=1)
    return frame


_EMPTY = _frame([])


def step_history(models_root: Path | str, experiment: str) -> pd.DataFrame:
    """One experiment's step log as a frame (``STEP_FRAME_COLUMNS``), built once per file version;
    empty when the folder has none."""
    from training.dashboard.scan import experiment_dir

    entry = _entry(experiment_dir(models_root, experiment) / STEPS_LOG_NAME)
    if entry is None:
        return _EMPTY  # shared: callers must not modify frames
    if entry.frame is None:
        entry.frame = _frame(entry.rows)
    return entry.frame
