"""Every training argument in one table, and the one rule that says which values are usable.

The table is shared by the CLI parser and the dashboard's Launch form; :func:`validate_options`
is called by all three entry points (``training.cli``, ``training.jobs.registry`` and
``training.dashboard.launch_form``) before anything is created, so a value is refused with the same one-line
message wherever it was typed.

Keep this module free of heavy imports: the CLI imports it before deciding whether torch is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_TYPES = ("g3_heatmap", "lcnn")
TRACKS = ("LA", "DF", "In-the-Wild")
LOSSES = ("CCE",)
DATASETS = ("synthetic", "asvspoof")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULERS = ("none", "cosine")
EVAL_SUBSETS = ("eval", "progress", "hidden", "all")
LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class Option:
    """One command-line option: ``--name``. ``kind`` is int, float, str or bool (a flag)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    group: str = "training"  # training | data | checkpoint | system | evaluation


# Hyperparameters: these define the experiment and are stored in every checkpoint's ``args``.
OPTIONS: tuple[Option, ...] = (
    Option("model_type", str, "g3_heatmap", "model architecture", MODEL_TYPES),
    Option("track", str, "DF", "ASVspoof track", TRACKS, group="data"),
    Option("loss", str, "CCE", "loss: class-weighted cross entropy (0.1 spoof / 0.9 bonafide)", LOSSES),
    Option("num_epochs", int, 100, "train until this many epochs are completed"),
    Option("batch_size", int, 16, "mini-batch size"),
    Option("lr", float, 1e-06, "Adam learning rate"),
    Option("weight_decay", float, 1e-4, "Adam weight decay"),
    Option("group_size", int, 3, "layers per group in the g3_heatmap grouping"),
    Option("use_contrastive", bool, False, "add the contrastive and supervised-contrastive losses"),
    Option("contrastive_weight", float, 0.1, "weight of the contrastive loss"),
    Option("supcon_weight", float, 0.1, "weight of the supervised-contrastive loss"),
    Option("scheduler", str, "none", "learning-rate schedule over num_epochs", SCHEDULERS),
    Option("seed", int, 1234, "random seed (data order, init, synthetic data)"),
    Option("comment", str, None, "experiment tag appended to the folder and file names"),
    Option("dataset", str, "synthetic", "synthetic (built in) or asvspoof (files on disk)", DATASETS, group="data"),
    Option("database_path", str, None, "ASVspoof audio root", group="data"),
    Option("protocols_path", str, None, "ASVspoof protocol/key files root", group="data"),
    Option("train_size", int, 2000, "synthetic training clips", group="data"),
    Option("val_size", int, 500, "synthetic validation clips", group="data"),
    Option("clip_samples", int, 16000, "synthetic clip length in samples (16 kHz)", group="data"),
    # RawBoost (training clips only; training/rawboost.py): the original recipe's names and defaults.
    Option("algo", int, 3, "RawBoost: 0 none, 1 convolutive, 2 impulsive, 3 coloured additive noise, "
           "4 = 1+2+3, 5 = 1+2, 6 = 1+3, 7 = 2+3 in series, 8 = 1 and 2 in parallel", group="augmentation"),
    Option("nBands", int, 5, "RawBoost: notch filters per filter bank", group="augmentation"),
    Option("minF", float, 20.0, "RawBoost: lowest notch centre frequency, Hz", group="augmentation"),
    Option("maxF", float, 8000.0, "RawBoost: highest notch centre frequency, Hz", group="augmentation"),
    Option("minBW", float, 100.0, "RawBoost: narrowest notch bandwidth, Hz", group="augmentation"),
    Option("maxBW", float, 1000.0, "RawBoost: widest notch bandwidth, Hz", group="augmentation"),
    Option("minCoeff", int, 10, "RawBoost: fewest FIR taps per notch filter", group="augmentation"),
    Option("maxCoeff", int, 100, "RawBoost: most FIR taps per notch filter", group="augmentation"),
    Option("minG", float, 0.0, "RawBoost: lowest filter-bank gain, dB", group="augmentation"),
    Option("maxG", float, 0.0, "RawBoost: highest filter-bank gain, dB", group="augmentation"),
    Option("minBiasLinNonLin", float, 5.0, "RawBoost: gain lowered by at least this for the non-linear "
           "terms, dB (lowers minG)", group="augmentation"),
    Option("maxBiasLinNonLin", float, 20.0, "RawBoost: gain lowered by at most this for the non-linear "
           "terms, dB (lowers maxG)", group="augmentation"),
    Option("N_f", int, 5, "RawBoost: convolutive stages (order of the non-linearity)", group="augmentation"),
    Option("P", float, 10.0, "RawBoost: impulsive noise on up to this percentage of samples", group="augmentation"),
    Option("g_sd", float, 2.0, "RawBoost: impulsive noise gain", group="augmentation"),
    Option("SNRmin", float, 10.0, "RawBoost: lowest SNR of the coloured noise, dB", group="augmentation"),
    Option("SNRmax", float, 40.0, "RawBoost: highest SNR of the coloured noise, dB", group="augmentation"),
    Option("models_root", str, "models", "folder that holds experiment folders", group="checkpoint"),
    Option("model_path", str, None, "checkpoint or weights file to resume from or start from", group="checkpoint"),
    Option("resume", bool, False, "resume from --model_path: weights, optimizer, epoch, best EER", group="checkpoint"),
    Option("fresh_start", bool, False, "start at epoch 1, ignoring existing checkpoints", group="checkpoint"),
    Option("auto_resume", bool, False, "resume from the newest good checkpoint, else start fresh", group="checkpoint"),
    Option("list_checkpoints", bool, False, "list the experiment's checkpoints and exit", group="checkpoint"),
    Option("keep_last", int, None, "keep only the K newest epoch checkpoints (best and resumed-from are kept)", group="checkpoint"),
    # Attention heatmaps (training/attention.py): what a run writes besides checkpoints, not what it trains.
    Option("visualize_attention", bool, False, "g3_heatmap: save attention maps (attention/epoch_N/attention.npz "
           "+ one PNG per utterance) on fixed validation utterances; with --model_path alone (no --resume / "
           "--fresh_start): render that checkpoint's maps and exit", group="attention"),
    Option("viz_samples", int, 20, "--visualize_attention: validation utterances rendered (half bona fide, "
           "half spoof where the set allows)", group="attention"),
    Option("viz_frequency", int, 10, "--visualize_attention: render after every N-th epoch and the last "
           "(0: only the last)", group="attention"),
    Option("device", str, "auto", "auto, cpu or cuda", DEVICES, group="system"),
    Option("num_workers", int, 0, "data-loader worker processes", group="system"),
    Option("amp", bool, False, "mixed precision on CUDA", group="system"),
    Option("log_every_steps", int, 10, "append loss, lr and samples/s to training_steps.csv every N training "
           "steps (0: off); the dashboard draws within-epoch progress and ETAs from it", group="system"),
    Option("ssl_path", str, None, "g3_heatmap front-end: a Hugging Face wav2vec2 / XLS-R folder (config.json + "
           "weights); without it, a tiny front-end trained from scratch"),
    Option("freeze_ssl", bool, False, "do not train the --ssl_path front-end; checkpoints then record its "
           "folder and content hash instead of copying its weights"),
    Option("no_temporal_bias", bool, False, "g3_heatmap: drop the original's centre-weighted bias on the temporal attention"),
    Option("train_clamp", float, 10.0, "g3_heatmap: clamp the utterance embedding to +-this in training only, "
           "as the original (10); 0 turns it off"),
    Option("augment_dev", bool, False, "apply the training augmentation (RawBoost) to the validation set too, "
           "as the original did; it changes which epoch is best", group="data"),
    # Evaluation (training/evaluation/): actions, not hyperparameters.
    Option("eval", bool, False, "score an evaluation set with --model_path (--track, --database_path, "
           "--protocols_path) and compute the official metrics, then exit", group="evaluation"),
    Option("eval_output", str, None, "score file --eval writes (default: <checkpoint folder>/eval/"
           "<checkpoint stem>_<track>.txt); the metrics go to <score file>.metrics.json", group="evaluation"),
    Option("eval_subset", str, "eval", "key subset the metrics cover, as the ASVspoof 2021 package selects it "
           "(all: every trial of the key)", EVAL_SUBSETS, group="evaluation"),
    Option("eval_scores", str, None, "compute the metrics of an existing score file (trial score lines) "
           "against the key, without a model, then exit", group="evaluation"),
    # Where the run executes (training/launcher.py, training/jobs/slurm.py): launch options, not
    # hyperparameters; never part of the folder name, never compared on resume, never in a job's argv.
    Option("launcher", str, "local", "local: train in this process; slurm: submit the same run as a Slurm job "
           "(submitit) that saves and requeues itself on timeout or preemption", LAUNCHERS, group="launch"),
    Option("slurm_partition", str, None, "--launcher slurm: the partition (default: the cluster's)", group="launch"),
    Option("nodes", int, 1, "--launcher slurm: nodes (more than one runs torchrun on each)", group="launch"),
    Option("gpus_per_node", int, 0, "--launcher slurm: GPUs per node", group="launch"),
    Option("timeout_min", int, 1440, "--launcher slurm: the job's time limit in minutes; the run saves and "
           "requeues itself before it", group="launch"),
    Option("slurm_extra", str, None, "--launcher slurm: more sbatch options, e.g. --slurm_extra="
           "'--account=abc --qos=high' (with '=': the value starts with --)", group="launch"),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}

