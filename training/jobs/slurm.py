"""Training runs as Slurm jobs, through submitit: submit, list, stop.

``submit()`` checks the run with the rules the CLI and the local jobs apply (``training.runs``,
``training.config``, ``training.launcher``), then submits a :class:`SlurmRun` with submitit. The job
runs ``python -u -m training <the run's flags>`` as a child process. Jobs are the scheduler's
(squeue / scontrol / sacct), not the local SQLite registry's: SQLite is not safe on the network
file systems clusters share. What the dashboard needs besides the scheduler lives in the shared
models root, one folder per job::

    <models_root>/.jobs/slurm/<job id>/   submitit's files (submission script, pickled callable,
                                          <id>_0_log.out: the run's output), and ours:
        job.json                          what was submitted (experiment, command, options)
        started                           written when the job first starts on a node
        outcome.json                      how the last attempt ended (exit code, succeeded |
                                          stopped | failed); the scheduler forgets finished jobs

**Timeouts and preemption.** The job is submitted with ``--signal=USR2@<lead>`` and ``--requeue``.
Slurm signals every process of the job step, so the trainer gets SIGUSR2 itself and saves its
interrupt checkpoint (as on SIGTERM); submitit's handler in the wrapper calls
:meth:`SlurmRun.checkpoint`, which waits for the trainer to finish saving, and requeues the job.
``scontrol requeue`` (preemption by an administrator, or requeue-on-preempt) sends SIGTERM instead:
the trainer saves, the scheduler requeues. Either way the next start of the same job continues with
``--auto_resume`` from the checkpoint this job wrote, so the run resumes exactly; a job restarted
before it saved anything runs its first command again.

**Stop** (the Jobs page): ``scancel --signal=TERM``: the trainer saves its interrupt checkpoint and
exits 143, and the job ends (a pending job is simply cancelled).

The dashboard never unpickles anything here: it reads job.json, outcome.json, the log and the
scheduler's answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.checkpoint.fsutil import atomic_write
from training.config import DEFAULTS, UsageError, validate_options
from training.jobs.registry import JobConflict
from training.launcher import SLURM, launch_values, parse_slurm_extra
from training.lock import describe_holder, read_lock_holder
from training.naming import CHECKPOINT_SUFFIX, JOBS_DIRNAME, NAME_KEYS, experiment_dir, experiment_name
from training.runs import (NEEDS_CHECKPOINT, check_run_args, keys_from_checkpoint, merge_checkpoint_args, program,
                           run_flags, typed_command_line)

SLURM_DIRNAME = "slurm"  # <models_root>/.jobs/slurm/<job id>/
RECORD_NAME = "job.json"
OUTCOME_NAME = "outcome.json"
STARTED_NAME = "started"
# The scheduler signals the job this long before its time limit (at most 5/6 of the limit, so a
# 1-minute job still trains first). Slurm checks limits every 30 s and may signal up to 60 s early.
SIGNAL_LEAD_S = 180
# Requeues after a timeout before submitit gives up: a 100-epoch fine-tune on a 4-hour limit
# needs many.
MAX_TIMEOUT_REQUEUES = 1000
# How long the wrapper waits for the trainer to finish its interrupt save before requeueing.
SAVE_WAIT_S = 600
STOP_CODES = frozenset({130, 140, 143, -signal.SIGTERM, -signal.SIGINT, -signal.SIGUSR2})
SCHEDULER_TIMEOUT_S = 30
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"})


class SlurmError(RuntimeError):
    """The scheduler refused or could not be asked (one line: what and where)."""


# --- where things are ---------------------------------------------------------------------------

def slurm_dir(models_root: Path | str) -> Path:
    return Path(models_root) / JOBS_DIRNAME / SLURM_DIRNAME


def job_dir(models_root: Path | str, job_id: str) -> Path:
    return slurm_dir(models_root) / str(job_id)


def log_path(folder: Path, job_id: str) -> Path:
    """submitit's output file of task 0 (stderr goes there too)."""
    return folder / f"{job_id}_0_log.out"


