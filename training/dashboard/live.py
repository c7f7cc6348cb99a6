"""Whether the read pages should follow running work, and how often.

The Experiments, Curves and Checkpoints pages re-run their data part in a fragment every
``REFRESH_S`` seconds while something trains under the models root, and not at all otherwise
(an idle dashboard costs nothing). "Something trains": an active job in the registry, or a live
process holding an experiment folder's lock (a run started from a terminal). Each refresh re-reads
only what changed: the catalog's caches are keyed by file size and mtime, and step logs are read
from where the last read stopped (:mod:`training.dashboard.steps`).
"""

from __future__ import annotations

from pathlib import Path

from training.dashboard.scan import list_experiment_names
from training.jobs import registry
from training.lock import read_lock_holder

REFRESH_S = 2.0


def running_experiments(models_root: Path | str) -> set[str]:
    """Experiment folders being trained now: active jobs' and those a live process has locked."""
    root = Path(models_root)
    running: set[str] = set()
    if registry.db_path(root).is_file():  # reading must not create a registry
        running |= {job.experiment for job in registry.list_jobs(root) if job.is_active}
    running |= {name for name in list_experiment_names(root) if read_lock_holder(root / name) is not None}
    return running


def refresh_interval(models_root: Path | str) -> float | None:
    """Seconds between a page's refreshes while something trains; None when nothing does."""
    return REFRESH_S if running_experiments(models_root) else None
