"""Which of a folder's full checkpoints is the newest: the one ``--auto_resume`` continues.

One order for every place that picks "the newest full checkpoint of a folder": auto-resume
(``training.checkpoint.store.find_latest_good_checkpoint``, which walks it newest first and takes
the first that loads), the catalog (an experiment's curve, lineage and hyperparameters), the
Launch form and the experiments view. Torch-free: the dashboard uses it.

The order: the highest (epoch, step in epoch) wins; at equal ones the epoch file, then the
interrupt file, then the best copy; then the newest file (modification time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from training.naming import parse_checkpoint_name

T = TypeVar("T")

# At an equal (epoch, step): the epoch file is the run's own record, the interrupt file a
# mid-epoch save, the best file a copy of an epoch file.
ROLE_PREFERENCE = {"epoch": 2, "interrupt": 1, "best": 0, "other": 0}


def _number(value: Any, missing: float) -> Any:
    """``value``, or ``missing`` for None, NaN and pandas' NA (a scan's empty cells)."""
    if value is None:
        return missing
    try:
        return missing if value != value else value  # NaN is the one value unequal to itself
    except TypeError:  # pandas.NA: its comparisons are NA, which has no truth value
        return missing


def resume_rank(epoch: int | None, step_in_epoch: int | None, file_name: str, mtime: Any) -> tuple[Any, ...]:
    """The sort key of one checkpoint: larger is newer. A file without an epoch ranks below
    every file with one; ``mtime`` in seconds (None: unknown, older than any)."""
    role = parse_checkpoint_name(file_name).role
    return (_number(epoch, -1), _number(step_in_epoch, 0), ROLE_PREFERENCE.get(role, 0),
            _number(mtime, -math.inf))


def newest_first(items: Iterable[T], rank: Callable[[T], tuple[Any, ...]]) -> list[T]:
    """``items`` newest first by ``rank`` (usually built with :func:`resume_rank`)."""
    return sorted(items, key=rank, reverse=True)


def newest(items: Iterable[T], rank: Callable[[T], tuple[Any, ...]]) -> T | None:
    """The newest of ``items`` by ``rank``; None when there are none."""
    return max(items, key=rank, default=None)
