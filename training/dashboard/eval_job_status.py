"""Progress of an evaluation job (kind ``eval``) for the Jobs page: trials scored / trials, read
from the scorer's own progress bar in the job's log (``Scoring: ... k/n``), so it needs nothing the
evaluator does not already print; a job that succeeded is complete."""

from __future__ import annotations

from pathlib import Path

from training.dashboard.job_status import JobProgress
from training.jobs.evaluate import scoring_progress
from training.jobs.registry import Job

UNIT = "Trials scored"
_TAIL_BYTES = 4096


def _log_tail(job: Job) -> str:
    try:
        with open(job.log_path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _TAIL_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def eval_job_progress(job: Job) -> JobProgress:
    found = scoring_progress(_log_tail(job))
    done, total = found if found else (0, None)
    if job.state == "succeeded" and total:
        done = total
    elapsed = job.duration_s if job.started_at is not None else None
    eta = None
    if job.is_active and total and done and elapsed:
        eta = elapsed / done * (total - done)
    return JobProgress(done, total, None, elapsed, eta, unit=UNIT)
