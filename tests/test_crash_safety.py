"""Crash safety and exact resume with real training processes (issue 3).

* SIGKILL at random moments, inside saves too, ten times in a row with --auto_resume after each:
  the result is bit-identical to a run never interrupted, and every file on disk is readable;
* SIGTERM / SIGINT mid-epoch: exit 143 / 130, a clear message, an interrupt checkpoint that
  resumes to the bit-identical result; in the first epoch too (no best EER yet), at its first,
  middle and last step, through --auto_resume and --resume --model_path alike, and the
  dashboard's catalog calls such a folder interrupted and its checkpoint resumable;
* the folder lock: a second run is refused at once (exit 3, naming the holder); after SIGKILL of
  the holder a new run is not blocked;
* a full disk: a save fails mid-write (RLIMIT_FSIZE) or is refused before writing (a small
  tmpfs); earlier checkpoints stay intact, no temp file is left, the message says what and where;
* corrupt and hostile files newer than the good ones are skipped by --auto_resume, one line
  each, and are never deleted, modified or unpickled;
* --keep_last keeps the newest, the best and the resumed-from checkpoints, counting numerically.

The reference run (6 epochs of 128 tiny clips) is trained once per module; each test compares
its own folder with it through ``kill_harness.compare_runs``.
"""

from __future__ import annotations

import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ckpt_factories import hostile_plain_pickle, hostile_torch_file
from cli_helpers import BAR_EVERY_STEP, REPO, TINY, child_env, logged_history, run_main, start_main, stop_with, wait_for
from kill_harness import (
    Timing,
    check_result,
    compare_runs,
    compare_states,
    experiment_folder,
    kill_loop,
    run_reference,
    temp_files,
    unreadable_files,
)
from training.dashboard import catalog
from training.dashboard import views
from training.checkpoint.fsutil import remove_checkpoint, sidecar_path
from training.checkpoint.meta import read_checkpoint_info
from training.checkpoint.sidecar import read_sidecar
from training.lock import read_lock_holder
from training.naming import best_checkpoint_name, epoch_checkpoint_name, interrupt_checkpoint_name
from training.checkpoint.store import link_or_copy, read_checkpoint_file, save_checkpoint
from training.checkpoint.fsutil import remove_checkpoint
from training.naming import LOG_NAME
from training.trainer import StartPlan, Trainer

COMMENT = "crash"
EPOCHS = 8  # room for 10 kills that each let the run make some progress
ARGS = [*TINY, "--train_size", "128", "--num_epochs", str(EPOCHS), "--comment", COMMENT, "--auto_resume"]
KILLS = 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Timing]:
    """The uninterrupted run every test compares with: (its experiment folder, its timing)."""
    cwd = tmp_path_factory.mktemp("reference")
    timing = run_reference(ARGS, cwd)
    return experiment_folder(cwd), timing


def epoch_file(folder: Path, epoch: int) -> Path:
    return folder / epoch_checkpoint_name(epoch, COMMENT)


def copy_run_until(reference: Path, cwd: Path, epoch: int) -> Path:
    """The reference folder as it was right after ``epoch`` was saved (mtimes kept, so sidecars
    still vouch for their files): later checkpoints and log rows gone, best file as it was then."""
    folder = cwd / "models" / reference.name
    shutil.copytree(reference, folder)
    for later in range(epoch + 1, EPOCHS + 1):
        remove_checkpoint(epoch_file(folder, later))
    best_then = torch.load(epoch_file(folder, epoch), weights_only=True)["best_epoch"]
    publish_best(folder, best_then)
    lines = (folder / LOG_NAME).read_text().splitlines(keepends=True)
    (folder / LOG_NAME).write_text("".join(lines[: epoch + 1]))
    return folder


def publish_best(folder: Path, epoch: int | None) -> None:
    """Point the best file at ``epoch``'s checkpoint (as the trainer does), or remove it."""
    best = folder / best_checkpoint_name(COMMENT)
    if epoch is None:
        remove_checkpoint(best)
        return
    source = epoch_file(folder, epoch)
    link_or_copy(source, best, read_checkpoint_info(source).sha256, read_sidecar(source))


