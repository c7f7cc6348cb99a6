"""Input validation (issue 10): one rule for every entry point, one line for every bad value.

* ``training.config.validate_options`` is what the CLI, ``jobs.launch`` and the Launch form's
  ``plan_launch`` call: the same bad value gives the same message in all three, and none of them
  creates anything (folder, ``.lock``, registry row);
* every value that becomes part of a path is checked where options are parsed: no separators,
  no ``..``, no control characters, names within the file system's limit once assembled;
* numbers are finite and in range; a models root that is a file or read-only is refused;
* each refusal is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli_helpers import TINY, run_main
from training import cli, config
from training import jobs, runs
from training.dashboard import launch_form
from training.config import UsageError, longest_file_name, validate_options

ONE_EPOCH = [*TINY, "--num_epochs", "1"]


def created_anything(cwd: Path) -> list[str]:
    """Everything under ``cwd`` (the test's scratch folder) except what the test put there."""
    return sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))


def assert_one_line_usage_error(result, *fragments: str) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == 2, result.text
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.text
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- values that become part of a path -------------------------------------------------------------

@pytest.mark.parametrize("comment, fragment", [
    ("x/../../victim", "must not contain '/'"),
    ("..", "must not contain '..'"),
    ("a\nb", "control character"),
    ("a\tb", "control character"),
    ("c" * 300, "too long"),
    ("é" * 120, "too long"),  # 240 characters but 480 bytes: the limit is in bytes
])
def test_comment_that_would_leave_the_root_or_break_a_name_is_refused_before_anything_exists(
        tmp_path: Path, comment: str, fragment: str) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim_file.pth").write_bytes(b"mine")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    before = created_anything(tmp_path)
    result = run_main([*ONE_EPOCH, "--fresh_start", "--comment", comment], work)
    assert_one_line_usage_error(result, "--comment", fragment)
    assert created_anything(tmp_path) == before


def test_longest_file_name_matches_what_the_sidecar_writer_makes(tmp_path: Path) -> None:
    """The length rule assembles the same temporary name sidecar.write_sidecar uses (fsutil's one scheme)."""
    from training.checkpoint.sidecar import write_sidecar

    pth = tmp_path / "checkpoint_epoch_1000_abc.pth"
    pth.write_bytes(b"x")
    seen = []
    real_open = os.open

    def spy(path, *a, **k):
        seen.append(os.path.basename(path))
        return real_open(path, *a, **k)

    os.open = spy
    try:
        write_sidecar(pth, {"kind": "full"}, "0" * 64)
    finally:
        os.open = real_open
    made = next(name for name in seen if ".tmp." in name)
    assert len(made) <= len(longest_file_name("abc", 1000))
    assert made.rsplit(".tmp.", 1)[0] == longest_file_name("abc", 1000).rsplit(".tmp.", 1)[0]


def test_a_comment_at_the_name_limit_is_accepted_and_one_byte_more_refused() -> None:
    limit = config.DEFAULT_NAME_MAX
    base = len(longest_file_name("", 100)) + 1  # + the "_" before the comment
    ok = "c" * (limit - base)
    validate_options({"comment": ok, "num_epochs": 100})
    with pytest.raises(UsageError, match="too long"):
        validate_options({"comment": ok + "c", "num_epochs": 100})


# --- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, fragment", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr=-1e-3"], "--lr must be positive"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--weight_decay", "nan"], "--weight_decay must be a finite number"),
    (["--weight_decay", "-1"], "--weight_decay must be zero or positive"),
    (["--num_workers", "-1"], "--num_workers must be at least 0"),
    (["--clip_samples", "10"], f"--clip_samples must be at least {config.MIN_CLIP_SAMPLES}"),
    (["--num_epochs", "100000000"], f"--num_epochs must be at most {config.MAX_NUM_EPOCHS}"),
    (["--seed", "-5"], "--seed must be at least 0"),
    (["--contrastive_weight", "inf"], "--contrastive_weight must be a finite number"),
])
def test_bad_numbers_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], fragment: str) -> None:
    result = run_main([*ONE_EPOCH, *flags], tmp_path)
    assert_one_line_usage_error(result, fragment)
    assert created_anything(tmp_path) == []


