"""Background training jobs: launch, track, stop, tail — without a server or an agent.

A job is one ``python -m training ...`` run in its own OS process. The design follows from the
ways such a process outlives, or is outlived by, whoever started it:

* **A supervisor per job.** Only a parent can read a child's exit status, and the parent we
  would naturally use — the dashboard — restarts, crashes and gets Ctrl-C'd while runs go on
  for days. So ``launch()`` starts a tiny, detached supervisor
  (``python -m training.jobs.registry supervise <db> <id>``) and returns at once; the supervisor starts
  the trainer, records its pid, waits for it and writes the exit code and final state into the
  registry. The supervisor also carries out stop requests (SIGTERM, then SIGKILL after a grace
  period), so ``stop()`` never blocks the page that clicked the button.

* **Sessions and process groups.** The supervisor and the trainer each call ``setsid``
  (``start_new_session=True``): a Ctrl-C or a hang-up in the dashboard's terminal reaches
  neither, and the trainer heads its own process group, so a stop signals the trainer *and*
  whatever it forked (data-loader workers) without touching the supervisor. The supervisor
  additionally catches SIGINT/SIGHUP with a no-op handler — not ``SIG_IGN``, which ``exec``
  would pass on to the trainer and silently disable its Ctrl-C handling.

* **pid + start time.** A pid is not an identity: once a process dies the kernel hands the
  number to the next one. Every pid in the registry is stored with its kernel start time
  (``training.proc``) and is only believed — or signalled — when both match, so a recycled pid
  is never shown as a live job and never receives our SIGKILL.

* **The registry** is SQLite in WAL mode at ``<models_root>/.jobs/jobs.sqlite`` (readers never
  block the supervisors' writes; a busy timeout covers writer overlap), logs beside it in
  ``.jobs/logs/<id>.log``. Several dashboards and supervisors may use it at once; every
  read-check-write goes in one ``BEGIN IMMEDIATE`` transaction. Reading jobs reconciles them:
  an active job whose supervisor and trainer are both gone, with no exit recorded, is ``lost``.

States: queued -> running -> (stopping ->) succeeded | failed | stopped; lost when both
processes vanished without a recorded exit (machine reboot, supervisor SIGKILLed).

No shell anywhere: every command is an argv list.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import ACTION_OPTIONS, DEFAULTS, OPTIONS_BY_NAME, validate_options
from training.lock import describe_holder, read_lock_holder
from training.naming import experiment_dir, experiment_name
from training.proc import current_identity, is_alive, process_start_time

# The folder that holds ``training/``: the trainer's cwd, so ``-m training`` imports this tree.
REPO_ROOT = Path(__file__).resolve().parents[2]

JOBS_DIRNAME = ".jobs"
DB_NAME = "jobs.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
DEFAULT_GRACE_S = 30.0
# How often a supervisor re-reads the registry when no signal woke it: covers a lost wake-up.
SUPERVISOR_POLL_S = 2.0
# A queued row whose launcher died before recording the supervisor's pid becomes lost after this.
QUEUED_ORPHAN_S = 60.0

MODES = ("fresh", "resume", "auto_resume", "pretrained")
MODE_FLAGS: dict[str, tuple[str, ...]] = {
    "fresh": ("--fresh_start",),
    "resume": ("--resume",),
    "auto_resume": ("--auto_resume",),
    "pretrained": ("--fresh_start",),  # + --model_path: weights only, fresh optimizer, epoch 1
}
NEEDS_CHECKPOINT = frozenset({"resume", "pretrained"})
# Options the mode sets, or that are not training runs at all: never accepted in ``args``.
RESERVED_OPTIONS = frozenset({"resume", "fresh_start", "auto_resume", "list_checkpoints"})

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("succeeded", "failed", "stopped", "lost")
STATES = ACTIVE_STATES + FINAL_STATES

# The training CLI's exit codes (see training/cli.py), for the ``error`` column.
EXIT_MEANINGS = {
    1: "crashed",
    2: "usage error (bad flags or checkpoint path)",
    3: "experiment folder busy",
    130: "interrupted (SIGINT) after saving",
    143: "terminated (SIGTERM) after saving",
}
STOP_EXIT_CODES = frozenset({130, 143})

SUPERVISOR_TAG = "[jobs]"  # prefix of the supervisor's own lines in a job's log


class JobConflict(RuntimeError):
    """Another job or live process already writes the target experiment folder."""


class JobNotFound(KeyError):
    """No job with that id in this models root's registry."""


