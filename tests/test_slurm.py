"""``--launcher slurm`` on a real single-node Slurm (tests/slurm_cluster.py starts it): submitting
from the CLI and the Launch page, requeues (``scontrol requeue`` and a job reaching its time limit)
that resume bit-identical to an uninterrupted run, and Stop from the Jobs page leaving a
resumable checkpoint. The launch options' rules run without Slurm."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cli_helpers import REPO, TINY, run_cli, run_main, wait_for
from kill_harness import compare_runs
from slurm_cluster import cancel, scontrol_field, slurm_partition, wait_for_state  # noqa: F401 - fixture
from training.checkpoint.meta import read_checkpoint_info
from training.config import DEFAULTS, UsageError, validate_options
from training.dashboard import access as dashboard_access
from training.jobs import slurm
from training.launcher import parse_slurm_extra
from training.naming import experiment_name, interrupt_checkpoint_name
from training.runs import hyperparameter_differences, run_flags

DASHBOARD = str(REPO / "dashboard.py")
DONE = {"COMPLETED", "FAILED", "STOPPED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
        "DEADLINE", "PREEMPTED"}
# Steps of ~0.1 s (2 s clips): long enough to requeue or stop a run in the middle.
SLOW = [*TINY, "--train_size", "64", "--clip_samples", "32000"]


@pytest.fixture
def submitted(tmp_path: Path):
    """Job ids a test submits; cancelled afterwards whatever happened."""
    ids: list[str] = []
    yield ids
    cancel(ids)


def submit_cli(args: list[str], root: Path, partition: str, *launch: str) -> str:
    result = run_main([*args, "--models_root", str(root), "--launcher", "slurm", "--slurm_partition", partition,
                       *launch], root.parent)
    assert result.code == 0, result.text
    match = re.search(r"Submitted Slurm job (\d+): ", result.out)
    assert match, result.text
    return match.group(1)


def reference(args: list[str], tmp_path: Path) -> Path:
    """The same run, uninterrupted, in this process."""
    root = tmp_path / "reference"
    result = run_cli(args, root)
    assert result.code == 0, result.text
    return root / experiment_name(dict(DEFAULTS, **_typed(args)))


def _typed(args: list[str]) -> dict:
    from training.cli import parse_args

    parsed, explicit = parse_args(args)
    return {k: parsed[k] for k in explicit}


def job_log(root: Path, job_id: str) -> str:
    return slurm.tail_log(slurm.get_job(root, job_id), 1 << 20)


# --- the launch options' rules (no Slurm needed) -----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--slurm_partition", "gpu"], "--slurm_partition goes with --launcher slurm"),
    (["--timeout_min", "5"], "--timeout_min goes with --launcher slurm"),
    (["--launcher", "slurm", "--timeout_min", "0"], "--timeout_min must be at least 1"),
    (["--launcher", "slurm", "--nodes", "0"], "--nodes must be at least 1"),
    (["--launcher", "slurm", "--slurm_partition", "a b"], "is not a partition name"),
    (["--launcher", "slurm", "--slurm_extra=--output=/tmp/x"], "--output is set by the submission itself"),
    (["--launcher", "slurm", "--slurm_extra", "account=abc"], "is not an sbatch option"),
    (["--launcher", "slurm", "--list_checkpoints"], "--launcher slurm submits training runs"),
])
def test_bad_launch_options_are_one_line_exit_2_and_create_nothing(tmp_path: Path, argv: list[str],
                                                                     message: str) -> None:
    root = tmp_path / "models"
    result = run_main([*TINY, "--models_root", str(root), *argv], tmp_path)
    assert result.code == 2, result.text
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not root.exists()


def test_launch_options_are_no_hyperparameters() -> None:
    launch = {"launcher": "slurm", "slurm_partition": "gpu", "nodes": 2, "gpus_per_node": 4, "timeout_min": 30,
              "slurm_extra": "--qos=high"}
    base = dict(DEFAULTS, model_type="lcnn")
    assert experiment_name({**base, **launch}) == experiment_name(base)
    assert hyperparameter_differences(base, {**base, **launch}) == []
    assert run_flags("fresh", {"model_type": "lcnn", **launch}) == run_flags("fresh", {"model_type": "lcnn"})
    with pytest.raises(UsageError):
        validate_options({"slurm_extra": "--qos=high"})  # without --launcher slurm


def test_slurm_extra_becomes_sbatch_parameters() -> None:
    assert parse_slurm_extra("--account=abc --qos high --exclusive") == {"account": "abc", "qos": "high",
                                                                         "exclusive": True}
    assert parse_slurm_extra("  ") == {}


# --- on the real Slurm ---------------------------------------------------------------------------

def test_cli_submission_trains_the_same_run_as_main_py(slurm_partition: str, tmp_path: Path,
                                                       submitted: list[str]) -> None:
    args = [*TINY, "--num_epochs", "2", "--comment", "cli"]
    root = tmp_path / "models"
    job_id = submit_cli(args, root, slurm_partition, "--timeout_min", "5")
    submitted.append(job_id)
    ref = reference(args, tmp_path)
    assert wait_for_state(root, job_id, DONE, 180) == "COMPLETED", job_log(root, job_id)
    folder = root / ref.name
    assert sorted(p.name for p in folder.glob("*.pth")) == sorted(p.name for p in ref.glob("*.pth"))
    assert compare_runs(ref, folder) == ([], []), job_log(root, job_id)
    job = slurm.get_job(root, job_id)
    assert job.outcome["outcome"] == "succeeded" and job.exp_dir == str(folder)
    assert job.command.startswith("python main.py --fresh_start") and "--launcher" not in job.command


def test_scontrol_requeue_resumes_bit_identical(slurm_partition: str, tmp_path: Path, submitted: list[str]) -> None:
    args = [*SLOW, "--num_epochs", "3", "--comment", "requeue"]
    root = tmp_path / "models"
    job_id = submit_cli(args, root, slurm_partition, "--timeout_min", "10")
    submitted.append(job_id)
    folder = root / experiment_name(dict(DEFAULTS, **_typed(args)))
    wait_for(lambda: (folder / "checkpoint_epoch_1_requeue.pth.meta.json").exists(), timeout=180)
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    ref = reference(args, tmp_path)
    assert wait_for_state(root, job_id, DONE, 300) == "COMPLETED", job_log(root, job_id)
    log = job_log(root, job_id)
    assert scontrol_field(job_id, "Restarts") == "1", log
    assert "[slurm] restart: python main.py --auto_resume" in log and "Auto-resume: resuming from" in log, log
    assert compare_runs(ref, folder) == ([], []), log


def test_time_limit_saves_requeues_and_resumes_bit_identical(slurm_partition: str, tmp_path: Path,
                                                             submitted: list[str]) -> None:
    """--timeout_min 1: Slurm sends SIGUSR2 10-40 s into each attempt; the run (about a minute
    of training on an idle machine, more under load: it must outlast the first signal) is
    requeued at least once and ends as the uninterrupted run does."""
    args = [*SLOW, "--train_size", "512", "--num_epochs", "10", "--comment", "timeout"]
    root = tmp_path / "models"
    job_id = submit_cli(args, root, slurm_partition, "--timeout_min", "1")
    submitted.append(job_id)
    ref = reference(args, tmp_path)
    assert wait_for_state(root, job_id, DONE, 600) == "COMPLETED", job_log(root, job_id)
    log = job_log(root, job_id)
    assert "SIGUSR2 received" in log and "Stopped by SIGUSR2" in log, log
    assert int(scontrol_field(job_id, "Restarts")) >= 1, log
    assert compare_runs(ref, root / ref.name) == ([], []), log


# --- the dashboard ---------------------------------------------------------------------------------

def open_page(root: Path, page: str) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["models_root"] = str(root)
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def press(at: AppTest, label: str) -> None:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_launch_page_submits_to_slurm_and_stop_on_the_jobs_page_leaves_a_resumable_checkpoint(
        slurm_partition: str, tmp_path: Path, submitted: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The job inherits the submitter's environment: one torch thread, as the in-process reference.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "models"
    at = open_page(root, "pages/launch.py")
    at.radio(key="launch_target").set_value("Slurm").run()
    at.text_input(key="launch_slurm_partition").set_value(slurm_partition)
    form = {"model_type": "lcnn", "train_size": 64, "val_size": 16, "clip_samples": 32000, "batch_size": 8,
            "lr": "0.001", "num_epochs": 3, "algo": 0, "comment": "page"}
    for name, value in form.items():
        widget = next(w for kind in (at.number_input, at.text_input, at.selectbox) for w in kind if w.label == name)
        widget.set_value(value)
    press(at, "Update preview")
    assert any("--launcher slurm" in str(c.value) for c in at.code), [c.value for c in at.code]
    press(at, "Launch")
    assert not at.error, [e.value for e in at.error]
    jobs = slurm.list_jobs(root)
    assert len(jobs) == 1 and any(f"Submitted Slurm job {jobs[0].job_id}" in str(s.value) for s in at.success)
    job_id = jobs[0].job_id
    submitted.append(job_id)
    folder = Path(jobs[0].exp_dir)
    wait_for(lambda: (folder / "checkpoint_epoch_1_page.pth.meta.json").exists(), timeout=180)

    jobs_page = open_page(root, "pages/jobs.py")
    jobs_page.checkbox(key=f"slurm_confirm_{job_id}").check().run()
    press(jobs_page, "Stop Slurm job")
    assert wait_for_state(root, job_id, DONE, 120) == "STOPPED", job_log(root, job_id)
    interrupt = folder / interrupt_checkpoint_name("page")
    info = read_checkpoint_info(interrupt)
    assert info.kind == "full" and info.complete and info.step_in_epoch, job_log(root, job_id)
    assert "Stopped by SIGTERM" in job_log(root, job_id)
    # It resumes to the uninterrupted run's end.
    args = [*SLOW, "--num_epochs", "3", "--comment", "page"]
    resumed = run_cli([*args, "--auto_resume"], root)
    assert resumed.code == 0 and "Auto-resume: resuming from" in resumed.out, resumed.text
    assert compare_runs(reference(args, tmp_path), folder) == ([], [])
