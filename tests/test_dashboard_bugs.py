"""Bugs of the dashboard found in daily use (issue 16), each reproduced in Streamlit's AppTest.

Each test names the bug it pins down; they need no trained run (the folders are built from
ckpt_factories or tiny real files), so they are quick.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ckpt_factories import ARGS, full_checkpoint, save
from cli_helpers import REPO, TINY, kill_job_leftovers, run_main
from training.dashboard import access as dashboard_access
from training.naming import LOG_NAME, NOTES_NAME, best_checkpoint_name, epoch_checkpoint_name, experiment_name
from training.run_folder import LOG_COLUMNS

DASHBOARD = str(REPO / "dashboard.py")


def open_page(root: Path, page: str, **params: str) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=60)
    at.session_state["models_root"] = str(root)
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go(at: AppTest, page: str) -> AppTest:
    """Another page through the sidebar: the query string is dropped, as a browser's navigation does."""
    for key in list(at.query_params):
        del at.query_params[key]
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def field(at: AppTest, name: str):
    for kind in (at.number_input, at.text_input, at.selectbox, at.checkbox):
        for widget in kind:
            if widget.label == name:
                return widget
    raise AssertionError(f"no field labelled {name!r}")


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


# --- Launch: the form keeps its values across page switches --------------------------------------

def test_launch_form_keeps_its_values_after_visiting_another_page(tmp_path: Path) -> None:
    at = open_page(tmp_path / "models", "pages/launch.py")
    field(at, "num_epochs").set_value(7)
    field(at, "lr").set_value("0.0005")
    field(at, "track").set_value("DF")
    field(at, "comment").set_value("kept")
    next(b for b in at.button if b.label == "Update preview").click()
    at.run()
    go(at, "pages/experiments.py")
    go(at, "pages/launch.py")
    assert field(at, "num_epochs").value == 7
    assert field(at, "lr").value == "0.0005"
    assert field(at, "track").value == "DF"
    assert field(at, "comment").value == "kept"
    assert not any("num_epochs must be at least 1" in t for t in texts(at.error)), texts(at.error)


# --- folders made of real checkpoint files (no training: the point is what the pages show) -------

LCNN_ARGS = {**ARGS, "model_type": "lcnn", "num_epochs": 5, "batch_size": 8, "lr": 0.001, "comment": "x"}
LCNN_ARGS.pop("nested")


def write_run(root: Path, eers: list[float], best_file: bool = True, lineage: dict | None = None,
              first_epoch: int = 1, **args) -> str:
    """An experiment folder with a checkpoint per epoch and its training_log.csv (val EER per
    epoch from ``eers``); returns the folder name."""
    args = {**LCNN_ARGS, **args}
    name = experiment_name(args)
    folder = root / name
    folder.mkdir(parents=True)
    rows = []
    extra = {"lineage": lineage} if lineage else {}
    for epoch, eer in enumerate(eers, start=first_epoch):
        best = min(eers[:epoch - first_epoch + 1])
        save(full_checkpoint(epoch, val_eer=eer, best_val_eer=best, args=dict(args), numpy_metrics=False,
                             best_epoch=eers.index(best) + first_epoch, history=[], **extra),
             folder / epoch_checkpoint_name(epoch, args["comment"]))
        rows.append({"epoch": epoch, "train_loss": 1.0 / epoch, "train_eer": eer + 1, "val_loss": 0.5 / epoch,
                     "val_acc": 100 - eer, "val_eer": eer, "best_val_eer": best, "lr": args["lr"],
                     "epoch_seconds": 1.0, "timestamp": "2026-01-01T00:00:00", "experiment": name})
    if best_file and eers:
        best = min(eers)
        epoch = eers.index(best) + first_epoch
        save(full_checkpoint(epoch, val_eer=best, best_val_eer=best, args=dict(args), numpy_metrics=False,
                             history=[], **extra), folder / best_checkpoint_name(args["comment"]))
    with open(folder / LOG_NAME, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        out.writeheader()
        out.writerows(rows)
    return name


def test_launch_keeps_the_resume_mode_after_visiting_another_page(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0, 20.0])
    link = {"mode": "resume", "checkpoint": f"{name}/{epoch_checkpoint_name(2, 'x')}"}
    at = open_page(root, "pages/launch.py", **link)
    assert at.radio(key="launch_mode").value == "resume"
    field(at, "num_epochs").set_value(9)
    next(b for b in at.button if b.label == "Update preview").click()
    at.run()
    go(at, "pages/checkpoints.py")
    go(at, "pages/launch.py")
    assert at.radio(key="launch_mode").value == "resume"
    assert at.selectbox(key="launch_checkpoint").value == link["checkpoint"]
    assert field(at, "num_epochs").value == 9
    # The same Resume link followed again (from the Checkpoints page) keeps the mode too.
    go(at, "pages/experiments.py")
    at.query_params.update(link)
    at.switch_page("pages/launch.py")
    at.run()
    assert at.radio(key="launch_mode").value == "resume"