def test_clip_samples_at_the_minimum_trains_with_both_models() -> None:
    """The minimum is not arbitrary: both models accept a clip of that length."""
    import torch

    from training.models import build_model

    for model_type in config.MODEL_TYPES:
        model = build_model({**config.DEFAULTS, "model_type": model_type})
        model(torch.randn(2, config.MIN_CLIP_SAMPLES))


# --- the models root -------------------------------------------------------------------------------

def test_models_root_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "root").write_text("a file")
    for root in ("root", "root/below"):
        result = run_main([*ONE_EPOCH, "--models_root", root], tmp_path)
        assert_one_line_usage_error(result, f"--models_root {root}", "not a folder")
    assert created_anything(tmp_path) == ["root"]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Path:
    """A read-only tmpfs (chmod does not stop root, a read-only mount does)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
        mount.chmod(0o555)  # for a normal user, permissions are enough
        yield mount
        mount.chmod(0o755)
        return
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_read_only_models_root_is_one_line(tmp_path: Path, read_only_folder: Path) -> None:
    for root in (read_only_folder, read_only_folder / "new"):
        result = run_main([*ONE_EPOCH, "--models_root", str(root)], tmp_path)
        assert_one_line_usage_error(result, f"--models_root {root}", "read-only" if os.geteuid() == 0 else "writ")
    assert list(read_only_folder.iterdir()) == []


# --- one rule, three entry points ------------------------------------------------------------------

def test_cli_jobs_and_launch_form_share_one_validation_function() -> None:
    assert cli.validate_options is config.validate_options
    assert runs.validate_options is config.validate_options  # jobs.launch checks through training.runs
    assert launch_form.validate_options is config.validate_options


@pytest.mark.parametrize("field, value, flag_value", [
    ("comment", "x/../../victim", "x/../../victim"),
    ("comment", "c" * 300, "c" * 300),
    ("lr", float("nan"), "nan"),
    ("clip_samples", 10, "10"),
    ("num_epochs", 10**8, str(10**8)),
])
def test_a_bad_value_gives_the_same_message_everywhere_and_creates_nothing(
        tmp_path: Path, field: str, value, flag_value: str) -> None:
    root = tmp_path / "root"
    expected = None
    try:
        validate_options({field: value, "model_type": "lcnn", "models_root": str(root)})
    except UsageError as exc:
        expected = str(exc)
    assert expected, "the value must be refused"

    result = run_main(["--models_root", str(root), "--model_type", "lcnn", f"--{field}", flag_value], tmp_path)
    assert result.err.strip() == f"error: {expected}" and result.code == 2, result.text

    with pytest.raises(ValueError) as refused:
        jobs.launch(root, "fresh", {field: value, "model_type": "lcnn"})
    assert str(refused.value) == expected

    raw = {field: launch_form.widget_value(launch_form.FIELDS_BY_NAME[field], value), "model_type": "lcnn"}
    plan = launch_form.plan_launch(root, "fresh", raw, None)
    assert plan.errors == [expected] and plan.command is None

    assert created_anything(tmp_path) == []


# --- a huge --num_epochs on resume ----------------------------------------------------------------

def test_resume_preparing_the_folder_costs_no_memory_per_epoch_to_train(tmp_path: Path) -> None:
    """_prepare_folder once built every future epoch's file name: 7 GB for 1e8 epochs. Now each
    existing file's name is judged alone, and files in the way are still moved aside."""
    import tracemalloc

    from training.naming import epoch_checkpoint_name
    from training.trainer import StartPlan, Trainer

    args = {**config.DEFAULTS, "models_root": str(tmp_path), "comment": "c",
            "num_epochs": config.MAX_NUM_EPOCHS}
    trainer = Trainer(args, StartPlan("resume", None), echo=lambda line: None)
    trainer.exp_dir.mkdir(parents=True)
    in_the_way = trainer.exp_dir / epoch_checkpoint_name(5, "c")
    others = [trainer.exp_dir / epoch_checkpoint_name(2, "c")]  # behind the resume point: kept
    for path in [in_the_way, *others]:
        path.write_bytes(b"not a checkpoint")
    trainer.epoch = 3  # as _restore leaves it after loading an epoch-3 checkpoint
    tracemalloc.start()
    try:
        trainer._prepare_folder()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20, f"{peak / 2**20:.0f} MB to prepare the folder"
    assert not in_the_way.exists() and len(list(trainer.exp_dir.glob(f"archive/*/{in_the_way.name}"))) == 1
    assert all(p.exists() for p in others)