# --- the Job record ---------------------------------------------------------------------------

@dataclass
class Job:
    id: int
    experiment: str
    exp_dir: str
    mode: str
    argv: list[str]
    log_path: str
    state: str
    created_at: float
    pid: int | None = None
    pid_start_time: int | None = None
    supervisor_pid: int | None = None
    supervisor_start_time: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    num_epochs: int | None = None
    error: str | None = None
    stop_requested_at: float | None = None
    stop_grace_s: float | None = None

    @property
    def command(self) -> str:
        """The run as a user would type it: ``python main.py --fresh_start ...``."""
        return shlex.join(["python", "main.py", *_cli_flags_of(self.argv)])

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at


_COLUMNS = (
    "id", "experiment", "exp_dir", "mode", "argv", "log_path", "state", "created_at", "pid",
    "pid_start_time", "supervisor_pid", "supervisor_start_time", "started_at", "ended_at",
    "exit_code", "num_epochs", "error", "stop_requested_at", "stop_grace_s",
)


def _job_from_row(row: sqlite3.Row) -> Job:
    values = {k: row[k] for k in _COLUMNS}
    values["argv"] = json.loads(values["argv"])
    return Job(**values)


def _cli_flags_of(argv: Sequence[str]) -> list[str]:
    """The flags after the program part (``python -u -m training``) of a stored argv: every
    job starts with a mode flag, the first ``--`` argument."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            return argv[i:]
    return []


# --- the registry -----------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so log names never collide
    experiment TEXT NOT NULL,
    exp_dir TEXT NOT NULL,
    mode TEXT NOT NULL,
    argv TEXT NOT NULL,                    -- JSON list
    log_path TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    pid INTEGER,
    pid_start_time INTEGER,
    supervisor_pid INTEGER,
    supervisor_start_time INTEGER,
    started_at REAL,
    ended_at REAL,
    exit_code INTEGER,
    num_epochs INTEGER,
    error TEXT,
    stop_requested_at REAL,
    stop_grace_s REAL
);
CREATE INDEX IF NOT EXISTS jobs_exp_state ON jobs (exp_dir, state);
"""


def jobs_dir(models_root: Path | str) -> Path:
    return Path(models_root) / JOBS_DIRNAME


def db_path(models_root: Path | str) -> Path:
    return jobs_dir(models_root) / DB_NAME


def _connect(db: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) the registry. Autocommit; callers open explicit transactions."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    (db.parent / "logs").mkdir(exist_ok=True, mode=0o700)
    conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise RuntimeError(f"{db} has schema version {version}; this code knows {SCHEMA_VERSION}")
    if version < SCHEMA_VERSION:
        _init_schema(conn)
    return conn


