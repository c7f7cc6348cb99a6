"""Following runs (AppTest on real runs' files): the run's story on the Curves page (markers where
a run was resumed or extended, lr and epoch time, the step-level loss, the x axis), and the Jobs
page's figures of a job as of its own end (a stopped job's history does not change when another
job later finishes its folder), with Resume and Open curves on a stopped job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cli_helpers import REPO, TINY, run_cli
from training.dashboard import access as dashboard_access
from training.dashboard import catalog
from training.dashboard.job_status import job_progress
from training.jobs import registry
from training.naming import STEPS_LOG_NAME, experiment_name
from training.step_log import STEP_COLUMNS, read_step_log

LOG_EVERY_STEP = ["--log_every_steps", "1"]
A = experiment_name(dict(model_type="lcnn", num_epochs=2, batch_size=8, lr=0.001, comment="a"))
A3 = experiment_name(dict(model_type="lcnn", num_epochs=3, batch_size=8, lr=0.001, comment="a"))
B = experiment_name(dict(model_type="lcnn", num_epochs=2, batch_size=8, lr=0.001, comment="b"))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A (2 epochs) extended into A3 (3 epochs: a new folder); B resumed in its own folder from
    epoch 1 (a second process: its step log's clock starts again)."""
    models = tmp_path_factory.mktemp("live_pages") / "models"
    runs = ([*TINY, "--num_epochs", "2", "--comment", "a", "--fresh_start"],
            [*TINY, "--num_epochs", "3", "--comment", "a", "--resume", "--model_path", str(models / A / "checkpoint_epoch_2_a.pth")],
            [*TINY, "--num_epochs", "2", "--comment", "b", "--fresh_start"],
            [*TINY, "--num_epochs", "2", "--comment", "b", "--resume", "--model_path", str(models / B / "checkpoint_epoch_1_b.pth")])
    for args in runs:
        result = run_cli([*args, *LOG_EVERY_STEP], models)
        assert result.code == 0, result.text
    return models


def open_page(root: Path, page: str, monkeypatch: pytest.MonkeyPatch, **params) -> AppTest:
    monkeypatch.setenv("MODELS_ROOT", str(root))
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=60)
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    at.run()
    at.switch_page(page)
    at.query_params.update(params)
    at.run()
    assert not at.exception, at.exception
    return at


def figures(at: AppTest) -> dict[str, dict]:
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out[spec["layout"]["title"]["text"].split(" (")[0]] = spec
    return out


