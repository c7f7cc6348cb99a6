"""``--eval`` and ``--eval_scores``: from the command line's options to a score file, its metrics and a table.

    --eval --model_path CKPT --track LA|DF|In-the-Wild --database_path D [--protocols_path P]
           [--eval_output FILE] [--eval_subset eval|progress|hidden|all]
    --eval_scores FILE --track T --protocols_path P [--eval_subset ...]

Every input is checked before anything is scored or written: the key is read, the audio located
(missing files: one line, exit 2), the output's folder checked, the checkpoint verified and its
model rebuilt. Only then is the set scored; the score file and ``metrics.json`` are the only
things written (the score file's folder, ``<checkpoint folder>/eval/`` by default, is created then).

Exit codes: 0 done; 2 unusable input (options, key, score file, audio, checkpoint); 1 a failure
while scoring (an unreadable audio file, scores that are not numbers, a full disk).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from training.config import UsageError
from training.naming import EVAL_DIRNAME
from training.evaluation.keys import (AsvTrials, EvalInputError, TrialKey, find_asv_files, find_audio_dir,
                                      find_key, read_asv, read_key, read_score_file)

EXIT_ERROR = 1
EXIT_USAGE = 2
TRAINING_ACTIONS = ("resume", "fresh_start", "auto_resume", "list_checkpoints")


def check_evaluation_options(args: dict[str, Any], explicit: set[str]) -> None:
    """The evaluation flags' own combinations (UsageError, one line)."""
    evaluating = args.get("eval") or args.get("eval_scores")
    if not evaluating:
        given = sorted(k for k in ("eval_output", "eval_subset") if k in explicit)
        if given:
            raise UsageError(f"--{given[0]} goes with --eval or --eval_scores")
        return
    this = "--eval" if args.get("eval") else "--eval_scores"
    if args.get("eval") and args.get("eval_scores"):
        raise UsageError("--eval scores a model, --eval_scores reads an existing score file: use one of them")
    clash = next((k for k in TRAINING_ACTIONS if args.get(k)), None)
    if clash:
        raise UsageError(f"{this} cannot be combined with --{clash}")
    if "track" not in explicit:
        raise UsageError(f"{this} needs --track (LA, DF or In-the-Wild): it decides the key's format and tables")
    if args.get("eval") and not args.get("model_path"):
        raise UsageError("--eval needs --model_path: the checkpoint to score")
    if args.get("eval_scores") and args.get("model_path"):
        raise UsageError("--eval_scores reads scores already computed: drop --model_path (or use --eval)")
    if args.get("eval_scores") and args.get("eval_output"):
        raise UsageError("--eval_output names the score file --eval writes; --eval_scores reads FILE and "
                         "writes FILE.metrics.json")


# --- inputs ---------------------------------------------------------------------------------------

def load_key(args: dict[str, Any]) -> tuple[TrialKey, str]:
    """The key and the subset the metrics cover (a key without subsets: all of it)."""
    track = args["track"]
    key = read_key(find_key(args.get("protocols_path"), args.get("database_path"), track), track)
    if len(key) == 0:
        raise EvalInputError(f"{key.path}: the key lists no trials")
    subset = args.get("eval_subset") or "eval"
    if subset != "all" and not key.subsets:
        if subset != "eval":
            raise EvalInputError(f"{key.path}: this key has no subset column, so no '{subset}' subset; "
                                 "its trials are all evaluation trials (--eval_subset eval or all)")
        subset = "all"
    elif subset != "all" and subset not in key.subsets:
        raise EvalInputError(f"{key.path}: no trial of subset '{subset}' (the key's subsets: "
                             f"{', '.join(key.subsets)})")
    return key, subset


def load_asv(args: dict[str, Any], key: TrialKey) -> AsvTrials | None:
    """The organisers' ASV key and scores for LA min t-DCF, when they lie next to the key."""
    if key.kind != "LA":
        return None
    found = find_asv_files(key.path, args.get("protocols_path"))
    return read_asv(*found) if found else None


def default_score_path(model_path: Path, track: str) -> Path:
    """``<checkpoint folder>/eval/<checkpoint stem>_<track>.txt``: next to what it scored."""
    return model_path.parent / EVAL_DIRNAME / f"{model_path.stem}_{track}.txt"