def _init_schema(conn: sqlite3.Connection) -> None:
    # WAL is a property of the file and persists; switching needs no open transaction.
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:  # re-check: racers
            # Statement by statement: executescript() would commit our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class _Tx:
    """``with _Tx(conn):`` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error.

    IMMEDIATE takes the write lock up front, so a read-check-write (conflict check + insert,
    stop flag + pid read) cannot interleave with another process doing the same.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _update(conn: sqlite3.Connection, job_id: int, **values: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))


def _fetch(conn: sqlite3.Connection, job_id: int) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return _job_from_row(row)


# --- reconciling with the process table ---------------------------------------------------------

def _processes_gone(job: Job) -> bool:
    """Neither the supervisor nor the trainer of ``job`` is alive (pid AND start time checked)."""
    if is_alive(job.pid, job.pid_start_time):
        return False
    if job.supervisor_pid is None:
        # Launcher died between inserting the row and starting the supervisor, or is about to
        # record it: only an old row is certainly orphaned.
        return time.time() - job.created_at > QUEUED_ORPHAN_S
    return not is_alive(job.supervisor_pid, job.supervisor_start_time)


def _reconcile(conn: sqlite3.Connection, jobs: Sequence[Job]) -> int:
    lost = 0
    for job in jobs:
        if job.state in ACTIVE_STATES and job.exit_code is None and _processes_gone(job):
            # Conditional update: a supervisor that recorded the exit since we read the row wins.
            cur = conn.execute(
                "UPDATE jobs SET state = 'lost', ended_at = ?, error = ? "
                "WHERE id = ? AND ended_at IS NULL AND state IN ('queued', 'running', 'stopping')",
                (time.time(), "supervisor and training process are gone; exit code unknown", job.id),
            )
            lost += cur.rowcount
    return lost


def refresh(models_root: Path | str) -> int:
    """Mark active jobs whose processes have all vanished as ``lost``; returns how many."""
    with closing(_connect(db_path(models_root))) as conn:
        return _refresh(conn)


def _refresh(conn: sqlite3.Connection) -> int:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE state IN ('queued', 'running', 'stopping')"
    ).fetchall()
    return _reconcile(conn, [_job_from_row(r) for r in rows])


# --- reading ------------------------------------------------------------------------------------

def list_jobs(models_root: Path | str) -> list[Job]:
    """All jobs of this models root, newest first, after reconciling with the process table."""
    with closing(_connect(db_path(models_root))) as conn:
        _refresh(conn)
        return [_job_from_row(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id DESC")]


def get_job(models_root: Path | str, job_id: int) -> Job:
    with closing(_connect(db_path(models_root))) as conn:
        _reconcile(conn, [_fetch(conn, job_id)])
        return _fetch(conn, job_id)


def tail_log(models_root: Path | str, job_id: int, n_bytes: int = 8192) -> str:
    """The last ``n_bytes`` of the job's log, as a terminal would show them.

    tqdm redraws its bar with carriage returns, so a "line" in the file may hold hundreds of
    updates; keep only the text after the last ``\\r`` of each line.
    """
    path = Path(get_job(models_root, job_id).log_path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - n_bytes)
            f.seek(start)
            data = f.read(n_bytes)
    except FileNotFoundError:
        return ""
    return _terminal_text(data.decode("utf-8", errors="replace"), cut=start > 0)


def _terminal_text(text: str, cut: bool = False) -> str:
    lines = text.split("\n")
    if cut and len(lines) > 1:
        lines = lines[1:]  # the first line starts mid-way: drop the fragment
    out = []
    for line in lines:
        line = line.rstrip("\r")  # CRLF endings are not redraws
        out.append(line.rsplit("\r", 1)[-1])
    return "\n".join(out)


# --- building the command ---------------------------------------------------------------------

def _program() -> list[str]:
    # -u: unbuffered, so the log (and the dashboard's tail) follows the run live.
    return [sys.executable, "-u", "-m", "training"]


def _format_value(opt_name: str, value: Any) -> str:
    opt = OPTIONS_BY_NAME[opt_name]
    try:
        if opt.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            text = str(int(value))
        elif opt.kind is float:
            text = str(float(value))
        else:
            text = str(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number"}.get(opt.kind, "text")
        raise ValueError(f"--{opt_name} needs {kind}, got {value!r}") from None
    if opt.choices and text not in opt.choices:
        raise ValueError(f"--{opt_name} must be one of {', '.join(opt.choices)}; got {text!r}")
    return text


def _check_args(mode: str, args: Mapping[str, Any], models_root: Path | None = None) -> None:
    """Mode and option names here; every value through the CLI's own rule (validate_options).
    ``models_root``: the registry's root, checked as the run's --models_root."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    unknown = sorted(set(args) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    reserved = sorted(k for k in RESERVED_OPTIONS if args.get(k))
    if reserved:
        raise ValueError(f"{', '.join(reserved)} is set by the mode, not passed as an option")
    has_path = bool(args.get("model_path"))
    if mode in NEEDS_CHECKPOINT and not has_path:
        raise ValueError(f"{mode} requires a checkpoint path (model_path)")
    if mode not in NEEDS_CHECKPOINT and has_path:
        raise ValueError(f"{mode} takes no model_path; use mode 'resume' or 'pretrained'")
    validate_options({**args, "models_root": models_root or args.get("models_root")})