def assert_same_as_reference(reference: Path, folder: Path) -> None:
    tensors, metrics = compare_runs(reference, folder)
    assert tensors == [] and metrics == [], f"differs from the uninterrupted run: {tensors[:10]} {metrics[:10]}"
    assert unreadable_files(folder) == []


# --- SIGKILL at random moments --------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_ten_times_in_a_row_resumes_bit_identical(reference, tmp_path: Path) -> None:
    ref_folder, timing = reference
    report = check_result(kill_loop(ARGS, tmp_path, kills=KILLS, seed=2026, timing=timing), ref_folder, tmp_path)
    assert report.problems() == [], "\n".join(report.problems())
    assert report.summary() == f"kills survived {KILLS}/{KILLS}, unreadable files 0, mismatched tensors 0"
    # Some kills must have landed inside a save (the save's temporary file was left behind),
    # and the runs must have got somewhere between kills.
    assert report.inside_save >= 1, [k for k in report.kills]
    assert max(k.complete_epoch for k in report.kills) >= 2, [k for k in report.kills]


def test_harness_comparison_catches_one_changed_value(reference, tmp_path: Path) -> None:
    """The comparison the kill tests rely on is not blind: one changed weight, one optimizer
    step count and one log value are each reported, by name."""
    ref_folder, _ = reference
    folder = tmp_path / "models" / ref_folder.name
    shutil.copytree(ref_folder, folder)
    ckpt = torch.load(epoch_file(folder, 2), weights_only=True)
    name = next(iter(ckpt["model_state_dict"]))
    ckpt["model_state_dict"][name].view(-1)[0] += 1e-6
    ckpt["optimizer_state_dict"]["state"][0]["step"] += 1
    torch.save(ckpt, epoch_file(folder, 2))
    log = (folder / LOG_NAME).read_text().splitlines(keepends=True)
    log[3] = log[3].replace(",", ",9", 1)  # epoch 3's train_loss gains a leading digit
    (folder / LOG_NAME).write_text("".join(log))
    tensors, metrics = compare_runs(ref_folder, folder)
    assert tensors == [f"{epoch_file(folder, 2).name}:model_state_dict.{name}",
                       f"{epoch_file(folder, 2).name}:optimizer_state_dict.state.0.step"]
    assert metrics == [f"{LOG_NAME}: rows differ for epochs ['3']"]


def test_kill_between_checkpoint_and_best_link_republishes_best(reference, tmp_path: Path) -> None:
    """The one window random kills rarely hit: epoch L improved, its checkpoint and sidecar are
    on disk, the best file still points at the previous best and the log lacks row L."""
    ref_folder, _ = reference
    history = logged_history(ref_folder)
    improved = [row["epoch"] for i, row in enumerate(history)
                if row["val_eer"] < min((r["val_eer"] for r in history[:i]), default=float("inf"))]
    last = improved[-1]
    folder = copy_run_until(ref_folder, tmp_path, last)
    publish_best(folder, improved[-2] if len(improved) > 1 else None)
    lines = (folder / LOG_NAME).read_text().splitlines(keepends=True)
    (folder / LOG_NAME).write_text("".join(lines[:-1]))
    result = run_main(ARGS, tmp_path)
    assert result.code == 0, result.text
    assert f"republished it from {epoch_file(folder, last).name}" in result.out
    assert_same_as_reference(ref_folder, folder)