# --- Launch: the CLI's rules, before launching ---------------------------------------------------

def preview(at: AppTest, values: dict) -> AppTest:
    for name, value in values.items():
        field(at, name).set_value(value)
    next(b for b in at.button if b.label == "Update preview").click()
    at.run()
    return at


@pytest.mark.parametrize("values,message", [
    ({"lr": "nan"}, "--lr must be a finite number"),
    ({"comment": "c" * 300}, "--comment is too long"),
    ({"dataset": "asvspoof"}, "--dataset asvspoof needs --database_path"),
    ({"dataset": "asvspoof", "database_path": "/no/such/audio"}, "--database_path /no/such/audio: no such folder"),
])
def test_launch_refuses_in_the_preview_what_the_cli_refuses(tmp_path: Path, values: dict, message: str) -> None:
    root = tmp_path / "models"
    at = preview(open_page(root, "pages/launch.py"), values)
    assert any(message in t for t in texts(at.error)), texts(at.error)
    assert not at.code, "no command for a run the CLI would refuse"
    next(b for b in at.button if b.label == "Launch").click()
    at.run()
    assert any(t.startswith("Not launched") for t in texts(at.error))
    assert not root.exists() or not [p for p in root.iterdir() if p.name != ".jobs"], "no experiment folder"


def test_launch_warns_about_an_absurd_learning_rate(tmp_path: Path) -> None:
    at = preview(open_page(tmp_path / "models", "pages/launch.py"), {"lr": "1e5"})
    assert any("--lr 100000.0 is unusually large" in t for t in texts(at.warning)), texts(at.warning)
    assert at.code, "a legal value: the run may still go"


def test_cli_refuses_a_missing_database_path_before_creating_anything(tmp_path: Path) -> None:
    result = run_main([*TINY, "--dataset", "asvspoof", "--database_path", str(tmp_path / "none"),
                       "--protocols_path", str(tmp_path), "--models_root", str(tmp_path / "models")], tmp_path)
    assert result.code == 2 and "--database_path" in result.text and "Traceback" not in result.text, result.text
    assert not (tmp_path / "models").exists()


def test_cli_warns_about_an_absurd_learning_rate(tmp_path: Path) -> None:
    result = run_main([*TINY, "--lr", "1e5", "--models_root", str(tmp_path / "m")], tmp_path)
    assert "Warning: --lr 100000.0 is unusually large" in result.text, result.text


def test_jobs_api_refuses_a_missing_database_path_without_a_registry_row(tmp_path: Path) -> None:
    from training import jobs

    root = tmp_path / "models"
    with pytest.raises(ValueError, match="--dataset asvspoof needs --database_path"):
        jobs.launch(root, "fresh", {"dataset": "asvspoof"})
    assert not jobs.db_path(root).exists() or not jobs.list_jobs(root)
    assert not root.exists() or not [p for p in root.iterdir() if p.name != ".jobs"]


# --- Checkpoints ---------------------------------------------------------------------------------

def test_a_deleted_checkpoint_leaves_the_delete_box(tmp_path: Path) -> None:
    """The page must *set* the box's value after a deletion: a value merely dropped from the
    session never reaches the browser, which kept showing the deleted file (and the page, counting
    nothing chosen, kept the button disabled)."""
    root = tmp_path / "models"
    name = write_run(root, [30.0, 20.0, 25.0, 24.0])
    at = open_page(root, "pages/checkpoints.py", ckpt_exp=name)
    first = epoch_checkpoint_name(1, "x")
    assert first in at.multiselect(key="delete_files").options
    at.multiselect(key="delete_files").select(first).run()
    at.button(key="delete").click().run()
    at.button(key="confirm_delete").click().run()
    assert not (root / name / first).exists()
    box = at.multiselect(key="delete_files")
    assert first not in box.options and box.value == []
    assert box.proto.set_value and list(box.proto.raw_values) == [], "the browser is told to clear the box"