def check_output(path: Path, protected: list[Path]) -> None:
    """The score file can be written there (nothing is created yet) and overwrites none of the inputs."""
    if path.is_dir():
        raise EvalInputError(f"--eval_output {path}: is a folder; name the score file")
    resolved = path.resolve()
    for other in protected:
        if other is not None and other.resolve() == resolved:
            raise EvalInputError(f"--eval_output {path}: is an input of this evaluation ({other}); choose another file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise EvalInputError(f"--eval_output {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EvalInputError(f"--eval_output {path}: {folder} is not writable by this user")


def _device(args: dict[str, Any]):
    import torch

    wanted = args.get("device", "auto")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")


# --- the two commands -----------------------------------------------------------------------------

def run(args: dict[str, Any], explicit: set[str]) -> int:
    """``--eval`` or ``--eval_scores``; returns the exit code (messages are one line on stderr)."""
    from training.evaluation.scoring import AudioReadError
    from training.checkpoint.store import CheckpointError

    try:
        if args.get("eval_scores"):
            return _metrics_of_existing_file(args)
        return _score_and_measure(args, explicit)
    except (EvalInputError, UsageError, CheckpointError) as exc:  # a damaged or unfitting checkpoint too
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AudioReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {exc.strerror or exc} while writing {exc.filename or 'the evaluation files'}", file=sys.stderr)
        return EXIT_ERROR


def _metrics_of_existing_file(args: dict[str, Any]) -> int:
    score_path = Path(args["eval_scores"])
    key, subset = load_key(args)
    asv = load_asv(args, key)
    scores = read_score_file(score_path, key)
    return _measure(args, subset, key, score_path, scores, asv, None, EXIT_USAGE)


def _score_and_measure(args: dict[str, Any], explicit: set[str]) -> int:
    from training.evaluation.scoring import (EvalAudio, eval_clip_samples, load_scoring_model, locate_audio,
                                             score_audio, write_score_file)

    model_path = Path(args["model_path"])
    key, subset = load_key(args)
    asv = load_asv(args, key)
    audio_dir = find_audio_dir(args.get("database_path"), args["track"])
    suffixes = locate_audio(key, audio_dir)
    score_path = Path(args["eval_output"]) if args.get("eval_output") else default_score_path(model_path, args["track"])
    check_output(score_path, [model_path, key.path, *( [asv.key_path, asv.score_path] if asv else [])])
    device = _device(args)
    scorer = load_scoring_model(model_path, args, explicit, device)
    clip = eval_clip_samples(scorer.args, args, explicit)
    print(f"Scoring {len(key)} trials of {key.path} ({audio_dir}) with {model_path}"
          f"{f' (epoch {scorer.epoch})' if scorer.epoch is not None else ''}, {clip}-sample clips")
    audio = EvalAudio(key, suffixes, audio_dir, clip)
    raw = score_audio(scorer.model, audio, batch_size=int(args["batch_size"]), num_workers=int(args["num_workers"]),
                      device=device, amp=bool(args.get("amp")) and device.type == "cuda")
    scores = write_score_file(score_path, key, raw)
    checkpoint = {"path": str(model_path.absolute()), "sha256": scorer.sha256, "epoch": scorer.epoch,
                  "model_type": scorer.args.get("model_type"),
                  "head_version": scorer.args.get("head_version") if scorer.args.get("model_type") == "g3_heatmap" else None}
    return _measure(args, subset, key, score_path, scores, asv, checkpoint, EXIT_ERROR)


def _measure(args: dict[str, Any], subset: str, key: TrialKey, score_path: Path, scores: np.ndarray,
             asv: AsvTrials | None, checkpoint: dict[str, Any] | None, nan_exit: int) -> int:
    """Metrics of ``scores`` over ``subset``; the file is named by the subset asked for (the
    default's ``.metrics.json`` also for a key without subsets, where it covers every trial)."""
    from training.evaluation.official import breakdown_table
    from training.evaluation.report import format_report, metrics_document, metrics_path, write_metrics

    bad = np.flatnonzero(np.isnan(scores))
    if bad.size:
        print(f"error: {bad.size} score(s) in {score_path} are not numbers (NaN; first: trial "
              f"{key.trial(int(bad[0]))}); no metrics written", file=sys.stderr)
        return nan_exit
    table = breakdown_table(scores, key, subset, asv)
    doc = metrics_document(track=args["track"], subset=subset, key=key, score_path=score_path, table=table, asv=asv,
                           checkpoint=checkpoint)
    out = metrics_path(score_path, args.get("eval_subset") or "eval")
    write_metrics(out, doc)
    print(format_report(doc))
    print(f"Scores: {score_path}\nMetrics: {out}")
    return 0