def scheduler_available() -> str | None:
    """None when sbatch, squeue and scancel are on PATH; else why not (one line)."""
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    return f"Slurm's {', '.join(missing)} not found on this machine's PATH" if missing else None


# --- the job's callable -------------------------------------------------------------------------

class SlurmRun:
    """What a Slurm job runs (pickled by submitit): the trainer as a child process.

    ``first_argv`` is the run as submitted; ``resume_argv`` the same experiment with
    ``--auto_resume``, used when the job starts again (requeued after a timeout, a preemption or
    ``scontrol requeue``) and a checkpoint written since its first start is in ``exp_dir``.
    With several nodes or GPUs the child is torchrun (one per node) over the same flags."""

    def __init__(self, first_argv: Sequence[str], resume_argv: Sequence[str], exp_dir: str, comment: str | None,
                 nodes: int = 1, gpus_per_node: int = 0):
        self.first_argv = list(first_argv)
        self.resume_argv = list(resume_argv)
        self.exp_dir = exp_dir
        self.comment = comment
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self._child: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_child"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._child = None

    # submitit calls this after unpickling, in the job.
    def __call__(self) -> str:
        import submitit

        folder = Path(submitit.JobEnvironment().paths.folder)  # <models_root>/.jobs/slurm/<job id>
        started = folder / STARTED_NAME
        restart = started.exists()
        if not restart:
            _write(started, f"{time.time()}\n".encode())
        argv = self.resume_argv if restart and self._saved_since(started) else self.first_argv
        argv = self._launcher_prefix() + argv[len(program()):] if self._distributed() else argv
        print(f"[slurm] {'restart' if restart else 'start'}: {typed_command_line(argv)}", flush=True)
        self._child = subprocess.Popen(argv)
        code = self._wait_for_child()
        outcome = "succeeded" if code == 0 else "stopped" if code in STOP_CODES else "failed"
        _write(folder / OUTCOME_NAME, json.dumps(
            {"exit_code": code, "outcome": outcome, "ended_at": time.time(),
             "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}).encode())
        if outcome == "failed":
            raise RuntimeError(f"training exited with code {code}")
        return outcome

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's timeout/preemption hook (the job got SIGUSR2, and so did the trainer): wait
        until the trainer has saved and exited, then let submitit requeue this same callable.
        Returns None (no requeue) when the run had already finished."""
        from submitit.helpers import DelayedSubmission

        code = self._wait_for_child(SAVE_WAIT_S)
        if code == 0:
            return None
        return DelayedSubmission(self, *args, **kwargs)

    def _wait_for_child(self, timeout: float | None = None) -> int | None:
        """Poll (not Popen.wait: submitit's signal handler calls this while __call__ waits, and a
        blocking wait holds a lock the handler would need)."""
        child = self._child
        if child is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while child.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return child.returncode

    def _saved_since(self, started: Path) -> bool:
        """Whether ``exp_dir`` holds a checkpoint of this run written after the job first started."""
        from training.naming import carries_run_tag

        try:
            since = started.stat().st_mtime
            return any(p.stat().st_mtime >= since for p in Path(self.exp_dir).glob(f"*{CHECKPOINT_SUFFIX}")
                       if carries_run_tag(p.name, self.comment))
        except OSError:
            return False

    def _distributed(self) -> bool:
        return self.nodes > 1 or self.gpus_per_node > 1

    def _launcher_prefix(self) -> list[str]:
        """torchrun on this node: one process per GPU, rendezvous at the job's first node."""
        first_node = subprocess.run(["scontrol", "show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", "")],
                                    capture_output=True, text=True).stdout.split()
        master = first_node[0] if first_node else "127.0.0.1"
        return [sys.executable, "-u", "-m", "torch.distributed.run", f"--nnodes={self.nodes}",
                f"--nproc_per_node={max(self.gpus_per_node, 1)}", f"--node_rank={os.environ.get('SLURM_NODEID', '0')}",
                f"--master_addr={master}", "--master_port=29517", "-m", "training"]


# --- the record of a submission -----------------------------------------------------------------

@dataclass
class SlurmJob:
    """A submitted run as the dashboard shows it: the record plus what the scheduler says now."""

    job_id: str
    experiment: str
    exp_dir: str
    mode: str
    argv: list[str]
    options: dict[str, Any]
    submitted_at: float
    folder: str = ""
    state: str = "UNKNOWN"        # the scheduler's (PENDING, RUNNING, ...), or ours once it forgot the job
    reason: str = ""
    restarts: int = 0
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return typed_command_line(self.argv)

    @property
    def log_path(self) -> Path:
        return log_path(Path(self.folder), self.job_id)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    def record(self) -> dict[str, Any]:
        keep = ("job_id", "experiment", "exp_dir", "mode", "argv", "options", "submitted_at")
        return {k: v for k, v in asdict(self).items() if k in keep}


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: the dashboard may read the file at any moment."""
    atomic_write(path, lambda f: f.write(data))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# --- submitting -----------------------------------------------------------------------------------

def _checkpoint_args(model_path: str) -> dict[str, Any]:
    from training.checkpoint.meta import read_checkpoint_info

    try:
        stored = getattr(read_checkpoint_info(model_path), "args", None) or {}
        return dict(stored if isinstance(stored, Mapping) else vars(stored))
    except Exception:  # noqa: BLE001 - the trainer reports an unreadable file in the job's log
        return {}


def _resume_args(mode: str, args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the experiment's effective args as the CLI merges them, the args of the same run with
    --auto_resume: what was typed, with the keys that name the folder pinned)."""
    effective = dict(args)
    if mode in NEEDS_CHECKPOINT:
        effective = merge_checkpoint_args(_checkpoint_args(args["model_path"]), args, args, keys_from_checkpoint(mode))
    resume = {k: v for k, v in args.items() if k != "model_path"}
    resume.update({k: effective.get(k, DEFAULTS[k]) for k in NAME_KEYS})
    return effective, resume


def _check_no_active_job(root: Path, exp_dir: Path) -> None:
    for job in list_jobs(root):
        if job.is_active and Path(job.exp_dir) == exp_dir:
            raise JobConflict(f"Slurm job {job.job_id} ({job.state}) is already training {exp_dir.name}")
    holder = read_lock_holder(exp_dir)
    if holder is not None:
        raise JobConflict(f"{exp_dir.name} is in use by {describe_holder(holder)}")


def submit(models_root: Path | str, mode: str, args: Mapping[str, Any], launch: Mapping[str, Any]) -> SlurmJob:
    """Submit a training run to Slurm and return its record at once.

    ``mode`` and ``args`` are what ``training.jobs.launch`` takes (only the options typed: a
    resume takes the others from its checkpoint); ``launch`` the launch options (slurm_partition,
    nodes, gpus_per_node, timeout_min, slurm_extra). Raises ValueError (UsageError) for bad input,
    JobConflict when the experiment is being trained, SlurmError when the scheduler refuses."""
    root = Path(os.path.abspath(Path(models_root).expanduser()))
    options = launch_values(launch)
    validate_options({**options, "launcher": SLURM})
    check_run_args(mode, args, root)
    missing = scheduler_available()
    if missing:
        raise SlurmError(f"--launcher slurm: {missing}")
    args = {k: v for k, v in args.items() if v is not None}
    args["models_root"] = str(root)
    if mode in NEEDS_CHECKPOINT:
        path = Path(os.path.abspath(Path(args["model_path"]).expanduser()))
        if not path.is_file():
            raise UsageError(f"--model_path {args['model_path']} is not a file")
        args["model_path"] = str(path)
    effective, resume = _resume_args(mode, args)
    exp_dir = experiment_dir(effective)
    _check_no_active_job(root, exp_dir)
    first_argv = program() + run_flags(mode, args)
    resume_argv = program() + run_flags("auto_resume", resume)
    job = _submit_with_submitit(root, SlurmRun(first_argv, resume_argv, str(exp_dir), effective.get("comment"),
                                               options["nodes"], options["gpus_per_node"]),
                                options, experiment_name(effective))
    record = SlurmJob(job, experiment_name(effective), str(exp_dir), mode, first_argv, options, time.time(),
                      folder=str(job_dir(root, job)), state="PENDING")
    _write(job_dir(root, job) / RECORD_NAME, json.dumps(record.record(), indent=1).encode())
    return record


def signal_delay_s(timeout_min: int) -> int:
    return min(SIGNAL_LEAD_S, timeout_min * 60 * 5 // 6)


def _submit_with_submitit(root: Path, run: SlurmRun, options: Mapping[str, Any], name: str) -> str:
    import submitit

    package_root = str(Path(__file__).resolve().parents[2])
    executor = submitit.SlurmExecutor(folder=slurm_dir(root) / "%j", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    extra = {"requeue": True, **parse_slurm_extra(options.get("slurm_extra"))}
    params: dict[str, Any] = {
        "job_name": name[:200], "time": int(options["timeout_min"]), "nodes": int(options["nodes"]),
        "ntasks_per_node": 1, "signal_delay_s": signal_delay_s(int(options["timeout_min"])),
        "stderr_to_stdout": True, "additional_parameters": extra,
        # The job unpickles training.jobs.slurm.SlurmRun: this package must be importable there.
        "setup": [f"export PYTHONPATH={_shell_quote(package_root)}${{PYTHONPATH:+:$PYTHONPATH}}",
                  "export PYTHONUNBUFFERED=1"],
    }
    if options.get("slurm_partition"):
        params["partition"] = options["slurm_partition"]
    if int(options["gpus_per_node"]):
        params["gpus_per_node"] = int(options["gpus_per_node"])
    executor.update_parameters(**params)
    slurm_dir(root).mkdir(parents=True, exist_ok=True)
    try:
        job = executor.submit(run)
    except subprocess.CalledProcessError as exc:
        message = (exc.output or b"").decode(errors="replace").strip().splitlines() if isinstance(exc.output, bytes) \
            else str(exc.output or exc).strip().splitlines()
        raise SlurmError(f"sbatch refused the job: {message[-1] if message else exc}") from None
    return str(job.job_id)


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# --- reading jobs back ----------------------------------------------------------------------------

def _scheduler_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
    """job id -> (state, reason, restarts) for the jobs the scheduler still knows."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=SCHEDULER_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], "" if parts[2] == "None" else parts[2], 0)
    return states


def _restarts(job_id: str) -> int:
    try:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True,
                             timeout=SCHEDULER_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    for word in out.split():
        if word.startswith("Restarts="):
            return int(word.split("=", 1)[1] or 0)
    return 0


def list_jobs(models_root: Path | str) -> list[SlurmJob]:
    """The Slurm jobs submitted for this models root, newest first, with their state now: the
    scheduler's while it knows the job, else how the job's last attempt ended (outcome.json)."""
    base = slurm_dir(models_root)
    if not base.is_dir():
        return []
    jobs = []
    for folder in base.iterdir():
        record = _read_json(folder / RECORD_NAME)
        if not record.get("job_id"):
            continue
        try:
            job = SlurmJob(**record, folder=str(folder))
        except TypeError:
            continue  # a record of another version: not ours to guess
        job.outcome = _read_json(folder / OUTCOME_NAME)
        jobs.append(job)
    states = _scheduler_states([j.job_id for j in jobs])
    for job in jobs:
        if job.job_id in states:
            job.state, job.reason, _ = states[job.job_id]
            if job.state == "COMPLETED" and job.outcome.get("outcome") == "stopped":
                job.state = "STOPPED"
        elif job.outcome:
            job.state = {"succeeded": "COMPLETED", "stopped": "STOPPED"}.get(job.outcome.get("outcome"), "FAILED")
        job.restarts = int(job.outcome.get("restarts", 0) or 0)
    return sorted(jobs, key=lambda j: j.submitted_at, reverse=True)


def get_job(models_root: Path | str, job_id: str) -> SlurmJob:
    for job in list_jobs(models_root):
        if job.job_id == str(job_id):
            return job
    raise KeyError(f"no Slurm job {job_id} under {slurm_dir(models_root)}")


def tail_log(job: SlurmJob, max_bytes: int = 16_384) -> str:
    try:
        with open(job.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - max_bytes, 0))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def stop(models_root: Path | str, job_id: str) -> SlurmJob:
    """Stop a job so that it saves first: a running job's processes get SIGTERM (the trainer saves
    its interrupt checkpoint and exits; the job ends); a pending one is cancelled."""
    job = get_job(models_root, job_id)
    if not job.is_active:
        return job
    command = ["scancel", job.job_id] if job.state == "PENDING" else ["scancel", "--signal=TERM", job.job_id]
    result = subprocess.run(command, capture_output=True, text=True, timeout=SCHEDULER_TIMEOUT_S)
    if result.returncode != 0:
        raise SlurmError(f"scancel {job.job_id}: {result.stderr.strip() or 'failed'}")
    return get_job(models_root, job_id)


# --- the CLI's --launcher slurm -----------------------------------------------------------------

def cli_mode(args: Mapping[str, Any]) -> str:
    """The start mode the CLI's flags ask for (no flag: a fresh start, as the CLI runs it)."""
    if args.get("resume"):
        return "resume"
    if args.get("auto_resume"):
        return "auto_resume"
    return "pretrained" if args.get("model_path") else "fresh"


def submit_from_cli(args: Mapping[str, Any], explicit: set[str]) -> int:
    """``python main.py ... --launcher slurm``: submit the same run; prints the job id."""
    from training.config import LAUNCH_OPTIONS
    from training.runs import RESERVED_OPTIONS

    mode = cli_mode(args)
    typed = {k: args[k] for k in explicit if k not in LAUNCH_OPTIONS and k not in RESERVED_OPTIONS}
    try:
        job = submit(args["models_root"], mode, typed, {k: args[k] for k in LAUNCH_OPTIONS if k != "launcher"})
    except JobConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Submitted Slurm job {job.job_id}: {job.experiment}")
    print(f"Log: {job.log_path}")
    print(f"Follow it with: squeue -j {job.job_id} (or the dashboard's Jobs page)")
    return 0


# --- the Launch form's Slurm fields ---------------------------------------------------------------

FORM_FIELDS = ("slurm_partition", "nodes", "gpus_per_node", "timeout_min", "slurm_extra")


def parse_launch_form(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The Launch page's Slurm fields as launch options ('' -> not set), and the errors the
    shared rule (``validate_options``) finds in them, in the CLI's words."""
    from training.config import OPTIONS_BY_NAME, coerce

    values: dict[str, Any] = {}
    errors: list[str] = []
    for name in FORM_FIELDS:
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            values[name] = coerce(OPTIONS_BY_NAME[name], value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            errors.append(f"{name}: {value!r} is not a whole number")
    try:
        validate_options({**values, "launcher": SLURM})
    except UsageError as exc:
        errors.append(str(exc))
    return launch_values(values), errors


def launch_flags(launch: Mapping[str, Any]) -> list[str]:
    """``--launcher slurm`` and the launch options that differ from their defaults, as typed."""
    from training.launcher import SLURM_OPTION_DEFAULTS

    flags = ["--launcher", SLURM]
    for name, default in SLURM_OPTION_DEFAULTS.items():
        value = launch.get(name)
        if value is not None and value != default:
            flags += [f"--{name}={value}"] if str(value).startswith("-") else [f"--{name}", str(value)]
    return flags
