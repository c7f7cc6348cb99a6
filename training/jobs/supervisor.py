"""The supervisor: one small detached process per job, ``python -m training.jobs supervise DB ID``.

Only a parent can read a child's exit status, and the parent we would naturally use — the
dashboard — restarts, crashes and gets Ctrl-C'd while runs go on for days. So each job gets a
supervisor that starts the trainer, records its pid, waits for it and writes the exit code and
final state into the registry. It also carries out stop requests (SIGTERM, then SIGKILL after
a grace period).

**Sessions and process groups.** The supervisor and the trainer each call ``setsid``
(``start_new_session=True``): a Ctrl-C or a hang-up in the dashboard's terminal reaches
neither, and the trainer heads its own process group, so a stop signals the trainer *and*
whatever it forked (data-loader workers) without touching the supervisor. The supervisor
additionally catches SIGINT/SIGHUP with a no-op handler — not ``SIG_IGN``, which ``exec``
would pass on to the trainer and silently disable its Ctrl-C handling.

Also owns starting detached processes and signalling them (pid and process group).
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.jobs.registry import (ACTIVE_STATES, DEFAULT_GRACE_S, JobNotFound, Transaction, connect, fetch_job,
                                    terminal_text, update_job)
from training.proc import current_identity, process_start_time

# The folder that holds ``training/``: the trainer's cwd, so ``-m training`` imports this tree.
REPO_ROOT = Path(__file__).resolve().parents[2]
# How often a supervisor re-reads the registry when no signal woke it: covers a lost wake-up.
SUPERVISOR_POLL_S = 2.0
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
# How a supervisor is started: ``training/jobs/__main__.py`` (a package's ``__main__`` is not
# imported by the package itself, so runpy warns of no module loaded twice).
SUPERVISOR_MODULE = "training.jobs"

def start_supervisor(db: Path, job_id: int, log_path: Path) -> tuple[int, int | None]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # -S: the supervisor needs only the standard library and this tree (cwd), so skip
        # site-packages' .pth processing, a large share of interpreter start-up.
        proc = popen_detached(
            [sys.executable, "-u", "-S", "-m", SUPERVISOR_MODULE, "supervise", str(db), str(job_id)],
            log,
        )
    start = process_start_time(proc.pid)
    # Reap it when it ends, so a long-lived dashboard does not collect zombies.
    threading.Thread(target=proc.wait, name=f"reap-supervisor-{job_id}", daemon=True).start()
    return proc.pid, start


def popen_detached(argv: Sequence[str], log: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        list(argv), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
    )



def send_signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass



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
    for line in reversed(terminal_text(text, cut=True).splitlines()):
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
        self.conn = connect(db)

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
        with Transaction(self.conn):
            job = fetch_job(self.conn, self.job_id)
            update_job(self.conn, self.job_id, supervisor_pid=pid, supervisor_start_time=start)
        self.log_path = job.log_path
        if job.state not in ACTIVE_STATES:
            return 0
        if job.stop_requested_at is not None:
            self.finish("stopped", None, "stopped before it started")
            return 0
        self.say("$ " + job.command)
        try:
            child = popen_detached(job.argv, sys.stdout)
        except OSError as e:
            self.finish("failed", None, f"could not start: {e}")
            return 0
        with Transaction(self.conn):
            # Serialised with stop(): either it committed its flag before this (wait() reads
            # it next) or it will find the pid, and our handlers are installed by then.
            state = fetch_job(self.conn, self.job_id).state
            update_job(self.conn, self.job_id, pid=child.pid, pid_start_time=process_start_time(child.pid),
                    started_at=time.time(), state="running" if state == "queued" else state)
        self.say(f"started pid {child.pid}")
        code = self.wait(child)
        self.finish_child(code, child.pid)
        return 0

    def stop_request(self) -> tuple[float, float] | None:
        if self.terminate_requested:
            with Transaction(self.conn):
                job = fetch_job(self.conn, self.job_id)
                if job.stop_requested_at is None:
                    update_job(self.conn, self.job_id, state="stopping", stop_requested_at=time.time(),
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
                    signal_group(child.pid, signal.SIGTERM)
                    termed = True
                remaining = requested_at + grace - time.time()
                if remaining <= 0 and not killed:
                    self.say(f"still running after {grace:g}s: SIGKILL")
                    signal_group(child.pid, signal.SIGKILL)
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
        signal_group(pgid, signal.SIGKILL)
        job = fetch_job(self.conn, self.job_id)
        state, error = _outcome(code, job.stop_requested_at is not None)
        if state == "failed":
            last = _last_output_line(job.log_path)
            if last:
                error = f"{error}: {last}"
        self.finish(state, code, error)

    def finish(self, state: str, code: int | None, error: str | None) -> None:
        for attempt in range(5):  # the exit code is the one thing only we know: insist a little
            try:
                with Transaction(self.conn):
                    update_job(self.conn, self.job_id, state=state, exit_code=code,
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
    """Entry point of ``python -m training.jobs supervise <db> <id>``."""
    sup = _Supervisor(db, job_id)
    try:
        return sup.run()
    except JobNotFound:
        print(f"{SUPERVISOR_TAG} no job {job_id} in {db}", file=sys.stderr)
        return 2
    finally:
        sup.conn.close()


def main(argv: Sequence[str]) -> int:
    if len(argv) == 3 and argv[0] == "supervise":
        return supervise(argv[1], int(argv[2]))
    print("usage: python -m training.jobs supervise <jobs.sqlite> <job id>", file=sys.stderr)
    return 2