# Options that select what to do rather than describe the experiment: never compared on resume.
# The evaluation options are actions too (and not Launch-form fields: a run trains).
EVALUATION_OPTIONS = frozenset(o.name for o in OPTIONS if o.group == "evaluation")
# Where a run executes (this process or a Slurm job): the same run either way.
LAUNCH_OPTIONS = frozenset(o.name for o in OPTIONS if o.group == "launch")
ACTION_OPTIONS = frozenset(
    {"model_path", "resume", "fresh_start", "auto_resume", "list_checkpoints", "models_root",
     "keep_last", "device", "num_workers", "visualize_attention", "viz_samples", "viz_frequency",
     "log_every_steps"}
) | EVALUATION_OPTIONS | LAUNCH_OPTIONS


# --- the one coercion rule ----------------------------------------------------------------------

def coerce_to(kind: type, value: Any, choices: tuple[str, ...] | None = None) -> Any:
    """``value`` as a value of ``kind`` (bool, int, float or str); None stays None.

    Values come from checkpoints (JSON, pickles, numpy scalars), the Launch form's widgets (text)
    and the jobs API: "true"/"false"/"1"/"0" and 0/1 are flags, integral numbers and their text
    are whole numbers. Raises ValueError when the value cannot be one (2.5 as a whole number,
    "fast" as a number, a value outside ``choices``); the caller names the option.
    """
    if value is None:
        return None
    if kind is bool:
        return _as_flag(value)
    if kind in (int, float) and (isinstance(value, bool) or _is_numpy_bool(value)):
        raise ValueError(value)
    if kind is int:
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    if kind is float:
        return float(value)
    text = value if isinstance(value, str) else str(value)
    if choices and text not in choices:
        raise ValueError(value)
    return text


