"""training.jobs (registry, control, supervisor) with real processes and real signals: nothing about processes is mocked.

Two kinds of child program:
- stand-ins (``python -c ...`` through ``launch(..., _program_argv=...)``): they receive exactly
  the flags the trainer would, start in milliseconds, and make exit codes, ignored signals and
  forked grandchildren easy to arrange;
- the real CLI (``python -m training``) on tiny synthetic runs, for the end-to-end promises:
  checkpoints on disk, a stop that leaves a resumable checkpoint, a crash recorded with its code.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cli_helpers import kill_job_leftovers
from training import jobs
from training.jobs import JobConflict
from training.jobs.registry import terminal_text
from training.lock import ExperimentLock
from training.naming import epoch_checkpoint_name, experiment_name
from training.proc import is_alive, process_start_time

REPO = Path(__file__).resolve().parent.parent
HAVE_CLI = (REPO / "training" / "cli.py").exists()
needs_cli = pytest.mark.skipif(not HAVE_CLI, reason="training/cli.py is not written yet")

TINY = dict(dataset="synthetic", train_size=32, val_size=16, clip_samples=4000, batch_size=8,
            num_epochs=2, model_type="lcnn")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "models"
    r.mkdir()
    return r


@pytest.fixture(autouse=True)
def _no_leftover_jobs(request: pytest.FixtureRequest):
    """Whatever a test leaves running is killed (by pid + start time, never by name)."""
    yield
    root = request.node.funcargs.get("root")
    if root is not None:
        kill_job_leftovers(root)


def standin(body: str) -> list[str]:
    """A stand-in trainer: ``python -c body``; it sees the job's flags in sys.argv[1:]."""
    return [sys.executable, "-c", textwrap.dedent(body)]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_done(root: Path, job_id: int, timeout: float) -> jobs.Job:
    def done():
        job = jobs.get_job(root, job_id)
        return job if not job.is_active else None

    try:
        return wait_for(done, timeout, f"job {job_id} to finish")
    except AssertionError:
        raise AssertionError(f"job {job_id} still {jobs.get_job(root, job_id).state}; log:\n"
                             + jobs.tail_log(root, job_id, 4000)) from None


def wait_running(root: Path, job_id: int, timeout: float = 20) -> jobs.Job:
    return wait_for(lambda: (j := jobs.get_job(root, job_id)).pid and j, timeout, f"job {job_id} pid")


def wait_log(root: Path, job_id: int, text: str, timeout: float = 20) -> str:
    def seen():
        log = jobs.tail_log(root, job_id, 65536)
        return log if text in log else None

    return wait_for(seen, timeout, f"{text!r} in job {job_id}'s log")


# --- argv and validation (no processes) -----------------------------------------------------------

def test_build_argv_and_command_line(root: Path) -> None:
    args = dict(TINY, models_root=str(root), lr=1e-06, comment="x y")
    argv = jobs.build_argv("fresh", args)
    assert argv[:4] == [sys.executable, "-u", "-m", "training"]
    assert argv[4] == "--fresh_start"
    assert argv[argv.index("--models_root") + 1] == str(root)
    assert "--lr" not in argv  # the default is left out of a fresh run
    assert jobs.command_line("fresh", args) == (
        "python main.py --fresh_start --model_type lcnn --num_epochs 2 --batch_size 8 "
        f"--comment 'x y' --train_size 32 --val_size 16 --clip_samples 4000 --models_root {root}")
    ckpt = str(root / "e" / "c.pth")
    resume = jobs.build_argv("resume", {"model_path": ckpt, "num_epochs": 100, "models_root": str(root)})
    # An explicit value overrides the checkpoint's even when it equals the default: kept.
    assert resume[4:] == ["--resume", "--num_epochs", "100", "--models_root", str(root), "--model_path", ckpt]
    assert jobs.build_argv("auto_resume", {"use_contrastive": True, "comment": "-a"})[4:7] == [
        "--auto_resume", "--use_contrastive", "--comment=-a"]
    assert jobs.build_argv("pretrained", {"model_path": ckpt})[4] == "--fresh_start"


