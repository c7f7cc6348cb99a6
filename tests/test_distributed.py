"""torchrun + DistributedDataParallel (issue 15), with real ``torchrun`` from the venv
(``python -m torch.distributed.run --standalone``: a free rendezvous port per run) and gloo:

* a 2-process run SIGKILLed as a whole (torchrun and its workers), auto-resumed, stopped by
  SIGTERM mid-epoch, auto-resumed again, ends bit-identical to an uninterrupted 2-process run
  (weights, optimizer, every rank's RNG state, metrics, the log);
* SIGTERM to one rank alone: every rank stops at the same step and exits 143, and exactly one
  interrupt checkpoint is written; all the while only rank 0 writes under the models root
  (a Python audit hook in every rank, ``tests/rank_audit``, sees rank 0's writes and no other's);
* a checkpoint written by 2 processes resumes in 1 (mid-epoch too) and 1 -> 2, with the guide's
  semantics, a warning that the per-process batch changed, and the world size recorded;
* a usage error found on rank 0 (an unusable --model_path) ends every rank with exit 2 at once,
  one error line, nothing created;
* the global batch is split across ranks the same way whatever the world size (training.shards).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import BAR_EVERY_STEP, REPO, TINY, child_env, logged_history, run_main, wait_for
from kill_harness import compare_runs, compare_states, experiment_folder, unreadable_files
from training.checkpoint.fsutil import sidecar_path
from training.naming import epoch_checkpoint_name, interrupt_checkpoint_name
from training.shards import rank_share

COMMENT = "ddp"
STEPS = 8  # 64 clips / 8 per global batch; 2 s clips make a step long enough to aim a signal at
ARGS = [*TINY, "--train_size", "64", "--clip_samples", "32000", "--num_epochs", "3", "--comment", COMMENT,
        "--auto_resume"]
AUDIT_DIR = Path(__file__).resolve().parent / "rank_audit"

pytestmark = pytest.mark.slow


# --- running torchrun ------------------------------------------------------------------------------

def torchrun_argv(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(REPO / "main.py"), *args]


def probed(exits: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run whose ranks load tests/rank_audit (each rank's exit code into ``exits``)."""
    env = child_env({"RANK_EXIT_REPORT": str(exits), **(env or {})})
    env["PYTHONPATH"] = f"{AUDIT_DIR}{os.pathsep}{REPO}"
    return env