# --- SIGTERM / SIGINT mid-epoch -------------------------------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_mid_epoch_saves_interrupt_checkpoint_that_resumes_exactly(reference, tmp_path: Path,
                                                                               signum: int, code: int) -> None:
    ref_folder, _ = reference
    folder = tmp_path / "models" / ref_folder.name
    proc = start_main(ARGS, tmp_path, tmp_path / "stopped.log")
    wait_for(lambda: sidecar_path(epoch_file(folder, 1)).exists())  # epoch 2 is under way now
    assert stop_with(proc, signum) == code
    out = (tmp_path / "stopped.log").read_text()
    name = signal.Signals(signum).name
    interrupt = folder / interrupt_checkpoint_name(COMMENT)
    match = re.search(rf"Stopped by {name} in epoch 2 after step (\d+): saved {re.escape(str(interrupt.relative_to(tmp_path)))}\. "
                      r"Continue with --auto_resume", out)
    assert match, out
    info = read_checkpoint_info(interrupt)
    assert info.kind == "full" and info.complete and info.epoch == 1
    assert info.step_in_epoch == int(match.group(1)) and 0 < info.step_in_epoch < 128 // 8
    resumed = run_main(ARGS, tmp_path)
    assert resumed.code == 0, resumed.text
    assert f"resuming from {interrupt.relative_to(tmp_path)}" in resumed.out
    assert not interrupt.exists()  # superseded by epoch 2's checkpoint, then removed
    assert_same_as_reference(ref_folder, folder)


# --- SIGTERM in the first epoch (no validation yet, so no best EER) ----------------------------------

FIRST = "first"
FIRST_STEPS = 8  # 64 clips / 8; clips of 2 s make a step long enough (~0.1 s) to aim a signal at
FIRST_ARGS = [*TINY, "--train_size", "64", "--clip_samples", "32000", "--num_epochs", "2", "--comment", FIRST]


@pytest.fixture(scope="module")
def first_epoch_reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("first_epoch_reference")
    result = run_main(FIRST_ARGS, cwd)
    assert result.code == 0, result.text
    return experiment_folder(cwd)


def stop_in_first_epoch(cwd: Path, after_step: int) -> tuple[Path, int]:
    """Start FIRST_ARGS and send SIGTERM once the progress bar shows ``after_step`` steps done:
    the run stops after the step under way. Returns (the interrupt checkpoint, its step)."""
    log = cwd / "stopped.log"
    proc = start_main(FIRST_ARGS, cwd, log, env=BAR_EVERY_STEP)
    shown = re.compile(rf"Epoch 1:[^\r\n|]*\|[^|]*\| {after_step}/{FIRST_STEPS} \[")
    try:
        wait_for(lambda: shown.search(log.read_text(errors="replace")) is not None)
        assert stop_with(proc, signal.SIGTERM) == 143, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    out = log.read_text()
    folder = experiment_folder(cwd)
    interrupt = folder / interrupt_checkpoint_name(FIRST)
    match = re.search(rf"Stopped by SIGTERM in epoch 1 after step (\d+): saved "
                      rf"{re.escape(str(interrupt.relative_to(cwd)))}\. Continue with --auto_resume", out)
    assert match, out
    return interrupt, int(match.group(1))