@pytest.mark.parametrize("mode, args, message", [
    ("train", {}, "unknown mode"),
    ("fresh", {"nosuch": 1}, "unknown option"),
    ("fresh", {"resume": True}, "set by the mode"),
    ("resume", {}, "resume requires a checkpoint path"),
    ("pretrained", {"model_path": ""}, "requires a checkpoint path"),
    ("fresh", {"model_path": "x.pth"}, "takes no model_path"),
    ("fresh", {"model_type": "resnet"}, "must be one of"),
    ("fresh", {"num_epochs": "many"}, "needs an integer"),
    ("fresh", {"comment": "../../etc"}, "must not contain"),
])
def test_invalid_requests_are_refused(root: Path, mode: str, args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        jobs.launch(root, mode, args)
    assert not jobs.db_path(root).exists() or jobs.list_jobs(root) == []


def test_model_path_outside_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="outside the models root"):
        jobs.launch(root, "resume", {"model_path": str(outside)})
    # A path that looks inside but walks out, and a symlink inside that points outside.
    with pytest.raises(ValueError, match="outside the models root"):
        jobs.launch(root, "pretrained", {"model_path": str(root / ".." / "elsewhere.pth")})
    (root / "exp").mkdir()
    (root / "exp" / "link.pth").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the models root"):
        jobs.launch(root, "resume", {"model_path": str(root / "exp" / "link.pth")})
    with pytest.raises(ValueError, match="does not exist"):
        jobs.launch(root, "resume", {"model_path": str(root / "exp" / "missing.pth")})


def test_tail_log_reads_like_a_terminal() -> None:
    raw = "epoch 1\r\n  0%|  | 0/4\r 50%|# | 2/4\r100%|##| 4/4\nval EER 1.0%\n 10%|"
    assert terminal_text(raw) == "epoch 1\n100%|##| 4/4\nval EER 1.0%\n 10%|"
    assert terminal_text("ent line\nnext\n", cut=True) == "next\n"


# --- lifecycle with stand-in programs -------------------------------------------------------------

SLEEPER = """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: (print("saving", flush=True), sys.exit(143)))
    print("ready", sys.argv[1:], flush=True)
    for i in range(600):
        print(f"\\r{i}", end="", flush=True)
        time.sleep(0.1)
"""


def test_lifecycle_isolation_conflict_and_clean_stop(root: Path) -> None:
    t0 = time.monotonic()
    job = jobs.launch(root, "fresh", {"model_type": "lcnn", "comment": "a"}, _program_argv=standin(SLEEPER))
    assert time.monotonic() - t0 < 1.0
    assert job.state == "queued" and job.experiment == experiment_name({"model_type": "lcnn", "comment": "a"})
    assert job.log_path == str(root / ".jobs" / "logs" / f"{job.id}.log")
    job = wait_running(root, job.id)
    wait_log(root, job.id, "ready")
    assert job.state == "running" and is_alive(job.pid, job.pid_start_time)
    # Own session and process group for both: a Ctrl-C in our terminal reaches neither, and a
    # stop signals the trainer's group without touching the supervisor.
    assert os.getpgid(job.pid) == job.pid and os.getsid(job.pid) == job.pid
    assert os.getsid(job.supervisor_pid) == job.supervisor_pid != os.getsid(0)

    with pytest.raises(JobConflict, match=f"job {job.id} .*pid {job.pid}"):
        jobs.launch(root, "auto_resume", {"model_type": "lcnn", "comment": "a"}, _program_argv=standin(SLEEPER))
    other = jobs.launch(root, "fresh", {"model_type": "lcnn", "comment": "b"}, _program_argv=standin("pass"))

    t0 = time.monotonic()
    assert jobs.stop(root, job.id, grace_s=20).state == "stopping"
    assert time.monotonic() - t0 < 0.5  # the supervisor does the waiting
    done = wait_done(root, job.id, 20)
    assert (done.state, done.exit_code, done.error) == ("stopped", 143, None)
    assert "saving" in jobs.tail_log(root, job.id)
    assert jobs.stop(root, job.id).state == "stopped"  # stopping a finished job changes nothing
    assert wait_done(root, other.id, 20).state == "succeeded"
    assert [j.id for j in jobs.list_jobs(root)] == [other.id, job.id]  # newest first


