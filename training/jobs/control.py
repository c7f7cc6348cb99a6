"""Launching and stopping background runs.

``launch()`` checks the run (``training.runs``: the rules the CLI and the Launch form apply),
records a queued job in the registry and starts its detached supervisor
(``training.jobs.supervisor``), then returns at once; ``stop()`` flags the job and wakes the
supervisor, which signals the trainer, so it never blocks the page that clicked the button.

No shell anywhere: every command is an argv list.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from training.config import DEFAULTS
from training.jobs.registry import (ACTIVE_STATES, DEFAULT_GRACE_S, Job, JobConflict, Transaction, connect, db_path,
                                    fetch_job, job_from_row, jobs_dir, processes_gone, reconcile, update_job)
from training.jobs.supervisor import send_signal, signal_group, start_supervisor
from training.lock import describe_holder, read_lock_holder
from training.naming import experiment_dir, experiment_name
from training.proc import is_alive
from training.runs import (NEEDS_CHECKPOINT, check_run_args, keys_from_checkpoint, merge_checkpoint_args, program,
                          run_flags)


def _checkpoint_args(model_path: str) -> dict[str, Any]:
    """Hyperparameters stored in the checkpoint, or {} when it cannot be read here.

    An unreadable file is not an error at launch: the trainer reports it (exit 2) in the log.
    """
    from training.checkpoint.meta import read_checkpoint_info  # late: the supervisor never needs it

    try:
        stored = getattr(read_checkpoint_info(model_path), "args", None) or {}
        return dict(stored if isinstance(stored, Mapping) else vars(stored))  # old: a Namespace
    except Exception:  # corrupt / legacy / foreign file: let the trainer say what is wrong
        return {}


def _resolve_args(models_root: Path, mode: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Validated args with absolute ``models_root`` and ``model_path``."""
    check_run_args(mode, args, models_root)
    out = {k: v for k, v in args.items() if v is not None}
    given_root = out.pop("models_root", None)
    if given_root is not None and Path(given_root).resolve() != models_root:
        raise ValueError(f"args models_root {given_root!r} differs from the registry's {models_root}")
    out["models_root"] = str(models_root)
    if mode in NEEDS_CHECKPOINT:
        path = Path(os.path.realpath(Path(out["model_path"]).expanduser()))
        # realpath on both sides: a symlink inside the root that points outside is outside.
        if not path.is_relative_to(models_root):
            raise ValueError(f"checkpoint {out['model_path']} is outside the models root {models_root}")
        if not path.is_file():
            raise ValueError(f"checkpoint {path} does not exist")
        out["model_path"] = str(path)
    return out