def _flags(mode: str, args: Mapping[str, Any]) -> list[str]:
    """The CLI flags for ``mode`` + ``args``: mode flags, then the options in table order.

    fresh/auto_resume runs omit values equal to the defaults (same run, shorter command). For
    resume/pretrained an explicitly given value overrides the checkpoint's, even when it
    equals the default, so everything given is kept.
    """
    _check_args(mode, args)
    flags = list(MODE_FLAGS[mode])
    keep_defaults = mode in NEEDS_CHECKPOINT
    root = args.get("models_root") or DEFAULTS["models_root"]
    for name, opt in OPTIONS_BY_NAME.items():
        if name == "models_root":
            flags += ["--models_root", str(Path(root).absolute())]
            continue
        value = args.get(name)
        if value is None or name in RESERVED_OPTIONS:
            continue
        if opt.kind is bool:
            if value:
                flags.append(f"--{name}")
            continue
        if not keep_defaults and name != "model_path" and value == DEFAULTS[name]:
            continue
        text = _format_value(name, value)
        # "--comment=-x": a value that looks like a flag must be glued to its option.
        flags += [f"--{name}={text}"] if text.startswith("-") else [f"--{name}", text]
    return flags


def build_argv(mode: str, args: Mapping[str, Any]) -> list[str]:
    """The exact argv a job runs: ``[python, -u, -m, training, <flags>]``. Raises ValueError."""
    return _program() + _flags(mode, args)


def command_line(mode: str, args: Mapping[str, Any]) -> str:
    """The same run as a user would type it: ``python main.py --fresh_start --model_type lcnn ...``."""
    return shlex.join(["python", "main.py", *_flags(mode, args)])


# --- launching ----------------------------------------------------------------------------------

def _checkpoint_args(model_path: str) -> dict[str, Any]:
    """Hyperparameters stored in the checkpoint, or {} when it cannot be read here.

    An unreadable file is not an error at launch: the trainer reports it (exit 2) in the log.
    """
    try:
        from training.checkpoint.meta import read_checkpoint_info  # may not exist yet; may be slow
    except ImportError:
        return {}
    try:
        stored = getattr(read_checkpoint_info(model_path), "args", None) or {}
        return dict(stored if isinstance(stored, Mapping) else vars(stored))  # old: a Namespace
    except Exception:  # corrupt / legacy / foreign file: let the trainer say what is wrong
        return {}