def test_checkpoint_details_open_on_the_best_with_metrics_in_percent(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0, 29.6875, 31.0])
    at = open_page(root, "pages/checkpoints.py", ckpt_exp=name)
    assert at.selectbox(key="ckpt_file").value == best_checkpoint_name("x")
    metrics = next(df.value for df in at.dataframe if "metric" in df.value.columns)
    shown = dict(zip(metrics["metric"], metrics["value"]))
    assert shown["val_eer"] == "29.69 %" and shown["val_loss"] == "0.0055", shown


# --- Jobs: the log box --------------------------------------------------------------------------

def test_the_log_box_shows_the_newest_lines_in_view(tmp_path: Path) -> None:
    """A fixed-height box of 200 lines opened at its top: the newest lines were out of view."""
    from training import jobs

    root = tmp_path / "models"
    job = jobs.launch(root, "fresh", {"model_type": "lcnn", "train_size": 32, "val_size": 16,
                                      "clip_samples": 4000, "batch_size": 8, "lr": 0.001, "num_epochs": 1,
                                      "algo": 0})
    try:
        deadline = time.monotonic() + 240
        while jobs.get_job(root, job.id).is_active and time.monotonic() < deadline:
            time.sleep(0.2)
        with open(jobs.get_job(root, job.id).log_path, "a") as log:
            log.writelines(f"line {i}\n" for i in range(300))
        at = open_page(root, "pages/jobs.py", job=str(job.id))
        box = at.code[[i for i, c in enumerate(at.code) if "line 299" in c.value][0]]
        lines = box.value.split("\n")
        assert lines[-1] == "line 299" and len(lines) <= 40, len(lines)
    finally:
        kill_job_leftovers(root)


# --- the original script's folders ---------------------------------------------------------------

ORIGINAL = "model_DF_weighted_CCE_100_14_1e-06"  # an ASVspoof 2021 baseline folder


def test_an_original_baseline_folder_shows_its_name_settings_and_counts_epochs_from_zero(tmp_path: Path) -> None:
    import torch

    from ckpt_factories import tiny_model

    root = tmp_path / "models"
    (root / ORIGINAL).mkdir(parents=True)
    for epoch in range(4):  # the original script's loop index: epoch_0.pth is the first epoch
        torch.save(tiny_model().state_dict(), root / ORIGINAL / f"epoch_{epoch}.pth")
    at = open_page(root, "pages/experiments.py")
    row = next(df.value for df in at.dataframe if "name" in df.value.columns).iloc[0]
    assert (row["model_type"], row["track"], row["loss"], row["lr"]) == ("baseline", "DF", "weighted_CCE", 1e-06)
    assert row["epochs_done"] == 4
    ckpts = open_page(root, "pages/checkpoints.py", ckpt_exp=ORIGINAL)
    table = next(df.value for df in ckpts.dataframe if "file" in df.value.columns)
    assert dict(zip(table["file"], table["epoch"]))["epoch_0.pth"] == 1



# --- Experiments ---------------------------------------------------------------------------------

