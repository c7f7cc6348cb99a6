"""The read-side pages (Experiments, Curves, Checkpoints) under Streamlit's AppTest.

One models root is trained once for the module with the real CLI: ``a`` (3 epochs), ``b``
(2 epochs), ``a_ext`` (``a`` resumed from epoch 3 into its own folder, to epoch 4: lineage) and
``stop`` (stopped by SIGTERM after its first epoch: interrupted). Tests that delete work on a copy.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cli_helpers import REPO, TINY, load, logged_history, run_main, start_main, stop_with, wait_for
from training.dashboard import access as dashboard_access
from training.checkpoint.fsutil import sidecar_path
from training.dashboard.views import STATUSES

A = "lcnn_DF_CCE_3_8_0.001_group3_contrastiveFalse_a"
B = "lcnn_DF_CCE_2_8_0.001_group3_contrastiveFalse_b"
A_EXT = "lcnn_DF_CCE_4_8_0.001_group3_contrastiveFalse_a_ext"
STOP = "lcnn_DF_CCE_50_8_0.001_group3_contrastiveFalse_stop"
DEMO = "python main.py --model_type lcnn --num_epochs 3 --train_size 256 --val_size 128 --lr 0.001 --comment demo"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("read_pages")
    models = cwd / "models"
    for args in ([*TINY, "--num_epochs", "3", "--comment", "a"], [*TINY, "--num_epochs", "2", "--comment", "b"],
                 [*TINY, "--resume", "--model_path", str(models / A / "checkpoint_epoch_3_a.pth"),
                  "--num_epochs", "4", "--comment", "a_ext"]):
        result = run_main([*args, "--models_root", str(models)], cwd)
        assert result.code == 0, result.text
    # A real interruption: SIGTERM once the first epoch's checkpoint is complete (sidecar written).
    slow = [a if a != "32" else "256" for a in TINY]  # more clips per epoch: time to stop it mid-run
    proc = start_main([*slow, "--num_epochs", "50", "--comment", "stop", "--models_root", str(models)], cwd,
                      cwd / "stop.log")
    wait_for(lambda: sidecar_path(models / STOP / "checkpoint_epoch_1_stop.pth").exists(), timeout=120)
    assert stop_with(proc, signal.SIGTERM) == 143, (cwd / "stop.log").read_text()[-2000:]
    return models


def app(root: Path, monkeypatch: pytest.MonkeyPatch, page: str | None = None, signed_in: bool = True,
        **params) -> AppTest:
    """The dashboard on ``root``, switched to ``page`` with these query parameters, after a run;
    signed in (the token in the session, as the pages document for tests) unless told not to."""
    monkeypatch.setenv("MODELS_ROOT", str(root))
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=60)
    if signed_in:
        at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    at.query_params.update(params)
    at.run()
    if page:
        at.switch_page(page)
        at.query_params.update(params)
        at.run()
    assert not at.exception, at.exception
    return at


def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def table_with(at: AppTest, column: str):
    """The first st.dataframe with this column (read-only tables expose no key in AppTest)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def traces(fig: dict, role: str) -> dict[str, dict]:
    """The traces of a role by experiment, with x / y as lists: plotly sends arrays as typed
    arrays (``{"dtype": "f8", "bdata": base64}``), which the browser reads without a parse."""
    return {t["meta"]["experiment"]: {**t, **{k: typed_array(t[k]) for k in ("x", "y") if k in t}}
            for t in fig["data"] if t["meta"]["role"] == role}


def typed_array(value):
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return value


# --- Experiments ---------------------------------------------------------------------------

def test_empty_root_shows_how_to_start_a_first_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "models"
    at = app(empty, monkeypatch)
    assert [c.value for c in at.code] == [f"{DEMO} --models_root {empty}"]
    assert "No experiments" in at.info[0].value and "Launch" in " ".join(m.value for m in at.markdown)
    for page in ("pages/curves.py", "pages/checkpoints.py"):
        at.switch_page(page).run()
        assert not at.exception and at.info, page


