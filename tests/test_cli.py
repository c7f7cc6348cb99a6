"""The checkpoint guide end to end: its six scenarios, both tables, legacy files, warnings.

Every test runs the real ``python main.py`` on the built-in synthetic data with tiny sizes, in a
temporary working directory, so the default ``models/`` folder is the guide's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import TINY, child_env, load, logged_history, run_main, same_weights, start_main, stop_with, wait_for
from training.checkpoint.fsutil import sidecar_path
from training.dashboard import catalog
from training.naming import experiment_name

EXP1 = "lcnn_DF_CCE_4_8_0.001_group3_contrastiveFalse_exp1"
GUIDE_KEYS = {"epoch", "model_state_dict", "optimizer_state_dict", "train_loss", "train_eer", "val_loss",
              "val_acc", "val_eer", "best_val_eer", "args"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Scenario 1 once for the module: a fresh 4-epoch run of exp1 (later tests copy it)."""
    cwd = tmp_path_factory.mktemp("exp1")
    result = run_main([*TINY, "--num_epochs", "4", "--comment", "exp1"], cwd)
    assert result.code == 0, result.text
    return cwd


def copy_models(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src / "models", dst / "models")
    return dst


def test_scenario1_fresh_training(trained: Path) -> None:
    folder = trained / "models" / EXP1
    names = sorted(p.name for p in folder.glob("*.pth"))
    assert names == sorted([f"checkpoint_epoch_{n}_exp1.pth" for n in range(1, 5)] + ["best_checkpoint_eer_exp1.pth"])
    for n in range(1, 5):
        ckpt = load(folder / f"checkpoint_epoch_{n}_exp1.pth")
        assert GUIDE_KEYS <= ckpt.keys()
        assert ckpt["epoch"] == n and ckpt["step_in_epoch"] == 0
        assert 0.0 <= ckpt["val_eer"] <= 100.0 and 0.0 <= ckpt["val_acc"] <= 100.0
        assert ckpt["best_val_eer"] == min(r["val_eer"] for r in logged_history(folder)[:n])
        assert ckpt["args"]["comment"] == "exp1" and ckpt["args"]["num_epochs"] == 4
        # The history lives once, in the log: a checkpoint holds its own row and where the rest is.
        assert "history" not in ckpt and ckpt["history_row"]["epoch"] == n
        assert ckpt["history_log"] == {"file": "training_log.csv", "experiment": EXP1}
        assert sidecar_path(folder / f"checkpoint_epoch_{n}_exp1.pth").exists()
    best = load(folder / "best_checkpoint_eer_exp1.pth")
    assert best["val_eer"] == best["best_val_eer"] and best["epoch"] == best["best_epoch"]
    log_lines = (folder / "training_log.csv").read_text().splitlines()
    assert log_lines[0].startswith("epoch,train_loss,train_eer,val_loss,val_acc,val_eer,best_val_eer")
    assert [line.split(",")[0] for line in log_lines[1:]] == ["1", "2", "3", "4"]


