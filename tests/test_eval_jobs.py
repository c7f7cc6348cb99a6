"""Evaluation jobs in the registry (training.jobs.evaluate, training.runs): the options each kind
of job takes, checks before anything is recorded, the ``kind`` column and the migration of a
version-1 registry. The end-to-end run from the page is tests/test_pages_evaluation.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from training import jobs
from training.jobs.evaluate import launch_eval, scoring_progress
from training.jobs.registry import SCHEMA_VERSION, connect, db_path
from training.runs import check_eval_args, check_run_args, eval_flags


@pytest.mark.parametrize("option, value", [("eval", True), ("eval_output", "x.txt"), ("eval_subset", "eval"),
                                           ("eval_scores", "s.txt")])
def test_a_training_job_takes_no_evaluation_option(option, value) -> None:
    with pytest.raises(ValueError, match=f"{option}: an evaluation option"):
        check_run_args("fresh", {"model_type": "lcnn", option: value})


@pytest.mark.parametrize("args, message", [
    ({"model_path": "c.pth", "track": "LA", "database_path": "d", "lr": 0.1}, "lr: not an option of an eval job"),
    ({"model_path": "c.pth", "track": "LA", "database_path": "d", "eval_output": "o"}, "eval_output: not an option"),
    ({"model_path": "c.pth", "track": "LA", "database_path": "d", "resume": True}, "resume: not an option"),
    ({"track": "LA", "database_path": "d"}, "needs model_path"),
    ({"model_path": "c.pth", "database_path": "d"}, "needs track"),
    ({"model_path": "c.pth", "track": "LA"}, "needs database_path"),
    ({"model_path": "c.pth", "track": "XX", "database_path": "d"}, "track"),
    ({"model_path": "c.pth", "track": "LA", "database_path": "d", "batch_size": 0}, "batch_size"),
    ({"model_path": "c.pth", "track": "LA", "database_path": "d\nx"}, "line break"),
])
def test_eval_job_options_are_checked_by_the_shared_rule(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_eval_args(args)


def test_eval_flags_are_the_clis() -> None:
    flags = eval_flags({"model_path": "/m/c.pth", "track": "In-the-Wild", "database_path": "/d", "batch_size": 4})
    assert flags[0] == "--eval" and flags[flags.index("--track") + 1] == "In-the-Wild"


def test_the_cli_accepts_what_eval_flags_builds(tmp_path: Path) -> None:
    from cli_helpers import run_main

    flags = eval_flags({"model_path": str(tmp_path / "missing.pth"), "track": "LA",
                        "database_path": str(tmp_path)})
    r = run_main(flags, tmp_path)
    assert r.code == 2 and "usage" not in r.err.lower() and "Traceback" not in r.text  # past parsing, into --eval


def test_launch_eval_refuses_before_recording_anything(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "exp").mkdir(parents=True)
    ckpt = root / "exp" / "checkpoint_epoch_1.pth"
    ckpt.write_bytes(b"x")
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes(b"x")
    (root / "exp" / "link.pth").symlink_to(outside)  # inside by name, outside in fact
    for args, message in [({"model_path": str(outside), "track": "LA", "database_path": str(tmp_path)}, "outside"),
                          ({"model_path": str(root / "exp" / ".." / ".." / "elsewhere.pth"), "track": "LA",
                            "database_path": str(tmp_path)}, "outside"),
                          ({"model_path": str(root / "exp" / "link.pth"), "track": "LA",
                            "database_path": str(tmp_path)}, "outside"),
                          ({"model_path": str(root / "exp" / "nope.pth"), "track": "LA",
                            "database_path": str(tmp_path)}, "does not exist"),
                          ({"model_path": str(ckpt), "track": "LA", "database_path": str(tmp_path / "none")}, "protocols_path")]:
        with pytest.raises(ValueError, match=message):
            launch_eval(root, args)
    assert not (root / ".jobs").exists()


def test_a_version_1_registry_is_migrated_and_its_jobs_are_training_jobs(tmp_path: Path) -> None:
    db = db_path(tmp_path)
    db.parent.mkdir(parents=True)
    old = sqlite3.connect(db)
    old.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, experiment TEXT NOT NULL, exp_dir TEXT NOT NULL,
            mode TEXT NOT NULL, argv TEXT NOT NULL, log_path TEXT NOT NULL, state TEXT NOT NULL,
            created_at REAL NOT NULL, pid INTEGER, pid_start_time INTEGER, supervisor_pid INTEGER,
            supervisor_start_time INTEGER, started_at REAL, ended_at REAL, exit_code INTEGER, num_epochs INTEGER,
            error TEXT, stop_requested_at REAL, stop_grace_s REAL);
        INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at, exit_code)
            VALUES ('e', '/x/e', 'fresh', '["python"]', '/x/1.log', 'succeeded', 1.0, 0);
        PRAGMA user_version = 1;""")
    old.close()
    connect(db).close()
    (job,) = jobs.list_jobs(tmp_path)
    assert job.kind == "train" and job.state == "succeeded"
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_scoring_progress_reads_the_last_bar() -> None:
    log = "Scoring trials\nScoring:  10%|#  | 4/40 [00:01<00:09]\rScoring:  50%|#####| 20/40 [00:02<00:02]\n"
    assert scoring_progress(log) == (20, 40) and scoring_progress("nothing yet") is None
