"""The Launch page's logic, without Streamlit: which fields the form has, their defaults from a
checkpoint, what is passed to :func:`training.jobs.launch`, the command preview, the per-key diff
against the checkpoint and the checks that keep invalid runs from being submitted.

One form serves the four modes of :data:`training.runs.MODES`. The fields come from
``training.config.OPTIONS`` (nothing is listed twice); the mode flags and ``--model_path`` are
not fields: the mode is a single choice (so ``--resume --fresh_start`` cannot be expressed) and
the checkpoint is picked from the models root's scanned files, never typed.

What is passed for resume / pretrained follows the rules the CLI applies (``training.runs``: the
flag combinations, the merge of a checkpoint's args, the differences, the command line): a resume
takes every hyperparameter not typed from the checkpoint, a pretrained start only the
architecture keys. So the form passes only the values that differ from what the CLI would use
anyway (plus ``num_epochs``, as the guide's commands always do): the command stays as short as
the guide's, and every flag in it is a deliberate change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from training.dashboard import catalog
from training import jobs
from training.config import (ACTION_OPTIONS, DEFAULTS, EVALUATION_OPTIONS, LAUNCH_OPTIONS, OPTIONS, Option, UsageError,
                             coerce, validate_options)
from training.naming import experiment_name, parse_experiment_name
from training.run_checks import check_data_source, unusual_values
from training.dashboard.views import RESUMABLE_KINDS, WEIGHT_KINDS, newest_resumable
from training.runs import (MODES, NEEDS_CHECKPOINT, NOT_STORED, PREDATED_VALUES, RESERVED_OPTIONS, check_combinations,
                           command_line, hyperparameter_differences, keys_from_checkpoint, merge_checkpoint_args,
                           mode_flags)

MODE_LABELS: dict[str, str] = {
    "fresh": "Fresh start",
    "resume": "Resume from a checkpoint",
    "auto_resume": "Auto-resume",
    "pretrained": "Start from pretrained weights",
}
MODE_HELP: dict[str, str] = {
    "fresh": "Start at epoch 1. Earlier files in the experiment folder are moved to archive/.",
    "resume": "Continue a checkpoint: weights, optimizer, epoch counter, best EER and RNG state.",
    "auto_resume": "Continue from the newest good checkpoint of the experiment folder, or start fresh if it has none.",
    "pretrained": "Load a checkpoint's weights only: fresh optimizer, epoch 1, a new experiment.",
}
GROUP_TITLES: dict[str, str] = {"training": "Training", "data": "Data", "checkpoint": "Checkpoints",
                                "system": "System"}
# Not form fields: the models root is the dashboard's, model_path is the chosen checkpoint, the
# mode flags are the mode; evaluation is not a training run.
# The launch options are the page's target choice (pages/slurm_ui.py), not run fields.
NOT_FIELDS = frozenset({"models_root", "model_path"}) | RESERVED_OPTIONS | EVALUATION_OPTIONS | LAUNCH_OPTIONS
FIELDS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.name not in NOT_FIELDS)
FIELDS_BY_NAME: dict[str, Option] = {o.name: o for o in FIELDS}
# Passed even when unchanged, like every command in the guide: the target is what one reads first.
ALWAYS_PASSED = ("num_epochs",)
PRETRAINED_COMMENT_SUFFIX = "from_pretrained"  # the guide's "exp2_from_pretrained"


def fields_by_group() -> dict[str, list[Option]]:
    """The form's fields, grouped as in ``GROUP_TITLES`` (table order inside a group)."""
    groups: dict[str, list[Option]] = {g: [] for g in GROUP_TITLES}
    for opt in FIELDS:
        groups.setdefault(opt.group, []).append(opt)
    return {g: opts for g, opts in groups.items() if opts}


# --- choosing a checkpoint --------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckpointChoice:
    """A checkpoint the form may start from: ``key`` is ``<experiment>/<file>`` (the URL's form)."""

    experiment: str
    file: str
    path: Path
    kind: str  # the catalog's: full | best | legacy
    epoch: int | None
    val_eer: float | None

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.file}"

    @property
    def resumable(self) -> bool:
        return self.kind in RESUMABLE_KINDS

    def label(self) -> str:
        epoch = f"epoch {self.epoch}" if self.epoch is not None else "epoch ?"
        eer = f", val EER {self.val_eer:.2f}%" if self.val_eer is not None else ""
        return f"{self.key} ({epoch}{eer}, {self.kind})"