def _resolve_args(models_root: Path, mode: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Validated args with absolute ``models_root`` and ``model_path``."""
    _check_args(mode, args, models_root)
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
    """The args the trainer will name its folder with, merged the way the CLI merges them.

    resume: every hyperparameter not given comes from the checkpoint's stored args.
    pretrained: only the architecture keys do (other values could not load the weights);
    the rest keep the defaults, as in a fresh run.
    """
    if mode not in NEEDS_CHECKPOINT:
        return dict(args)
    stored = _checkpoint_args(args["model_path"])
    keys = set(OPTIONS_BY_NAME) - ACTION_OPTIONS if mode == "resume" else set(_architecture_keys())
    merged = {k: v for k, v in stored.items() if k in keys}
    merged.update(args)
    return merged


def _architecture_keys() -> tuple[str, ...]:
    try:
        from training.cli import ARCHITECTURE_KEYS  # the CLI's own list; cheap (no torch)
        return tuple(ARCHITECTURE_KEYS)
    except ImportError:
        return ("model_type", "group_size", "use_contrastive")


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
    flags = _flags(mode, resolved)
    argv = (list(_program_argv) if _program_argv is not None else _program()) + flags
    exp_args = _experiment_args(mode, resolved)
    exp_dir = experiment_dir(exp_args)
    if exp_dir.resolve().parent != root:
        raise ValueError(f"experiment folder {exp_dir} is not directly inside {root}")
    root.mkdir(parents=True, exist_ok=True)
    db = db_path(root)
    with closing(_connect(db)) as conn:
        with _Tx(conn):
            _check_conflicts(conn, exp_dir)
            now = time.time()
            cur = conn.execute(
                "INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at,"
                " num_epochs) VALUES (?, ?, ?, ?, '', 'queued', ?, ?)",
                (experiment_name(exp_args), str(exp_dir), mode, json.dumps(argv), now,
                 int(exp_args.get("num_epochs") or DEFAULTS["num_epochs"])),
            )
            job_id = int(cur.lastrowid)
            log_path = jobs_dir(root) / "logs" / f"{job_id}.log"
            _update(conn, job_id, log_path=str(log_path))
        try:
            pid, start = _start_supervisor(db, job_id, log_path)
        except OSError as exc:
            with _Tx(conn):
                _update(conn, job_id, state="failed", ended_at=time.time(),
                        error=f"could not start the supervisor: {exc}")
            raise RuntimeError(f"job {job_id}: could not start the supervisor: {exc}") from exc
        with _Tx(conn):
            _update(conn, job_id, supervisor_pid=pid, supervisor_start_time=start)
        return _fetch(conn, job_id)


def _check_conflicts(conn: sqlite3.Connection, exp_dir: Path) -> None:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE exp_dir = ? AND state IN ('queued', 'running', 'stopping')",
        (str(exp_dir),),
    ).fetchall()
    jobs = [_job_from_row(r) for r in rows]
    _reconcile(conn, jobs)  # a dead job must not block its folder forever
    for job in jobs:
        if not _processes_gone(job):
            who = f"pid {job.pid}" if job.pid else f"supervisor pid {job.supervisor_pid}"
            raise JobConflict(f"job {job.id} ({job.state}, {who}) is already training {exp_dir.name}")
    holder = read_lock_holder(exp_dir)
    if holder is not None:
        raise JobConflict(f"{exp_dir.name} is in use by {describe_holder(holder)}")


def _start_supervisor(db: Path, job_id: int, log_path: Path) -> tuple[int, int | None]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # -S: the supervisor needs only the standard library and this tree (cwd), so skip
        # site-packages' .pth processing, a large share of interpreter start-up.
        proc = _popen(
            [sys.executable, "-u", "-S", "-m", "training.jobs.registry", "supervise", str(db), str(job_id)],
            log,
        )
    start = process_start_time(proc.pid)
    # Reap it when it ends, so a long-lived dashboard does not collect zombies.
    threading.Thread(target=proc.wait, name=f"reap-supervisor-{job_id}", daemon=True).start()
    return proc.pid, start


def _popen(argv: Sequence[str], log: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        list(argv), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
    )


# --- stopping -------------------------------------------------------------------------------------

def stop(models_root: Path | str, job_id: int, grace_s: float = DEFAULT_GRACE_S) -> Job:
    """Ask a job to stop: the trainer gets SIGTERM (it finishes the step, saves, exits 143);
    after ``grace_s`` seconds its process group gets SIGKILL. Returns at once (state stopping).

    The supervisor sends the signals and records the outcome. Only when the supervisor is gone
    do we signal the trainer from here, escalating in a background thread.
    """
    with closing(_connect(db_path(models_root))) as conn:
        with _Tx(conn):
            job = _fetch(conn, job_id)
            _reconcile(conn, [job])
            job = _fetch(conn, job_id)
            if job.state not in ACTIVE_STATES:
                return job
            # Only the first request signals: the trainer takes a second SIGTERM as "abort
            # without saving".
            first_request = job.stop_requested_at is None
            if first_request:
                _update(conn, job_id, state="stopping", stop_requested_at=time.time(),
                        stop_grace_s=float(grace_s))
            job = _fetch(conn, job_id)
        # Outside the transaction: the supervisor reads the flag we just committed.
        if is_alive(job.supervisor_pid, job.supervisor_start_time):
            if job.pid is not None:
                # The supervisor records the trainer's pid only after installing its handlers,
                # so by now SIGUSR1 wakes it rather than kills it. Without a pid it will see the
                # flag when it records one.
                _signal(job.supervisor_pid, signal.SIGUSR1)
        elif first_request and is_alive(job.pid, job.pid_start_time):
            _stop_orphan(job, grace_s)
        return job


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _stop_orphan(job: Job, grace_s: float) -> None:
    """A trainer whose supervisor died: TERM its group now, KILL it later from a thread.
    Nobody can read its exit code any more; reconciling will call it lost once it is gone."""
    pid, start = job.pid, job.pid_start_time
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)

    def escalate() -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not is_alive(pid, start):
                return
            time.sleep(0.2)
        if is_alive(pid, start):  # same process, not a recycled pid
            _signal_group(pid, signal.SIGKILL)

    threading.Thread(target=escalate, name=f"stop-orphan-{job.id}", daemon=True).start()


# --- the supervisor -------------------------------------------------------------------------------

def _say(job_id: int, text: str, log_path: str | None = None) -> None:
    """A supervisor line in the job's log (our stdout), on a line of its own even when the
    trainer's last output (a tqdm bar) ended without a newline."""
    prefix = ""
    if log_path:
        try:
            with open(log_path, "rb") as f:
                if f.seek(0, os.SEEK_END) > 0:
                    f.seek(-1, os.SEEK_END)
                    prefix = "" if f.read(1) == b"\n" else "\n"
        except OSError:
            pass
    print(f"{prefix}{SUPERVISOR_TAG} job {job_id}: {text}", flush=True)


def _last_output_line(log_path: str, n_bytes: int = 4096) -> str | None:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - n_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(_terminal_text(text, cut=True).splitlines()):
        if line.strip() and not line.startswith(SUPERVISOR_TAG):
            return line.strip()[:300]
    return None


def _outcome(code: int, stop_requested: bool) -> tuple[str, str | None]:
    """(state, error) for a trainer's return code (negative: killed by that signal)."""
    if code == 0:
        return "succeeded", None
    if code < 0:
        try:
            what = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
        return ("stopped", what) if stop_requested else ("failed", what)
    meaning = EXIT_MEANINGS.get(code, "failed")
    if stop_requested and code in STOP_EXIT_CODES:
        return "stopped", None
    if stop_requested:
        # It was asked to stop but did not exit the way a clean stop does: do not let the
        # dashboard suggest a resumable checkpoint was saved.
        return "failed", f"exit code {code} ({meaning}) while stopping"
    return "failed", f"exit code {code} ({meaning})"


class _Supervisor:
    def __init__(self, db: str, job_id: int):
        self.db = db
        self.job_id = job_id
        self.terminate_requested = False
        self.log_path: str | None = None
        self.conn = _connect(db)

    def say(self, text: str) -> None:
        _say(self.job_id, text, self.log_path)

    def install_signals(self) -> None:
        """Before anything else: a SIGUSR1 arriving before this would kill us.

        Handlers, not SIG_IGN: handlers reset to default on exec, so the trainer still gets
        normal SIGINT/SIGHUP behaviour. The wake-up fd makes ``select`` return on any signal.
        """
        def nothing(signum: int, frame: object) -> None:
            pass

        def terminate(signum: int, frame: object) -> None:
            self.terminate_requested = True  # e.g. system shutdown: stop the run cleanly

        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, nothing)
        signal.signal(signal.SIGTERM, terminate)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    def run(self) -> int:
        self.install_signals()
        pid, start = current_identity()
        with _Tx(self.conn):
            job = _fetch(self.conn, self.job_id)
            _update(self.conn, self.job_id, supervisor_pid=pid, supervisor_start_time=start)
        self.log_path = job.log_path
        if job.state not in ACTIVE_STATES:
            return 0
        if job.stop_requested_at is not None:
            self.finish("stopped", None, "stopped before it started")
            return 0
        self.say("$ " + job.command)
        try:
            child = _popen(job.argv, sys.stdout)
        except OSError as e:
            self.finish("failed", None, f"could not start: {e}")
            return 0
        with _Tx(self.conn):
            # Serialised with stop(): either it committed its flag before this (wait() reads
            # it next) or it will find the pid, and our handlers are installed by then.
            state = _fetch(self.conn, self.job_id).state
            _update(self.conn, self.job_id, pid=child.pid, pid_start_time=process_start_time(child.pid),
                    started_at=time.time(), state="running" if state == "queued" else state)
        self.say(f"started pid {child.pid}")
        code = self.wait(child)
        self.finish_child(code, child.pid)
        return 0

    def stop_request(self) -> tuple[float, float] | None:
        if self.terminate_requested:
            with _Tx(self.conn):
                job = _fetch(self.conn, self.job_id)
                if job.stop_requested_at is None:
                    _update(self.conn, self.job_id, state="stopping", stop_requested_at=time.time(),
                            stop_grace_s=DEFAULT_GRACE_S)
            self.terminate_requested = False
        row = self.conn.execute(
            "SELECT stop_requested_at, stop_grace_s FROM jobs WHERE id = ?", (self.job_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return float(row[0]), float(row[1] if row[1] is not None else DEFAULT_GRACE_S)

    def wait(self, child: Any) -> int:
        """Wait for the trainer, carrying out a stop request: TERM the group, KILL at deadline.

        The trainer is our unreaped child, so its pid (= its process group id) cannot be
        recycled while we signal it.
        """
        try:
            pidfd: int | None = os.pidfd_open(child.pid)
        except (AttributeError, OSError):
            pidfd = None  # old kernel: fall back to polling
        termed = killed = False
        while True:
            code = child.poll()
            if code is not None:
                break
            try:
                request = self.stop_request()
            except sqlite3.Error as exc:  # registry briefly unusable: keep waiting, retry later
                self.say(f"cannot read the registry ({exc}); retrying")
                request = None
            timeout = SUPERVISOR_POLL_S
            if request is not None:
                requested_at, grace = request
                if not termed:
                    self.say(f"stop requested: SIGTERM to process group {child.pid}")
                    _signal_group(child.pid, signal.SIGTERM)
                    termed = True
                remaining = requested_at + grace - time.time()
                if remaining <= 0 and not killed:
                    self.say(f"still running after {grace:g}s: SIGKILL")
                    _signal_group(child.pid, signal.SIGKILL)
                    killed = True
                elif not killed:
                    timeout = min(timeout, remaining)
            self.sleep(pidfd, child, max(timeout, 0.01))
        if pidfd is not None:
            os.close(pidfd)
        return code

    def sleep(self, pidfd: int | None, child: Any, timeout: float) -> None:
        """Until the child exits, a signal arrives, or ``timeout`` passes."""
        if pidfd is None:
            try:
                child.wait(timeout=min(timeout, 0.2))
            except subprocess.TimeoutExpired:
                pass
            return
        try:
            select.select([pidfd, self.wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def finish_child(self, code: int, pgid: int) -> None:
        # Leftovers of the trainer's group (data-loader workers) die with it. Just reaped, the
        # number cannot have been handed to a new group yet.
        _signal_group(pgid, signal.SIGKILL)
        job = _fetch(self.conn, self.job_id)
        state, error = _outcome(code, job.stop_requested_at is not None)
        if state == "failed":
            last = _last_output_line(job.log_path)
            if last:
                error = f"{error}: {last}"
        self.finish(state, code, error)

    def finish(self, state: str, code: int | None, error: str | None) -> None:
        for attempt in range(5):  # the exit code is the one thing only we know: insist a little
            try:
                with _Tx(self.conn):
                    _update(self.conn, self.job_id, state=state, exit_code=code,
                            ended_at=time.time(), error=error)
                break
            except sqlite3.Error as exc:
                self.say(f"cannot record the outcome ({exc})")
                if attempt == 4:
                    raise
                time.sleep(2.0)
        self.say(f"{state}" + (f", exit code {code}" if code is not None else "")
             + (f" ({error})" if error and state != "failed" else ""))


def supervise(db: str, job_id: int) -> int:
    """Entry point of ``python -m training.jobs.registry supervise <db> <id>``."""
    sup = _Supervisor(db, job_id)
    try:
        return sup.run()
    except JobNotFound:
        print(f"{SUPERVISOR_TAG} no job {job_id} in {db}", file=sys.stderr)
        return 2
    finally:
        sup.conn.close()


def _main(argv: Sequence[str]) -> int:
    if len(argv) == 3 and argv[0] == "supervise":
        return supervise(argv[1], int(argv[2]))
    print("usage: python -m training.jobs.registry supervise <jobs.sqlite> <job id>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