# --- every load for training is verified; damaged files stay marked --------------------------------

VERIFY_RUN = [*TINY, "--num_epochs", "2", "--comment", "v"]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """A finished 2-epoch run (its experiment folder); tests work on copies."""
    cwd = tmp_path_factory.mktemp("two_epochs")
    result = run_main(VERIFY_RUN, cwd)
    assert result.code == 0, result.text
    (folder,) = (cwd / "models").iterdir()
    return folder


def copy_run(two_epochs: Path, cwd: Path) -> Path:
    """A copy of the run in ``cwd/models`` with mtimes kept (so the sidecars still vouch); the
    copy breaks the hard link between the best file and its epoch."""
    import shutil

    folder = cwd / "models" / two_epochs.name
    shutil.copytree(two_epochs, folder)
    return folder


def flip_bytes_keeping_mtime(path: Path) -> bytes:
    """Flip 64 bytes inside the tensor data (not the pickle the reader reads) and put the size
    and mtime back: nothing a stat-based check can notice. Returns the damaged bytes."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 2, len(data) // 2 + 64):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return bytes(data)


def listing_entry(cwd: Path, name: str, *flags: str) -> list[str]:
    result = run_main([*VERIFY_RUN, "--list_checkpoints", *flags], cwd)
    assert result.code == 0, result.text
    lines = result.out.splitlines()
    start = lines.index(f"📦 {name}")
    return lines[start + 1:next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("   ")), len(lines))]


@pytest.mark.parametrize("with_sidecar", [True, False], ids=["sidecar-checksum", "zip-crc"])
@pytest.mark.parametrize("how", [["--resume"], []], ids=["resume", "pretrained"])
def test_loading_a_bit_flipped_checkpoint_is_refused_and_leaves_a_damage_mark(
        two_epochs: Path, tmp_path: Path, with_sidecar: bool, how: list[str]) -> None:
    from training.checkpoint.fsutil import sidecar_path

    folder = copy_run(two_epochs, tmp_path)
    target = folder / "checkpoint_epoch_2_v.pth"
    if not with_sidecar:
        sidecar_path(target).unlink()
    damaged = flip_bytes_keeping_mtime(target)
    result = run_main([*TINY, "--num_epochs", "3", "--comment", "w", *how, "--model_path", str(target)], tmp_path)
    assert_one_line_usage_error(result, str(target), "damaged", "refused")
    assert target.read_bytes() == damaged, "the .pth itself is never modified"
    assert not (tmp_path / "models" / two_epochs.name.replace("_2_8_", "_3_8_").replace("_v", "_w")).exists()
    entry = listing_entry(tmp_path, target.name)
    assert entry[0].startswith("   Damaged") and "not usable for training" in entry[0], entry

    from training.dashboard import catalog
    catalog.clear_cache()
    row = catalog.scan_checkpoints(tmp_path / "models").set_index("file").loc[target.name]
    assert row["kind"] == "damaged" and not row["complete"]


def test_auto_resume_leaves_a_damage_mark_on_the_file_it_skips(two_epochs: Path, tmp_path: Path) -> None:
    folder = copy_run(two_epochs, tmp_path)
    target = folder / "checkpoint_epoch_2_v.pth"
    flip_bytes_keeping_mtime(target)
    assert listing_entry(tmp_path, target.name)[0] == "   Epoch: 2", "a stat-keyed listing cannot see a flip"
    result = run_main([*VERIFY_RUN[:-4], "--num_epochs", "2", "--comment", "v", "--auto_resume"], tmp_path)
    assert result.code == 0, result.text
    assert f"skipping {target.relative_to(tmp_path)}: damaged" in result.out
    # The run trained epoch 2 again; the damaged file was moved aside with its (marked) sidecar.
    from training.checkpoint.meta import read_checkpoint_info
    (moved,) = folder.glob(f"archive/*/{target.name}")
    assert read_checkpoint_info(moved).kind == "damaged"
    assert read_checkpoint_info(target).kind == "full" and read_checkpoint_info(target).complete


def test_list_checkpoints_verify_finds_marks_and_clears_damage(two_epochs: Path, tmp_path: Path) -> None:
    folder = copy_run(two_epochs, tmp_path)
    target = folder / "checkpoint_epoch_1_v.pth"
    good = target.read_bytes()
    st = target.stat()
    flip_bytes_keeping_mtime(target)
    result = run_main([*VERIFY_RUN, "--list_checkpoints", "--verify"], tmp_path)
    assert result.code == 0 and result.out.strip().endswith(f"1 damaged ({target.name})"), result.text
    assert listing_entry(tmp_path, target.name)[0].startswith("   Damaged"), "the mark persists"
    target.write_bytes(good)  # restored from a backup, mtime and all
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = run_main([*VERIFY_RUN, "--list_checkpoints", "--verify"], tmp_path)
    assert result.out.strip().endswith("all intact"), result.text
    assert listing_entry(tmp_path, target.name)[0] == "   Epoch: 1"


def test_verify_flag_goes_with_list_checkpoints_only(tmp_path: Path) -> None:
    assert_one_line_usage_error(run_main([*ONE_EPOCH, "--verify"], tmp_path), "--verify goes with --list_checkpoints")


def test_dashboard_details_verify_marks_the_selected_file(two_epochs: Path, tmp_path: Path) -> None:
    from training.dashboard import catalog

    folder = copy_run(two_epochs, tmp_path)
    target = folder / "best_checkpoint_eer_v.pth"
    flip_bytes_keeping_mtime(target)
    catalog.clear_cache()
    assert catalog.checkpoint_details(target)["catalog_kind"] == "best", "unverified: looks fine"
    details = catalog.checkpoint_details(target, verify=True)
    assert details["verified"] is False and details["catalog_kind"] == "damaged"
    assert "checksum does not match" in details["reason"]
    row = catalog.scan_checkpoints(tmp_path / "models").set_index("file").loc[target.name]
    assert row["kind"] == "damaged"


# --- what a --model_path really is -----------------------------------------------------------------

def test_hostile_legacy_pickle_as_model_path_is_called_unsafe(tmp_path: Path) -> None:
    from ckpt_factories import hostile_plain_pickle

    marker = tmp_path / "pwned"
    path = hostile_plain_pickle(tmp_path / "legacy.pth", marker)
    result = run_main([*ONE_EPOCH, "--resume", "--model_path", str(path)], tmp_path)
    assert_one_line_usage_error(result, str(path), "unsafe", "posix.system")
    assert "Please file an issue" not in result.text and not marker.exists()


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "a folder, not a checkpoint file"),
    (lambda p: (os.symlink(p.with_name("b"), p), os.symlink(p, p.with_name("b"))), "a symbolic link loop"),
    (lambda p: os.symlink(p.with_name("gone"), p), "a dangling symbolic link"),
], ids=["folder", "symlink-loop", "dangling-link"])
def test_model_path_that_is_not_a_file_says_what_it_is(tmp_path: Path, make, fragment: str) -> None:
    path = tmp_path / "weights.pth"
    make(path)
    result = run_main([*ONE_EPOCH, "--resume", "--model_path", str(path)], tmp_path)
    assert_one_line_usage_error(result, str(path), fragment)


# --- runtime failures: one line, nothing saved lost ------------------------------------------------

def test_nan_loss_stops_the_run_in_one_line_and_keeps_earlier_checkpoints(two_epochs: Path, tmp_path: Path) -> None:
    folder = copy_run(two_epochs, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.glob("*.pth")}
    result = run_main([*VERIFY_RUN[:-4], "--num_epochs", "4", "--comment", "v", "--lr", "1e6",
                       "--resume", "--model_path", str(folder / "checkpoint_epoch_2_v.pth")], tmp_path)
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    last = result.err.strip().splitlines()[-1].split("\r")[-1].strip()
    assert last.startswith("error: the training loss became NaN or infinite at epoch 3, step "), last
    assert "checkpoints up to epoch 2 are intact" in last
    new_folder = tmp_path / "models" / two_epochs.name.replace("_2_8_", "_4_8_")
    assert not list(new_folder.glob("*.pth")), "nothing diverged is saved"
    assert {p.name: p.read_bytes() for p in folder.glob("*.pth")} == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 32 MB tmpfs (root only: skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount rights): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill_leaving(folder: Path, free_bytes: int) -> None:
    import shutil

    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(shutil.disk_usage(folder).free - free_bytes, 0))


def test_disk_full_inside_torch_save_is_one_line_naming_file_folder_and_space(small_disk: Path) -> None:
    import torch

    from training.checkpoint.store import DiskSpaceError, save_checkpoint

    folder = small_disk / "exp"
    folder.mkdir()
    fill_leaving(small_disk, 256 * 1024)
    path = folder / "checkpoint_epoch_1.pth"
    with pytest.raises(DiskSpaceError) as failed:
        save_checkpoint({"epoch": 1, "model_state_dict": {"w": torch.zeros(1_000_000)}}, path)
    message = str(failed.value)
    assert message.startswith(f"disk full while saving {path}: wrote ") and "\n" not in message
    assert f"free at least" in message and f"in {folder} " in message
    assert list(folder.iterdir()) == [], "no temp file, no partial checkpoint"


def test_interrupt_save_checks_free_space_before_writing(small_disk: Path, tmp_path: Path) -> None:
    import signal

    from cli_helpers import start_main, stop_with, wait_for

    args = [*TINY, "--train_size", "512", "--num_epochs", "3", "--comment", "i", "--models_root", str(small_disk)]
    proc = start_main(args, tmp_path, tmp_path / "log.txt")
    try:
        wait_for(lambda: any(small_disk.glob("*/checkpoint_epoch_1_i.pth.meta.json")), timeout=240)
        (folder,) = [p for p in small_disk.iterdir() if p.is_dir()]
        epoch1 = (folder / "checkpoint_epoch_1_i.pth").read_bytes()
        fill_leaving(small_disk, 64 * 1024)
        code = stop_with(proc, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "log.txt").read_text()
    last = log.strip().splitlines()[-1].split("\r")[-1].strip()
    assert code == 1 and "Traceback" not in log, log[-2000:]
    assert last.startswith(f"error: not enough disk space in {folder}: a checkpoint needs about"), last
    assert (folder / "checkpoint_epoch_1_i.pth").read_bytes() == epoch1
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name or "interrupt" in p.name] == []


def test_a_run_that_fails_before_writing_leaves_no_folder_holding_only_its_lock(two_epochs: Path,
                                                                                tmp_path: Path) -> None:
    source = two_epochs / "best_checkpoint_eer_v.pth"
    result = run_main([*TINY, "--model_type", "g3_heatmap", "--model_path", str(source), "--num_epochs", "1",
                       "--comment", "misfit"], tmp_path)
    assert result.code == 2 and "does not fit" in result.err, result.text
    assert created_anything(tmp_path) == []
    result = run_main([*ONE_EPOCH, "--lr", "1e6", "--comment", "nan"], tmp_path)
    assert result.code == 1 and "NaN" in result.err, result.text
    assert created_anything(tmp_path) == []
