"""What the Jobs page shows about each job, without Streamlit: epoch progress k/N, the step within
the epoch, the training rate, elapsed time, ETA and the latest validation EER, derived from the
files the trainer writes.

k comes from the experiment's history (``catalog.experiment_history``: its ``training_log.csv``,
prefixed by the parent's epochs when the run resumed from another folder), N is the job's
``num_epochs``; the step, its epoch's length and the rate come from the step log
(``training_steps.csv``, :mod:`training.dashboard.steps`). Timing comes from the logs' own columns
(``timestamp``, ``epoch_seconds``), so a restarted dashboard shows the same figures as the one
that launched the job.

A job's figures are its folder's files as of the job's own time window (:func:`job_window`):
rows written after it ended belong to a later job of the same folder (a stopped job must not
show 6/6 once another job finished the run), and a job that starts over at epoch 1 counts no row
written before it was created (until the trainer archives them, the folder's logs are an
earlier run's).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from training.dashboard import catalog
from training.dashboard.scan import experiment_dir
from training.dashboard.steps import step_rows
from training.dashboard.views import checkpoint_launch_params, newest_resumable
from training.jobs.registry import Job
from training.step_log import StepRow, rows_between

# The modes that start over at epoch 1: until the trainer archives the folder's earlier run
# (a few seconds after launch), the log on disk is that earlier run's and must not count.
STARTS_OVER = frozenset({"fresh", "pretrained"})


@dataclass(frozen=True)
class JobProgress:
    done: int                       # completed epochs of the experiment
    total: int | None               # the job's num_epochs
    latest_val_eer: float | None    # percent
    elapsed_s: float | None
    eta_s: float | None             # None until the job has a rate (two step rows or an epoch)
    unit: str = "Epoch"             # what done/total count ("Trials scored" for an eval job)
    step: int | None = None         # steps done of the epoch in progress (the step log's latest row)
    steps_in_epoch: int | None = None
    samples_per_s: float | None = None

    @property
    def fraction(self) -> float:
        """0..1 for a progress bar, counting the steps done of the epoch in progress."""
        if not self.total:
            return 0.0
        partial = self.step / self.steps_in_epoch if self.step and self.steps_in_epoch else 0.0
        return min(max((self.done + partial) / self.total, 0.0), 1.0)

    @property
    def text(self) -> str:
        return f"{self.done}/{self.total}" if self.total else str(self.done)

    @property
    def step_text(self) -> str:
        """'step 40/125' of the epoch in progress; '' when the step log says nothing of it."""
        return f"step {self.step}/{self.steps_in_epoch}" if self.step and self.steps_in_epoch else ""

    @property
    def rate_text(self) -> str:
        return f"{self.samples_per_s:.1f} samples/s" if self.samples_per_s else ""


def job_window(job: Job) -> tuple[float | None, float | None]:
    """(first, last) Unix time of the log rows that count for ``job`` (None: open on that side):
    a job that starts over counts rows from its creation; a job that ended, rows to its end."""
    start = job.created_at if job.mode in STARTS_OVER else None
    end = job.ended_at if not job.is_active else None
    return start, end


def _history_in_window(history: pd.DataFrame, start: float | None, end: float | None) -> pd.DataFrame:
    stamps = history["timestamp"]
    keep = pd.Series(True, index=history.index)
    if start is not None:
        keep &= stamps >= start  # rows with no time (old formats) are an earlier run's
    if end is not None:
        keep &= ~(stamps > end)  # rows with no time predate the job
    return history[keep]


def _in_progress(rows: list[StepRow], done: int) -> StepRow | None:
    """The latest step row of the epoch after the ``done`` ones, if the log has one."""
    latest = rows[-1] if rows else None
    return latest if latest is not None and latest.epoch == done + 1 else None


def _steps_per_s(rows: list[StepRow]) -> float | None:
    """The job's own training rate: steps between its first and latest step rows over the time
    between them (validation included once an epoch boundary lies between them)."""
    if len(rows) < 2 or rows[-1].timestamp <= rows[0].timestamp or rows[-1].global_step <= rows[0].global_step:
        return None
    return (rows[-1].global_step - rows[0].global_step) / (rows[-1].timestamp - rows[0].timestamp)


def _eta(job: Job, done: int, current: StepRow | None, epoch_seconds: pd.Series,
         steps_per_s: float | None, steps_in_epoch: int | None) -> float | None:
    """Seconds left: whole epochs this job timed (validation included) when it has any, else
    its step rate over the steps left (from the first minutes of epoch 1)."""
    if not job.num_epochs:
        return None
    epochs_left = max(job.num_epochs - done, 0)
    fraction_done = current.step / current.steps_in_epoch if current is not None and current.steps_in_epoch else 0.0
    if len(epoch_seconds):
        return max(epochs_left - fraction_done, 0.0) * float(epoch_seconds.mean())
    if steps_per_s and steps_in_epoch:
        steps_left = epochs_left * steps_in_epoch - (current.step if current is not None else 0)
        return max(steps_left, 0) / steps_per_s
    return None


def job_progress(models_root: Path | str, job: Job) -> JobProgress:
    """Progress of ``job`` as its experiment's files show it now. A finished job's is read once
    per state and kept (``_FINISHED``): only active jobs read their history on every refresh; a
    job's progress counts only what happened within its own window (``job_window``)."""
    if job.kind == "eval":  # no epochs: the scorer's progress bar (training/dashboard/eval_job_status.py)
        from training.dashboard.eval_job_status import eval_job_progress
        return eval_job_progress(job)
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
    start, end = job_window(job)
    history = pd.DataFrame(columns=catalog.HISTORY_COLUMNS)
    steps: list[StepRow] = []
    try:
        history = _history_in_window(catalog.experiment_history(models_root, job.experiment), start, end)
        steps = list(rows_between(step_rows(experiment_dir(models_root, job.experiment)), start, end))
    except catalog.CatalogError:
        pass
    if len(history):
        done = int(history["epoch"].max())
        eers = history["val_eer"].dropna()
        latest = float(eers.iloc[-1]) if len(eers) else None
    current = _in_progress(steps, done)
    elapsed = job.duration_s if job.started_at is not None else None
    rate = current.samples_per_s if current is not None and current.samples_per_s == current.samples_per_s else None
    if job.is_active and job.started_at is not None:
        # Epochs and steps this job trained (written since it started), not its parent's or a past run's.
        seconds = history.loc[history["timestamp"] >= job.started_at, "epoch_seconds"].dropna()
        own_steps = [r for r in steps if r.timestamp >= job.started_at]
        steps_in_epoch = own_steps[-1].steps_in_epoch if own_steps else None
        eta = _eta(job, done, current, seconds, _steps_per_s(own_steps), steps_in_epoch)
    return JobProgress(done, job.num_epochs, latest, elapsed, eta,
                       step=current.step if current is not None else None,
                       steps_in_epoch=current.steps_in_epoch if current is not None else None, samples_per_s=rate)


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
            "epochs": p.text, "step": p.step_text, "rate": p.rate_text, "progress": p.fraction,
            "val EER %": p.latest_val_eer,
            "elapsed": format_duration(p.elapsed_s),
            "ETA": format_duration(p.eta_s) if job.is_active else "",
            "exit code": job.exit_code,
            "created": pd.Timestamp(datetime.fromtimestamp(job.created_at)),  # local time, like the clock
            "error": job.error or "",
        })
    columns = ["id", "state", "experiment", "mode", "epochs", "step", "rate", "progress", "val EER %", "elapsed", "ETA",
               "exit code", "created", "error"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["exit code"] = frame["exit code"].astype("Int64")
    return frame


def progress_line(progress: JobProgress) -> str:
    """'Epoch 1/20 · step 40/125 · 35.2 samples/s' or 'Trials scored 300/611829' (the parts the logs know)."""
    parts = (f"{progress.unit} {progress.text}", progress.step_text, progress.rate_text)
    return " · ".join(part for part in parts if part)


RESUMABLE_STATES = frozenset({"stopped", "failed", "lost"})


def resume_params(checkpoints: pd.DataFrame, job: Job) -> dict[str, str] | None:
    """The Launch page's query parameters to resume an ended job's run from the checkpoint
    auto-resume would pick (the Checkpoints page's Resume does the same for a chosen file);
    None for a job that finished or is active, or whose folder holds nothing resumable."""
    if job.state not in RESUMABLE_STATES:
        return None
    newest = newest_resumable(checkpoints, job.experiment)
    return None if newest is None else checkpoint_launch_params("resume", job.experiment, str(newest["file"]))


def job_label(job: Job) -> str:
    """How a selectbox names a job (no state: the selectbox is not refreshed while a job runs)."""
    return f"#{job.id} · {job.mode} · {job.experiment}"