def test_a_run_continued_in_another_folder_is_not_offered_auto_resume(tmp_path: Path) -> None:
    root = tmp_path / "models"
    parent = write_run(root, [30.0, 20.0], comment="p")
    child = write_run(root, [15.0], first_epoch=3, comment="p_more",
                      lineage={"mode": "resume", "parent_experiment": parent, "parent_epoch": 2, "run_id": "r2"})
    alone = write_run(root, [30.0], comment="alone")
    at = open_page(root, "pages/experiments.py")
    offered = [b.key for b in at.button if b.key.startswith("auto_resume_")]
    assert f"auto_resume_{parent}" not in offered and f"auto_resume_{alone}" in offered, offered
    line = next(m.value for m in at.markdown if parent in m.value and "continued in" in m.value)
    assert child in line


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_a_mistyped_models_root_is_named_not_shown_as_empty(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "modles"
    if kind == "file":
        root.write_text("not a folder")
    for page in ("pages/experiments.py", "pages/curves.py", "pages/checkpoints.py"):
        at = open_page(root, page)
        said = texts(at.error) + texts(at.warning)
        expected = "is a file, not a folder" if kind == "file" else "does not exist"
        assert any(str(root) in t and expected in t for t in said), (page, said)
    if kind == "file":
        assert not any("No experiments under" in t for t in texts(at.info))


# --- Curves: legends, stars, empty runs, short labels --------------------------------------------

def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


@pytest.fixture
def ten_runs(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "models"
    names = [write_run(root, [30.0 - i, 20.0 - i, 25.0], comment=f"trial{i}", lr=round(0.001 * (i + 1), 4))
             for i in range(10)]
    return root, names


def test_ten_runs_get_a_compact_legend_of_short_labels_beside_the_chart(ten_runs) -> None:
    root, names = ten_runs
    at = open_page(root, "pages/curves.py", exp=names)
    figures = plotly_figures(at)
    assert len(figures) == 6  # the four metric charts, learning rate and epoch time (no step log here)
    for fig in figures:
        legend = fig["layout"]["legend"]
        entries = [t["name"] for t in fig["data"] if t.get("showlegend", True)]
        assert len(entries) == 10, (fig["layout"]["title"]["text"], entries)  # one per run, loss chart too
        assert legend["x"] >= 1, "beside the plot, not over the x-axis title"
        assert legend["font"]["size"] <= 11
        assert all(len(e) <= 25 for e in entries), entries  # short labels, not folder names
    raw = [t for t in figures[0]["data"] if t["meta"]["role"] == "raw"]
    assert {t["name"] for t in raw} == {f"trial{i} · lr={round(0.001 * (i + 1), 4)}" for i in range(10)}
    assert all(t["customdata"][0] == t["meta"]["experiment"] for t in raw), "hover names the full folder"


def test_the_best_epoch_star_is_only_on_eer_charts(ten_runs) -> None:
    root, names = ten_runs
    figures = plotly_figures(open_page(root, "pages/curves.py", exp=names[:2]))
    starred = [f["layout"]["title"]["text"] for f in figures
               if any(t["meta"]["role"] == "best" for t in f["data"])]
    assert starred == ["Validation EER", "Training EER"], starred


def test_a_run_with_no_finished_epoch_gets_no_empty_axes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "lcnn_DF_CCE_5_8_0.001_group3_contrastiveFalse_new").mkdir(parents=True)
    at = open_page(root, "pages/curves.py", exp=["lcnn_DF_CCE_5_8_0.001_group3_contrastiveFalse_new"])
    assert any("No finished epoch yet" in t for t in texts(at.info)), texts(at.info)
    for fig in plotly_figures(at):  # none drawn; a chart drawn anyway starts at epoch 1
        assert fig["layout"]["xaxis"].get("range", [-1])[0] >= 1, "plotly's empty axes run from -1"


def test_plots_of_no_epoch_start_at_epoch_one() -> None:
    from training.dashboard.plots import curve_figures

    for chart in curve_figures({"empty": pd.DataFrame()}):
        assert chart.figure.layout.xaxis.range == (1, 2)


def test_experiments_table_leads_with_short_labels(ten_runs) -> None:
    root, names = ten_runs
    at = open_page(root, "pages/experiments.py")
    table = next(df.value for df in at.dataframe if "name" in df.value.columns)
    assert list(table.columns[:2]) == ["run", "name"]
    assert table["run"].tolist()[0] == "trial0 · lr=0.001"


def test_experiments_page_plots_hyperparameters_against_best_eer(ten_runs) -> None:
    root, names = ten_runs
    assert not open_page(root, "pages/experiments.py").get("plotly_chart"), "drawn only when asked for"
    at = open_page(root, "pages/experiments.py", hparams="true")
    parcoords = [t for fig in plotly_figures(at) for t in fig["data"] if t["type"] == "parcoords"]
    assert len(parcoords) == 1
    dims = {d["label"]: d["values"] for d in parcoords[0]["dimensions"]}
    assert list(dims) == ["log10 lr", "best val EER (%)"], "only the axes that differ, EER last"
    order = parcoords[0]["meta"]["experiments"]
    best = {n: min(30.0 - i, 20.0 - i, 25.0) for i, n in enumerate(names)}
    assert dims["best val EER (%)"] == [best[n] for n in order]


def test_runs_differing_only_in_seed_are_drawn_as_mean_and_std(tmp_path: Path) -> None:
    root = tmp_path / "models"
    seeds = [write_run(root, eers, comment=f"s{seed}", seed=seed)
             for seed, eers in ((1, [30.0, 20.0]), (2, [34.0, 22.0]), (3, [26.0, 18.0]))]
    other = write_run(root, [40.0, 35.0], comment="other", lr=0.01, seed=1)
    at = open_page(root, "pages/curves.py", exp=[*seeds, other], seeds="true")
    val_eer = plotly_figures(at)[0]
    means = {tuple(t["meta"]["members"]): t for t in val_eer["data"] if t["meta"]["role"] == "mean"}
    assert set(means) == {tuple(seeds), (other,)}
    group = means[tuple(seeds)]
    assert group["x"] == [1, 2] and group["y"] == pytest.approx([30.0, 20.0])
    assert [round(c[0], 6) for c in group["customdata"]] == [4.0, 2.0]  # sample std over the 3 seeds
    assert "+2 seeds" in group["name"]
    assert any(t["meta"]["role"] == "std" and t["fill"] == "toself" for t in val_eer["data"])


# --- Organise: notes, tags, archive, delete ------------------------------------------------------

def save_notes(at: AppTest, text: str, tags: str) -> AppTest:
    at.text_area[0].set_value(text)
    next(t for t in at.text_input if t.label.startswith("Tags")).set_value(tags)
    next(b for b in at.button if b.label == "Save notes").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_notes_and_tags_are_saved_in_the_folder_and_listed_by_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0, 20.0])
    at = save_notes(open_page(root, "pages/experiments.py", exp=name), "lr too high?\nretry with 1e-4", "sweep, lcnn")
    stored = json.loads((root / name / NOTES_NAME).read_text())
    assert stored["text"] == "lr too high?\nretry with 1e-4" and stored["tags"] == ["sweep", "lcnn"]
    table = next(df.value for df in at.dataframe if "name" in df.value.columns)
    assert table["tags"].tolist() == ["sweep, lcnn"]
    at.text_input(key="q").set_value("sweep").run()  # the search finds tags too
    assert len(next(df.value for df in at.dataframe if "name" in df.value.columns)) == 1
    listing = run_main(["--list_checkpoints", "--model_type", "lcnn", "--num_epochs", "5", "--batch_size", "8",
                        "--lr", "0.001", "--comment", "x", "--models_root", str(root)], tmp_path)
    assert listing.code == 0 and "Tags: sweep, lcnn" in listing.text and "retry with 1e-4" in listing.text, \
        listing.text


