"""What the Jobs page shows about each job, without Streamlit: epoch progress k/N, elapsed time,
ETA and the latest validation EER, derived from the files the trainer writes.

k comes from the experiment's history (``catalog.experiment_history``: its ``training_log.csv``,
prefixed by the parent's epochs when the run resumed from another folder), N is the job's
``num_epochs``. Timing comes from the log's own columns (``timestamp``, ``epoch_seconds``), so a
restarted dashboard shows the same figures as the one that launched the job.
"""

from __future__ import annotations

import math
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


# Slack for the last row of a job: written just before its process exits and the supervisor
# records the end.
END_SLACK_S = 5.0


def _as_of_end(history: pd.DataFrame, job: Job) -> pd.DataFrame:
    """A finished job's rows as they were when it ended: epochs another job trained later in the
    same folder are not this job's (a job stopped at epoch 2 showed 6/6 once another finished
    the folder). Rows without a timestamp (a parent's inherited epochs) are kept."""
    if job.ended_at is None or history.empty or "timestamp" not in history:
        return history
    stamps = pd.to_numeric(history["timestamp"], errors="coerce")
    return history[stamps.isna() | (stamps <= job.ended_at + END_SLACK_S)]


def job_progress(models_root: Path | str, job: Job, now: float | None = None) -> JobProgress:
    """Progress of ``job`` as its experiment's files show it now."""
    done, latest, eta = 0, None, None
    history = pd.DataFrame(columns=catalog.HISTORY_COLUMNS)
    if _log_is_this_runs(job):
        try:
            history = catalog.experiment_history(models_root, job.experiment)
        except catalog.CatalogError:
            pass
    history = _as_of_end(history, job)
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
