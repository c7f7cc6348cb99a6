"""The one place that names experiment folders, checkpoint files and the other files and folders
a run or the jobs registry writes (training log, archive, jobs folder), and parses names back.

The CLI, the trainer, the jobs, the catalog and the dashboard all take names from here; nothing
else spells them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import DEFAULTS

CHECKPOINT_SUFFIX = ".pth"
LOG_NAME = "training_log.csv"  # a run's per-epoch log, in its experiment folder
STEPS_LOG_NAME = "training_steps.csv"  # its step-level log (--log_every_steps), next to it
ARCHIVE_DIRNAME = "archive"  # <experiment>/archive/<time>/: what a fresh start moved aside
NOTES_NAME = "notes.json"  # <experiment>/notes.json: the user's notes and tags (training.experiment_notes)
JOBS_DIRNAME = ".jobs"  # <models_root>/.jobs/: the jobs registry and the jobs' logs
EVAL_DIRNAME = "eval"  # <checkpoint folder>/eval/: --eval's default score files and their metrics.json
ATTENTION_DIRNAME = "attention"  # <experiment>/attention/epoch_N/: --visualize_attention's output
ATTENTION_NPZ_NAME = "attention.npz"  # the arrays in each of those folders
# The options an experiment folder's name is made of (see experiment_name).
NAME_KEYS = ("model_type", "track", "loss", "num_epochs", "batch_size", "lr", "group_size", "use_contrastive",
             "comment")


def format_lr(lr: float) -> str:
    """The learning rate as Python prints a float: 1e-06, 0.0001, 0.001."""
    return str(float(lr))


def experiment_name(args: Mapping[str, Any] | Any) -> str:
    """``{model_type}_{track}_{loss}_{num_epochs}_{batch_size}_{lr}_group{g}_contrastive{c}[_{comment}]``.

    ``args`` is a mapping or an argparse namespace; missing keys take the CLI defaults, so the
    ``args`` of older checkpoints (which lack keys we added) still name their folder.
    """
    a = dict(DEFAULTS)
    a.update(args if isinstance(args, Mapping) else vars(args))
    name = (
        f"{a['model_type']}_{a['track']}_{a['loss']}_{int(a['num_epochs'])}_{int(a['batch_size'])}"
        f"_{format_lr(a['lr'])}_group{int(a['group_size'])}_contrastive{bool(a['use_contrastive'])}"
    )
    return f"{name}_{a['comment']}" if a.get("comment") else name


def experiment_dir(args: Mapping[str, Any] | Any) -> Path:
    a = args if isinstance(args, Mapping) else vars(args)
    return Path(a.get("models_root") or DEFAULTS["models_root"]) / experiment_name(a)


def _tag(comment: str | None) -> str:
    return f"_{comment}" if comment else ""


def epoch_checkpoint_name(epoch: int, comment: str | None) -> str:
    return f"checkpoint_epoch_{epoch}{_tag(comment)}{CHECKPOINT_SUFFIX}"


def best_checkpoint_name(comment: str | None) -> str:
    return f"best_checkpoint_eer{_tag(comment)}{CHECKPOINT_SUFFIX}"


def interrupt_checkpoint_name(comment: str | None) -> str:
    """Written when SIGTERM/SIGINT stops a run mid-epoch; resumes exactly at the next step."""
    return f"checkpoint_interrupt{_tag(comment)}{CHECKPOINT_SUFFIX}"


# --- parsing names back ---------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointName:
    """What a checkpoint's file name says. ``role``: epoch | best | interrupt | other."""

    role: str
    epoch: int | None
    comment: str | None
    legacy_name: bool  # epoch_N.pth / best_model_eer.pth: the original script's names

    @property
    def completed_epochs(self) -> int | None:
        """Epochs done when the file was written. Our ``checkpoint_epoch_N`` holds the state after
        epoch N (1-based); the original script saved ``epoch_{epoch}.pth`` with its 0-based loop
        index, so its ``epoch_N.pth`` holds N + 1 completed epochs (``epoch_0.pth``: one)."""
        if self.epoch is None:
            return None
        return self.epoch + 1 if self.legacy_name else self.epoch


