"""Checks of a training run's settings that go beyond one option's type and range
(:func:`training.config.validate_options`), shared by the CLI, the jobs API and the Launch form
so that each refuses or warns about the same values in the same words, before anything is created:

- :func:`check_data_source`: the files the data set needs are named and exist (the data set
  reader would say the same, but only once the run has started, its folder and job row made);
- :func:`unusual_values`: legal values that are almost certainly a typo (``lr=1e5``); the run may
  go ahead, the user is told.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from training.config import DEFAULTS, UsageError

# (option, above this the value is called unusual, what is usual); the trainer accepts it anyway.
UNUSUAL_ABOVE: tuple[tuple[str, float, str], ...] = (
    ("lr", 1.0, "Adam learning rates are usually 1e-6 to 1e-2"),
    ("weight_decay", 1.0, "usually 0 to 1e-2"),
    ("contrastive_weight", 100.0, "usually 0.01 to 1"),
    ("supcon_weight", 100.0, "usually 0.01 to 1"),
    ("batch_size", 4096, "the whole batch is held in memory at once"),
)


def _path_problem(name: str, value: Any, needed_for: str, folder: bool) -> str | None:
    if value is None or not str(value).strip():
        return f"{needed_for} needs --{name}"
    path = os.fspath(value)
    if not os.path.exists(path):
        return f"--{name} {path}: no such {'folder' if folder else 'file or folder'}"
    if folder and not os.path.isdir(path):
        return f"--{name} {path}: not a folder"
    return None


def check_data_source(args: Mapping[str, Any]) -> None:
    """UsageError (one line) when the data set's files are not named or do not exist:
    ``--dataset asvspoof`` needs ``--database_path`` (an existing folder) and ``--protocols_path``
    (an existing folder, or In-the-Wild's meta.csv; In-the-Wild may keep it beside the audio)."""
    values = {**DEFAULTS, **{k: v for k, v in args.items() if v is not None}}
    if values.get("dataset") != "asvspoof":
        return
    problem = _path_problem("database_path", values.get("database_path"), "--dataset asvspoof", folder=True)
    if problem is None and (values.get("track") != "In-the-Wild" or values.get("protocols_path")):
        problem = _path_problem("protocols_path", values.get("protocols_path"), "--dataset asvspoof", folder=False)
    if problem:
        raise UsageError(problem)


def unusual_values(args: Mapping[str, Any]) -> list[str]:
    """One warning per legal but unusual value (e.g. ``lr=100000.0``), in option order."""
    out = []
    for name, limit, usual in UNUSUAL_ABOVE:
        value = args.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
            out.append(f"--{name} {value!r} is unusually large ({usual}); check it is not a typo")
    return out