def _experiment_args(mode: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The args the trainer will name its folder with, merged the way the CLI merges them
    (``training.runs.merge_checkpoint_args``): a resume takes every hyperparameter not given
    from the checkpoint's stored args, a pretrained start only the architecture keys."""
    if mode not in NEEDS_CHECKPOINT:
        return dict(args)
    return merge_checkpoint_args(_checkpoint_args(args["model_path"]), args, args, keys_from_checkpoint(mode))


def launch(models_root: Path | str, mode: str, args: Mapping[str, Any], *,
           _program_argv: Sequence[str] | None = None) -> Job:
    """Start a training run in the background and return its queued Job at once.

    ``args`` maps option names (training/config.py) to values; ``model_path`` is required by
    the resume and pretrained modes and must lie inside ``models_root``. Raises ValueError for
    bad input and JobConflict when the experiment folder is already being written.

    ``_program_argv`` replaces ``python -u -m training`` (tests use stand-in programs); the
    flags are still appended, so a stand-in sees exactly what the trainer would.
    """
    root = Path(os.path.realpath(Path(models_root).expanduser()))
    resolved = _resolve_args(root, mode, args)
    flags = run_flags(mode, resolved)
    argv = (list(_program_argv) if _program_argv is not None else program()) + flags
    exp_args = _experiment_args(mode, resolved)
    exp_dir = experiment_dir(exp_args)
    if exp_dir.resolve().parent != root:
        raise ValueError(f"experiment folder {exp_dir} is not directly inside {root}")
    root.mkdir(parents=True, exist_ok=True)
    db = db_path(root)
    with closing(connect(db)) as conn:
        with Transaction(conn):
            _check_conflicts(conn, exp_dir)
            now = time.time()
            cur = conn.execute(
                "INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at,"
                " num_epochs) VALUES (?, ?, ?, ?, '', 'queued', ?, ?)",
                (experiment_name(exp_args), str(exp_dir), mode, json.dumps(argv), now,
                 int(exp_args.get("num_epochs") or DEFAULTS["num_epochs"])),
            )
            job_id = int(cur.lastrowid)
            log_path = job_log_path(root, job_id)
            update_job(conn, job_id, log_path=str(log_path))
        return supervise(conn, db, job_id, log_path)


def job_log_path(root: Path, job_id: int) -> Path:
    return jobs_dir(root) / "logs" / f"{job_id}.log"


def supervise(conn: sqlite3.Connection, db: Path, job_id: int, log_path: Path) -> Job:
    """Start the supervisor of the job just recorded (train or eval) and record its process; a
    supervisor that cannot start leaves the job failed, with the reason, and raises."""
    try:
        pid, start = start_supervisor(db, job_id, log_path)
    except OSError as exc:
        with Transaction(conn):
            update_job(conn, job_id, state="failed", ended_at=time.time(),
                       error=f"could not start the supervisor: {exc}")
        raise RuntimeError(f"job {job_id}: could not start the supervisor: {exc}") from exc
    with Transaction(conn):
        update_job(conn, job_id, supervisor_pid=pid, supervisor_start_time=start)
    return fetch_job(conn, job_id)


def _check_conflicts(conn: sqlite3.Connection, exp_dir: Path) -> None:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE exp_dir = ? AND kind = 'train' AND state IN ('queued', 'running', 'stopping')",
        (str(exp_dir),),  # eval jobs (training.jobs.evaluate) only read the folder's checkpoints
    ).fetchall()
    jobs = [job_from_row(r) for r in rows]
    reconcile(conn, jobs)  # a dead job must not block its folder forever
    for job in jobs:
        if not processes_gone(job):
            who = f"pid {job.pid}" if job.pid else f"supervisor pid {job.supervisor_pid}"
            raise JobConflict(f"job {job.id} ({job.state}, {who}) is already training {exp_dir.name}")
    holder = read_lock_holder(exp_dir)
    if holder is not None:
        raise JobConflict(f"{exp_dir.name} is in use by {describe_holder(holder)}")



# --- stopping -------------------------------------------------------------------------------------

def stop(models_root: Path | str, job_id: int, grace_s: float = DEFAULT_GRACE_S) -> Job:
    """Ask a job to stop: the trainer gets SIGTERM (it finishes the step, saves, exits 143);
    after ``grace_s`` seconds its process group gets SIGKILL. Returns at once (state stopping).

    The supervisor sends the signals and records the outcome. Only when the supervisor is gone
    do we signal the trainer from here, escalating in a background thread.
    """
    with closing(connect(db_path(models_root))) as conn:
        with Transaction(conn):
            job = fetch_job(conn, job_id)
            reconcile(conn, [job])
            job = fetch_job(conn, job_id)
            if job.state not in ACTIVE_STATES:
                return job
            # Only the first request signals: the trainer takes a second SIGTERM as "abort
            # without saving".
            first_request = job.stop_requested_at is None
            if first_request:
                update_job(conn, job_id, state="stopping", stop_requested_at=time.time(),
                        stop_grace_s=float(grace_s))
            job = fetch_job(conn, job_id)
        # Outside the transaction: the supervisor reads the flag we just committed.
        if is_alive(job.supervisor_pid, job.supervisor_start_time):
            if job.pid is not None:
                # The supervisor records the trainer's pid only after installing its handlers,
                # so by now SIGUSR1 wakes it rather than kills it. Without a pid it will see the
                # flag when it records one.
                send_signal(job.supervisor_pid, signal.SIGUSR1)
        elif first_request and is_alive(job.pid, job.pid_start_time):
            _stop_orphan(job, grace_s)
        return job


def _stop_orphan(job: Job, grace_s: float) -> None:
    """A trainer whose supervisor died: TERM its group now, KILL it later from a thread.
    Nobody can read its exit code any more; reconciling will call it lost once it is gone."""
    pid, start = job.pid, job.pid_start_time
    assert pid is not None
    signal_group(pid, signal.SIGTERM)

    def escalate() -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not is_alive(pid, start):
                return
            time.sleep(0.2)
        if is_alive(pid, start):  # same process, not a recycled pid
            signal_group(pid, signal.SIGKILL)

    threading.Thread(target=escalate, name=f"stop-orphan-{job.id}", daemon=True).start()