def values(array) -> list:
    """A trace's x or y: a list, or plotly's typed-array encoding of a numpy array."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return array


def marker_texts(spec: dict) -> list[tuple[float, str]]:
    return [(a["x"], a["hovertext"]) for a in spec["layout"].get("annotations", []) if a.get("text") == "↻"]


def test_curves_mark_where_a_run_was_extended_into_a_new_folder_and_resumed_in_its_own(root: Path, monkeypatch) -> None:
    at = open_page(root, "pages/curves.py", monkeypatch, exp=[A3, B])
    charts = figures(at)
    assert {"Validation EER", "Learning rate", "Epoch time", "Training loss per logged step"} <= set(charts)
    for title in ("Validation EER", "Loss", "Learning rate", "Epoch time"):
        marks = marker_texts(charts[title])
        assert (2, f"{A3}: resumed into a new folder: num_epochs 2 → 3 (extended)") in marks, (title, marks)
        assert (1, f"{B}: resumed") in marks, (title, marks)
        assert len(charts[title]["layout"]["shapes"]) == 2  # one dotted line each
    lr = {t["meta"]["experiment"]: t for t in charts["Learning rate"]["data"]}
    assert lr[A3]["x"] == [1, 2, 3] and lr[A3]["y"] == [0.001] * 3
    seconds = {t["meta"]["experiment"]: t for t in charts["Epoch time"]["data"]}
    assert all(s > 0 for s in seconds[B]["y"])
    steps = {t["meta"]["experiment"]: t for t in charts["Training loss per logged step"]["data"]}
    assert values(steps[B]["x"]) == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]  # 4 steps an epoch, inside epochs
    assert any("↻ marks a resume" in c.value for c in at.caption)


def test_curves_x_axis_by_step_and_by_time_moves_every_point(root: Path, monkeypatch) -> None:
    at = open_page(root, "pages/curves.py", monkeypatch, exp=[A3], x="step")
    charts = figures(at)
    val = next(t for t in charts["Validation EER"]["data"] if t["meta"]["role"] == "raw")
    assert val["x"] == [4, 8, 12] and charts["Validation EER"]["layout"]["xaxis"]["title"]["text"] == "training step"
    assert marker_texts(charts["Validation EER"])[0][0] == 8  # after epoch 2 = step 8
    at = open_page(root, "pages/curves.py", monkeypatch, exp=[A3], x="time")
    val = next(t for t in figures(at)["Validation EER"]["data"] if t["meta"]["role"] == "raw")
    assert all(isinstance(x, str) and x[:2] == "20" for x in val["x"])  # dates
    assert figures(at)["Validation EER"]["layout"]["xaxis"]["type"] == "date"


# --- a job's figures as of its own end -----------------------------------------------------------------

def add_job(root: Path, experiment: str, mode: str, state: str, created: float, ended: float,
            num_epochs: int, log: Path) -> int:
    conn = registry.connect(registry.db_path(root))
    try:
        with registry.Transaction(conn):
            cur = conn.execute(
                "INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at, started_at,"
                " ended_at, exit_code, num_epochs) VALUES (?, ?, ?, '[]', ?, ?, ?, ?, ?, ?, ?)",
                (experiment, str(root / experiment), mode, str(log), state, created, created, ended,
                 143 if state == "stopped" else 0, num_epochs))
            return int(cur.lastrowid)
    finally:
        conn.close()


def epoch_times(root: Path, experiment: str) -> dict[int, float]:
    history = catalog.experiment_history(root, experiment)  # A3's own epoch 3 after A's 1 and 2
    return dict(zip(history["epoch"], history["timestamp"]))


def test_a_stopped_jobs_progress_stays_as_of_its_end_after_another_job_finishes_the_folder(
        root: Path, tmp_path: Path, monkeypatch) -> None:
    times = epoch_times(root, A3)
    second_step = read_step_log(root / A3)[1]  # epoch 3, step 2 of 4
    assert second_step.position == (3, 2)
    # Job 1 resumed A3 from A's epoch 2 and was stopped after step 2 of epoch 3; job 2 finished it.
    stopped = add_job(root, A3, "resume", "stopped", times[2] + 1, second_step.timestamp + 0.0005, 3,
                      tmp_path / "1.log")
    finished = add_job(root, A3, "auto_resume", "succeeded", times[3] - 5, times[3] + 5, 3, tmp_path / "2.log")
    try:
        at = open_page(root, "pages/jobs.py", monkeypatch)
        table = at.dataframe[0].value.set_index("id")
        assert (table.loc[stopped, "epochs"], table.loc[stopped, "step"]) == ("2/3", "step 2/4")
        assert table.loc[stopped, "progress"] == pytest.approx((2 + 2 / 4) / 3)
        assert (table.loc[finished, "epochs"], table.loc[finished, "step"]) == ("3/3", "")
        assert table.loc[finished, "progress"] == 1.0
        # Resume and Open curves on the stopped job.
        at.selectbox(key="jobs_selected").set_value(stopped).run()
        assert at.button(key=f"jobs_resume_{stopped}") and at.button(key=f"jobs_curves_{stopped}")
        assert not [b for b in at.button if b.key == f"jobs_resume_{finished}"]
        at.button(key=f"jobs_resume_{stopped}").click().run()
        assert not at.exception, at.exception
        assert at.query_params.get("mode") == "resume"  # what the Checkpoints page's Resume sets
        assert at.query_params.get("checkpoint") == f"{A3}/checkpoint_epoch_3_a.pth"
        assert at.selectbox(key="launch_checkpoint").value == f"{A3}/checkpoint_epoch_3_a.pth"
    finally:
        registry.db_path(root).unlink()


def test_job_progress_shows_the_step_rate_and_an_eta_during_the_first_epoch(tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = root / B
    folder.mkdir(parents=True)
    started = time.time() - 60
    lines = [",".join(STEP_COLUMNS)] + [
        f"1,{s},125,{s},0.7,0.001,40.0,{s * 0.5:.3f},{started + 10 + s * 0.5:.3f},{B}" for s in range(10, 50, 10)]
    (folder / STEPS_LOG_NAME).write_text("\n".join(lines) + "\n1,50,125")  # a row being written
    job = registry.Job(id=1, experiment=B, exp_dir=str(folder), mode="fresh", argv=[], log_path="",
                       state="running", created_at=started - 1, started_at=started, num_epochs=2)
    progress = job_progress(root, job)
    assert (progress.done, progress.step, progress.steps_in_epoch, progress.step_text) == (0, 40, 125, "step 40/125")
    assert progress.samples_per_s == 40.0 and progress.fraction == pytest.approx(40 / 250)
    assert progress.eta_s == pytest.approx((250 - 40) / 2.0)  # 30 steps in 15 s: 2 steps/s