def _number_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def checkpoint_choices(checkpoints: pd.DataFrame) -> list[CheckpointChoice]:
    """The files of ``catalog.scan_checkpoints`` that hold weights (full, best, legacy), in the
    scan's order (by experiment, then checkpoint order)."""
    out = []
    for row in checkpoints.itertuples(index=False):
        if row.kind not in WEIGHT_KINDS:
            continue  # unreadable / unsafe files cannot start anything
        epoch = _number_or_none(row.epoch)
        out.append(CheckpointChoice(row.experiment, row.file, Path(row.path), row.kind,
                                    int(epoch) if epoch is not None else None, _number_or_none(row.val_eer)))
    return out


def find_choice(choices: list[CheckpointChoice], key: str | None) -> CheckpointChoice | None:
    """The choice named ``<experiment>/<file>``; None when no scanned checkpoint has that name
    (a link to a deleted file, or a path that is not a checkpoint of this models root)."""
    return next((c for c in choices if c.key == key), None) if key else None


def stored_args(path: Path | str) -> dict[str, Any]:
    """The hyperparameters a checkpoint stores (``{}`` for legacy or unreadable files)."""
    args = catalog.checkpoint_details(path).get("args") or {}
    return dict(args) if isinstance(args, Mapping) else {}


def experiment_stored_args(models_root: Path | str, checkpoints: pd.DataFrame, experiment: str) -> dict[str, Any]:
    """The args of the checkpoint auto-resume would continue; else what its folder name says;
    ``{}`` for a name that follows no scheme."""
    newest = newest_resumable(checkpoints, experiment)
    if newest is not None:
        args = stored_args(newest["path"])
        if args:
            return args
    return parse_experiment_name(experiment)


def auto_resume_refusal(checkpoints: pd.DataFrame, experiment: str) -> str | None:
    """Why the Launch page's auto-resume cannot continue this very folder; None when it can.

    It needs a resumable checkpoint (the original script's weights-only ``epoch_N.pth`` /
    ``best_model_eer.pth`` cannot restore the optimizer or the epoch), and the folder the form
    computes from that checkpoint's settings must be this one (a renamed folder, or one named by
    another scheme, would make the run write elsewhere)."""
    newest = newest_resumable(checkpoints, experiment)
    if newest is None:
        legacy = checkpoints[(checkpoints["experiment"] == experiment) & (checkpoints["kind"] == "legacy")]
        if len(legacy):
            return "its files hold weights only (the original script's format): they cannot be resumed"
        return "it holds no resumable checkpoint"
    try:
        target = experiment_name(stored_args(newest["path"]))
    except (KeyError, TypeError, ValueError):
        return f"{newest['file']} stores no settings that name its folder"
    if target != experiment:
        return f"its checkpoints' settings name another folder ({target}): auto-resume would continue that one"
    return None


# --- values -----------------------------------------------------------------------------------------

def form_defaults(mode: str, stored: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(field -> initial value, notes). Hyperparameters come from ``stored`` (a checkpoint's
    ``args``) where it has them; action options (device, workers, keep_last) keep the defaults,
    as the CLI never takes those from a checkpoint. A pretrained start gets a new comment, so it
    does not write into (and archive) the folder its weights come from."""
    values = {o.name: o.default for o in FIELDS}
    notes = []
    for name, opt in FIELDS_BY_NAME.items():
        if name in ACTION_OPTIONS or name not in stored:
            continue
        try:
            values[name] = coerce(opt, stored[name])
        except (TypeError, ValueError):
            notes.append(f"The checkpoint's {name}={stored[name]!r} is not a valid --{name}; using {opt.default!r}")
    if mode == "resume" and stored:  # what the CLI assumes for keys the checkpoint predates
        values.update({k: v for k, v in PREDATED_VALUES.items() if k in values and k not in stored})
    if mode == "pretrained":
        base = values.get("comment")
        values["comment"] = f"{base}_{PRETRAINED_COMMENT_SUFFIX}" if base else PRETRAINED_COMMENT_SUFFIX
    return values, notes


def widget_value(opt: Option, value: Any) -> Any:
    """How a field's widget holds a value: floats and free text as text (a number widget cannot
    show 1e-06), everything else as itself. :func:`parse_field` is the inverse."""
    if opt.kind is float:
        return "" if value is None else repr(float(value))
    if opt.kind is str and not opt.choices:
        return "" if value is None else str(value)
    return value


def parse_field(opt: Option, raw: Any) -> Any:
    """A widget's value as the option's type: '' -> None; floats arrive as text (number widgets
    cannot show 1e-06). Raises ValueError with a one-line message naming the field."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        return coerce(opt, raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(opt.kind, "one of the choices")
        raise ValueError(f"{opt.name}: {raw!r} is not {kind}") from None