def test_live_lock_holder_blocks_launch(root: Path) -> None:
    args = {"model_type": "lcnn", "comment": "held"}
    with ExperimentLock(root / experiment_name(args)):  # e.g. a run started from a terminal
        with pytest.raises(JobConflict, match=f"pid {os.getpid()}"):
            jobs.launch(root, "fresh", args, _program_argv=standin("pass"))


def test_stop_escalates_to_sigkill_of_the_whole_group(root: Path) -> None:
    stubborn = """
        import signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "60"])  # a grandchild in the same process group
        print("grandchild", child.pid, flush=True)
        time.sleep(60)
    """
    job = jobs.launch(root, "fresh", {"comment": "stubborn"}, _program_argv=standin(stubborn))
    log = wait_log(root, job.id, "grandchild")
    grandchild = int(log.split("grandchild ")[1].split()[0])
    grandchild_start = process_start_time(grandchild)
    jobs.stop(root, job.id, grace_s=0.5)
    done = wait_done(root, job.id, 15)
    assert (done.state, done.exit_code) == ("stopped", -signal.SIGKILL)
    wait_for(lambda: not is_alive(grandchild, grandchild_start), 5, "the grandchild to die")


def test_exit_codes_and_signals_without_stop_are_failures(root: Path) -> None:
    crash = jobs.launch(root, "fresh", {"comment": "crash"},
                        _program_argv=standin("import sys; print('boom: bad data path'); sys.exit(2)"))
    killed = jobs.launch(root, "fresh", {"comment": "killed"},
                         _program_argv=standin("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    crash, killed = wait_done(root, crash.id, 20), wait_done(root, killed.id, 20)
    assert (crash.state, crash.exit_code) == ("failed", 2)
    assert "usage error" in crash.error and "boom: bad data path" in crash.error
    assert (killed.state, killed.exit_code, killed.error) == ("failed", -9, "killed by SIGKILL")


def test_supervisor_records_exit_after_launcher_exits(root: Path) -> None:
    launcher = textwrap.dedent(f"""
        import sys
        from training import jobs
        job = jobs.launch({str(root)!r}, "fresh", {{"comment": "orphan"}}, _program_argv=[
            sys.executable, "-c", "import sys, time; time.sleep(1.5); sys.exit(7)"])
        print(job.id)
    """)
    out = subprocess.run([sys.executable, "-c", launcher], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout.strip())
    assert jobs.get_job(root, job_id).is_active  # the launcher is gone, the job is not
    done = wait_done(root, job_id, 20)
    assert (done.state, done.exit_code) == ("failed", 7)

    # A new Python process reading the registry sees the same record.
    reader = ("import json, sys; from training import jobs; "
              "print(json.dumps([[j.id, j.state, j.exit_code] for j in jobs.list_jobs(sys.argv[1])]))")
    out = subprocess.run([sys.executable, "-c", reader, str(root)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert json.loads(out.stdout) == [[job_id, "failed", 7]]


def test_supervisor_killed_job_still_stops_then_reads_lost(root: Path) -> None:
    job = jobs.launch(root, "fresh", {"comment": "nosup"}, _program_argv=standin(SLEEPER))
    wait_log(root, job.id, "ready")
    job = jobs.get_job(root, job.id)
    os.kill(job.supervisor_pid, signal.SIGKILL)  # e.g. the OOM killer picked it
    wait_for(lambda: not is_alive(job.supervisor_pid, job.supervisor_start_time), 5, "supervisor death")
    assert jobs.get_job(root, job.id).state == "running"  # the trainer itself is still alive
    jobs.stop(root, job.id, grace_s=5)  # no supervisor: signalled from here
    wait_for(lambda: not is_alive(job.pid, job.pid_start_time), 10, "the trainer to stop")
    lost = jobs.get_job(root, job.id)
    assert (lost.state, lost.exit_code) == ("lost", None) and "exit code unknown" in lost.error


def test_reused_pid_is_not_taken_for_a_live_job(root: Path) -> None:
    jobs.list_jobs(root)  # creates the registry
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        real_start = process_start_time(unrelated.pid)
        with sqlite3.connect(jobs.db_path(root)) as db:
            for comment, start in (("reused", real_start + 1), ("same", real_start)):
                db.execute(
                    "INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at,"
                    " pid, pid_start_time, supervisor_pid, supervisor_start_time)"
                    " VALUES (?, ?, 'fresh', '[]', '', 'running', ?, ?, ?, ?, ?)",
                    (comment, str(root / comment), time.time(), unrelated.pid, start, unrelated.pid, start))
        states = {j.experiment: j.state for j in jobs.list_jobs(root)}
        # Same pid, different start time: the job's process died and the number was handed on.
        assert states == {"reused": "lost", "same": "running"}
        assert "exit code unknown" in [j for j in jobs.list_jobs(root) if j.experiment == "reused"][0].error
    finally:
        unrelated.kill()
        unrelated.wait()
    assert {j.experiment: j.state for j in jobs.list_jobs(root)} == {"reused": "lost", "same": "lost"}


# --- the real training CLI ----------------------------------------------------------------------

def pth_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []


@needs_cli
@pytest.mark.slow
def test_real_run_succeeds_with_checkpoints(root: Path) -> None:
    job = jobs.launch(root, "fresh", TINY)
    done = wait_done(root, job.id, 120)
    assert (done.state, done.exit_code) == ("succeeded", 0), jobs.tail_log(root, job.id)
    files = pth_files(Path(done.exp_dir))
    assert {"checkpoint_epoch_1.pth", "checkpoint_epoch_2.pth", "best_checkpoint_eer.pth"} <= set(files), files


@needs_cli
@pytest.mark.slow
def test_real_stop_leaves_a_checkpoint_that_resumes(root: Path) -> None:
    # Epochs long enough (a few seconds) that the stop lands while two of three remain.
    args = dict(TINY, train_size=384, num_epochs=3, comment="stopme")
    job = jobs.launch(root, "fresh", args)
    exp_dir = root / experiment_name(args)
    first, last = epoch_checkpoint_name(1, "stopme"), epoch_checkpoint_name(3, "stopme")
    wait_for(lambda: first in pth_files(exp_dir) or not jobs.get_job(root, job.id).is_active, 120,
             "the first epoch checkpoint")
    with pytest.raises(JobConflict, match=f"job {job.id}"):
        jobs.launch(root, "auto_resume", args)
    # A resume naming only the checkpoint targets the same folder: the hyperparameters not
    # given come from the checkpoint's stored args, as the CLI takes them.
    with pytest.raises(JobConflict, match=f"job {job.id}"):
        jobs.launch(root, "resume", {"model_path": str(exp_dir / first)})
    jobs.stop(root, job.id, grace_s=60)
    done = wait_done(root, job.id, 90)
    log = jobs.tail_log(root, job.id, 20000)
    assert (done.state, done.exit_code) == ("stopped", 143), log
    assert last not in pth_files(exp_dir), log
    kept = (exp_dir / first).stat()

    again = jobs.launch(root, "auto_resume", args)
    done = wait_done(root, again.id, 120)
    log = jobs.tail_log(root, again.id, 20000)
    assert (done.state, done.exit_code) == ("succeeded", 0), log
    assert "resuming from" in log.lower(), log
    assert last in pth_files(exp_dir)
    # Resumed, not restarted: epoch 1 was not trained (and saved) again.
    assert (exp_dir / first).stat().st_mtime_ns == kept.st_mtime_ns


@needs_cli
@pytest.mark.slow
def test_real_resume_from_corrupt_checkpoint_fails_with_2(root: Path) -> None:
    bad = root / "broken" / "checkpoint_epoch_1.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint at all")
    job = jobs.launch(root, "resume", dict(TINY, model_path=str(bad)))
    assert job.argv[job.argv.index("--model_path") + 1] == str(bad)
    done = wait_done(root, job.id, 120)
    assert (done.state, done.exit_code) == ("failed", 2), jobs.tail_log(root, job.id)
    assert "usage error" in done.error


def test_supervisor_log_holds_no_runpy_warning(root: Path) -> None:
    """The supervisor starts as ``python -m training.jobs supervise``: no module of the package
    is loaded twice, so the job's log opens with the supervisor's own line, not a RuntimeWarning."""
    job = wait_done(root, jobs.launch(root, "fresh", {"comment": "quiet"}, _program_argv=standin("pass")).id, 20)
    assert job.state == "succeeded"
    log = Path(job.log_path).read_text()
    assert "RuntimeWarning" not in log, log
    assert log.startswith("[jobs] job"), log