def test_scenario2_resume_after_interruption_matches_uninterrupted_run(trained: Path, tmp_path: Path) -> None:
    cwd = copy_models(trained, tmp_path)
    folder = cwd / "models" / EXP1
    straight = load(folder / "checkpoint_epoch_4_exp1.pth")
    straight_history = logged_history(folder)
    result = run_main([*TINY, "--resume", "--model_path", str(folder / "checkpoint_epoch_2_exp1.pth"),
                       "--num_epochs", "4", "--comment", "exp1"], cwd)
    assert result.code == 0, result.text
    assert "Resuming from" in result.out and "epoch 2 completed" in result.out
    assert "epochs 3-4" in result.out
    assert "Epoch 1/" not in result.out and "Epoch 3/4" in result.out
    resumed = load(folder / "checkpoint_epoch_4_exp1.pth")
    # Exact resume: same weights, optimizer moments and metrics as the run that never stopped.
    assert same_weights(straight["model_state_dict"], resumed["model_state_dict"])
    assert [r["val_eer"] for r in straight_history] == [r["val_eer"] for r in logged_history(folder)]
    # The epochs it re-trained were moved aside, not overwritten or deleted.
    archived = list((folder / "archive").glob("*/checkpoint_epoch_4_exp1.pth"))
    assert len(archived) == 1
    # The log was appended to, never truncated.
    epochs = [line.split(",")[0] for line in (folder / "training_log.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4", "3", "4"]


def test_scenario3_continue_beyond_original_target(trained: Path, tmp_path: Path) -> None:
    cwd = copy_models(trained, tmp_path)
    parent = cwd / "models" / EXP1
    result = run_main([*TINY, "--resume", "--model_path", str(parent / "checkpoint_epoch_4_exp1.pth"),
                       "--num_epochs", "6", "--comment", "exp1_extended"], cwd)
    assert result.code == 0, result.text
    assert "hyperparameter num_epochs differs from the checkpoint: 4 -> 6 (using 6, from the command line)" in result.out
    assert "hyperparameter comment differs" in result.out
    folder = cwd / "models" / "lcnn_DF_CCE_6_8_0.001_group3_contrastiveFalse_exp1_extended"
    assert sorted(p.name for p in folder.glob("checkpoint_epoch_*.pth")) == [
        "checkpoint_epoch_5_exp1_extended.pth", "checkpoint_epoch_6_exp1_extended.pth"]
    ckpt = load(folder / "checkpoint_epoch_6_exp1_extended.pth")
    assert ckpt["epoch"] == 6 and [r["epoch"] for r in logged_history(folder)] == [5, 6]
    assert len(catalog.experiment_history(cwd / "models", folder.name)) == 6  # the parent's four first
    assert ckpt["lineage"]["parent_experiment"] == EXP1 and ckpt["lineage"]["parent_epoch"] == 4
    # Nothing left to train: says so and exits 0 without touching anything.
    again = run_main([*TINY, "--resume", "--model_path", str(folder / "checkpoint_epoch_6_exp1_extended.pth"),
                      "--num_epochs", "6", "--comment", "exp1_extended"], cwd)
    assert again.code == 0 and "nothing left to train" in again.out


@pytest.mark.parametrize("flags", [["--fresh_start"], []], ids=["fresh_start+model_path", "model_path-alone"])
def test_scenario4_pretrained_weights_fresh_optimizer(trained: Path, tmp_path: Path, flags: list[str]) -> None:
    cwd = copy_models(trained, tmp_path)
    source = cwd / "models" / EXP1 / "best_checkpoint_eer_exp1.pth"
    result = run_main([*TINY, *flags, "--model_path", str(source), "--num_epochs", "1",
                       "--comment", "exp2_from_pretrained"], cwd)
    assert result.code == 0, result.text
    assert "Loaded weights from" in result.out and "starting at epoch 1" in result.out
    ckpt_folder = cwd / "models" / "lcnn_DF_CCE_1_8_0.001_group3_contrastiveFalse_exp2_from_pretrained"
    ckpt = load(ckpt_folder / "checkpoint_epoch_1_exp2_from_pretrained.pth")
    assert ckpt["epoch"] == 1 and len(logged_history(ckpt_folder)) == 1
    # A fresh optimizer: Adam's step count is one epoch's batches (32 clips / 8), not 4 epochs' worth.
    steps = {float(s["step"]) for s in ckpt["optimizer_state_dict"]["state"].values()}
    assert steps == {4.0}
    assert ckpt["lineage"]["mode"] == "pretrained"


def test_scenario5_auto_resume_after_a_real_interruption(tmp_path: Path) -> None:
    args = [*TINY, "--auto_resume", "--num_epochs", "3", "--comment", "exp_auto", "--train_size", "96"]
    folder = tmp_path / "models" / "lcnn_DF_CCE_3_8_0.001_group3_contrastiveFalse_exp_auto"
    proc = start_main(args, tmp_path, tmp_path / "first.log")
    wait_for(lambda: sidecar_path(folder / "checkpoint_epoch_1_exp_auto.pth").exists())
    code = stop_with(proc, signal.SIGTERM)
    first = (tmp_path / "first.log").read_text()
    assert code == 143, first
    assert "no usable checkpoint" in first and "starting fresh" in first
    assert "Stopped by SIGTERM" in first
    second = run_main(args, tmp_path)
    assert second.code == 0, second.text
    assert "Auto-resume: resuming from" in second.out
    final = load(folder / "checkpoint_epoch_3_exp_auto.pth")
    assert final["epoch"] == 3 and [r["epoch"] for r in logged_history(folder)] == [1, 2, 3]
    # Done: a third run has nothing left and says so.
    third = run_main(args, tmp_path)
    assert third.code == 0 and "nothing left to train" in third.out


def test_scenario6_list_checkpoints_numeric_order_and_format(tmp_path: Path) -> None:
    args = ["--model_type", "lcnn", "--train_size", "8", "--val_size", "8", "--clip_samples", "2000",
            "--batch_size", "8", "--num_epochs", "11", "--comment", "exp1"]
    assert run_main(args, tmp_path).code == 0
    listed = run_main(["--list_checkpoints", *args], tmp_path)
    assert listed.code == 0, listed.text
    names = [line.split()[1] for line in listed.out.splitlines() if line.startswith("📦")]
    assert names == [f"checkpoint_epoch_{n}_exp1.pth" for n in range(1, 12)] + ["best_checkpoint_eer_exp1.pth"]
    lines = listed.out.splitlines()
    assert lines[0] == "=" * 70 and lines[2] == "=" * 70 and lines[-1] == "=" * 70
    assert lines[1] == "📋 Available Checkpoints in models/lcnn_DF_CCE_11_8_1e-06_group3_contrastiveFalse_exp1"
    assert lines[4:9][0] == "📦 checkpoint_epoch_1_exp1.pth" and lines[5] == "   Epoch: 1"
    assert lines[6].startswith("   Val EER: ") and lines[6].endswith("%")


def test_list_checkpoints_default_folder_name_matches_the_guide() -> None:
    assert experiment_name({"comment": "my_experiment"}) == \
        "g3_heatmap_DF_CCE_100_16_1e-06_group3_contrastiveFalse_my_experiment"


def test_list_checkpoints_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = run_main(["--list_checkpoints", "--comment", "nothing_here"], tmp_path)
    assert result.code == 2
    assert "models/g3_heatmap_DF_CCE_100_16_1e-06_group3_contrastiveFalse_nothing_here" in result.err


def test_list_checkpoints_by_comment_alone_finds_the_one_folder_with_that_comment(trained: Path) -> None:
    """The guide's own example: ``--list_checkpoints --comment exp1`` for a run trained with other
    options than the defaults (lcnn, 4 epochs, batch 8, lr 0.001)."""
    result = run_main(["--list_checkpoints", "--comment", "exp1"], trained)
    assert result.code == 0, result.text
    assert result.out.splitlines()[1] == f"📋 Available Checkpoints in models/{EXP1}"
    assert "📦 checkpoint_epoch_4_exp1.pth" in result.out


def test_list_checkpoints_by_comment_with_several_folders_names_them(tmp_path: Path, trained: Path) -> None:
    cwd = copy_models(trained, tmp_path)
    twin = cwd / "models" / EXP1.replace("_4_8_", "_9_8_")
    twin.mkdir()
    (cwd / "models" / EXP1.replace("_exp1", "_my_exp1")).mkdir()  # ends in "_exp1" but its comment is my_exp1
    result = run_main(["--list_checkpoints", "--comment", "exp1"], cwd)
    assert result.code == 2
    assert f"Folders with this comment: {EXP1}, {twin.name} " in result.err
    # Options typed on the command line narrow the choice down to one folder.
    narrowed = run_main(["--list_checkpoints", "--comment", "exp1", "--num_epochs", "4"], cwd)
    assert narrowed.code == 0, narrowed.text
    assert narrowed.out.splitlines()[1] == f"📋 Available Checkpoints in models/{EXP1}"


def test_list_checkpoints_does_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys; from training.cli import main; main(['--list_checkpoints', '--comment', 'x']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(), capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


# --- the invalid combinations ---------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--resume", "--fresh_start", "--model_path", "x.pth"], "cannot use both flags"),
    (["--resume"], "--resume requires a checkpoint path"),
    (["--auto_resume", "--fresh_start"], "cannot be used together"),
    (["--auto_resume", "--resume", "--model_path", "x.pth"], "cannot be used together"),
    (["--num_epochs", "0"], "--num_epochs must be at least 1"),
    (["--model_type", "resnet"], "invalid choice"),
])
def test_invalid_combinations_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    result = run_main(argv, tmp_path)
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("content", [None, b"not a checkpoint at all", b"PK\x03\x04truncated"],
                         ids=["missing", "text", "truncated-zip"])
