"""What a run is: the rules the CLI, the jobs API and the Launch form share.

Each of ``training.cli``, ``training.jobs`` and ``training.dashboard.launch_form`` calls down into
this module, never into one another, so each rule below has one home:

* the start modes and their flags (``MODES``, :func:`mode_flags`, :func:`check_combinations`);
* merging a checkpoint's stored args with the values typed for a run
  (:func:`merge_checkpoint_args`, ``PREDATED_VALUES``, :func:`keys_from_checkpoint`);
* what differs between a checkpoint's hyperparameters and a run's
  (:func:`hyperparameter_differences`, :func:`hyperparameter_warnings`);
* the command line of a run (:func:`check_run_args`, :func:`run_flags`, :func:`build_argv`,
  :func:`command_line`);
* the command line of an evaluation job, ``--eval`` of one checkpoint (:func:`check_eval_args`,
  :func:`eval_flags`): which options it takes, and that train jobs take none of the evaluation
  options and eval jobs none of the training ones.

Torch-free and cheap: the dashboard and ``--list_checkpoints`` import it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from training.config import (ACTION_OPTIONS, DEFAULTS, EVALUATION_OPTIONS, LAUNCH_OPTIONS, OPTIONS, OPTIONS_BY_NAME,
                             UsageError, option_text, validate_options)
from training.run_checks import check_data_source

# --- start modes ------------------------------------------------------------------------------

MODES = ("fresh", "resume", "auto_resume", "pretrained")
MODE_FLAGS: dict[str, tuple[str, ...]] = {
    "fresh": ("--fresh_start",),
    "resume": ("--resume",),
    "auto_resume": ("--auto_resume",),
    "pretrained": ("--fresh_start",),  # + --model_path: weights only, fresh optimizer, epoch 1
}
NEEDS_CHECKPOINT = frozenset({"resume", "pretrained"})
# Options the mode sets, or that are not training runs at all: never accepted as a run's args.
RESERVED_OPTIONS = frozenset({"resume", "fresh_start", "auto_resume", "list_checkpoints"})
# Keys that define the network's shape: a pretrained start takes them from the weights' file
# unless they are typed, since other values could not load those weights.
ARCHITECTURE_KEYS = ("model_type", "group_size", "use_contrastive")


def mode_flags(mode: str) -> dict[str, bool]:
    """The CLI's start flags a mode stands for, as option values (``--resume`` -> resume=True)."""
    return {"resume": mode == "resume", "auto_resume": mode == "auto_resume",
            "fresh_start": mode in ("fresh", "pretrained"), "list_checkpoints": False}


def check_combinations(args: Mapping[str, Any]) -> None:
    """The guide's invalid combinations of start flags, plus the ones it leaves implicit."""
    if args["resume"] and args["fresh_start"]:
        raise UsageError("--resume and --fresh_start cannot be used together: cannot use both flags")
    if args["resume"] and not args["model_path"]:
        raise UsageError("--resume requires a checkpoint path: add --model_path path/to/checkpoint.pth")
    if args["auto_resume"] and (args["resume"] or args["fresh_start"]):
        other = "--resume" if args["resume"] else "--fresh_start"
        raise UsageError(f"--auto_resume and {other} cannot be used together: auto-resume decides itself")
    if args["auto_resume"] and args["model_path"]:
        raise UsageError("--auto_resume finds the checkpoint itself: drop --model_path, or use --resume --model_path")


# --- merging a checkpoint's args with the typed values -------------------------------------------

# A key the checkpoint's stored args do not have (it predates the option).
NOT_STORED = object()
# The value a key the checkpoint predates had in effect when it trained, where that is not
# today's default: checkpoints from before RawBoost trained without augmentation, so resuming one
# must not switch it on (``--algo`` typed still can).
PREDATED_VALUES: dict[str, Any] = {"algo": 0}


def keys_from_checkpoint(mode: str) -> tuple[str, ...]:
    """The keys a run takes from its checkpoint unless typed: every hyperparameter for a resume,
    the architecture keys for a pretrained start, none otherwise."""
    return {"resume": tuple(DEFAULTS), "pretrained": ARCHITECTURE_KEYS}.get(mode, ())