@pytest.mark.parametrize("text,tags,message", [
    ("ok", "bad/tag", "tag 'bad/tag'"),
    ("x" * 5000, "", "at most 4000"),
    ("bell\x07", "", "control character"),
])
def test_bad_notes_are_refused_and_nothing_is_written(tmp_path: Path, text: str, tags: str, message: str) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0])
    at = open_page(root, "pages/experiments.py", exp=name)
    from training.experiment_notes import NotesError, parse_tags, write_notes

    with pytest.raises(NotesError, match=message):
        write_notes(root / name, text, parse_tags(tags))
    if len(text) <= 4000:  # the text area itself stops longer text
        at = save_notes(at, text, tags)
        assert any(message in t for t in texts(at.error)), texts(at.error)
    assert not (root / name / NOTES_NAME).exists()


def test_notes_need_the_token(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0])
    at = open_page(root, "pages/experiments.py", exp=name)
    del at.session_state[dashboard_access.SESSION_KEY]
    at = save_notes(at, "hello", "")
    assert any("refused" in t for t in texts(at.error)) and not (root / name / NOTES_NAME).exists()


def test_a_damaged_notes_file_is_named_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0])
    (root / name / NOTES_NAME).write_text('{"text": 3')
    at = open_page(root, "pages/experiments.py", exp=name)
    assert any(NOTES_NAME in t and "unreadable" in t for t in texts(at.warning)), texts(at.warning)
    listing = run_main(["--list_checkpoints", "--model_type", "lcnn", "--num_epochs", "5", "--batch_size", "8",
                        "--lr", "0.001", "--comment", "x", "--models_root", str(root)], tmp_path)
    assert listing.code == 0 and "Notes:" in listing.text and "Traceback" not in listing.text