def _is_numpy_bool(value: Any) -> bool:
    return getattr(getattr(value, "dtype", None), "kind", None) == "b"


def _as_flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value.strip().lower() in ("true", "1"):
            return True
        if value.strip().lower() in ("false", "0"):
            return False
        raise ValueError(value)
    if _is_numpy_bool(value):
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ValueError(value)


def coerce(opt: Option, value: Any) -> Any:
    """``value`` as option ``opt``'s type (see :func:`coerce_to`); raises ValueError."""
    return coerce_to(opt.kind, value, opt.choices)


def option_text(opt: Option, value: Any) -> str:
    """The value as it is typed after ``--name`` on a command line (1e-06, 16, DF).
    Raises ValueError with a one-line message naming the option."""
    try:
        return str(coerce(opt, value))
    except (TypeError, ValueError):
        if opt.choices:
            raise ValueError(f"--{opt.name} must be one of {', '.join(opt.choices)}; got {value!r}") from None
        kind = {int: "an integer", float: "a number"}.get(opt.kind, "text")
        raise ValueError(f"--{opt.name} needs {kind}, got {value!r}") from None


def typed_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with every option's value as the option's type (None stays None; keys that are no
    option, such as ``head_version``, pass through). Applied once where values enter a run: the
    CLI after merging a checkpoint's stored args (JSON, pickles, old scripts' types), so the
    trainer reads ``args["batch_size"]`` as an int without casting. Raises UsageError naming the
    option for a value that cannot be its type."""
    out = dict(args)
    for name, value in args.items():
        opt = OPTIONS_BY_NAME.get(name)
        if opt is None or value is None:
            continue
        try:
            out[name] = coerce_to(opt.kind, value)  # choices are validate_options' to refuse
        except (TypeError, ValueError):
            kind = {bool: "a flag (true or false)", int: "an integer", float: "a number"}.get(opt.kind, "text")
            raise UsageError(f"--{name} needs {kind}, got {value!r}") from None
    return out


# --- the one validation rule ---------------------------------------------------------------------

class UsageError(ValueError):
    """A wrong value or flag combination: one line naming the option; exit code 2 on the CLI.

    A ValueError, so the jobs API (which documents ValueError for bad input) raises it as is."""


# The shortest clip every model accepts: the g3_heatmap front end needs 825 samples, the LCNN's
# padding about 400, the synthetic data's STFT frame 512. 64 ms at 16 kHz, above all three.
MIN_CLIP_SAMPLES = 1024
# More epochs than any run could finish; bounds what a resume has to reason about.
MAX_NUM_EPOCHS = 1_000_000
MAX_NUM_WORKERS = 1024
MAX_VIZ_SAMPLES = 10_000  # one PNG each: more would be a folder nobody opens
# The models whose forward pass returns attention maps (``model(x, return_attention=True)``).
ATTENTION_MODELS = ("g3_heatmap",)
MAX_SEED = 2**32 - 1  # numpy's seed range; the synthetic data needs a seed >= 0
MAX_NODES = 1024
MAX_GPUS_PER_NODE = 64
MAX_TIMEOUT_MIN = 366 * 24 * 60  # a year: Slurm's own limits are far below
# (name, lowest, highest) for the whole-number options; None: no bound on that side.
INT_RANGES: tuple[tuple[str, int | None, int | None], ...] = (
    ("num_epochs", 1, MAX_NUM_EPOCHS),
    ("batch_size", 1, None),
    ("group_size", 1, None),
    ("train_size", 1, None),
    ("val_size", 1, None),
    ("clip_samples", MIN_CLIP_SAMPLES, None),
    ("keep_last", 1, None),
    ("viz_samples", 1, MAX_VIZ_SAMPLES),
    ("viz_frequency", 0, MAX_NUM_EPOCHS),
    ("num_workers", 0, MAX_NUM_WORKERS),
    ("seed", 0, MAX_SEED),
    ("nodes", 1, MAX_NODES),
    ("gpus_per_node", 0, MAX_GPUS_PER_NODE),
    ("timeout_min", 1, MAX_TIMEOUT_MIN),
    ("log_every_steps", 0, None),
)
# (name, must be > 0 rather than >= 0) for the real-valued options; all must be finite.
FLOAT_RULES: tuple[tuple[str, bool], ...] = (
    ("lr", True), ("weight_decay", False), ("contrastive_weight", False), ("supcon_weight", False),
)
# Options whose value is a path: only the bytes no path may hold are refused.
PATH_OPTIONS = ("models_root", "model_path", "database_path", "protocols_path", "eval_output", "eval_scores")
DEFAULT_NAME_MAX = 255  # bytes in one file name on ext4, xfs, btrfs, tmpfs ...
DEFAULT_PATH_MAX = 4096


def _control_character(text: str) -> str | None:
    return next((repr(c) for c in text if ord(c) < 32 or ord(c) == 127), None)


def _check_choices_and_types(values: Mapping[str, Any]) -> None:
    """Types as the CLI's parser makes them (the jobs API also takes 5.0 for 5)."""
    for name, value in values.items():
        opt = OPTIONS_BY_NAME.get(name)
        if opt is None or value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if opt.kind is bool:
            if not isinstance(value, bool):
                raise UsageError(f"--{name} is a flag (true or false), got {value!r}")
        elif opt.kind is int:
            if not number or (isinstance(value, float) and not value.is_integer()):
                raise UsageError(f"--{name} needs an integer, got {value!r}")
        elif opt.kind is float:
            if not number:
                raise UsageError(f"--{name} needs a number, got {value!r}")
        elif not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"--{name} needs text, got {value!r}")
        if opt.choices and value not in opt.choices:
            raise UsageError(f"--{name} must be one of {', '.join(opt.choices)}; got {value!r}")