def merge_checkpoint_args(stored: Mapping[str, Any], typed: Mapping[str, Any], explicit: Iterable[str],
                          keys: Iterable[str]) -> dict[str, Any]:
    """``typed`` with the checkpoint's ``stored`` values for each of ``keys`` not in ``explicit``
    (never an action option); keys the checkpoint predates take ``PREDATED_VALUES``."""
    explicit = set(explicit)
    merged = dict(typed)
    for key in keys:
        if key in explicit:
            continue
        if key not in ACTION_OPTIONS and key in stored:
            merged[key] = stored[key]
        elif stored and key in PREDATED_VALUES:
            merged[key] = PREDATED_VALUES[key]
    return merged


def hyperparameter_differences(checkpoint_args: Mapping[str, Any], args: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, checkpoint value, new value) for each hyperparameter whose value differs, in table
    order; ``NOT_STORED`` as the checkpoint value for keys it predates. Shared by the CLI's
    warnings and the Launch form's diff, so both call the same keys different."""
    out = []
    for opt in OPTIONS:
        key = opt.name
        if key in ACTION_OPTIONS:
            continue
        if key not in checkpoint_args:
            out.append((key, NOT_STORED, args.get(key)))
            continue
        old, new = checkpoint_args[key], args.get(key)
        if old != new and not (isinstance(old, float) and isinstance(new, float) and abs(old - new) <= 1e-12 * abs(old)):
            out.append((key, old, new))
    return out


def hyperparameter_warnings(checkpoint_args: Mapping[str, Any], args: Mapping[str, Any], explicit: Iterable[str],
                            path: Path) -> list[str]:
    """One line per differing key: old -> new, and which value is used."""
    explicit = set(explicit)
    lines = []
    for key, old, new in hyperparameter_differences(checkpoint_args, args):
        if old is NOT_STORED:
            if key in explicit:
                lines.append(f"Warning: {path.name} predates --{key}; using {new!r}")
            continue
        source = "from the command line" if key in explicit else "the default"
        lines.append(f"Warning: hyperparameter {key} differs from the checkpoint: {old!r} -> {new!r} "
                     f"(using {new!r}, {source})")
    return lines


# --- the command line of a run -------------------------------------------------------------------

def program() -> list[str]:
    """How a run's process starts; ``-u``: unbuffered, so its log follows the run live."""
    return [sys.executable, "-u", "-m", "training"]


def check_run_args(mode: str, args: Mapping[str, Any], models_root: Path | str | None = None) -> None:
    """Mode and option names here; every value through the CLI's own rule (validate_options).
    ``models_root``: the registry's root, checked as the run's --models_root. Raises ValueError."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    unknown = sorted(set(args) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    reserved = sorted(k for k in RESERVED_OPTIONS if args.get(k))
    if reserved:
        raise ValueError(f"{', '.join(reserved)} is set by the mode, not passed as an option")
    evaluation = sorted(k for k in EVALUATION_OPTIONS if args.get(k) not in (None, False))
    if evaluation:
        raise ValueError(f"{', '.join(evaluation)}: an evaluation option; a training job takes none "
                         "(start an eval job instead)")
    has_path = bool(args.get("model_path"))
    if mode in NEEDS_CHECKPOINT and not has_path:
        raise ValueError(f"{mode} requires a checkpoint path (model_path)")
    if mode not in NEEDS_CHECKPOINT and has_path:
        raise ValueError(f"{mode} takes no model_path; use mode 'resume' or 'pretrained'")
    validate_options({**args, "models_root": models_root or args.get("models_root")})
    check_data_source(args)


def run_flags(mode: str, args: Mapping[str, Any]) -> list[str]:
    """The CLI flags for ``mode`` + ``args``: mode flags, then the options in table order.

    fresh/auto_resume runs omit values equal to the defaults (same run, shorter command). For
    resume/pretrained a typed value overrides the checkpoint's, even when it equals the
    default, so everything given is kept.
    """
    check_run_args(mode, args)
    flags = list(MODE_FLAGS[mode])
    keep_defaults = mode in NEEDS_CHECKPOINT
    root = args.get("models_root") or DEFAULTS["models_root"]
    for name, opt in OPTIONS_BY_NAME.items():
        if name == "models_root":
            flags += ["--models_root", str(Path(root).absolute())]
            continue
        value = args.get(name)
        # Where the run executes is no part of its command: a Slurm job runs these very flags.
        if value is None or name in RESERVED_OPTIONS or name in LAUNCH_OPTIONS:
            continue
        if opt.kind is bool:
            if value:
                flags.append(f"--{name}")
            continue
        if not keep_defaults and name != "model_path" and value == DEFAULTS[name]:
            continue
        text = option_text(opt, value)
        # "--comment=-x": a value that looks like a flag must be glued to its option.
        flags += [f"--{name}={text}"] if text.startswith("-") else [f"--{name}", text]
    return flags


def build_argv(mode: str, args: Mapping[str, Any]) -> list[str]:
    """The exact argv a job runs: ``[python, -u, -m, training, <flags>]``. Raises ValueError."""
    return program() + run_flags(mode, args)


def command_line(mode: str, args: Mapping[str, Any]) -> str:
    """The same run as a user would type it: ``python main.py --fresh_start --model_type lcnn ...``."""
    return shlex.join(["python", "main.py", *run_flags(mode, args)])


def flags_of_argv(argv: Sequence[str]) -> list[str]:
    """The flags after the program part (``python -u -m training``) of a run's argv: every run
    starts with a mode flag, the first ``--`` argument."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            return argv[i:]
    return []