def remove(at: AppTest, action: str) -> AppTest:
    at.button(key=f"{action}_experiment").click().run()
    at.button(key="confirm_removal").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_archive_moves_the_experiment_out_of_the_listing_keeping_its_files(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0, 20.0])
    keep = write_run(root, [25.0], comment="keep")
    at = remove(open_page(root, "pages/experiments.py", exp=name), "archive")
    assert not (root / name).exists()
    archived = list((root / "archive").iterdir())
    assert [p.name.split("__")[0] for p in archived] == [name]
    assert (archived[0] / epoch_checkpoint_name(2, "x")).is_file()
    table = next(df.value for df in at.dataframe if "name" in df.value.columns)
    assert table["name"].tolist() == [keep]
    assert any("Archived" in t for t in texts(at.success))


def test_delete_removes_the_experiment_after_confirmation(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0, 20.0])
    at = open_page(root, "pages/experiments.py", exp=name)
    at.button(key="delete_experiment").click().run()
    assert (root / name).exists(), "asked first"
    at.button(key="cancel_removal").click().run()
    assert (root / name).exists()
    remove(at, "delete")
    assert not (root / name).exists() and not (root / "archive").exists()


def test_a_running_experiment_cannot_be_archived_or_deleted(tmp_path: Path) -> None:
    from training.dashboard.experiment_removal import delete_experiment
    from training.dashboard.scan import CatalogError
    from training.lock import ExperimentLock

    root = tmp_path / "models"
    name = write_run(root, [30.0])
    with ExperimentLock(root / name):
        at = open_page(root, "pages/experiments.py", exp=name)
        assert at.button(key="archive_experiment").disabled and at.button(key="delete_experiment").disabled
        assert any("is running" in c.value for c in at.caption)
        with pytest.raises(CatalogError, match="is running"):
            delete_experiment(root, name)
    assert (root / name / epoch_checkpoint_name(1, "x")).exists()


@pytest.mark.parametrize("bad", ["..", "../x", "/etc", "link"])
def test_removal_refuses_paths_and_symlinks(tmp_path: Path, bad: str) -> None:
    from training.dashboard.experiment_removal import archive_experiment, delete_experiment
    from training.dashboard.scan import CatalogError

    root = tmp_path / "models"
    target = tmp_path / "outside"
    target.mkdir()
    (target / "precious").write_text("x")
    root.mkdir()
    (root / "link").symlink_to(target)
    for action in (archive_experiment, delete_experiment):
        with pytest.raises(CatalogError):
            action(root, bad)
    assert (target / "precious").exists()


def test_removal_without_the_token_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    name = write_run(root, [30.0])
    at = open_page(root, "pages/experiments.py", exp=name)
    del at.session_state[dashboard_access.SESSION_KEY]
    at.run()
    at.button(key="delete_experiment").click().run()
    assert any("refused" in t for t in texts(at.error))
    assert (root / name).exists()


# --- Jobs: a finished job's progress stays what it was -------------------------------------------

def test_a_stopped_jobs_progress_does_not_change_when_another_job_trains_its_folder(tmp_path: Path) -> None:
    from training import jobs
    from training.dashboard.job_status import job_progress

    root = tmp_path / "models"
    job = jobs.launch(root, "fresh", {"model_type": "lcnn", "train_size": 32, "val_size": 16, "clip_samples": 4000,
                                      "batch_size": 8, "lr": 0.001, "num_epochs": 1, "algo": 0})
    try:
        deadline = time.monotonic() + 240
        while jobs.get_job(root, job.id).is_active and time.monotonic() < deadline:
            time.sleep(0.2)
        job = jobs.get_job(root, job.id)
        assert job.state == "succeeded" and job_progress(root, job).done == 1
        log = Path(job.exp_dir) / LOG_NAME
        header = log.read_text().splitlines()[0].split(",")
        later = job.ended_at + 3600  # another job continued the folder an hour later
        with open(log, "a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            for epoch in (2, 3):
                out.writerow({"epoch": epoch, "val_eer": 1.0, "timestamp": later + epoch, "epoch_seconds": 1.0})
        assert job_progress(root, job).done == 1
    finally:
        kill_job_leftovers(root)
