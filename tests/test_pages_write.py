"""The Launch and Jobs pages in Streamlit's AppTest, with real launches: every submitted form
starts a real ``python -m training`` job (TINY sizes) that the test waits for, and the argv the
registry recorded is checked flag by flag. Nothing is mocked; leftovers are killed in teardown
by pid + start time.

Sessions sign in as the pages document it for tests: the dashboard's token in
``st.session_state["dashboard_token"]`` (a served browser gets it as a cookie from the sign-in URL).
Without it, Launch and Stop are refused."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from cli_helpers import REPO, kill_job_leftovers
from training.dashboard import access as dashboard_access
from training import jobs
from training.dashboard import launch_form
from training.config import OPTIONS
from training.naming import experiment_name

DASHBOARD = str(REPO / "dashboard.py")
# tests/cli_helpers.TINY as form values (floats are typed as text in the form)
TINY_FORM: dict[str, Any] = {"model_type": "lcnn", "train_size": 32, "val_size": 16, "clip_samples": 4000,
                             "batch_size": 8, "lr": "0.001", "num_epochs": 1}
TINY_ARGS = dict(TINY_FORM, lr=0.001, dataset="synthetic")
TRAINED_EXP = experiment_name(TINY_ARGS)
RUN_TIMEOUT_S = 240


# --- helpers ------------------------------------------------------------------------------------

def open_page(root: Path, page: str, signed_in: bool = True, **params: str) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["models_root"] = str(root)
    if signed_in:
        at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_launch(root: Path, signed_in: bool = True, **params: str) -> AppTest:
    return open_page(root, "pages/launch.py", signed_in, **params)


def field(at: AppTest, name: str):
    for kind in (at.number_input, at.text_input, at.selectbox, at.checkbox):
        for widget in kind:
            if widget.label == name:
                return widget
    raise AssertionError(f"no field labelled {name!r}")


def fill(at: AppTest, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field(at, name).set_value(value)


def press(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def all_jobs(root: Path) -> list[jobs.Job]:
    return jobs.list_jobs(root) if jobs.db_path(root).exists() else []


def launch_confirmed(at: AppTest, root: Path) -> jobs.Job:
    """Press Launch; a changed form is only previewed, so press again; return the new job."""
    before = len(all_jobs(root))
    press(at, "Launch")
    if len(all_jobs(root)) == before:
        assert any("values changed" in t for t in texts(at.info)), texts(at.info) + texts(at.error)
        press(at, "Launch")
    assert not at.error, texts(at.error)
    launched = all_jobs(root)
    assert len(launched) == before + 1, texts(at.error)
    assert any(f"Launched job #{launched[0].id}" in t for t in texts(at.success))
    return launched[0]


def wait_done(root: Path, job_id: int, timeout: float = RUN_TIMEOUT_S) -> jobs.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = jobs.get_job(root, job_id)
        if not job.is_active:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} after {timeout}s")
        time.sleep(0.2)


def flags(job: jobs.Job) -> list[str]:
    """The argv after ``python -u -m training``."""
    assert job.argv[1:4] == ["-u", "-m", "training"], job.argv
    return job.argv[4:]


def copy_root(src: Path, dst: Path) -> Path:
    """The trained experiments without the source's job registry (its paths point at src)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".jobs"))
    return dst


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root with one finished TINY run (1 epoch), launched through training.jobs."""
    root = tmp_path_factory.mktemp("trained") / "models"
    try:
        job = jobs.launch(root, "fresh", TINY_ARGS)
        done = wait_done(root, job.id)
        assert done.state == "succeeded", jobs.tail_log(root, job.id)
        yield root
    finally:
        kill_job_leftovers(root)


@pytest.fixture
def root(tmp_path: Path):
    r = tmp_path / "models"
    yield r
    kill_job_leftovers(r)


# --- Launch: the form ----------------------------------------------------------------------------

def test_every_training_option_is_a_field_except_what_the_mode_and_checkpoint_set(root: Path) -> None:
    assert {o.name for o in OPTIONS} - {o.name for o in launch_form.FIELDS} == {
        "models_root", "model_path", "resume", "fresh_start", "auto_resume", "list_checkpoints",
        "eval", "eval_output", "eval_subset", "eval_scores",
        # the launch target's own fields (pages/slurm_ui.py)
        "launcher", "slurm_partition", "nodes", "gpus_per_node", "timeout_min", "slurm_extra"}
    at = open_launch(root)
    for opt in launch_form.FIELDS:
        widget = field(at, opt.name)
        assert widget.help == opt.help
    assert not root.exists(), "opening the form must not create anything"


def test_fresh_start_into_a_folder_with_checkpoints_says_it_archives_them(trained: Path) -> None:
    at = open_launch(trained)
    fill(at, TINY_FORM)
    press(at, "Update preview")
    assert any(f"{TRAINED_EXP} already holds" in t and "archive" in t for t in texts(at.warning))


# --- Launch: the four modes -----------------------------------------------------------------------

def test_fresh_start_previews_then_launches_the_exact_argv(root: Path) -> None:
    at = open_launch(root)
    assert at.radio[0].value == "fresh"
    fill(at, dict(TINY_FORM, comment="demo"))
    press(at, "Launch")
    assert not all_jobs(root), "a changed form must be previewed before it launches"
    preview = texts(at.code)[0]
    assert preview.startswith("python main.py --fresh_start --model_type lcnn --num_epochs 1 ")
    job = launch_confirmed(at, root)
    assert flags(job) == ["--fresh_start", "--model_type", "lcnn", "--num_epochs", "1", "--batch_size", "8",
                          "--lr", "0.001", "--comment", "demo", "--train_size", "32", "--val_size", "16",
                          "--clip_samples", "4000", "--models_root", str(root.resolve())]
    assert job.command == preview
    done = wait_done(root, job.id)
    assert (done.state, done.exit_code) == ("succeeded", 0), jobs.tail_log(root, job.id)
    assert (Path(done.exp_dir) / "checkpoint_epoch_1_demo.pth").is_file()


def test_resume_link_preselects_the_checkpoint_and_diffs_the_change(trained: Path, tmp_path: Path) -> None:
    root = copy_root(trained, tmp_path / "models")
    try:
        at = open_launch(root, mode="resume", checkpoint=f"{TRAINED_EXP}/checkpoint_epoch_1.pth")
        assert at.radio[0].value == "resume"
        assert at.selectbox(key="launch_checkpoint").value == f"{TRAINED_EXP}/checkpoint_epoch_1.pth"
        # defaults come from the checkpoint's stored args, not from the CLI defaults
        assert field(at, "model_type").value == "lcnn" and field(at, "lr").value == "0.001"
        assert field(at, "num_epochs").value == 1 and field(at, "train_size").value == 32
        assert any("is at epoch 1: set num_epochs above 1" in t for t in texts(at.error))
        press(at, "Launch")
        assert not all_jobs(root), "a resume with nothing left to train must not launch"
        fill(at, {"num_epochs": 2})
        press(at, "Update preview")
        diff = at.dataframe[0].value
        assert diff.to_dict("records") == [{"key": "num_epochs", "checkpoint": "1", "launch": "2"}]
        job = launch_confirmed(at, root)
        model_path = str((root / TRAINED_EXP / "checkpoint_epoch_1.pth").resolve())
        assert flags(job) == ["--resume", "--num_epochs", "2", "--models_root", str(root.resolve()),
                              "--model_path", model_path]
        done = wait_done(root, job.id)
        assert (done.state, done.exit_code) == ("succeeded", 0), jobs.tail_log(root, job.id)
        assert (Path(done.exp_dir) / "checkpoint_epoch_2.pth").is_file()
        assert "Resuming from" in jobs.tail_log(root, job.id, 1 << 20)
    finally:
        kill_job_leftovers(root)


def test_pretrained_start_takes_weights_into_a_new_experiment(trained: Path, tmp_path: Path) -> None:
    root = copy_root(trained, tmp_path / "models")
    try:
        at = open_launch(root, mode="pretrained", checkpoint=f"{TRAINED_EXP}/best_checkpoint_eer.pth")
        assert at.radio[0].value == "pretrained"
        assert field(at, "comment").value == "from_pretrained"  # not the source's folder
        job = launch_confirmed(at, root)
        model_path = str((root / TRAINED_EXP / "best_checkpoint_eer.pth").resolve())
        assert flags(job)[0] == "--fresh_start"
        assert flags(job)[flags(job).index("--model_path") + 1] == model_path
        # lcnn is an architecture key the CLI would take from the file anyway; the rest is passed
        assert "--model_type" not in flags(job)
        for flag, value in (("--lr", "0.001"), ("--train_size", "32"), ("--comment", "from_pretrained")):
            assert flags(job)[flags(job).index(flag) + 1] == value
        done = wait_done(root, job.id)
        assert (done.state, done.exit_code) == ("succeeded", 0), jobs.tail_log(root, job.id)
        assert done.experiment == experiment_name(dict(TINY_ARGS, comment="from_pretrained"))
        assert (Path(done.exp_dir) / "checkpoint_epoch_1_from_pretrained.pth").is_file()
        assert "Loaded weights from" in jobs.tail_log(root, job.id, 1 << 20)
    finally:
        kill_job_leftovers(root)


def test_auto_resume_link_fills_the_form_from_the_experiment(trained: Path, tmp_path: Path) -> None:
    root = copy_root(trained, tmp_path / "models")
    try:
        at = open_launch(root, mode="auto_resume", experiment=TRAINED_EXP)
        assert at.radio[0].value == "auto_resume"
        assert field(at, "model_type").value == "lcnn" and field(at, "batch_size").value == 8
        assert any("newest good checkpoint" in t and "epoch 1" in t for t in texts(at.warning))
        job = launch_confirmed(at, root)
        assert flags(job) == ["--auto_resume", "--model_type", "lcnn", "--num_epochs", "1", "--batch_size", "8",
                              "--lr", "0.001", "--train_size", "32", "--val_size", "16", "--clip_samples", "4000",
                              "--models_root", str(root.resolve())]
        assert job.experiment == TRAINED_EXP
        done = wait_done(root, job.id)
        assert (done.state, done.exit_code) == ("succeeded", 0), jobs.tail_log(root, job.id)
        assert "nothing left to train" in jobs.tail_log(root, job.id, 1 << 20)
    finally:
        kill_job_leftovers(root)


def test_auto_resume_note_names_the_checkpoint_the_cli_takes(trained: Path) -> None:
    """The best copy and the epoch file hold the same epoch: the CLI continues the epoch file."""
    from training.checkpoint.store import find_latest_good_checkpoint

    assert {p.name for p in (trained / TRAINED_EXP).glob("*.pth")} == {"checkpoint_epoch_1.pth",
                                                                      "best_checkpoint_eer.pth"}
    at = open_launch(trained, mode="auto_resume", experiment=TRAINED_EXP)
    note = next(t for t in texts(at.warning) if "newest good checkpoint" in t)
    cli_pick = find_latest_good_checkpoint(trained / TRAINED_EXP, lambda line: None)
    assert f"(now {cli_pick.path.name}, epoch 1)" in note and cli_pick.path.name == "checkpoint_epoch_1.pth"
    assert "by (epoch, step)" in note


# --- Launch: what cannot be submitted -------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "a-wrong-token-of-enough-length"])
def test_launch_without_the_token_is_refused_and_creates_nothing(root: Path, token: str | None) -> None:
    at = open_launch(root, signed_in=False)
    if token is not None:
        at.session_state[dashboard_access.SESSION_KEY] = token
    fill(at, TINY_FORM)
    press(at, "Launch")
    press(at, "Launch")  # previewed now: only the token is missing
    assert any("Launch refused" in t and "?token=" in t for t in texts(at.error)), texts(at.error)
    assert not all_jobs(root) and not root.exists(), "a refused launch must create nothing"


def test_launch_with_the_token_is_accepted(root: Path) -> None:
    at = open_launch(root, signed_in=False)
    fill(at, TINY_FORM)
    press(at, "Launch")
    assert any(t.startswith("Disk: this run keeps up to") for t in texts(at.caption)), "the preview states the disk need"
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()  # signs in
    job = launch_confirmed(at, root)
    assert job.experiment == TRAINED_EXP


def test_resume_without_a_checkpoint_cannot_be_launched(root: Path) -> None:
    at = open_launch(root, mode="resume")
    assert any("choose a checkpoint first" in t for t in texts(at.error))
    assert not at.code, "no command is shown for an invalid form"
    press(at, "Launch")
    assert any(t.startswith("Not launched") for t in texts(at.error))
    assert not all_jobs(root)


def test_bad_values_are_named_and_not_launched(root: Path) -> None:
    at = open_launch(root)
    fill(at, {"lr": "fast", "batch_size": 0})
    press(at, "Launch")
    errors = texts(at.error)
    assert any("lr: 'fast' is not a number" in t for t in errors), errors
    press(at, "Launch")
    assert any(t.startswith("Not launched") for t in texts(at.error))
    assert not all_jobs(root)


def test_checkpoint_outside_the_models_root_is_refused(trained: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(trained / TRAINED_EXP / "checkpoint_epoch_1.pth", outside / "checkpoint_epoch_1.pth")
    # A link naming a file outside the root: not one of the root's checkpoints.
    at = open_launch(root, mode="resume", checkpoint="../outside/checkpoint_epoch_1.pth")
    assert any("is not a usable checkpoint in the models root" in t for t in texts(at.error))
    assert at.selectbox(key="launch_checkpoint").value is None
    # A symlink inside the root that points outside: listed, but jobs.launch refuses it.
    (root / "linked").mkdir(parents=True)
    (root / "linked" / "checkpoint_epoch_1.pth").symlink_to(outside / "checkpoint_epoch_1.pth")
    at = open_launch(root, mode="resume", checkpoint="linked/checkpoint_epoch_1.pth")
    fill(at, {"num_epochs": 2})
    press(at, "Launch")
    press(at, "Launch")
    assert any("outside the models root" in t for t in texts(at.error)), texts(at.error)
    assert not all_jobs(root)


def test_launch_into_a_busy_folder_names_the_job_that_writes_it(root: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    busy = jobs.launch(root, "fresh", TINY_ARGS, _program_argv=sleeper)
    at = open_launch(root)
    fill(at, TINY_FORM)
    press(at, "Launch")
    press(at, "Launch")
    errors = texts(at.error)
    assert any(f"job {busy.id}" in t and TRAINED_EXP in t for t in errors), errors
    assert len(all_jobs(root)) == 1


# --- Jobs page ------------------------------------------------------------------------------------

def test_jobs_page_shows_a_finished_job_with_state_exit_code_and_log(trained: Path) -> None:
    at = open_page(trained, "pages/jobs.py")
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert row["state"] == "succeeded" and row["exit code"] == 0
    assert row["experiment"] == TRAINED_EXP and row["epochs"] == "1/1" and row["progress"] == 1.0
    assert any("Job #1: succeeded" in s.value for s in at.subheader)
    assert [m.value for m in at.metric if m.label == "Exit code"] == ["0"]
    log = texts(at.code)[-1]
    assert "Done: 1 epochs" in log and "\r" not in log
    link = next(p for p in at.get("page_link") if "Curves of" in str(p.proto.label))
    assert f"exp={TRAINED_EXP}" in link.proto.query_string


def test_progress_and_eta_come_from_the_experiments_log(tmp_path: Path) -> None:
    import csv

    from training.dashboard.job_status import job_progress
    from training.naming import LOG_NAME
    from training.run_folder import LOG_COLUMNS

    root = tmp_path / "models"
    exp_dir = root / TRAINED_EXP
    exp_dir.mkdir(parents=True)
    now = time.time()
    with open(exp_dir / LOG_NAME, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        out.writeheader()
        out.writerow({"epoch": 1, "val_eer": 9.5, "epoch_seconds": 10.0, "timestamp": now - 20, "experiment": TRAINED_EXP})
        out.writerow({"epoch": 2, "val_eer": 7.25, "epoch_seconds": 20.0, "timestamp": now - 5, "experiment": TRAINED_EXP})
    job = jobs.Job(id=1, experiment=TRAINED_EXP, exp_dir=str(exp_dir), mode="auto_resume", argv=[], log_path="",
                   state="running", created_at=now - 31, started_at=now - 30, num_epochs=5)
    progress = job_progress(root, job)
    assert (progress.done, progress.total, progress.text, progress.latest_val_eer) == (2, 5, "2/5", 7.25)
    assert progress.fraction == pytest.approx(0.4) and progress.eta_s == pytest.approx(3 * 15.0)
    # A fresh start launched after that log was written: the log is the earlier run's until the
    # trainer archives it, so nothing of it counts.
    fresh = jobs.Job(id=2, experiment=TRAINED_EXP, exp_dir=str(exp_dir), mode="fresh", argv=[], log_path="",
                     state="running", created_at=time.time() + 1, started_at=time.time() + 1, num_epochs=5)
    assert (job_progress(root, fresh).done, job_progress(root, fresh).latest_val_eer) == (0, None)


def test_jobs_page_on_an_empty_root_says_so_and_creates_no_registry(root: Path) -> None:
    root.mkdir()
    at = open_page(root, "pages/jobs.py")
    assert any("No jobs yet" in t for t in texts(at.info))
    assert not jobs.db_path(root).exists()


def test_stop_on_the_jobs_page_ends_in_state_stopped(root: Path) -> None:
    job = jobs.launch(root, "fresh", dict(TINY_ARGS, num_epochs=200))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while "Training " not in jobs.tail_log(root, job.id):  # past start-up: SIGTERM saves and exits
        assert time.monotonic() < deadline and jobs.get_job(root, job.id).is_active, jobs.tail_log(root, job.id)
        time.sleep(0.2)
    at = open_page(root, "pages/jobs.py", signed_in=False)
    stop = at.button(key=f"jobs_stop_{job.id}")
    assert stop.disabled, "Stop must be confirmed first"
    at.checkbox(key=f"jobs_confirm_stop_{job.id}").check()
    at.run()
    at.button(key=f"jobs_stop_{job.id}").click()
    at.run()
    assert any("Stop refused" in t for t in texts(at.error)), texts(at.error)
    time.sleep(1)
    assert jobs.get_job(root, job.id).state == "running", "without the token nothing is stopped"
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()  # signs in
    at.button(key=f"jobs_stop_{job.id}").click()
    at.run()
    done = wait_done(root, job.id, timeout=60)
    assert (done.state, done.exit_code) == ("stopped", 143), jobs.tail_log(root, job.id)
    at.run()
    assert any(f"Job #{job.id}: stopped" in s.value for s in at.subheader)