def test_model_path_unusable_exits_2_naming_the_file(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "weights.pth"
    if content is not None:
        path.write_bytes(content)
    result = run_main([*TINY, "--resume", "--model_path", str(path)], tmp_path)
    assert result.code == 2
    assert str(path) in result.err and len(result.err.strip().splitlines()) == 1


# --- files the original code wrote ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lcnn_weights(trained: Path) -> dict[str, torch.Tensor]:
    return load(trained / "models" / EXP1 / "checkpoint_epoch_4_exp1.pth")["model_state_dict"]


@pytest.mark.parametrize("prefix", ["", "module."], ids=["bare", "dataparallel"])
def test_resume_from_weights_only_file_warns_and_starts_at_epoch_1(tmp_path: Path, lcnn_weights, prefix: str) -> None:
    legacy = tmp_path / "pretrained" / "best_model_eer.pth"
    legacy.parent.mkdir()
    torch.save({prefix + k: v for k, v in lcnn_weights.items()}, legacy)
    result = run_main([*TINY, "--resume", "--model_path", str(legacy), "--num_epochs", "1", "--comment", "legacy"], tmp_path)
    assert result.code == 0, result.text
    assert "weights only" in result.out and "cannot be restored" in result.out
    ckpt = load(tmp_path / "models" / "lcnn_DF_CCE_1_8_0.001_group3_contrastiveFalse_legacy" / "checkpoint_epoch_1_legacy.pth")
    assert ckpt["epoch"] == 1


def test_old_checkpoint_whose_args_lack_new_keys_resumes(tmp_path: Path, trained: Path) -> None:
    cwd = copy_models(trained, tmp_path)
    folder = cwd / "models" / EXP1
    ckpt = load(folder / "checkpoint_epoch_2_exp1.pth")
    for key in ("supcon_weight", "contrastive_weight", "scheduler", "keep_last", "num_workers"):
        ckpt["args"].pop(key, None)
    for key in ("rng_state", "history", "history_row", "history_log", "step_in_epoch", "partial",
                "scheduler_state_dict", "best_epoch"):
        ckpt.pop(key, None)
    old = folder / "epoch_2.pth"  # the original script's older naming
    torch.save(ckpt, old)
    result = run_main([*TINY, "--resume", "--model_path", str(old), "--num_epochs", "3", "--comment", "exp1"], cwd)
    assert result.code == 0, result.text
    assert "epoch 2 completed" in result.out
    out = cwd / "models" / "lcnn_DF_CCE_3_8_0.001_group3_contrastiveFalse_exp1" / "checkpoint_epoch_3_exp1.pth"
    assert load(out)["epoch"] == 3


def test_list_checkpoints_shows_legacy_and_unreadable_files_without_failing(tmp_path: Path, trained: Path,
                                                                            lcnn_weights) -> None:
    cwd = copy_models(trained, tmp_path)
    folder = cwd / "models" / EXP1
    torch.save(lcnn_weights, folder / "best_model_eer_exp1.pth")
    data = (folder / "checkpoint_epoch_3_exp1.pth").read_bytes()
    (folder / "checkpoint_epoch_3_exp1.pth").write_bytes(data[: len(data) // 2])
    result = run_main([*TINY, "--list_checkpoints", "--num_epochs", "4", "--comment", "exp1"], cwd)
    assert result.code == 0, result.text
    block = result.out.split("📦 best_model_eer_exp1.pth")[1].split("📦")[0]
    assert "Legacy" in block and "weights only" in block
    block = result.out.split("📦 checkpoint_epoch_3_exp1.pth")[1].split("📦")[0]
    assert "Unreadable" in block


def test_resume_hyperparameter_change_warns_per_key(tmp_path: Path, trained: Path) -> None:
    cwd = copy_models(trained, tmp_path)
    folder = cwd / "models" / EXP1
    result = run_main([*TINY, "--resume", "--model_path", str(folder / "checkpoint_epoch_4_exp1.pth"),
                       "--num_epochs", "5", "--comment", "exp1", "--weight_decay", "0.01", "--seed", "7"], cwd)
    assert result.code == 0, result.text
    warnings = [line for line in result.out.splitlines() if line.startswith("Warning: hyperparameter")]
    assert sorted(w.split()[2] for w in warnings) == ["num_epochs", "seed", "weight_decay"]
    assert "weight_decay differs from the checkpoint: 0.0001 -> 0.01 (using 0.01, from the command line)" in result.out
    ckpt = load(cwd / "models" / "lcnn_DF_CCE_5_8_0.001_group3_contrastiveFalse_exp1" / "checkpoint_epoch_5_exp1.pth")
    assert ckpt["optimizer_state_dict"]["param_groups"][0]["weight_decay"] == 0.01
    assert ckpt["args"]["seed"] == 7


def test_resume_with_unspecified_hyperparameters_takes_the_checkpoints(tmp_path: Path, trained: Path) -> None:
    """Omitting --lr on resume keeps the checkpoint's 0.001 instead of silently using the default."""
    cwd = copy_models(trained, tmp_path)
    folder = cwd / "models" / EXP1
    result = run_main(["--model_type", "lcnn", "--batch_size", "8", "--resume", "--model_path",
                       str(folder / "checkpoint_epoch_4_exp1.pth"), "--num_epochs", "4", "--comment", "exp1"], cwd)
    assert result.code == 0, result.text
    assert "Warning" not in result.out and "nothing left to train" in result.out


def test_pretrained_weights_that_do_not_fit_exit_2(tmp_path: Path, trained: Path) -> None:
    source = trained / "models" / EXP1 / "best_checkpoint_eer_exp1.pth"
    result = run_main([*TINY, "--model_type", "g3_heatmap", "--model_path", str(source), "--num_epochs", "1"], tmp_path)
    assert result.code == 2
    assert str(source) in result.err and "does not fit" in result.err


def test_main_py_and_python_m_training_are_the_same_program(tmp_path: Path) -> None:
    via_main = run_main(["--help"], tmp_path)
    via_module = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=tmp_path, env=child_env(),
                                capture_output=True, text=True, timeout=120)
    assert via_main.code == via_module.returncode == 0
    assert via_main.out == via_module.stdout  # one parser, one usage text (prog is main.py in both)
    assert "--auto_resume" in via_main.out and "--list_checkpoints" in via_main.out