_FILE_PATTERNS: tuple[tuple[re.Pattern[str], str, bool], ...] = (
    (re.compile(r"^checkpoint_epoch_(?P<epoch>\d+)(?:_(?P<comment>.+))?\.pth$"), "epoch", False),
    (re.compile(r"^epoch_(?P<epoch>\d+)(?:_(?P<comment>.+))?\.pth$"), "epoch", True),
    (re.compile(r"^best_checkpoint_eer(?:_(?P<comment>.+))?\.pth$"), "best", False),
    (re.compile(r"^best_model_eer(?:_(?P<comment>.+))?\.pth$"), "best", True),
    (re.compile(r"^checkpoint_interrupt(?:_(?P<comment>.+))?\.pth$"), "interrupt", False),
)


def parse_checkpoint_name(filename: str) -> CheckpointName:
    for pattern, role, legacy in _FILE_PATTERNS:
        m = pattern.match(filename)
        if m:
            epoch = m.groupdict().get("epoch")
            return CheckpointName(role, int(epoch) if epoch else None, m.group("comment"), legacy)
    return CheckpointName("other", None, None, False)


def checkpoint_sort_key(filename: str) -> tuple[int, int, str]:
    """Numeric epoch order (epoch 9 before epoch 10); best and other files after the epochs."""
    parsed = parse_checkpoint_name(filename)
    order = {"epoch": 0, "interrupt": 1, "best": 2, "other": 3}[parsed.role]
    return (order, parsed.epoch if parsed.epoch is not None else -1, filename)


_TRACK = r"(?P<track>LA|PA|DF|In-the-Wild)"
_EXPERIMENT_PATTERNS = (
    re.compile(
        r"^(?P<model_type>.+?)_" + _TRACK + r"_(?P<loss>[^_]+)_(?P<num_epochs>\d+)_(?P<batch_size>\d+)"
        r"_(?P<lr>[0-9.eE+-]+)_group(?P<group_size>\d+)_contrastive(?P<use_contrastive>True|False)"
        r"(?:_(?P<comment>.+))?$"
    ),
    # The ASVspoof 2021 baseline's folders: model_{track}_{loss}_{epochs}_{batch}_{lr}[_{comment}];
    # its default loss is "weighted_CCE", so the loss may hold underscores.
    re.compile(
        r"^model_" + _TRACK + r"_(?P<loss>.+?)_(?P<num_epochs>\d+)_(?P<batch_size>\d+)"
        r"_(?P<lr>[0-9.eE+-]+)(?:_(?P<comment>.+))?$"
    ),
)


def parse_experiment_name(folder: str) -> dict[str, Any]:
    """Hyperparameters recoverable from a folder name; ``{}`` when the name follows no known scheme."""
    for pattern in _EXPERIMENT_PATTERNS:
        m = pattern.match(folder)
        if not m:
            continue
        out: dict[str, Any] = {k: v for k, v in m.groupdict().items() if v is not None}
        out.setdefault("model_type", "baseline")
        for key in ("num_epochs", "batch_size", "group_size"):
            if key in out:
                out[key] = int(out[key])
        try:
            out["lr"] = float(out["lr"])
        except ValueError:
            continue
        if "use_contrastive" in out:
            out["use_contrastive"] = out["use_contrastive"] == "True"
        out.setdefault("comment", None)
        return out
    return {}


def carries_run_tag(filename: str, comment: str | None) -> bool:
    """Whether ``filename`` is a name a run with ``comment`` writes (epoch, best or interrupt file
    with that comment's tag). The original script's untagged names (``epoch_N.pth``,
    ``best_model_eer.pth``) count as the folder's own; another comment's names, and ``.pth``
    files of no known scheme, do not."""
    named = parse_checkpoint_name(filename)
    if named.role == "other":
        return False
    return (named.comment or None) == (comment or None) or (named.legacy_name and not named.comment)
