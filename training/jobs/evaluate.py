"""Evaluation jobs: ``--eval`` of one checkpoint as a background job (kind ``eval``).

``launch_eval()`` checks everything before anything is recorded: the options (``training.runs``:
only an eval job's options, the CLI's value rules), the checkpoint (a file inside the models root,
symlinks resolved), the key and the audio folder (located as ``--eval`` will locate them). Then
it records a queued ``eval`` job and starts the same supervisor a training run gets, so the Jobs
page shows it, Stop stops it, and the log holds the scorer's progress bar and table. The score
file and its metrics land in ``<checkpoint folder>/eval/``, where the Evaluation page reads them.

An eval job writes no checkpoint and takes no lock, so it does not block (and is not blocked by)
training in the same experiment folder; ``control._check_conflicts`` only counts train jobs.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from training.jobs.control import job_log_path, supervise
from training.jobs.registry import Job, Transaction, connect, db_path, update_job
from training.runs import EVAL_MODE, check_eval_args, eval_flags, program

_BAR = re.compile(r"Scoring:.*?(\d+)/(\d+)")


def _checkpoint_inside(root: Path, model_path: Any) -> Path:
    path = Path(os.path.realpath(Path(str(model_path)).expanduser()))
    if not path.is_relative_to(root):
        raise ValueError(f"checkpoint {model_path} is outside the models root {root}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    return path


def _check_set(args: Mapping[str, Any]) -> None:
    """The key and the audio are where ``--eval`` will look (one line otherwise)."""
    from training.evaluation.keys import EvalInputError, find_audio_dir, find_key

    try:
        find_key(args.get("protocols_path"), args.get("database_path"), args["track"])
        find_audio_dir(args.get("database_path"), args["track"])
    except EvalInputError as exc:
        raise ValueError(str(exc)) from None


def resolved_eval_args(models_root: Path, args: Mapping[str, Any]) -> dict[str, Any]:
    check_eval_args({k: v for k, v in args.items() if v is not None}, models_root)
    out = {k: v for k, v in args.items() if v is not None and k != "models_root"}
    out["model_path"] = str(_checkpoint_inside(models_root, out["model_path"]))
    for name in ("database_path", "protocols_path"):
        if out.get(name):
            out[name] = str(Path(str(out[name])).expanduser().absolute())
    _check_set(out)
    return out


def launch_eval(models_root: Path | str, args: Mapping[str, Any], *,
                _program_argv: Sequence[str] | None = None) -> Job:
    """Score ``args["model_path"]`` on ``args["track"]``'s set in the background; returns the queued
    Job at once. Raises ValueError for bad input (nothing recorded then)."""
    root = Path(os.path.realpath(Path(models_root).expanduser()))
    resolved = resolved_eval_args(root, args)
    argv = (list(_program_argv) if _program_argv is not None else program()) + eval_flags(resolved)
    checkpoint = Path(resolved["model_path"])
    db = db_path(root)
    with closing(connect(db)) as conn:
        with Transaction(conn):
            cur = conn.execute(
                "INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at, kind)"
                " VALUES (?, ?, ?, ?, '', 'queued', ?, 'eval')",
                (checkpoint.parent.name, str(checkpoint.parent), EVAL_MODE, json.dumps(argv), time.time()))
            job_id = int(cur.lastrowid)
            log_path = job_log_path(root, job_id)
            update_job(conn, job_id, log_path=str(log_path))
        return supervise(conn, db, job_id, log_path)


def scoring_progress(log_text: str) -> tuple[int, int] | None:
    """(trials scored, trials) from the last ``Scoring: ... k/n`` progress bar in a job's log."""
    found = _BAR.findall(log_text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None
