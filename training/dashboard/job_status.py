"""What the Jobs page shows about each job, without Streamlit: epoch progress k/N, elapsed time,
ETA and the latest validation EER, derived from the files the trainer writes.

k comes from the experiment's history (``catalog.experiment_history``: its ``training_log.csv``,
prefixed by the parent's epochs when the run resumed from another folder), N is the job's
``num_epochs``. Timing comes from the log's own columns (``timestamp``, ``epoch_seconds``), so a
restarted dashboard shows the same figures as the one that launched the job.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from training.dashboard import catalog
from training.jobs.registry import Job

# The modes that start over at epoch 1: until the trainer archives the folder's earlier run
# (a few seconds after launch), the log on disk is that earlier run's and must not count.
STARTS_OVER = frozenset({"fresh", "pretrained"})


@dataclass(frozen=True)
class JobProgress:
    done: int                       # completed epochs of the experiment
    total: int | None               # the job's num_epochs
    latest_val_eer: float | None    # percent
    elapsed_s: float | None
    eta_s: float | None             # None until an epoch of this job has finished

    @property
    def fraction(self) -> float:
        """0..1 for a progress bar."""
        if not self.total:
            return 0.0
        return min(max(self.done / self.total, 0.0), 1.0)

    @property
    def text(self) -> str:
        return f"{self.done}/{self.total}" if self.total else str(self.done)


def _log_is_this_runs(job: Job) -> bool:
    """False while a fresh/pretrained job's folder still holds the earlier run's log."""
    if job.mode not in STARTS_OVER:
        return True
    try:
        return (Path(job.exp_dir) / catalog.LOG_NAME).stat().st_mtime >= job.created_at
    except OSError:
        return False


def job_progress(models_root: Path | str, job: Job, now: float | None = None) -> JobProgress:
    """Progress of ``job`` as its experiment's files show it now. A finished job's is read once
    per state and kept (``_FINISHED``): only active jobs read their history on every refresh."""
    if job.is_active:
        return _read_progress(models_root, job)
    key = (str(models_root), job.id, job.state, job.ended_at)
    progress = _FINISHED.get(key)
    if progress is None:
        progress = _read_progress(models_root, job)
        with _FINISHED_LOCK:  # Streamlit runs sessions in threads
            _FINISHED[key] = progress
            while len(_FINISHED) > FINISHED_MEMO:
                del _FINISHED[next(iter(_FINISHED))]
    return progress


FINISHED_MEMO = 4_096  # finished jobs' progress kept (a few pages of the table, many times over)
_FINISHED: dict[tuple, JobProgress] = {}
_FINISHED_LOCK = threading.Lock()
FINISHED_PER_PAGE = 25


def visible_jobs(listed: list[Job], page: int, per_page: int = FINISHED_PER_PAGE) -> tuple[list[Job], int]:
    """(the jobs the table shows, number of pages): every active job, and one page of the
    finished ones (newest first, as listed); ``page`` is clamped to the pages there are."""
    active = [job for job in listed if job.is_active]
    finished = [job for job in listed if not job.is_active]
    pages = max(1, -(-len(finished) // per_page))
    page = min(max(page, 0), pages - 1)
    return active + finished[page * per_page:(page + 1) * per_page], pages


def _read_progress(models_root: Path | str, job: Job) -> JobProgress:
    done, latest, eta = 0, None, None
    history = pd.DataFrame(columns=catalog.HISTORY_COLUMNS)
    if _log_is_this_runs(job):
        try:
            history = catalog.experiment_history(models_root, job.experiment)
        except catalog.CatalogError:
            pass
    if len(history):
        done = int(history["epoch"].max())
        eers = history["val_eer"].dropna()
        latest = float(eers.iloc[-1]) if len(eers) else None
    elapsed = job.duration_s if job.started_at is not None else None
    if job.is_active and job.num_epochs and job.started_at is not None:
        # Epochs this job trained (rows written since it started), not its parent's or a past run's.
        seconds = history.loc[history["timestamp"] >= job.started_at, "epoch_seconds"].dropna()
        if len(seconds):
            eta = max(job.num_epochs - done, 0) * float(seconds.mean())
    return JobProgress(done, job.num_epochs, latest, elapsed, eta)


def format_duration(seconds: float | None) -> str:
    """12s, 3m 05s, 2h 04m; '—' when unknown."""
    if seconds is None or math.isnan(seconds):
        return "—"
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def jobs_frame(models_root: Path | str, jobs: list[Job]) -> pd.DataFrame:
    """One row per job for the page's table (newest first, as given)."""
    rows = []
    for job in jobs:
        p = job_progress(models_root, job)
        rows.append({
            "id": job.id, "state": job.state, "experiment": job.experiment, "mode": job.mode,
            "epochs": p.text, "progress": p.fraction,
            "val EER %": p.latest_val_eer,
            "elapsed": format_duration(p.elapsed_s),
            "ETA": format_duration(p.eta_s) if job.is_active else "",
            "exit code": job.exit_code,
            "created": pd.Timestamp(datetime.fromtimestamp(job.created_at)),  # local time, like the clock
            "error": job.error or "",
        })
    columns = ["id", "state", "experiment", "mode", "epochs", "progress", "val EER %", "elapsed", "ETA",
               "exit code", "created", "error"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["exit code"] = frame["exit code"].astype("Int64")
    return frame


def job_label(job: Job) -> str:
    """How a selectbox names a job (no state: the selectbox is not refreshed while a job runs)."""
    return f"#{job.id} · {job.mode} · {job.experiment}"
