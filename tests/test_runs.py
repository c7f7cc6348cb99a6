"""One home per shared rule: the CLI, the jobs API and the Launch form call down into
``training.runs`` (modes, flag combinations, the checkpoint-args merge, differences, the command
line) and ``training.config`` (coercion, typing); the newest full checkpoint of a folder is chosen
by ``training.checkpoint.resumable``; names and labels have one home each."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from training import cli, config, labels, naming, runs
from training.checkpoint import resumable
from training.config import OPTIONS_BY_NAME, UsageError, coerce, option_text, typed_args
from training.dashboard import launch_form, views
from training.jobs import control

REPO = Path(__file__).resolve().parent.parent


def private_imports(path: Path) -> list[str]:
    """``from training.x import _y`` and ``x._y`` uses of another module's private names in ``path``."""
    tree = ast.parse(path.read_text())
    modules = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training"):
            found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            modules |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("training")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    paths = sorted((REPO / "training").rglob("*.py")) + sorted((REPO / "pages").glob("*.py"))
    offenders = {str(p.relative_to(REPO)): private_imports(p) for p in paths}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_private_import_check_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from training.cli import (\n    DEFAULTS,\n    _merge,\n)\nfrom training import jobs\njobs._flags\n")
    assert private_imports(sample) == ["training.cli._merge", "jobs._flags"]


def test_cli_form_and_jobs_share_the_run_rules() -> None:
    assert cli.check_combinations is runs.check_combinations is launch_form.check_combinations
    assert cli.merge_checkpoint_args is runs.merge_checkpoint_args is launch_form.merge_checkpoint_args
    assert control.merge_checkpoint_args is runs.merge_checkpoint_args
    assert launch_form.hyperparameter_differences is runs.hyperparameter_differences
    assert launch_form.command_line is runs.command_line and control.run_flags is runs.run_flags


@pytest.mark.parametrize("mode, taken", [("resume", {"lr": 0.5, "model_type": "lcnn", "algo": 0}),
                                         ("pretrained", {"model_type": "lcnn"}), ("fresh", {})])
def test_the_form_baseline_is_the_cli_merge(mode: str, taken: dict) -> None:
    stored = {"lr": 0.5, "model_type": "lcnn", "device": "cuda"}  # device: an action, never taken
    baseline = launch_form.cli_baseline(mode, stored)
    assert {k: v for k, v in baseline.items() if v != config.DEFAULTS[k]} == {
        k: v for k, v in taken.items() if v != config.DEFAULTS[k]}


def test_mode_flags_are_the_cli_start_flags() -> None:
    for mode in runs.MODES:
        flags = runs.mode_flags(mode)
        typed = {f"--{k}" for k, v in flags.items() if v}
        assert typed == set(runs.MODE_FLAGS[mode])


def test_one_coercion_for_form_command_line_and_models() -> None:
    from training.models import model_args

    flag = OPTIONS_BY_NAME["use_contrastive"]
    for text in ("1", "true", "True"):
        assert coerce(flag, text) is True and launch_form.parse_field(flag, text) is True
        assert model_args({"use_contrastive": text})["use_contrastive"] is True
    with pytest.raises(ValueError):
        coerce(flag, 2)
    assert coerce(OPTIONS_BY_NAME["batch_size"], "16") == 16 == coerce(OPTIONS_BY_NAME["batch_size"], 16.0)
    with pytest.raises(ValueError):
        coerce(OPTIONS_BY_NAME["batch_size"], True)
    assert option_text(OPTIONS_BY_NAME["lr"], 1e-6) == "1e-06"
    with pytest.raises(ValueError, match="--batch_size needs an integer"):
        option_text(OPTIONS_BY_NAME["batch_size"], 2.5)


def test_typed_args_types_a_checkpoints_values_once() -> None:
    typed = typed_args({"batch_size": 16.0, "lr": "0.001", "use_contrastive": "False", "head_version": 1,
                        "comment": None})
    assert typed == {"batch_size": 16, "lr": 0.001, "use_contrastive": False, "head_version": 1, "comment": None}
    assert type(typed["batch_size"]) is int and type(typed["lr"]) is float
    with pytest.raises(UsageError, match="--num_epochs needs an integer, got 'many'"):
        typed_args({"num_epochs": "many"})


def test_resume_order_is_epoch_step_role_then_time() -> None:
    rank = resumable.resume_rank
    files = {"checkpoint_epoch_3.pth": rank(3, 0, "checkpoint_epoch_3.pth", 10.0),
             "best_checkpoint_eer.pth": rank(3, 0, "best_checkpoint_eer.pth", 20.0),  # newer copy, same epoch
             "checkpoint_interrupt.pth": rank(3, 0, "checkpoint_interrupt.pth", 30.0),
             "checkpoint_epoch_2.pth": rank(2, 5, "checkpoint_epoch_2.pth", 40.0),
             "odd.pth": rank(None, None, "odd.pth", None)}
    assert resumable.newest_first(files, files.get) == [
        "checkpoint_epoch_3.pth", "checkpoint_interrupt.pth", "best_checkpoint_eer.pth", "checkpoint_epoch_2.pth",
        "odd.pth"]
    assert rank(3, 1, "checkpoint_interrupt.pth", 0.0) > files["checkpoint_epoch_3.pth"]  # a step further


def test_scan_rows_follow_the_same_order() -> None:
    now = pd.Timestamp("2026-01-01")
    scan = pd.DataFrame([
        {"experiment": "e", "file": "checkpoint_epoch_3.pth", "path": "/e/3", "kind": "full", "role": "epoch",
         "epoch": 3, "step_in_epoch": pd.NA, "modified": now},
        {"experiment": "e", "file": "best_checkpoint_eer.pth", "path": "/e/b", "kind": "best", "role": "best",
         "epoch": 3, "step_in_epoch": pd.NA, "modified": now + pd.Timedelta(seconds=5)},
        {"experiment": "e", "file": "epoch_9.pth", "path": "/e/9", "kind": "legacy", "role": "epoch",
         "epoch": 9, "step_in_epoch": pd.NA, "modified": pd.NaT},
    ]).astype({"epoch": "Int64", "step_in_epoch": "Int64"})
    assert views.newest_resumable(scan, "e")["file"] == "checkpoint_epoch_3.pth"
    assert launch_form.newest_resumable is views.newest_resumable
    assert views.args_checkpoint(scan, "e") == Path("/e/3")


def test_names_and_labels_have_one_home() -> None:
    from training import models, run_folder
    from training.dashboard import catalog, scan
    from training.data import asvspoof, synthetic
    from training.evaluation import keys, official

    assert catalog.LOG_NAME is naming.LOG_NAME and run_folder.LOG_NAME is naming.LOG_NAME
    assert scan.ARCHIVE_DIRNAME is naming.ARCHIVE_DIRNAME is run_folder.ARCHIVE_DIRNAME
    from training.jobs import registry
    assert registry.JOBS_DIRNAME is naming.JOBS_DIRNAME
    assert models.BONAFIDE is labels.BONAFIDE and synthetic.BONAFIDE is labels.BONAFIDE
    assert official.SPOOF is labels.SPOOF
    assert asvspoof.PROTOCOL_LABELS is labels.PROTOCOL_LABELS and keys.PROTOCOL_LABELS is labels.PROTOCOL_LABELS