@pytest.mark.parametrize("after_step", [0, FIRST_STEPS // 2 - 1, FIRST_STEPS - 2],
                         ids=["first-step", "mid-epoch", "last-step-before-validation"])
def test_stop_in_the_first_epoch_resumes_exactly_both_ways(first_epoch_reference: Path, tmp_path: Path,
                                                           after_step: int) -> None:
    """The stop users make most (an epoch of real data takes hours): before any validation the
    checkpoint has no best EER. It must resume, by either flag, to the uninterrupted result."""
    stopped = tmp_path / "auto"
    stopped.mkdir()
    interrupt, step = stop_in_first_epoch(stopped, after_step)
    assert after_step + 1 <= step < FIRST_STEPS  # stopped inside the epoch, before its validation
    info = read_checkpoint_info(interrupt)
    assert info.kind == "full" and info.complete and info.epoch == 0 and info.step_in_epoch == step
    assert info.best_epoch is None and "best_val_eer" not in info.metrics
    assert not list(interrupt.parent.glob("checkpoint_epoch_*")) and not list(interrupt.parent.glob("best_*"))

    # The dashboard offers it for resuming: an interrupted experiment, a resumable checkpoint.
    experiments = catalog.scan_experiments(stopped / "models").set_index("name")
    assert experiments.loc[interrupt.parent.name, "status"] == "interrupted"
    files = catalog.scan_checkpoints(stopped / "models").set_index("file")
    assert views.can_resume(files.loc[interrupt.name, "kind"])

    by_path = tmp_path / "by_path"
    shutil.copytree(stopped / "models", by_path / "models")  # mtimes kept: sidecars still vouch
    resumes = {
        stopped: [*FIRST_ARGS, "--auto_resume"],
        by_path: [*FIRST_ARGS, "--resume", "--model_path", str(by_path / "models" / interrupt.parent.name / interrupt.name)],
    }
    for cwd, args in resumes.items():
        result = run_main(args, cwd)
        assert result.code == 0, result.text
        assert "epoch 0 completed" in result.out and "epochs 1-2" in result.out, result.out
        folder = experiment_folder(cwd)
        assert not (folder / interrupt.name).exists()  # superseded by epoch 1's checkpoint
        assert_same_as_reference(first_epoch_reference, folder)


# --- one writer per folder --------------------------------------------------------------------------

def test_second_run_on_a_busy_folder_is_refused_and_a_killed_holder_blocks_nothing(tmp_path: Path) -> None:
    # Same folder name (train_size is not part of it); the holder's epoch takes many seconds.
    base = [*TINY, "--num_epochs", "2", "--comment", "locked"]
    folder = tmp_path / "models" / "lcnn_DF_CCE_2_8_0.001_group3_contrastiveFalse_locked"
    holder = start_main([*base, "--train_size", "4000"], tmp_path, tmp_path / "holder.log")
    try:
        wait_for(lambda: "Training " in (tmp_path / "holder.log").read_text())
        record = read_lock_holder(folder)
        assert record is not None and record["pid"] == holder.pid
        started = time.monotonic()
        refused = run_main([*base, "--auto_resume"], tmp_path)
        assert refused.code == 3, refused.text
        assert holder.poll() is None, "the refused run must not have waited for the holder to finish"
        assert time.monotonic() - started < 60
        assert f"{folder.relative_to(tmp_path)} is in use by pid {holder.pid}" in refused.err and "--train_size 4000" in refused.err
        assert len(refused.err.strip().splitlines()) == 1
    finally:
        holder.kill()  # SIGKILL: the holder gets no chance to release anything
        holder.wait(timeout=60)
    assert read_lock_holder(folder) is None  # the record names a dead process: not a holder
    after = run_main([*base, "--auto_resume"], tmp_path)
    assert after.code == 0, after.text
    assert "in use" not in after.text and torch.load(epoch_file_named(folder, 2, "locked"), weights_only=True)["epoch"] == 2


def epoch_file_named(folder: Path, epoch: int, comment: str) -> Path:
    return folder / epoch_checkpoint_name(epoch, comment)


# --- a full disk ----------------------------------------------------------------------------------

def assert_failed_save_left_earlier_checkpoints_intact(ref_folder: Path, folder: Path, saved: int, cwd: Path) -> None:
    """Epochs 1..saved are on disk, verified by their sidecars and equal to the reference's;
    nothing later was written and no temporary file remains."""
    for epoch in range(1, saved + 1):
        info = read_checkpoint_info(epoch_file(folder, epoch))
        assert info.complete, epoch
        loaded = read_checkpoint_file(epoch_file(folder, epoch), expected_sha256=info.sha256)
        ref = torch.load(epoch_file(ref_folder, epoch), weights_only=True)
        assert compare_states("model", ref["model_state_dict"], loaded.model_state) == []
        assert compare_states("optimizer", ref["optimizer_state_dict"], loaded.full["optimizer_state_dict"]) == []
    assert not epoch_file(folder, saved + 1).exists()
    assert temp_files(cwd) == [] and unreadable_files(folder) == []


def _limit_file_size(limit: int) -> None:
    # Runs in the child before exec: files it writes may not grow past ``limit`` bytes; the
    # write that would fails with EFBIG (SIGXFSZ, which would kill the process, is ignored).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_write_failing_mid_save_keeps_earlier_checkpoints(reference, tmp_path: Path) -> None:
    ref_folder, _ = reference
    # Checkpoints no longer grow with the history (it lives in the log): epochs 1-2 come from the
    # reference, and the run resuming them may not write a file as large as one checkpoint.
    copy_run_until(ref_folder, tmp_path, 2)
    limit = epoch_file(ref_folder, 3).stat().st_size - 1
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *ARGS], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True, timeout=300, preexec_fn=lambda: _limit_file_size(limit))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    folder = tmp_path / "models" / ref_folder.name
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: file-size limit reached while saving {epoch_file(folder, 3).relative_to(tmp_path)}"), proc.stderr
    assert re.search(rf"free at least \d+(\.\d)? [KMG]?B in {re.escape(str(folder.relative_to(tmp_path)))}", error), error
    assert "earlier checkpoints are intact" in error
    assert_failed_save_left_earlier_checkpoints_intact(ref_folder, folder, 2, tmp_path)


