"""Command line: ``python main.py ...`` / ``python -m training ...``.

Implements ``shared/spec/CHECKPOINT_GUIDE.md``. The decision of *how* to start is made here and
handed to the trainer as a ``StartPlan`` (fresh | resume | pretrained):

    no flags / --fresh_start              fresh start (earlier files in the folder are archived)
    --resume --model_path P               resume P: weights, optimizer, epoch, best EER, RNG
    --auto_resume                         newest good checkpoint in the folder, else fresh
    --model_path P [--fresh_start]        weights of P, fresh optimizer, epoch 1
    --list_checkpoints                    print the folder's checkpoints and exit
    --visualize_attention --model_path P  render P's attention maps (attention/<P's stem>/) and exit
                                          (with --resume or --fresh_start: a run that renders them)
    --eval --model_path P --track T ...   score an evaluation set, write scores + metrics, exit
    --eval_scores FILE --track T ...      the official metrics of an existing score file, exit

Before a run starts it states the disk its checkpoints will need (``training.checkpoint.disk``)
and is refused, exit 2, when that does not fit in the free space of the models root's file system.

The rules the CLI shares with the jobs API and the Launch form (flag combinations, merging a
checkpoint's args with the typed values, hyperparameter differences) are ``training.runs``.

Exit codes: 0 done (also "nothing left to train"), 1 error while training, 2 usage error,
unusable --model_path or not enough disk for the run, 3 experiment folder busy, 130/143 stopped
by SIGINT/SIGTERM after saving.

This module imports torch only when a run starts: ``--list_checkpoints`` reads metadata only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from training import distributed
from training.config import (DEFAULTS, EVALUATION_OPTIONS, OPTIONS, UsageError, check_attention_model, typed_args,
                             validate_options)
from training.naming import NAME_KEYS, experiment_dir, experiment_name, parse_experiment_name
from training.run_checks import check_data_source, unusual_values
from training.runs import check_combinations, hyperparameter_warnings, keys_from_checkpoint, merge_checkpoint_args

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUSY = 3
# Keys that make up the experiment folder's and the files' names (training.naming).
NAMING_KEYS = ("model_type", "track", "loss", "num_epochs", "batch_size", "lr", "group_size",
               "use_contrastive", "comment", "models_root")


class _OneLineParser(argparse.ArgumentParser):
    """argparse's own checks, reported like ours: one line and exit 2 (not the usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # Under torchrun every rank parses the same argv: rank 0 alone says what is wrong.
        self.exit(EXIT_USAGE, f"error: {message} (see --help)\n" if _prints_errors() else None)


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser, generated from ``training.config.OPTIONS``.

    With ``suppress_defaults`` only the options actually typed appear in the namespace: that is
    how a resume tells "the user asked for lr 1e-4" from "lr was left at its default".
    """
    parser = _OneLineParser(
        prog="main.py", description="Train an audio anti-spoofing model with exact checkpoint management.",
        argument_default=argparse.SUPPRESS if suppress_defaults else None)
    # Not a training option (so not in the table, the jobs API or the Launch form): it changes
    # what --list_checkpoints reads.
    parser.add_argument("--verify", action="store_true", default=argparse.SUPPRESS if suppress_defaults else False,
                        help="with --list_checkpoints: hash every file (sidecar checksum, else zip CRCs) "
                             "and mark damaged ones, which later listings show without hashing")
    for opt in OPTIONS:
        default = argparse.SUPPRESS if suppress_defaults else opt.default
        if opt.kind is bool:
            parser.add_argument(f"--{opt.name}", action="store_true", help=opt.help,
                                default=argparse.SUPPRESS if suppress_defaults else False)
        else:
            parser.add_argument(f"--{opt.name}", type=opt.kind, default=default, choices=opt.choices,
                                help=f"{opt.help} (default: {opt.default})")
    return parser


def parse_args(argv: list[str] | None) -> tuple[dict[str, Any], set[str]]:
    """(all options with defaults filled, names of the options given on the command line)."""
    args = vars(build_parser().parse_args(argv))
    explicit = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    return args, explicit


# --- --list_checkpoints (no torch) ---------------------------------------------------------------

def list_checkpoints(args: dict[str, Any], explicit: set[str] = frozenset(), verify: bool = False) -> int:
    """Print the folder's checkpoints from their metadata. Files found damaged by an earlier
    verification show as damaged; ``verify`` hashes every file first (and marks or clears)."""
    from training.checkpoint.meta import format_checkpoint_listing, list_checkpoint_files
    from training.checkpoint.pool import read_listed_infos
    from training.experiment_notes import notes_lines

    folder = experiment_dir(args)
    if not folder.is_dir():
        matches = folders_matching(args, explicit)
        if len(matches) != 1:
            print(f"No experiment folder {folder}: nothing to list.", file=sys.stderr)
            if matches:
                print("Folders with this comment: " + ", ".join(p.name for p in matches)
                      + " (pass the matching --model_type/--num_epochs/... to list one)", file=sys.stderr)
            return EXIT_USAGE
        folder = matches[0]
    files = list_checkpoint_files(folder)
    damaged = _verify_files(files) if verify else None
    infos = read_listed_infos(files)  # many files without sidecars: the reader processes
    print(format_checkpoint_listing(folder, infos))
    for line in notes_lines(folder):  # the user's notes and tags, set on the Experiments page
        print(line)
    if damaged is not None:
        print(f"Verified {len(files)} checkpoint file(s): "
              + (f"{len(damaged)} damaged ({', '.join(p.name for p in damaged)})" if damaged else "all intact"))
    return 0


def folders_matching(args: dict[str, Any], explicit: set[str]) -> list[Path]:
    """Experiment folders under the models root that carry ``--comment`` and agree with every
    hyperparameter typed on the command line (the guide lists ``--comment exp1`` alone, whatever
    options exp1 was trained with). Empty without a comment."""
    root = Path(args["models_root"])
    if not args.get("comment") or not root.is_dir():
        return []
    typed = {key: args[key] for key in explicit if key in NAME_KEYS}
    matches = []
    for path in sorted(root.iterdir()):
        named = parse_experiment_name(path.name)
        if (named.get("comment") == args["comment"] and path.is_dir()
                and all(named.get(key, DEFAULTS[key]) == value for key, value in typed.items())):
            matches.append(path)
    return matches


def _verify_files(files: list[Path]) -> list[Path]:
    """Hash each file against its sidecar (else its zip CRCs); mark the damaged ones, clear the
    marks of files that verify again. Returns the damaged files."""
    from training.checkpoint.sidecar import clear_damage_mark, mark_damaged, verify_checkpoint_file

    damaged = []
    for path in files:
        try:
            verified, problem = verify_checkpoint_file(path)
        except OSError:
            continue  # the listing says why it cannot be read
        if problem is None:
            clear_damage_mark(path)
            continue
        mark_damaged(path, problem, verified)
        damaged.append(path)
    return damaged


# --- deciding how to start -------------------------------------------------------------------------

def _merge_and_warn(stored: dict[str, Any], args: dict[str, Any], explicit: set[str], mode: str,
                    path: Path) -> dict[str, Any]:
    """The checkpoint's values for the keys ``mode`` takes from it that the command line did not
    set (``training.runs``); one warning per key that still differs from the checkpoint."""
    effective = merge_checkpoint_args(stored, args, explicit, keys_from_checkpoint(mode))
    if stored:
        for line in hyperparameter_warnings(stored, effective, explicit, path):
            print(line)
    return effective


def plan_run(args: dict[str, Any], explicit: set[str]) -> tuple[dict[str, Any], Any]:
    """Returns (effective args, StartPlan). Raises UsageError for an unusable --model_path."""
    from training.checkpoint.store import CheckpointError, find_latest_good_checkpoint, read_verified_checkpoint
    from training.trainer import StartPlan

    if args["model_path"]:
        path = Path(args["model_path"])
        try:
            loaded = read_verified_checkpoint(path)  # sidecar checksum, else zip CRCs
        except CheckpointError as exc:
            raise UsageError(str(exc)) from None
        stored = dict(loaded.full.get("args") or {}) if loaded.full else {}
        if isinstance(stored, argparse.Namespace):
            stored = vars(stored)
        if args["resume"] and loaded.is_full:
            effective = _merge_and_warn(stored, args, explicit, "resume", path)
            note = (f"Resuming from {path}: epoch {loaded.full['epoch']} completed"
                    + (f" (+{loaded.full['step_in_epoch']} steps)" if loaded.full.get("step_in_epoch") else "")
                    + _best_note(loaded.full))
            return effective, StartPlan("resume", loaded, note)
        if args["resume"]:
            print(f"Warning: {path} holds weights only (a legacy file): the optimizer state and epoch "
                  "cannot be restored; loading the weights and starting at epoch 1")
        effective = _merge_and_warn(stored, args, explicit, "pretrained", path)
        return effective, StartPlan("pretrained", loaded,
                                    f"Loaded weights from {path}; fresh optimizer, starting at epoch 1")
    if args["auto_resume"]:
        folder = experiment_dir(args)
        loaded = find_latest_good_checkpoint(folder, print) if folder.is_dir() else None
        if loaded is None:
            return args, StartPlan("fresh", None, f"Auto-resume: no usable checkpoint in {folder}; starting fresh")
        stored = dict(loaded.full.get("args") or {})
        effective = _merge_and_warn(stored, args, explicit, "resume", loaded.path)
        return effective, StartPlan("resume", loaded, f"Auto-resume: resuming from {loaded.path}: epoch "
                                    f"{loaded.full['epoch']} completed" + _best_note(loaded.full))
    return args, StartPlan("fresh", None, "")


def _best_note(ckpt: dict[str, Any]) -> str:
    best = ckpt.get("best_val_eer")
    return f", best val EER {best:.2f}% (epoch {ckpt.get('best_epoch')})" if isinstance(best, (int, float)) else ""


def _prints_errors() -> bool:
    """Under torchrun only rank 0 prints a usage error (every rank ends with its exit code)."""
    return distributed.is_main_process()


def main(argv: list[str] | None = None) -> int:
    if not distributed.launched_by_torchrun():
        return _main(argv)
    distributed.init()  # first: every verdict below, a usage error too, is agreed by all ranks
    try:
        code = _main(argv)
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else 0
    distributed.finish(code)  # every rank leaves the group with the same verdict
    return code


def _main(argv: list[str] | None) -> int:
    try:
        args, explicit = parse_args(argv)  # argparse itself exits 2 on unknown flags or bad values
        verify = args.pop("verify")
        explicit.discard("verify")
        if verify and not args["list_checkpoints"]:
            raise UsageError("--verify goes with --list_checkpoints (every load for training is verified anyway)")
        from training.evaluation.runner import check_evaluation_options  # numpy; only here
        check_evaluation_options(args, explicit)
        check_combinations(args)
        validate_options(args)  # the rule jobs.launch and the Launch form apply too
        if distributed.active():
            check_torchrun_options(args)
        if args["launcher"] == "slurm":  # the same run, as a Slurm job (training.jobs.slurm)
            from training.jobs.slurm import submit_from_cli
            return submit_from_cli(args, explicit)
        if args["eval"] or args["eval_scores"]:
            from training.evaluation.runner import run as run_evaluation
            return run_evaluation(args, explicit)
        if args["list_checkpoints"]:
            return list_checkpoints(args, explicit, verify)
        if args["device"] == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise UsageError("--device cuda: no CUDA device is available")
        if renders_only(args):
            return render_attention_only(args, explicit)
        effective, plan = decide_start(args, explicit)
        # What to evaluate is no part of a training run: checkpoints do not record it.
        return _train({k: v for k, v in effective.items() if k not in EVALUATION_OPTIONS}, plan)
    except distributed.PeerFailed as exc:
        return exc.code  # rank 0 said why
    except UsageError as exc:
        if _prints_errors():
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"Aborted ({exc or 'interrupted'}); checkpoints already on disk are intact.", file=sys.stderr)
        return 130


def checked_plan(args: dict[str, Any], explicit: set[str]) -> tuple[dict[str, Any], Any]:
    """(effective typed args, StartPlan), the disk needs stated; UsageError if unusable."""
    effective, plan = plan_run(args, explicit)
    effective = typed_args(effective)  # a checkpoint's stored values, as the options' types
    # A checkpoint's stored values name the folder (and the model) now: the same rule applies.
    validate_options({**{k: effective.get(k) for k in NAMING_KEYS},
                      "visualize_attention": effective.get("visualize_attention")})
    check_data_source(effective)  # the Launch form and the jobs API apply it too
    for warning in unusual_values(effective):
        print(f"Warning: {warning}", file=sys.stderr)
    state_disk_needs(effective, plan)
    return effective, plan


# --- torchrun (training.distributed) ------------------------------------------------------------------

SINGLE_PROCESS_MODES = ("eval", "eval_scores", "list_checkpoints")


def check_torchrun_options(args: dict[str, Any]) -> None:
    """Under torchrun: what runs in one process only is refused, and a CUDA run needs a GPU per
    process of the node (every rank reaches the same verdict)."""
    modes = [f"--{name}" for name in SINGLE_PROCESS_MODES if args.get(name)]
    if renders_only(args):
        modes.append("--visualize_attention --model_path without --resume")
    if args.get("launcher") == "slurm":  # every rank would submit a job; the Slurm job runs torchrun itself
        modes.append("--launcher slurm")
    if modes:
        raise UsageError(f"{modes[0]} runs in one process: use python main.py for it, not torchrun")
    import torch

    if torch.cuda.is_available() and args["device"] != "cpu" and not distributed.gpu_per_process():
        raise UsageError(f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE')} processes on this node but it has "
                         f"{torch.cuda.device_count()} GPU(s): pass --nproc_per_node at most that, or --device cpu")


def decide_start(args: dict[str, Any], explicit: set[str]) -> tuple[dict[str, Any], Any]:
    """``checked_plan``; under torchrun decided on rank 0 alone (it verifies the checkpoint, may
    mark files damaged, prints the notes) and shared with the other ranks, which load the same
    file; a usage error on rank 0 ends every rank with exit 2 (``distributed.agree``)."""
    if not distributed.active():
        return checked_plan(args, explicit)
    if distributed.is_main_process():
        try:
            effective, plan = checked_plan(args, explicit)
        except UsageError:
            distributed.agree(EXIT_USAGE)
            raise
        path = str(plan.source.path) if plan.source is not None else None
        distributed.agree(0, (effective, plan.mode, path, plan.note))
        return effective, plan
    effective, mode, path, note = distributed.agree(0)
    return effective, _plan_of_rank_0(mode, path, note)


def _plan_of_rank_0(mode: str, path: str | None, note: str) -> Any:
    """The StartPlan rank 0 chose, its file loaded here (rank 0 verified it; reading it again
    here writes nothing, not even a damage mark)."""
    from training.checkpoint.store import CheckpointError, read_checkpoint_file
    from training.trainer import StartPlan

    if path is None:
        return StartPlan(mode, None, note)
    try:
        return StartPlan(mode, read_checkpoint_file(path), note)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None


def state_disk_needs(args: dict[str, Any], plan: Any) -> None:
    """Print the disk the run's checkpoints need; UsageError when it cannot fit (or when the
    model these args describe cannot be built: nothing is created either way)."""
    from training.checkpoint.disk import check_disk_space
    from training.checkpoint.store import CheckpointError

    start = int(plan.source.full["epoch"]) if plan.mode == "resume" and plan.source.full else 0
    if int(args["num_epochs"]) <= start:
        return  # nothing left to train: the trainer says so
    try:
        check_disk_space(args, start)
    except (CheckpointError, ValueError) as exc:  # a bad --ssl_path, a group_size the model refuses
        raise UsageError(str(exc)) from None


# --- --visualize_attention --model_path: render one checkpoint ---------------------------------------

def renders_only(args: dict[str, Any]) -> bool:
    """``--visualize_attention --model_path P`` without a start mode renders P and exits."""
    return bool(args["visualize_attention"] and args["model_path"] and not (args["resume"] or args["fresh_start"]))


def render_attention_only(args: dict[str, Any], explicit: set[str]) -> int:
    """The checkpoint's attention maps into ``attention/<its stem>/`` next to it. The model, the
    data and the seed are the checkpoint's (the command line's where typed)."""
    from training.attention import render_checkpoint
    from training.data import DataError
    from training.checkpoint.store import CheckpointError, read_verified_checkpoint

    path = Path(args["model_path"])
    try:
        loaded = read_verified_checkpoint(path)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    stored = (loaded.full or {}).get("args") or {}
    stored = dict(vars(stored) if isinstance(stored, argparse.Namespace) else stored)
    effective = typed_args(merge_checkpoint_args(stored, args, explicit, keys_from_checkpoint("resume")))
    check_attention_model(effective)
    try:
        folder = render_checkpoint(effective, loaded)
    except (CheckpointError, DataError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(f"Attention maps of {path.name}: {folder}")
    return 0


def _train(args: dict[str, Any], plan: Any) -> int:
    from training.data import DataError
    from training.lock import ExperimentBusy
    from training.checkpoint.store import WRITE_ERRNOS, CheckpointError, WriteError
    from training.trainer import Trainer

    # Each failure prints one line; the type decides the exit code (WriteError before its base
    # class CheckpointError: a full disk is a runtime error, an unfitting file a usage error).
    # FloatingPointError: the loss or the weights stopped being finite (the trainer names where).
    exit_codes = ((ExperimentBusy, EXIT_BUSY), (DataError, EXIT_USAGE), (WriteError, EXIT_ERROR),
                  (CheckpointError, EXIT_USAGE), (FloatingPointError, EXIT_ERROR))
    folder = experiment_dir(args)
    new_folders = _missing_folders(folder)  # what this run creates (the root too, maybe)
    try:
        code = Trainer(args, plan).run()
    except distributed.PeerFailed as exc:
        code = exc.code  # rank 0 failed and said why (under torchrun only)
    except tuple(kind for kind, _ in exit_codes) as exc:
        print(f"{_rank_prefix()}error: {exc}", file=sys.stderr)
        code = next(code for kind, code in exit_codes if isinstance(exc, kind))
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        # A write outside the checkpoint store (the training log, the archive): same one line.
        where = exc.filename or experiment_dir(args)
        print(f"error: {exc.strerror} while writing {where} (in {experiment_dir(args)}); free space there "
              "(checkpoints already saved are intact)", file=sys.stderr)
        code = EXIT_ERROR
    if code != 0 and new_folders and distributed.is_main_process():
        _remove_if_only_a_released_lock(new_folders)
    return code


def _rank_prefix() -> str:
    """Under torchrun an error of a rank other than 0 says which rank it is."""
    return "" if distributed.is_main_process() else f"rank {distributed.rank()}: "


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    path = Path(os.path.abspath(folder))
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_only_a_released_lock(new_folders: list[Path]) -> None:
    """A run that failed before writing anything (weights that do not fit, a missing data set,
    a NaN in the first epoch) leaves no folder holding just its ``.lock``. Only folders this
    run created are removed: the experiment folder when it holds nothing but an empty
    (released) lock file, then each new parent that is empty."""
    from training.lock import LOCK_NAME

    folder = new_folders[0]
    lock = folder / LOCK_NAME
    try:
        if [p.name for p in folder.iterdir()] == [LOCK_NAME] and lock.stat().st_size == 0:
            lock.unlink()
        for created in new_folders:
            created.rmdir()  # fails (and stops) at the first folder that is not empty
    except OSError:
        pass  # something else is there, or another process got there first: leave it


__all__ = ["main", "build_parser", "parse_args", "plan_run", "experiment_name"]