def test_a_page_opened_first_gets_the_dashboards_sidebar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared page link as a session's first request: Streamlit runs the page file alone (its
    pages-folder mode); the page must hand over to dashboard.py, keeping the link's parameters."""
    monkeypatch.setenv("MODELS_ROOT", str(tmp_path / "models"))
    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=60)
    at.switch_page("pages/curves.py")
    at.query_params["exp"] = "not_a_run"
    at.run()
    assert not at.exception, at.exception
    assert [t.label for t in at.sidebar.text_input] == ["Models root"]
    assert any("Read-only" in c.value for c in at.sidebar.caption)
    assert at.title[0].value == "Curves"
    assert any("`not_a_run`" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.query_params["exp"] in ("not_a_run", ["not_a_run"])


def test_sidebar_says_read_only_until_signed_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unsigned = app(tmp_path / "models", monkeypatch, signed_in=False)
    assert any("Read-only" in c.value and "?token=" in c.value for c in unsigned.sidebar.caption)
    signed = app(tmp_path / "models", monkeypatch)
    assert not any("Read-only" in c.value for c in signed.sidebar.caption)


def test_experiments_table_lists_every_run_with_best_eer_and_status(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch)
    table = at.dataframe[0].value.set_index("name")
    assert sorted(table.index) == sorted([A, B, A_EXT, STOP])
    best = load(root / A / "best_checkpoint_eer_a.pth")
    assert table.loc[A, "best_val_eer"] == pytest.approx(best["best_val_eer"])
    assert table.loc[A, "best_epoch"] == best["best_epoch"]
    last = load(root / A / "checkpoint_epoch_3_a.pth")
    assert table.loc[A, "latest_val_acc"] == pytest.approx(last["val_acc"])
    assert list(table.loc[A, "val_eer_history"]) == pytest.approx([r["val_eer"] for r in logged_history(root / A)])
    assert len(table.loc[A_EXT, "val_eer_history"]) == 4  # the parent's three epochs, then its own
    assert table.loc[A_EXT, "parent_experiment"] == A
    assert dict(table["status"]) == {A: "finished", B: "finished", A_EXT: "finished", STOP: "interrupted"}
    assert set(table["status"]) <= set(STATUSES)


def test_filters_come_from_the_url_and_narrow_the_rows(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, status=["interrupted"])
    assert at.dataframe[0].value["name"].tolist() == [STOP]
    at.multiselect(key="status").set_value([]).run()
    at.text_input(key="q").input("A_EXT").run()  # case-insensitive
    assert at.dataframe[0].value["name"].tolist() == [A_EXT]
    at.text_input(key="q").input("no such run").run()
    assert at.dataframe[0].value.empty and not at.exception


def test_selected_rows_go_to_the_url_and_survive_a_filter(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch)
    names = at.dataframe[0].value["name"].tolist()
    key = at.dataframe[0].key
    at.session_state[key] = {"selection": {"rows": [names.index(A), names.index(B)], "columns": []}}
    at.run()
    assert sorted(at.query_params["exp"]) == sorted([A, B])
    at.text_input(key="q").input("_b").run()  # hides A; A stays selected, B's row is pre-selected
    assert at.dataframe[0].value["name"].tolist() == [B]
    assert at.session_state[at.dataframe[0].key]["selection"]["rows"] == [0]
    assert sorted(at.query_params["exp"]) == sorted([A, B])


def test_url_selection_preselects_rows(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, exp=[B])
    names = at.dataframe[0].value["name"].tolist()
    assert at.session_state[at.dataframe[0].key]["selection"]["rows"] == [names.index(B)]
    assert any(B in m.value and "1 selected" in m.value for m in at.markdown)


def test_auto_resume_opens_the_launch_page_for_interrupted_runs(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch)
    assert [b.key for b in at.button if b.key.startswith("auto_resume_")] == [f"auto_resume_{STOP}"]
    at.button(key=f"auto_resume_{STOP}").click().run()
    assert at.query_params == {"mode": "auto_resume", "experiment": STOP}
    assert "experiments" not in at.title[0].value.lower()  # left the Experiments page


ORIGINAL = "model_DF_weighted_CCE_100_14_1e-06"  # an ASVspoof 2021 baseline folder (default loss weighted_CCE)


def original_format_folder(root: Path, best: bool) -> Path:
    """The original script's files: ``epoch_0.pth`` .. ``epoch_3.pth`` (+ ``best_model_eer.pth``), weights only."""
    import torch

    from ckpt_factories import tiny_model

    folder = root / ORIGINAL
    folder.mkdir(parents=True)
    weights = tiny_model().state_dict()
    for name in [f"epoch_{e}.pth" for e in range(4)] + (["best_model_eer.pth"] if best else []):
        torch.save(weights, folder / name)
    return folder


@pytest.mark.parametrize("best,fine_tune_from", [(True, "best_model_eer.pth"), (False, "epoch_3.pth")])
def test_original_format_folder_offers_fine_tuning_not_auto_resume(tmp_path: Path, monkeypatch, best: bool,
                                                                   fine_tune_from: str) -> None:
    original_format_folder(tmp_path / "models", best)
    at = app(tmp_path / "models", monkeypatch)
    line = next(m.value for m in at.markdown if ORIGINAL in m.value and "epoch" in m.value)
    # epoch_0..epoch_3: the original script's 0-based names, 4 epochs done
    assert "epoch 4 of 100" in line and "None" not in line and "weights only" in line, line
    assert not [b.key for b in at.button if b.key.startswith("auto_resume_")], "weights cannot be resumed"
    at.button(key=f"fine_tune_{ORIGINAL}").click().run()
    assert at.query_params == {"mode": "pretrained", "checkpoint": f"{ORIGINAL}/{fine_tune_from}"}
    # The Launch page takes that link: the file is preselected, a new experiment is planned.
    launch = app(tmp_path / "models", monkeypatch, "pages/launch.py", **at.query_params)
    assert launch.selectbox(key="launch_checkpoint").value == f"{ORIGINAL}/{fine_tune_from}"
    assert not launch.error, [e.value for e in launch.error]


def test_auto_resume_is_not_offered_where_it_would_continue_another_folder(root: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    (copy / STOP).rename(copy / "renamed_stop")  # its checkpoints' settings still name STOP
    at = app(copy, monkeypatch)
    assert [b.key for b in at.button if b.key.startswith("auto_resume_")] == []
    line = next(m.value for m in at.markdown if "renamed_stop" in m.value and "epoch" in m.value)
    assert f"name another folder ({STOP})" in line
    at.button(key="fine_tune_renamed_stop").click().run()  # its weights can still start a new run
    assert at.query_params["mode"] == "pretrained"


# --- Curves --------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["..", "../x", "/etc", ".", "no_such_run", "a/../" + A])
def test_url_naming_a_folder_outside_the_root_gets_a_message_not_an_error(root: Path, monkeypatch, bad: str) -> None:
    at = app(root, monkeypatch, "pages/curves.py", exp=[bad, A])
    assert any("Not under this models root" in w.value and bad in w.value for w in at.warning), \
        [w.value for w in at.warning]
    assert A in traces(plotly_figures(at)[0], "raw"), "the good experiment is still drawn"
    for page in ("pages/experiments.py", "pages/checkpoints.py"):
        other = app(root, monkeypatch, page, exp=[bad])
        assert not other.exception, page

def test_curves_overlay_selected_runs_and_follow_lineage(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, "pages/curves.py", exp=[B, A_EXT])
    figures = plotly_figures(at)
    assert [f["layout"]["title"]["text"].split(" (")[0] for f in figures] == [
        "Validation EER", "Validation accuracy", "Loss", "Training EER", "Learning rate", "Epoch time",
        "Training loss per logged step"]
    val_eer = traces(figures[0], "raw")
    assert val_eer[B]["x"] == [1, 2] and val_eer[A_EXT]["x"] == [1, 2, 3, 4]
    parent = [r["val_eer"] for r in logged_history(root / A)]
    own = load(root / A_EXT / "checkpoint_epoch_4_a_ext.pth")["val_eer"]
    assert val_eer[A_EXT]["y"] == pytest.approx([*parent, own])
    assert val_eer[A_EXT]["customdata"] == [A, A, A, A_EXT]  # hover names the folder of each point
    best = traces(figures[0], "best")
    history = logged_history(root / A)[:3] + logged_history(root / A_EXT)
    assert best[A_EXT]["x"] == [min(history, key=lambda r: r["val_eer"])["epoch"]]
    colors = [{name: t["line"]["color"] for name, t in traces(f, "raw").items()} for f in figures]
    assert colors[0][B] != colors[0][A_EXT] and all(c == colors[0] for c in colors if c)
    loss_columns = {t["meta"]["column"] for t in figures[2]["data"] if t["meta"]["role"] == "raw"}
    assert loss_columns == {"train_loss", "val_loss"}
    assert any(A in c.value for c in at.caption)  # says the line continues the parent


def test_curves_smoothing_and_log_scale_come_from_the_url(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, "pages/curves.py", exp=[A], smooth="0.6", log="true")
    assert at.slider(key="smooth").value == pytest.approx(0.6) and at.toggle(key="log").value is True
    eer, acc = plotly_figures(at)[:2]
    assert eer["layout"]["yaxis"]["type"] == "log" and acc["layout"]["yaxis"].get("type") != "log"
    raw, smooth = traces(eer, "raw")[A], traces(eer, "smoothed")[A]
    assert raw["opacity"] < 1 and smooth["x"] == raw["x"]
    assert smooth["y"][0] == pytest.approx(raw["y"][0]) and smooth["y"] != raw["y"]


def test_curves_without_selection_offer_a_picker_that_sets_the_selection(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, "pages/curves.py")
    assert not at.get("plotly_chart") and "Experiments" in at.info[0].value
    at.multiselect(key="curves_picker").select(B).run()
    assert at.query_params["exp"] == B and len(at.get("plotly_chart")) == 7  # 4 metrics, lr, epoch time, steps


# --- Checkpoints -------------------------------------------------------------------------

def test_checkpoints_table_and_details(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, "pages/checkpoints.py", exp=[A])
    assert at.selectbox(key="ckpt_exp").value == A
    table = table_with(at, "file")
    assert table["file"].tolist() == ["checkpoint_epoch_1_a.pth", "checkpoint_epoch_2_a.pth",
                                      "checkpoint_epoch_3_a.pth", "best_checkpoint_eer_a.pth"]
    assert table["epoch"].tolist() == [1, 2, 3, 3] and table["complete"].all()
    assert table.set_index("file").loc["best_checkpoint_eer_a.pth", "protected"].startswith("best checkpoint")
    at.selectbox(key="ckpt_file").select("checkpoint_epoch_2_a.pth").run()
    args = dict(table_with(at, "argument").values.tolist())
    saved = load(root / A / "checkpoint_epoch_2_a.pth")
    assert args["comment"] == "a" and args["num_epochs"] == "3" and set(args) == {str(k) for k in saved["args"]}
    metrics = dict(table_with(at, "metric").values.tolist())
    assert metrics["val_eer"] == f"{saved['val_eer']:.2f} %"  # in % like the table


def test_pickers_of_many_options_are_narrowed_by_typing(root: Path, monkeypatch) -> None:
    from training.dashboard import views

    monkeypatch.setattr(views, "PICKER_LIMIT", 2)  # every picker of the page has more options than that
    at = app(root, monkeypatch, "pages/checkpoints.py", exp=[A])
    best, first, second = "best_checkpoint_eer_a.pth", "checkpoint_epoch_1_a.pth", "checkpoint_epoch_2_a.pth"
    # the details open on the best checkpoint, offered first beside the picker's bounded list
    assert at.selectbox(key="ckpt_file").options == [best, first, second]
    assert at.selectbox(key="ckpt_file").value == best
    at.text_input(key="ckpt_file_find").input("EPOCH_2").run()
    assert at.selectbox(key="ckpt_file").options == [best, second]  # the choice stays offered while narrowing
    at.selectbox(key="ckpt_file").select(second).run()
    assert at.selectbox(key="ckpt_file").value == second
    assert table_with(at, "argument").set_index("argument").loc["comment", "value"] == "a"
    at.text_input(key="ckpt_file_find").input("").run()  # the choice stays while the text changes
    assert second in at.selectbox(key="ckpt_file").options and at.selectbox(key="ckpt_file").value == second
    at.text_input(key="ckpt_find").input("_ext").run()
    assert at.selectbox(key="ckpt_exp").options == [A, A_EXT]


def test_hyperparameter_diff_shows_only_differing_keys_by_default(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, "pages/checkpoints.py", exp=[A], diff_a=A, diff_b=B)
    diff = table_with(at, "differs")
    assert sorted(diff["key"]) == ["comment", "num_epochs"] and diff["differs"].all()
    at.toggle(key="only_diff").set_value(False).run()
    everything = table_with(at, "differs").set_index("key")
    assert {"model_type", "lr", "comment"} <= set(everything.index)
    assert not everything.loc["model_type", "differs"] and everything.loc["comment", "differs"]


def flash_script() -> None:
    import streamlit as st

    from pages.common import flash, page_title

    page_title("Page")
    if st.button("Act", key="act"):
        flash("success", "Done.")
        st.rerun()  # the message must survive it


def test_a_flash_message_shows_once_under_the_title() -> None:
    at = AppTest.from_function(flash_script, default_timeout=30).run()
    at.button(key="act").click().run()
    assert not at.exception and [m.value for m in at.success] == ["Done."] and at.title[0].value == "Page"
    at.run()
    assert not at.success


def test_a_flash_message_of_an_unknown_kind_is_refused() -> None:
    from pages.common import flash

    with pytest.raises(ValueError, match="'toast'"):
        flash("toast", "Done.")


def test_delete_offers_only_unprotected_files_and_needs_confirmation(root: Path, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "models"
    shutil.copytree(root, copy)  # copy2 keeps mtimes, so the sidecars still vouch for the files
    at = app(copy, monkeypatch, "pages/checkpoints.py", exp=[A])
    assert at.multiselect(key="delete_files").options == ["checkpoint_epoch_1_a.pth", "checkpoint_epoch_2_a.pth"]
    at.multiselect(key="delete_files").select("checkpoint_epoch_1_a.pth").run()
    at.button(key="delete").click().run()
    assert (copy / A / "checkpoint_epoch_1_a.pth").exists()  # asked, not yet deleted
    assert any("cannot be undone" in m.value for m in at.markdown)
    at.button(key="confirm_delete").click().run()
    assert not at.exception
    assert not (copy / A / "checkpoint_epoch_1_a.pth").exists()
    assert not sidecar_path(copy / A / "checkpoint_epoch_1_a.pth").exists()
    assert "Deleted checkpoint_epoch_1_a.pth" in at.success[0].value
    at.run()
    assert not at.success  # shown once
    assert table_with(at, "file")["file"].tolist()[0] == "checkpoint_epoch_2_a.pth"
    assert at.multiselect(key="delete_files").options == ["checkpoint_epoch_2_a.pth"]
    for kept in ("checkpoint_epoch_3_a.pth", "best_checkpoint_eer_a.pth"):
        assert (copy / A / kept).exists()
    # Even a request for a protected file (a stale form, a crafted session) is refused by the catalog.
    at.session_state["_checkpoints_pending_delete"] = (A, ["best_checkpoint_eer_a.pth"])
    at.run()
    at.button(key="confirm_delete").click().run()
    assert "best_checkpoint_eer_a.pth" in at.error[0].value and "best checkpoint" in at.error[0].value
    assert (copy / A / "best_checkpoint_eer_a.pth").exists()


def test_delete_without_the_token_is_refused(root: Path, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    at = app(copy, monkeypatch, "pages/checkpoints.py", signed_in=False, exp=[A])
    at.multiselect(key="delete_files").select("checkpoint_epoch_1_a.pth").run()
    at.button(key="delete").click().run()
    assert any("Delete refused" in e.value for e in at.error), [e.value for e in at.error]
    assert not any("cannot be undone" in m.value for m in at.markdown)  # no dialog offered
    # Even a confirmation already pending (opened before, or crafted) deletes nothing.
    at.session_state["_checkpoints_pending_delete"] = (A, ["checkpoint_epoch_1_a.pth"])
    at.run()
    at.button(key="confirm_delete").click().run()
    assert any("Delete refused" in e.value for e in at.error), [e.value for e in at.error]
    assert (copy / A / "checkpoint_epoch_1_a.pth").exists() and sidecar_path(copy / A / "checkpoint_epoch_1_a.pth").exists()
    # With the token the same request goes through.
    at.session_state[dashboard_access.SESSION_KEY] = dashboard_access.server_token()
    at.session_state["_checkpoints_pending_delete"] = (A, ["checkpoint_epoch_1_a.pth"])
    at.run()
    at.button(key="confirm_delete").click().run()
    assert not (copy / A / "checkpoint_epoch_1_a.pth").exists()


def test_cancel_keeps_the_files(root: Path, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    at = app(copy, monkeypatch, "pages/checkpoints.py", exp=[A])
    at.multiselect(key="delete_files").select("checkpoint_epoch_2_a.pth").run()
    at.button(key="delete").click().run()
    at.button(key="cancel_delete").click().run()
    assert (copy / A / "checkpoint_epoch_2_a.pth").exists() and not at.success
    assert not any("cannot be undone" in m.value for m in at.markdown)  # the dialog is closed


def test_clicking_a_table_row_shows_that_checkpoint(root: Path, monkeypatch) -> None:
    at = app(root, monkeypatch, "pages/checkpoints.py", exp=[A])
    assert at.selectbox(key="ckpt_file").value == "best_checkpoint_eer_a.pth"  # opens on the best
    at.session_state[f"checkpoint_table_{A}"] = {"selection": {"rows": [2], "columns": []}}
    at.run()
    assert at.selectbox(key="ckpt_file").value == "checkpoint_epoch_3_a.pth"
    assert dict(table_with(at, "metric").values.tolist())["val_eer"] == \
        f"{load(root / A / 'checkpoint_epoch_3_a.pth')['val_eer']:.2f} %"
    at.selectbox(key="ckpt_file").select("checkpoint_epoch_2_a.pth").run()  # the box still works after a click
    assert at.selectbox(key="ckpt_file").value == "checkpoint_epoch_2_a.pth"


@pytest.mark.parametrize("button,mode", [("resume", "resume"), ("fine_tune", "pretrained")])
def test_resume_and_fine_tune_open_the_launch_page(root: Path, monkeypatch, button: str, mode: str) -> None:
    at = app(root, monkeypatch, "pages/checkpoints.py", exp=[B], ckpt_file="checkpoint_epoch_1_b.pth")
    at.button(key=button).click().run()
    assert at.query_params == {"mode": mode, "checkpoint": f"{B}/checkpoint_epoch_1_b.pth"}