@pytest.fixture
def small_tmpfs(tmp_path: Path, reference) -> Path:
    """A tmpfs with room for two checkpoints beyond the store's safety margin (root only)."""
    ref_folder, _ = reference
    size = epoch_file(ref_folder, 1).stat().st_size
    from training.checkpoint.store import FREE_SPACE_EXTRA
    mount = tmp_path / "disk"
    mount.mkdir()
    kib = (FREE_SPACE_EXTRA + int(2.7 * size)) // 1024
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount rights): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_refuses_the_save_before_writing_and_keeps_earlier_checkpoints(reference, small_tmpfs: Path,
                                                                                tmp_path: Path) -> None:
    ref_folder, _ = reference
    result = run_main([*ARGS, "--models_root", str(small_tmpfs)], tmp_path)
    assert result.code == 1, result.text
    folder = small_tmpfs / ref_folder.name
    error = result.err.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: not enough disk space in {re.escape(str(folder))}: a checkpoint needs about "
                        r"\d+\.\d MB, \d+\.\d MB free; free space there \(earlier checkpoints are intact\)", error), error
    # The tmpfs is not under tmp_path/models: check it for temp files directly.
    assert [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name] == []
    assert_failed_save_left_earlier_checkpoints_intact(ref_folder, folder, 2, tmp_path)


# --- corrupt and hostile files ----------------------------------------------------------------------