def typed_command_line(argv: Sequence[str]) -> str:
    """A stored argv as a user would type it: ``python main.py --fresh_start ...``."""
    return shlex.join(["python", "main.py", *flags_of_argv(argv)])


# --- evaluation jobs ------------------------------------------------------------------------------

JOB_KINDS = ("train", "eval")
EVAL_MODE = "eval"
# What an eval job passes to ``--eval``: the checkpoint, the set, how to read and score it. Its
# score file is always the default one (<checkpoint folder>/eval/), where the dashboard finds it.
EVAL_JOB_OPTIONS = ("model_path", "track", "database_path", "protocols_path", "eval_subset", "batch_size",
                    "num_workers", "device", "amp", "clip_samples")
EVAL_REQUIRED = ("model_path", "track")


def check_eval_args(args: Mapping[str, Any], models_root: Path | str | None = None) -> None:
    """An eval job's options: only ``EVAL_JOB_OPTIONS``, the checkpoint and track given, every
    value through the CLI's own rule (validate_options). Raises ValueError (one line)."""
    unknown = sorted(set(args) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(unknown)}")
    foreign = sorted(k for k, v in args.items() if k not in EVAL_JOB_OPTIONS and k != "models_root"
                     and v not in (None, False))
    if foreign:
        raise ValueError(f"{', '.join(foreign)}: not an option of an eval job (it takes "
                         f"{', '.join(EVAL_JOB_OPTIONS)})")
    missing = [k for k in EVAL_REQUIRED if not args.get(k)]
    if missing:
        raise ValueError(f"an eval job needs {' and '.join(missing)}")
    if not (args.get("database_path") or args.get("protocols_path")):
        raise ValueError("an eval job needs database_path (the set's audio) or protocols_path (its key)")
    validate_options({**args, "models_root": models_root or args.get("models_root")})


def eval_flags(args: Mapping[str, Any]) -> list[str]:
    """``--eval`` and the job's options in table order, as the CLI takes them."""
    check_eval_args(args)
    flags = ["--eval"]
    for name in EVAL_JOB_OPTIONS_IN_TABLE_ORDER:
        value = args.get(name)
        if value is None:
            continue
        opt = OPTIONS_BY_NAME[name]
        if opt.kind is bool:
            flags += [f"--{name}"] if value else []
            continue
        text = option_text(opt, value)
        flags += [f"--{name}={text}"] if text.startswith("-") else [f"--{name}", text]
    return flags


EVAL_JOB_OPTIONS_IN_TABLE_ORDER = tuple(name for name in OPTIONS_BY_NAME if name in EVAL_JOB_OPTIONS)
