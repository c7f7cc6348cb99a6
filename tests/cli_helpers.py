"""Running the real CLI in tests: as a subprocess (exit codes, signals) or in-process (speed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# The smallest real runs: lcnn on 32 one-quarter-second synthetic clips. Without RawBoost (the
# default --algo 3 drowns clips this short in noise, so nothing would improve): these runs test the
# checkpoints, and tests/test_rawboost.py the augmentation.
TINY_ANY_ALGO = ["--model_type", "lcnn", "--train_size", "32", "--val_size", "16", "--clip_samples", "4000",
                 "--batch_size", "8", "--lr", "0.001"]
TINY = [*TINY_ANY_ALGO, "--algo", "0"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), **(extra or {}))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# tqdm reads TQDM_* overrides from the environment: with these the progress bar prints after
# every step ("| 3/8 ["), so a test can watch a run's position inside an epoch.
BAR_EVERY_STEP = {"TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}


def run_main(args: list[str], cwd: Path, timeout: float = 300) -> Result:
    """``python main.py ARGS`` in ``cwd`` (so the default ``models/`` lands there)."""
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_cli(args: list[str], models_root: Path) -> Result:
    """``training.cli.main(ARGS --models_root ROOT)`` in this process: the same code path as
    ``python main.py`` without an interpreter and torch start-up per run (for tests that make
    many tiny runs). One torch thread, as ``child_env`` gives subprocesses (on a loaded machine
    thread contention makes tiny steps many times slower). Output is captured; torch's thread
    count and determinism switch are put back."""
    import contextlib
    import io

    from training.cli import main

    out, err = io.StringIO(), io.StringIO()
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--models_root", str(models_root)])
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    return Result(code, out.getvalue(), err.getvalue())


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256) and every folder (-> "dir")."""
    import hashlib

    out = {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def start_main(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=cwd, env=child_env(env),
                            stdout=out, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout: float = 120, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def stop_with(proc: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 120) -> int:
    proc.send_signal(signum)
    return proc.wait(timeout=timeout)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def logged_history(folder: Path) -> list[dict]:
    """The run's per-epoch rows from its training_log.csv (the last row written per epoch),
    numbers as numbers: where the history lives (training.run_history), not in each checkpoint."""
    from training.naming import LOG_NAME
    from training.run_history import latest_rows, read_log

    def typed(key: str, value: str):
        return value if key == "experiment" else int(value) if key == "epoch" else float(value)

    return [{k: typed(k, v) for k, v in row.items()} for row in latest_rows(read_log(folder / LOG_NAME))]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def kill_job_leftovers(models_root: Path) -> None:
    """Whatever a test left running in that root's job registry is killed (by pid + start time,
    never by name), supervisors included."""
    from training import jobs
    from training.proc import is_alive

    if not jobs.db_path(models_root).exists():
        return
    for job in jobs.list_jobs(models_root):
        for pid, start in ((job.pid, job.pid_start_time), (job.supervisor_pid, job.supervisor_start_time)):
            if is_alive(pid, start):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