def test_auto_resume_skips_corrupt_and_hostile_newer_files_without_touching_them(reference, tmp_path: Path) -> None:
    ref_folder, _ = reference
    folder = copy_run_until(ref_folder, tmp_path, 3)
    good = epoch_file(folder, 3).read_bytes()
    marker = tmp_path / "pwned"
    rng = random.Random(3)
    flipped = bytearray(good)
    for offset in range(len(good) // 2, len(good) // 2 + 64):  # inside the tensor data, not the pickle
        flipped[offset] ^= 0xFF
    planted = {
        epoch_file(folder, 4): ("truncated", good[: len(good) // 2]),
        epoch_file(folder, 5): ("bit flips", bytes(flipped)),  # its pickle says epoch 3: a rival to the real one
        epoch_file(folder, 8): ("random bytes", rng.randbytes(4096)),
        folder / "epoch_9.pth": ("hostile torch zip", None),  # the original script's naming
        folder / interrupt_checkpoint_name(COMMENT): ("hostile pickle", None),
    }
    for path, (kind, data) in planted.items():
        if kind == "hostile torch zip":
            hostile_torch_file(path, marker)
        elif kind == "hostile pickle":
            hostile_plain_pickle(path, marker)
        else:
            path.write_bytes(data)
        os.utime(path, (time.time() + 60, time.time() + 60))  # newer than every good checkpoint
    contents = {path.name: path.read_bytes() for path in planted}
    result = run_main(ARGS, tmp_path)
    assert result.code == 0, result.text
    assert not marker.exists(), "a hostile pickle was executed"
    skips = [line for line in result.out.splitlines() if line.startswith("Auto-resume: skipping")]
    assert len(skips) == len(planted), skips
    reasons = {"truncated": "truncated", "bit flips": "checksum", "random bytes": "not", "hostile torch zip": "pickle would call posix.system",
               "hostile pickle": "pickle would call posix.system"}
    for path, (kind, _) in planted.items():
        shown = f"{path.relative_to(tmp_path)}:"
        mine = [line for line in skips if shown in line]
        assert len(mine) == 1 and reasons[kind] in mine[0].split(shown)[1], (kind, skips)
    assert f"resuming from {epoch_file(folder, 3).relative_to(tmp_path)}" in result.out
    # Never deleted or modified: each is where it was or moved aside to archive/, byte for byte
    # (files in the way of this run's own names are moved aside; the run then writes its own).
    for name, data in contents.items():
        places = [folder / name, *folder.glob(f"archive/*/{name}")]
        assert len([p for p in places if p.exists() and p.read_bytes() == data]) == 1, name
    tensors, metrics = compare_runs(ref_folder, folder)
    assert tensors == [] and metrics == []


# --- retention ------------------------------------------------------------------------------------

SMALL = ["--model_type", "lcnn", "--train_size", "8", "--val_size", "8", "--clip_samples", "2000",
         "--batch_size", "8", "--num_epochs", "12", "--comment", "keep"]


def epochs_on_disk(folder: Path) -> set[int]:
    return {int(p.name.split("_")[2]) for p in folder.glob("checkpoint_epoch_*_keep.pth")}


def test_keep_last_keeps_newest_best_and_resumed_from_counting_numerically(tmp_path: Path) -> None:
    assert run_main(SMALL, tmp_path).code == 0
    folder = tmp_path / "models" / "lcnn_DF_CCE_12_8_1e-06_group3_contrastiveFalse_keep"
    assert epochs_on_disk(folder) == set(range(1, 13))
    resumed_from = epoch_file_named(folder, 3, "keep")
    result = run_main([*SMALL, "--resume", "--model_path", str(resumed_from), "--keep_last", "2"], tmp_path)
    assert result.code == 0, result.text
    best_epoch = torch.load(epoch_file_named(folder, 12, "keep"), weights_only=True)["best_epoch"]
    # 11 and 12 are the two newest by number (by name, 9 would sort after 12).
    assert epochs_on_disk(folder) == {3, best_epoch, 11, 12}
    assert torch.load(folder / "best_checkpoint_eer_keep.pth", weights_only=True)["epoch"] == best_epoch
    assert {p.name[: -len(".meta.json")] for p in folder.glob("checkpoint_epoch_*.meta.json")} == \
        {p.name for p in folder.glob("checkpoint_epoch_*.pth")}


def test_prune_never_removes_best_or_resumed_from(tmp_path: Path) -> None:
    """The same rule with a best epoch that is neither the newest nor the resumed-from one."""
    args = {**__import__("training.config", fromlist=["DEFAULTS"]).DEFAULTS, "model_type": "lcnn",
            "comment": "keep", "keep_last": 3, "models_root": str(tmp_path / "models")}
    trainer = Trainer(args, StartPlan("fresh"), echo=lambda line: None)
    trainer.exp_dir.mkdir(parents=True)
    for epoch in range(1, 13):  # real checkpoints of this run: only those are ever pruned
        save_checkpoint({"epoch": epoch, "model_state_dict": {"w": torch.zeros(1)}, "optimizer_state_dict": {},
                         "lineage": None}, trainer._epoch_path(epoch))
    trainer.best_epoch = 5
    trainer.protected = {trainer._epoch_path(2).resolve()}
    trainer._prune()
    assert {int(p.name.split("_")[2]) for p in trainer.exp_dir.glob("checkpoint_epoch_*.pth")} == {2, 5, 10, 11, 12}