def start_torchrun(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Ranks' exit codes go to ``log`` with the suffix ``.exits`` (``rank_exits``)."""
    return subprocess.Popen(torchrun_argv(args), cwd=cwd, env=probed(log.with_suffix(".exits"), {**BAR_EVERY_STEP, **(env or {})}),
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def run_torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 300) -> tuple[int, str, dict[int, int]]:
    """(torchrun's exit code, its output, each rank's exit code)."""
    exits = cwd / f"exits_{time.monotonic_ns()}.txt"
    proc = subprocess.run(torchrun_argv(args, nproc), cwd=cwd, env=probed(exits), capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, rank_exits(exits)


def rank_exits(report: Path) -> dict[int, int]:
    """rank -> the exit code it gave ``sys.exit`` (a rank killed by a signal is absent)."""
    lines = report.read_text().splitlines() if report.exists() else []
    return {int(rank): int(code) for rank, code in (re.fullmatch(r"rank (\d+) exit (-?\d+)", l).groups() for l in lines)}


def workers(torchrun: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes (read from their environment)."""
    out = {}
    for task in Path(f"/proc/{torchrun.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
            if ranks:
                out[int(ranks[0])] = int(pid)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def progress_shown(log: Path, epoch: int, step: int) -> bool:
    shown = re.compile(rf"Epoch {epoch}:[^\r\n|]*\|[^|]*\| {step}/{STEPS} \[")
    return shown.search(log.read_text(errors="replace")) is not None


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 2-process run of ARGS: its experiment folder."""
    cwd = tmp_path_factory.mktemp("ddp_reference")
    code, out, exits = run_torchrun(ARGS, cwd)
    assert code == 0 and exits == {0: 0, 1: 0}, out
    return experiment_folder(cwd)


def assert_same_run(reference: Path, folder: Path) -> None:
    tensors, metrics = compare_runs(reference, folder)
    assert tensors == [] and metrics == [], f"differs from the uninterrupted run: {tensors[:10]} {metrics[:10]}"
    last = epoch_checkpoint_name(3, COMMENT)
    ref, got = (torch.load(f / last, weights_only=True) for f in (reference, folder))
    assert ref["world_size"] == got["world_size"] == 2
    assert compare_states("rng", ref["rng_states_by_rank"], got["rng_states_by_rank"]) == []
    assert unreadable_files(folder) == []


# --- exact resume -----------------------------------------------------------------------------------

def test_two_process_run_killed_and_stopped_resumes_bit_identical(reference: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / reference.name

    # 1. SIGKILL the whole job in epoch 2: torchrun and every worker (they run in their own sessions).
    killed = start_torchrun(ARGS, tmp_path, tmp_path / "killed.log")
    try:
        wait_for(lambda: sidecar_path(folder / epoch_checkpoint_name(1, COMMENT)).exists()
                 and progress_shown(tmp_path / "killed.log", 2, 2))
        pids = workers(killed)
        assert sorted(pids) == [0, 1]
        for pid in [*pids.values(), killed.pid]:
            os.kill(pid, signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait(timeout=60)
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=30)

    # 2. Auto-resume (from epoch 1), then SIGTERM to torchrun (it forwards it to every rank) mid-epoch 2.
    stopped_log = tmp_path / "stopped.log"
    stopped = start_torchrun(ARGS, tmp_path, stopped_log)
    try:
        wait_for(lambda: progress_shown(stopped_log, 2, 3))
        stopped.send_signal(signal.SIGTERM)
        stopped.wait(timeout=120)
    finally:
        if stopped.poll() is None:
            stopped.kill()
    out = stopped_log.read_text(errors="replace")
    assert "Auto-resume: resuming from" in out and "epoch 1 completed" in out, out
    assert rank_exits(stopped_log.with_suffix(".exits")) == {0: 143, 1: 143}, out
    assert len(re.findall(r"Stopped by SIGTERM in epoch 2 after step \d+: saved", out)) == 1, out
    interrupt = torch.load(folder / interrupt_checkpoint_name(COMMENT), weights_only=True)
    assert interrupt["world_size"] == 2 and 0 < interrupt["step_in_epoch"] < STEPS
    assert len(interrupt["partial"]["per_rank"]) == 2 and len(interrupt["rng_states_by_rank"]) == 2

    # 3. Auto-resume to the end: the same run as the uninterrupted one, bit for bit.
    code, out, exits = run_torchrun(ARGS, tmp_path)
    assert code == 0 and exits == {0: 0, 1: 0}, out
    assert f"resuming from {(folder / interrupt_checkpoint_name(COMMENT)).relative_to(tmp_path)}" in out, out
    assert not (folder / interrupt_checkpoint_name(COMMENT)).exists()
    assert_same_run(reference, folder)


# --- one rank signalled; only rank 0 writes -----------------------------------------------------------

def test_sigterm_to_one_rank_stops_all_with_one_checkpoint_and_only_rank_0_writes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    report = tmp_path / "writes.txt"
    audit = {"RANK_AUDIT_ROOT": str(root), "RANK_AUDIT_REPORT": str(report)}
    log = tmp_path / "run.log"
    proc = start_torchrun(ARGS, tmp_path, log, env=audit)
    try:
        wait_for(lambda: progress_shown(log, 2, 3))
        pids = workers(proc)
        os.kill(pids[1], signal.SIGTERM)  # rank 1 alone: rank 0 learns of it at the next step
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text(errors="replace")
    assert proc.returncode != 0
    assert rank_exits(log.with_suffix(".exits")) == {0: 143, 1: 143}, out
    assert not any(alive(pid) for pid in pids.values())
    assert len(re.findall(r"Stopped by SIGTERM in epoch 2 after step \d+: saved", out)) == 1, out
    folder = experiment_folder(tmp_path)
    assert sorted(p.name for p in folder.glob("*interrupt*.pth")) == [interrupt_checkpoint_name(COMMENT)]
    assert [p.name for p in folder.glob(".*tmp*")] == []

    writes = report.read_text().splitlines()
    assert any(line.startswith("rank 0 ") and "checkpoint_interrupt" in line for line in writes), writes
    assert any(line.startswith("rank 0 ") and "training_log.csv" in line for line in writes), writes
    assert [line for line in writes if not line.startswith("rank 0 ")] == []

    # The 2-process mid-epoch checkpoint resumes in one process: the merged sums of both ranks.
    result = run_main(ARGS, tmp_path)
    assert result.code == 0, result.text
    assert "written by 2 process(es), this run has 1" in result.out, result.out
    assert "epoch 1 completed" in result.out and "Done: 3 epochs" in result.out, result.out
    assert torch.load(folder / epoch_checkpoint_name(3, COMMENT), weights_only=True)["world_size"] == 1


# --- changing the world size ------------------------------------------------------------------------

def test_checkpoint_of_two_processes_resumes_in_one_and_back_with_a_warning(reference: Path, tmp_path: Path) -> None:
    base = [arg for arg in ARGS if arg != "--auto_resume"]
    source = reference / epoch_checkpoint_name(1, COMMENT)  # read only: the runs below write to their own folders

    one = run_main([*base, "--resume", "--model_path", str(source), "--comment", "one"], tmp_path)
    assert one.code == 0, one.text
    warning = [line for line in one.out.splitlines() if line.startswith("Warning: the checkpoint was written by")]
    assert warning == ["Warning: the checkpoint was written by 2 process(es), this run has 1: each step still "
                       "takes --batch_size 8 clips in all, but each process now computes 8 clips instead of 4, "
                       "so the effective batch of batch-norm statistics and in-batch pairs changed: the result "
                       "will not equal an uninterrupted 2-process run"], one.out
    assert "epoch 1 completed" in one.out and "epochs 2-3" in one.out, one.out
    one_folder = tmp_path / "models" / reference.name.replace(f"_{COMMENT}", "_one")
    after_one = torch.load(one_folder / epoch_checkpoint_name(2, "one"), weights_only=True)
    assert after_one["world_size"] == 1 and after_one["epoch"] == 2
    # the new folder logs what this run trained; earlier epochs stay in the source's log (the lineage)
    assert [row["epoch"] for row in logged_history(one_folder)] == [2, 3] and after_one["history_row"]["epoch"] == 2

    back = one_folder / epoch_checkpoint_name(2, "one")
    code, out, exits = run_torchrun([*base, "--resume", "--model_path", str(back), "--comment", "two"], tmp_path)
    assert code == 0 and exits == {0: 0, 1: 0}, out
    assert out.count("Warning: the checkpoint was written by 1 process(es), this run has 2") == 1, out
    assert "epoch 2 completed" in out and "epochs 3-3" in out, out
    two_folder = tmp_path / "models" / reference.name.replace(f"_{COMMENT}", "_two")
    two = torch.load(two_folder / epoch_checkpoint_name(3, "two"), weights_only=True)
    assert two["world_size"] == 2 and [row["epoch"] for row in logged_history(two_folder)] == [3]


# --- usage errors -------------------------------------------------------------------------------------

def test_usage_error_on_rank_0_ends_every_rank_with_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    started = time.monotonic()
    code, out, exits = run_torchrun([*TINY, "--resume", "--model_path", str(garbage)], tmp_path, timeout=120)
    assert code != 0 and time.monotonic() - started < 110
    assert exits == {0: 2, 1: 2}, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(garbage) in errors[0], out
    assert not (tmp_path / "models").exists()


def test_modes_of_one_process_are_refused_under_torchrun_in_one_line(tmp_path: Path) -> None:
    code, out, exits = run_torchrun([*TINY, "--list_checkpoints"], tmp_path, timeout=120)
    assert exits == {0: 2, 1: 2}, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == ["error: --list_checkpoints runs in one process: use python main.py for it, not torchrun"], out


# --- the split of a global batch (no processes) ---------------------------------------------------------

def test_every_rank_reads_its_share_of_the_same_global_batch() -> None:
    batch = [7, 3, 9, 1, 4, 8, 2, 6]
    for world in (1, 2, 3, 4):
        shares = [rank_share(batch, rank, world) for rank in range(world)]
        assert sorted(i for share in shares for i in share) == sorted(batch)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # A global batch with fewer clips than ranks (an epoch's last): no rank gets an empty one.
    assert [rank_share([5, 6], rank, 4) for rank in range(4)] == [[5], [6], [5], [6]]


def test_validation_split_over_ranks_equals_one_process_on_the_same_weights(reference: Path) -> None:
    """The 2-process run's epoch-1 validation (each rank scored half the batches; gathered) gives
    the loss, accuracy and EER one process computes with those weights, to the last bit."""
    from training.checkpoint.store import read_checkpoint_file
    from training.trainer import StartPlan, Trainer

    loaded = read_checkpoint_file(reference / epoch_checkpoint_name(1, COMMENT))
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks ran (torchrun's OMP_NUM_THREADS=1)
    try:
        trainer = Trainer(dict(loaded.full["args"]), StartPlan("resume", loaded), echo=lambda _: None)
        trainer._setup_device()
        trainer._setup_determinism()
        trainer._setup_data()
        trainer._setup_model()
        trainer.val_set.set_epoch(1)
        val = trainer._validate()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    assert (val["loss"], val["acc"], val["eer"]) == (loaded.full["val_loss"], loaded.full["val_acc"],
                                                     loaded.full["val_eer"])
