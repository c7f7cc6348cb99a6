"""The Evaluation and Attention pages under Streamlit's AppTest, on folders the real CLI wrote.

One module-scoped models root: a tiny lcnn trained for 2 epochs whose checkpoints are scored by
the real ``--eval`` on the synthetic LA and DF sets, and a tiny g3_heatmap run with
``--visualize_attention`` (maps after epochs 1 and 2). Nothing the trainer or the evaluator writes
is made by hand. The leaderboard, condition tables and DET curves are checked against the metrics
files and the score files; the attention heatmap against the npz.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cli_helpers import REPO, TINY, run_cli
from training.dashboard import access as dashboard_access
from training.dashboard import evaluation as ev
from training.evaluation.synthetic import write_synthetic_eval_set

LCNN = "lcnn_DF_CCE_2_8_0.001_group3_contrastiveFalse_ev"
G3 = ["--model_type", "g3_heatmap", "--train_size", "32", "--val_size", "16", "--clip_samples", "4000",
      "--batch_size", "8", "--lr", "0.001", "--group_size", "4", "--algo", "0"]
VIZ = ["--visualize_attention", "--viz_samples", "6", "--viz_frequency", "1"]


# --- the real runs, once ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("eval_sets")
    write_synthetic_eval_set(base / "la", "LA", 30, clip_samples=4000)
    write_synthetic_eval_set(base / "df", "DF", 40, clip_samples=4000)
    return {"LA": base / "la", "DF": base / "df"}


def evaluate(checkpoint: Path, track: str, database: Path) -> None:
    r = run_cli(["--eval", "--model_path", str(checkpoint), "--track", track, "--database_path", str(database),
                 "--protocols_path", str(database / "keys"), "--batch_size", "8"], checkpoint.parents[1])
    assert r.code == 0, r.text


@pytest.fixture(scope="module")
def root(tmp_path_factory, sets) -> Path:
    models = tmp_path_factory.mktemp("eval_pages") / "models"
    trained = run_cli([*TINY, "--num_epochs", "2", "--comment", "ev"], models)
    assert trained.code == 0, trained.text
    folder = models / LCNN
    evaluate(folder / "checkpoint_epoch_1_ev.pth", "LA", sets["LA"])
    evaluate(folder / "checkpoint_epoch_2_ev.pth", "LA", sets["LA"])
    evaluate(folder / "checkpoint_epoch_2_ev.pth", "DF", sets["DF"])
    viz = run_cli([*G3, "--num_epochs", "2", *VIZ], models)
    assert viz.code == 0, viz.text
    return models


def g3_folder(root: Path) -> Path:
    return next(p for p in root.iterdir() if p.name.startswith("g3_heatmap"))


def metrics_files(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / LCNN / "eval").glob("*.metrics.json"))]


def open_page(root: Path, page: str, **params) -> AppTest:
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=120)
    at.session_state["models_root"] = str(root)
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def traces_with_role(at: AppTest, role: str) -> list[dict]:
    return [t for fig in figures(at) for t in fig["data"] if (t.get("meta") or {}).get("role") == role]


def served_downloads(root: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> tuple[AppTest, dict[str, bytes]]:
    """The page and what each of its download buttons serves (file name -> bytes): AppTest's media
    storage is dropped after a run, so the real storage's ``load_and_get_id`` is wrapped to
    record what it stores."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    served: dict[str, bytes] = {}
    real = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        served[filename] = path_or_data
        return real(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return open_page(root, page), served


# --- Evaluation ----------------------------------------------------------------------------------------

def test_leaderboard_values_equal_the_metrics_files(root: Path) -> None:
    at = open_page(root, "pages/evaluation.py")
    board = at.dataframe[0].value
    assert sorted(board["checkpoint"]) == ["checkpoint_epoch_1_ev.pth", "checkpoint_epoch_2_ev.pth"]
    for doc in metrics_files(root):
        row = board[board["checkpoint"] == Path(doc["checkpoint"]["path"]).name].iloc[0]
        assert row[doc["track"]] == doc["eer"]
        assert row["epoch"] == doc["checkpoint"]["epoch"]
    assert np.isnan(board.loc[board["checkpoint"] == "checkpoint_epoch_1_ev.pth", "DF"].iloc[0])  # not scored


def test_best_per_set_is_named(root: Path) -> None:
    at = open_page(root, "pages/evaluation.py")
    la = {Path(d["checkpoint"]["path"]).name: d["eer"] for d in metrics_files(root) if d["track"] == "LA"}
    best = min(la, key=la.get)
    caption = next(c.value for c in at.caption if c.value.startswith("Best per set"))
    assert f"**LA** {la[best]:.2f}% ({LCNN}/{best})" in caption


def test_csv_and_latex_downloads_hold_every_row(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at, files = served_downloads(root, monkeypatch, "pages/evaluation.py")
    csv = pd.read_csv(io.BytesIO(files["leaderboard.csv"]))
    board = at.dataframe[0].value
    assert list(csv["checkpoint"]) == list(board["checkpoint"])
    assert csv["LA"].to_numpy() == pytest.approx(board["LA"].to_numpy(), abs=1e-4)
    latex = files["leaderboard.tex"].decode()
    body = [ln for ln in latex.splitlines() if "checkpoint\\_epoch" in ln]
    assert len(body) == len(board) and latex.count("\\textbf{") == 2  # one best per set
    assert "\\begin{tabular}" in latex and LCNN.replace("_", "\\_") in latex


def test_condition_table_is_the_metrics_files_breakdown(root: Path) -> None:
    doc = next(d for d in metrics_files(root) if d["track"] == "DF")
    label = f"{LCNN}/checkpoint_epoch_2_ev.pth · DF"
    at = open_page(root, "pages/evaluation.py", ev_cond=label)
    heat = next(f for f in figures(at) if f["data"][0]["type"] == "heatmap")["data"][0]
    assert heat["y"] == doc["breakdown"]["rows"]["tags"] and heat["x"] == doc["breakdown"]["cols"]["tags"]
    expected = [[None if v is None else v for v in row] for row in doc["breakdown"]["eer"]]
    got = [[None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in row] for row in heat["z"]]
    assert got == expected


def test_det_curve_of_the_picked_checkpoints_runs_through_their_eer(root: Path) -> None:
    rows = [f"{LCNN}/checkpoint_epoch_1_ev.pth", f"{LCNN}/checkpoint_epoch_2_ev.pth"]
    at = open_page(root, "pages/evaluation.py", ev_set="LA", ev_rows=rows)
    det = traces_with_role(at, "det")
    assert [t["meta"]["result"] for t in det] == rows
    eers = {t["meta"]["result"]: t["meta"]["eer"] for t in traces_with_role(at, "eer")}
    docs = {Path(d["checkpoint"]["path"]).name: d["eer"] for d in metrics_files(root) if d["track"] == "LA"}
    assert eers == {r: docs[r.rsplit("/", 1)[1]] for r in rows}
    # the curve is sklearn's over the eval subset's trials, labelled by the key
    result = next(r for r in ev.find_results(root, [LCNN]) if r.row == rows[1] and r.set_name == "LA")
    data = ev.labelled_scores(result)
    from sklearn.metrics import det_curve

    fpr, fnr, _ = det_curve(data.labels, data.scores)
    assert len(det[1]["customdata"]) == len(fpr)  # small: nothing thinned
    assert np.allclose(np.array(det[1]["customdata"]) / 100, np.stack([fpr, fnr], axis=-1))
    assert len(traces_with_role(at, "histogram")) == 4  # bona fide + spoof, per checkpoint


def test_selections_live_in_the_url(root: Path) -> None:
    row = f"{LCNN}/checkpoint_epoch_2_ev.pth"
    at = open_page(root, "pages/evaluation.py", ev_set="DF", ev_rows=[row])
    assert [t["meta"]["result"] for t in traces_with_role(at, "det")] == [row]
    assert at.selectbox(key="ev_set").value == "DF"


def test_an_empty_root_says_how_to_evaluate(tmp_path: Path) -> None:
    at = open_page(tmp_path / "models", "pages/evaluation.py")
    assert "No evaluation results" in at.info[0].value and "--eval" in at.code[0].value


def test_a_damaged_metrics_file_is_named_and_left_out(root: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(root / LCNN, copy / LCNN)
    damaged = next((copy / LCNN / "eval").glob("*DF.txt.metrics.json"))
    damaged.write_text('{"track": "DF", "eer": 1')  # truncated
    at = open_page(copy, "pages/evaluation.py")
    assert any(damaged.name in w.value for w in at.warning)
    assert "DF" not in at.dataframe[0].value.columns


# --- Attention -----------------------------------------------------------------------------------------

def test_attention_heatmap_has_the_arrays_shape(root: Path) -> None:
    folder = g3_folder(root)
    with np.load(folder / "attention" / "epoch_2" / "attention.npz", allow_pickle=False) as data:
        temporal, label = data["temporal"], data["label"]
    at = open_page(root, "pages/attention.py", att_exp=folder.name, att_a="epoch_2", att_pick="mean of bona fide")
    (heat,) = traces_with_role(at, "temporal")
    z = np.array(heat["z"])
    assert z.shape == temporal.shape[1:]
    assert np.allclose(z, temporal[label == 1].mean(axis=0), atol=1e-6)
    (layers,) = traces_with_role(at, "layer_importance")
    assert len(layers["x"]) == temporal.shape[1]


def test_two_epochs_side_by_side_and_one_utterance(root: Path) -> None:
    folder = g3_folder(root)
    with np.load(folder / "attention" / "epoch_1" / "attention.npz", allow_pickle=False) as data:
        first = data["temporal"][0]
        utt = str(data["utt_id"][0])
    pick = next(c for c in ["0: " + utt + " (bona fide)", "0: " + utt + " (spoof)"])
    at = open_page(root, "pages/attention.py", att_exp=folder.name, att_a="epoch_1", att_b="epoch_2")
    at.selectbox(key="att_pick").set_value(at.selectbox(key="att_pick").options[3]).run()
    assert not at.exception
    heats = traces_with_role(at, "temporal")
    assert len(heats) == 2 and np.allclose(np.array(heats[0]["z"]), first, atol=1e-6)
    assert at.selectbox(key="att_pick").value.startswith("0: " + utt) and pick


def test_an_unknown_epoch_in_the_url_is_not_read(root: Path) -> None:
    folder = g3_folder(root)
    at = open_page(root, "pages/attention.py", att_exp=folder.name, att_a="../../etc")
    assert not at.exception
    assert at.selectbox(key="att_a").value in ("epoch_1", "epoch_2")


# --- Experiments / Checkpoints: eval EER next to val EER ------------------------------------------------

def test_experiments_table_shows_the_best_eval_eer(root: Path) -> None:
    at = open_page(root, "pages/experiments.py")
    table = at.dataframe[0].value.set_index("name")
    la = min(d["eer"] for d in metrics_files(root) if d["track"] == "LA")
    df = next(d["eer"] for d in metrics_files(root) if d["track"] == "DF")
    assert f"LA {la:.2f}%" in table.loc[LCNN, "best_eval_eer"] and f"DF {df:.2f}%" in table.loc[LCNN, "best_eval_eer"]
    assert table.loc[g3_folder(root).name, "best_eval_eer"] == ""  # never evaluated


def test_checkpoints_table_has_eval_columns_and_names_the_best_by_eval(root: Path) -> None:
    at = open_page(root, "pages/checkpoints.py", ckpt_exp=LCNN)
    table = next(df.value for df in at.dataframe if "eval EER LA" in df.value.columns).set_index("file")
    for doc in metrics_files(root):
        assert table.loc[Path(doc["checkpoint"]["path"]).name, f"eval EER {doc['track']}"] == doc["eer"]
    assert any("best by val EER" in c.value and "best by eval EER (LA)" in c.value for c in at.caption)


# --- Evaluate as a background job ---------------------------------------------------------------------------

@pytest.fixture
def job_root(root: Path, tmp_path: Path):
    import shutil

    from cli_helpers import kill_job_leftovers

    copy = tmp_path / "models"
    shutil.copytree(root / LCNN, copy / LCNN, ignore=shutil.ignore_patterns("eval"))
    yield copy
    kill_job_leftovers(copy)


def test_evaluate_from_a_checkpoint_row_runs_a_job_whose_result_shows_up(job_root: Path, sets) -> None:
    from cli_helpers import wait_for
    from training import jobs

    ckpt = "checkpoint_epoch_1_ev.pth"
    at = open_page(job_root, "pages/checkpoints.py", ckpt_exp=LCNN, ckpt_file=ckpt)
    at.selectbox(key="eval_form_track").set_value("LA")
    at.text_input(key="eval_form_database").set_value(str(sets["LA"]))
    at.text_input(key="eval_form_protocols").set_value(str(sets["LA"] / "keys"))
    at.button(key="evaluate_checkpoint").click().run()
    assert not at.exception and "Started job" in at.success[0].value, [e.value for e in at.error]
    (job,) = jobs.list_jobs(job_root)
    assert job.kind == "eval" and job.mode == "eval" and job.experiment == LCNN
    assert job.argv[job.argv.index("--model_path") + 1] == str((job_root / LCNN / ckpt).resolve())
    wait_for(lambda: not jobs.get_job(job_root, job.id).is_active, timeout=240, interval=0.5)
    done = jobs.get_job(job_root, job.id)
    assert done.state == "succeeded", jobs.tail_log(job_root, job.id)
    page = open_page(job_root, "pages/jobs.py", job=str(job.id))
    assert any(p.proto.text.startswith("Trials scored 30/30") for p in page.get("progress")), \
        [p.proto.text for p in page.get("progress")]
    board = open_page(job_root, "pages/evaluation.py").dataframe[0].value
    doc = json.loads((job_root / LCNN / "eval" / "checkpoint_epoch_1_ev_LA.txt.metrics.json").read_text())
    assert list(board["checkpoint"]) == [ckpt] and board["LA"].iloc[0] == doc["eer"]


def test_evaluate_with_a_missing_key_is_one_line_and_records_nothing(job_root: Path, tmp_path: Path) -> None:
    from training import jobs

    at = open_page(job_root, "pages/checkpoints.py", ckpt_exp=LCNN, ckpt_file="checkpoint_epoch_1_ev.pth")
    at.text_input(key="eval_form_database").set_value(str(tmp_path / "nowhere"))
    at.button(key="evaluate_checkpoint").click().run()
    assert "Not started" in at.error[0].value and "\n" not in at.error[0].value
    assert not jobs.db_path(job_root).exists() or jobs.list_jobs(job_root) == []


def test_evaluate_is_refused_without_the_token(job_root: Path, sets) -> None:
    at = open_page(job_root, "pages/checkpoints.py", ckpt_exp=LCNN, ckpt_file="checkpoint_epoch_1_ev.pth")
    at.session_state[dashboard_access.SESSION_KEY] = "wrong"
    at.text_input(key="eval_form_database").set_value(str(sets["LA"]))
    at.button(key="evaluate_checkpoint").click().run()
    assert "refused" in at.error[0].value and not (job_root / ".jobs").exists()