def _check_numbers(values: Mapping[str, Any]) -> None:
    for name, low, high in INT_RANGES:
        value = values.get(name)
        if value is None:
            continue
        if low is not None and value < low:
            raise UsageError(f"--{name} must be at least {low}, got {value}")
        if high is not None and value > high:
            raise UsageError(f"--{name} must be at most {high}, got {value}")
    for name, positive in FLOAT_RULES:
        value = values.get(name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise UsageError(f"--{name} must be a finite number, got {value}")
        if positive and value <= 0:
            raise UsageError(f"--{name} must be positive, got {value}")
        if not positive and value < 0:
            raise UsageError(f"--{name} must be zero or positive, got {value}")


def _check_augmentation(values: Mapping[str, Any]) -> None:
    """RawBoost's own rules (ranges such as minF <= maxF); imported late: it brings numpy."""
    from training.data.rawboost import check_options

    try:
        check_options(values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_launch(values: Mapping[str, Any]) -> None:
    """The launch options' own rules (training/launcher.py: Slurm options only with Slurm,
    --slurm_extra's syntax)."""
    from training.launcher import check_launch_options

    try:
        check_launch_options(values)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_attention_model(values: Mapping[str, Any]) -> None:
    """``--visualize_attention`` needs a model that has attention maps to show."""
    model = values.get("model_type", DEFAULTS["model_type"])
    if values.get("visualize_attention") and model not in ATTENTION_MODELS:
        raise UsageError(f"--visualize_attention needs --model_type {' or '.join(ATTENTION_MODELS)}: "
                         f"{model} has no attention maps")


def _check_comment(comment: str) -> None:
    """The comment becomes part of a folder name and of every file name a run writes."""
    bad = ("/" if "/" in comment else os.sep if os.sep in comment
           else os.altsep if os.altsep and os.altsep in comment else None)
    if bad:
        raise UsageError(f"--comment {comment!r} must not contain {bad!r}: it becomes part of a folder name")
    if ".." in comment:
        raise UsageError(f"--comment {comment!r} must not contain '..': it becomes part of a folder name")
    control = _control_character(comment)
    if control:
        raise UsageError(f"--comment {comment!r} must not contain the control character {control}")


def _check_paths(values: Mapping[str, Any]) -> None:
    for name in PATH_OPTIONS:
        value = values.get(name)
        if value is None:
            continue
        text = os.fspath(value)
        if "\0" in text or "\n" in text or "\r" in text:
            raise UsageError(f"--{name} {text!r} must not contain a NUL or line break")


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _fs_limit(path: Path, key: str, default: int) -> int:
    try:
        return int(os.pathconf(path, key))
    except (OSError, ValueError, AttributeError):
        return default


def longest_file_name(comment: str | None, num_epochs: int) -> str:
    """The longest file name a run with this comment writes: the temporary name of the sidecar
    of its last epoch's (or interrupt) checkpoint, with the largest pid the kernel hands out.
    Mirrors training.naming and training.checkpoint.fsutil's temporary names (a test keeps them in step)."""
    tag = f"_{comment}" if comment else ""
    stems = (f"checkpoint_epoch_{num_epochs}{tag}", f"checkpoint_interrupt{tag}", f"best_checkpoint_eer{tag}")
    stem = max(stems, key=lambda s: len(s.encode("utf-8", "surrogateescape")))
    return f".{stem}.pth.meta.json.tmp.{4194304}.{'f' * 8}"


def _encoded_length(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _check_name_lengths(values: Mapping[str, Any], root: Path | None) -> None:
    from training.naming import experiment_name  # naming imports this module: import late

    where = _nearest_existing(root) if root is not None else Path(".")
    name_max = _fs_limit(where, "PC_NAME_MAX", DEFAULT_NAME_MAX)
    folder = experiment_name(values)
    file_name = longest_file_name(values.get("comment"), int(values.get("num_epochs") or 1))
    for what, name in (("experiment folder name", folder), ("checkpoint file name", file_name)):
        if _encoded_length(name) > name_max:
            raise UsageError(f"--comment is too long: the {what} would be {_encoded_length(name)} bytes "
                             f"({name[:40]}...), the file system allows {name_max}; shorten the comment")
    if root is not None:
        path_max = _fs_limit(where, "PC_PATH_MAX", DEFAULT_PATH_MAX)
        full = os.path.join(os.path.abspath(root), folder, file_name)
        if _encoded_length(full) >= path_max:
            raise UsageError(f"--models_root {root} is too deep: the path of a checkpoint would be "
                             f"{_encoded_length(full)} bytes, the system allows {path_max - 1}")


def _check_models_root(root: Path, writing: bool) -> None:
    """A root that is a file, lies under a file, or cannot be written is refused up front."""
    if os.path.lexists(root) and not root.is_dir():
        raise UsageError(f"--models_root {root} is not a folder"
                         + (" (a broken symbolic link)" if root.is_symlink() and not root.exists() else ""))
    if not writing:
        return
    existing = _nearest_existing(root)
    if not existing.is_dir():
        raise UsageError(f"--models_root {root}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "read-only" if _read_only_mount(existing) else "not writable by this user"
        raise UsageError(f"--models_root {root}: {existing} is {why}; choose a folder you can write")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def validate_options(args: Mapping[str, Any]) -> None:
    """Raise UsageError (one line naming the option) for any value no run could use.

    ``args`` maps option names to values; missing or None values take the defaults, except
    ``models_root``, which is only checked when given (the jobs API passes its own). Checks:
    types and choices; whole numbers in range (``INT_RANGES``), real numbers finite (``lr > 0``);
    ``--visualize_attention`` only for a model with attention maps;
    the comment free of separators, ``..`` and control characters; path values free of NUL and
    line breaks; every folder and file name a run writes within the file system's name limit;
    ``models_root`` a writable folder (or creatable in one) unless only listing. Creates nothing.
    """
    given = {k: v for k, v in args.items() if v is not None}
    _check_choices_and_types(given)
    values = {**DEFAULTS, **given}
    _check_numbers(values)
    check_attention_model(values)
    if not values.get("list_checkpoints"):
        _check_augmentation(values)
    _check_launch(values)
    comment = values.get("comment")
    if comment:
        _check_comment(str(comment))
    _check_paths(given)
    root = Path(os.fspath(given["models_root"])) if given.get("models_root") else None
    if root is not None:
        _check_models_root(root, writing=not values.get("list_checkpoints"))
    _check_name_lengths(values, root)
