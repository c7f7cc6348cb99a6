"""The job registry: SQLite in WAL mode at ``<models_root>/.jobs/jobs.sqlite``, one row per job.

Owns the ``Job`` record, the schema, the transactions every read-check-write goes through, and
reading jobs back (listing, one job, the tail of its log). Readers never block the supervisors'
writes (WAL); a busy timeout covers writer overlap. Several dashboards and supervisors may use it
at once; every read-check-write goes in one ``BEGIN IMMEDIATE`` transaction (:class:`Transaction`).

**pid + start time.** A pid is not an identity: once a process dies the kernel hands the number
to the next one. Every pid in the registry is stored with its kernel start time
(``training.proc``) and is only believed when both match, so a recycled pid is never shown as a
live job. Reading jobs reconciles them: an active job whose supervisor and trainer are both gone,
with no exit recorded, is ``lost``.

States: queued -> running -> (stopping ->) succeeded | failed | stopped; lost when both
processes vanished without a recorded exit (machine reboot, supervisor SIGKILLed).

Launching and stopping are ``training.jobs.control``; the supervisor process is
``training.jobs.supervisor``. Standard library only: the supervisor runs it under ``python -S``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.naming import JOBS_DIRNAME
from training.proc import is_alive
from training.runs import typed_command_line

DB_NAME = "jobs.sqlite"
SCHEMA_VERSION = 2  # 2: the ``kind`` column (train | eval)
BUSY_TIMEOUT_S = 30.0
DEFAULT_GRACE_S = 30.0
# A queued row whose launcher died before recording the supervisor's pid becomes lost after this.
QUEUED_ORPHAN_S = 60.0

# The final states are succeeded, failed, stopped and lost (see above).
ACTIVE_STATES = ("queued", "running", "stopping")

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
    kind: str = "train"  # train | eval (training.runs.JOB_KINDS)

    @property
    def command(self) -> str:
        """The run as a user would type it: ``python main.py --fresh_start ...``."""
        return typed_command_line(self.argv)

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
    "exit_code", "num_epochs", "error", "stop_requested_at", "stop_grace_s", "kind",
)


def job_from_row(row: sqlite3.Row) -> Job:
    values = {k: row[k] for k in _COLUMNS}
    values["argv"] = json.loads(values["argv"])
    return Job(**values)


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
    stop_grace_s REAL,
    kind TEXT NOT NULL DEFAULT 'train'
);
CREATE INDEX IF NOT EXISTS jobs_exp_state ON jobs (exp_dir, state);
"""


def jobs_dir(models_root: Path | str) -> Path:
    return Path(models_root) / JOBS_DIRNAME


def db_path(models_root: Path | str) -> Path:
    return jobs_dir(models_root) / DB_NAME


def connect(db: Path | str) -> sqlite3.Connection:
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
            _add_missing_columns(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Migrate a version-1 registry: its rows were all training jobs."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "kind" not in have:
        conn.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train'")


class Transaction:
    """``with Transaction(conn):`` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error.

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


def update_job(conn: sqlite3.Connection, job_id: int, **values: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*values.values(), job_id))


def fetch_job(conn: sqlite3.Connection, job_id: int) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return job_from_row(row)


# --- reconciling with the process table ---------------------------------------------------------

def processes_gone(job: Job) -> bool:
    """Neither the supervisor nor the trainer of ``job`` is alive (pid AND start time checked)."""
    if is_alive(job.pid, job.pid_start_time):
        return False
    if job.supervisor_pid is None:
        # Launcher died between inserting the row and starting the supervisor, or is about to
        # record it: only an old row is certainly orphaned.
        return time.time() - job.created_at > QUEUED_ORPHAN_S
    return not is_alive(job.supervisor_pid, job.supervisor_start_time)


def reconcile(conn: sqlite3.Connection, jobs: Sequence[Job]) -> int:
    lost = 0
    for job in jobs:
        if job.state in ACTIVE_STATES and job.exit_code is None and processes_gone(job):
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
    with closing(connect(db_path(models_root))) as conn:
        return _refresh(conn)


def _refresh(conn: sqlite3.Connection) -> int:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE state IN ('queued', 'running', 'stopping')"
    ).fetchall()
    return reconcile(conn, [job_from_row(r) for r in rows])


# --- reading ------------------------------------------------------------------------------------

def list_jobs(models_root: Path | str) -> list[Job]:
    """All jobs of this models root, newest first, after reconciling with the process table."""
    with closing(connect(db_path(models_root))) as conn:
        _refresh(conn)
        return [job_from_row(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id DESC")]


def get_job(models_root: Path | str, job_id: int) -> Job:
    with closing(connect(db_path(models_root))) as conn:
        reconcile(conn, [fetch_job(conn, job_id)])
        return fetch_job(conn, job_id)


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
    return terminal_text(data.decode("utf-8", errors="replace"), cut=start > 0)


def terminal_text(text: str, cut: bool = False) -> str:
    lines = text.split("\n")
    if cut and len(lines) > 1:
        lines = lines[1:]  # the first line starts mid-way: drop the fragment
    out = []
    for line in lines:
        line = line.rstrip("\r")  # CRLF endings are not redraws
        out.append(line.rsplit("\r", 1)[-1])
    return "\n".join(out)