# --- the plan ---------------------------------------------------------------------------------------

def cli_baseline(mode: str, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The values the CLI uses for options not typed: the defaults, overlaid (exactly as
    the CLI merges, ``training.runs.merge_checkpoint_args``) with the checkpoint's values for
    resume (every hyperparameter) or pretrained (architecture keys only)."""
    return merge_checkpoint_args(dict(stored), dict(DEFAULTS), (), keys_from_checkpoint(mode))


@dataclass
class LaunchPlan:
    """Everything the page shows before launching, and what a launch passes to jobs.launch."""

    mode: str
    checkpoint: CheckpointChoice | None
    args: dict[str, Any]                  # for jobs.launch (model_path included)
    effective: dict[str, Any]             # what the trainer will run with
    experiment: str                       # the folder the run writes
    command: str | None = None            # python main.py ... (None while there are errors)
    diff: list[tuple[str, Any, Any]] = field(default_factory=list)  # (key, checkpoint, launch)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    disk: str | None = None               # the disk the run's checkpoints need (training.checkpoint.disk)

    @property
    def ok(self) -> bool:
        return not self.errors

    def fingerprint(self) -> str:
        """Identifies the exact run: equal fingerprints launch the same argv."""
        return json.dumps([self.mode, self.args], sort_keys=True, default=str)

    def diff_frame(self) -> pd.DataFrame:
        rows = [{"key": k, "checkpoint": "(not stored)" if old is NOT_STORED else repr(old), "launch": repr(new)}
                for k, old, new in self.diff]
        return pd.DataFrame(rows, columns=["key", "checkpoint", "launch"])


def _passed_args(mode: str, values: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    if mode not in NEEDS_CHECKPOINT:
        return {k: v for k, v in values.items() if v is not None}  # jobs drops the defaults itself
    return {k: v for k, v in values.items()
            if v is not None and (k in ALWAYS_PASSED or k not in baseline or v != baseline[k])}


def plan_launch(models_root: Path | str, mode: str, raw_values: Mapping[str, Any],
                checkpoint: CheckpointChoice | None, stored: Mapping[str, Any] | None = None,
                checkpoints: pd.DataFrame | None = None) -> LaunchPlan:
    """Validate the form and build the run. ``stored``: the chosen checkpoint's args (read here
    when None). ``checkpoints``: the scan, for notes about the target folder."""
    errors: list[str] = []
    warnings: list[str] = []
    if mode not in MODES:
        errors.append(f"Unknown mode {mode!r}; choose one of {', '.join(MODE_LABELS.values())}")
        mode = "fresh"
    values: dict[str, Any] = {}
    for name, opt in FIELDS_BY_NAME.items():
        try:
            values[name] = parse_field(opt, raw_values.get(name, opt.default))
        except ValueError as exc:
            errors.append(str(exc))
            values[name] = opt.default
    needs_checkpoint = mode in NEEDS_CHECKPOINT
    if needs_checkpoint and checkpoint is None:
        errors.append(f"{MODE_LABELS[mode]}: choose a checkpoint first (under “Checkpoint”)")
    if stored is None:
        stored = stored_args(checkpoint.path) if (checkpoint is not None and needs_checkpoint) else {}
    baseline = cli_baseline(mode, stored)
    args = _passed_args(mode, values, baseline)
    if needs_checkpoint and checkpoint is not None:
        args["model_path"] = str(checkpoint.path)
    effective = {**baseline, **args}
    try:  # the CLI's and the jobs API's own rule: the same message for the same value
        validate_options({**effective, "models_root": str(models_root)})
    except UsageError as exc:
        errors.append(str(exc))
    try:  # the data set's files, and values legal but unusual: the CLI's rules too
        check_data_source(effective)
    except UsageError as exc:
        errors.append(str(exc))
    warnings.extend(unusual_values(effective))
    try:
        check_combinations({**effective, **mode_flags(mode),
                            # a missing checkpoint is reported above, in the form's words
                            "model_path": args.get("model_path") or needs_checkpoint})
    except UsageError as exc:
        errors.append(str(exc))
    if mode == "resume" and checkpoint is not None:
        _check_resume(checkpoint, effective, errors, warnings)
    command = None
    try:
        command = command_line(mode, {**args, "models_root": str(models_root)})
    except ValueError as exc:
        if not errors:
            errors.append(str(exc))
    plan = LaunchPlan(mode, checkpoint, args, effective, experiment_name(effective),
                      command if not errors else None, errors=errors, warnings=warnings)
    if needs_checkpoint and checkpoint is not None and stored:
        plan.diff = [(k, old, new) for k, old, new in hyperparameter_differences(dict(stored), effective)
                     if old is not NOT_STORED or new != DEFAULTS.get(k)]
    if checkpoints is not None:
        warnings.extend(target_folder_notes(mode, plan.experiment, checkpoints))
    if not errors:
        _check_disk(plan, models_root, _start_epoch(mode, checkpoint, plan.experiment, checkpoints))
    return plan


# A run that would fill more than this share of the free space gets a warning: others write there too.
DISK_WARNING_SHARE = 0.5


def _start_epoch(mode: str, checkpoint: CheckpointChoice | None, experiment: str,
                 checkpoints: pd.DataFrame | None) -> int:
    """Completed epochs the run starts from (0 when unknown: the larger estimate)."""
    if mode == "resume" and checkpoint is not None:
        return int(checkpoint.epoch or 0)
    if mode == "auto_resume" and checkpoints is not None:
        row = newest_resumable(checkpoints, experiment)
        return int(row["epoch"]) if row is not None else 0
    return 0


def _check_disk(plan: LaunchPlan, models_root: Path | str, start_epoch: int) -> None:
    """The CLI's disk rule (training.checkpoint.disk): ``plan.disk`` states the need, an error when
    it cannot fit, a warning when it takes more than half the free space."""
    from training.checkpoint.disk import plan_disk

    try:
        disk = plan_disk({**plan.effective, "models_root": str(models_root)}, start_epoch)
    except Exception as exc:  # noqa: BLE001 - a model the args cannot build: the CLI says the same
        plan.errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        plan.command = None
        return
    if not disk.checkpoints:
        return
    plan.disk = disk.statement()
    if not disk.fits:
        plan.errors.append(disk.refusal())
        plan.command = None
    elif disk.needed_bytes > DISK_WARNING_SHARE * disk.free_bytes:
        plan.warnings.append(disk.statement())


def _check_resume(checkpoint: CheckpointChoice, effective: Mapping[str, Any], errors: list[str],
                  warnings: list[str]) -> None:
    if not checkpoint.resumable:
        warnings.append(f"{checkpoint.file} holds weights only (a legacy file): the optimizer state and "
                        "epoch cannot be restored; the run loads the weights and starts at epoch 1")
        return
    target = effective.get("num_epochs")
    if checkpoint.epoch is not None and target is not None and int(target) <= checkpoint.epoch:
        errors.append(f"{checkpoint.file} is at epoch {checkpoint.epoch}: set num_epochs above "
                      f"{checkpoint.epoch} to train further")


def target_folder_notes(mode: str, experiment: str, checkpoints: pd.DataFrame) -> list[str]:
    """What the run will do to its experiment folder's existing files."""
    present = checkpoints[checkpoints["experiment"] == experiment]
    if mode in ("fresh", "pretrained") and len(present):
        return [f"{experiment} already holds {len(present)} checkpoint file(s): a fresh start moves "
                f"them to {experiment}/archive/<time>/ (nothing is deleted)"]
    if mode == "auto_resume":
        newest = newest_resumable(checkpoints, experiment)
        if newest is None:
            return [f"{experiment} has no resumable checkpoint: auto-resume starts fresh"]
        step = int(newest["step_in_epoch"]) if pd.notna(newest["step_in_epoch"]) else 0
        where = f"epoch {int(newest['epoch'])}" + (f", step {step} of epoch {int(newest['epoch']) + 1}" if step else "")
        return [f"Auto-resume continues {experiment} from its newest good checkpoint by (epoch, step) "
                f"(now {newest['file']}, {where}); a newer file that fails to load is skipped"]
    return []


def launch(models_root: Path | str, plan: LaunchPlan) -> jobs.Job:
    """Submit a plan (exactly what the page calls). Raises ValueError for a plan with errors,
    and whatever :func:`training.jobs.launch` raises (ValueError, JobConflict)."""
    if plan.errors:
        raise ValueError(plan.errors[0])
    return jobs.launch(models_root, plan.mode, plan.args)
