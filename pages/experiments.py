"""Experiments: every experiment folder under the models root as one table.

Shows status, hyperparameters, progress, best and latest validation EER / accuracy (in %) and a
sparkline of validation EER per epoch; filters by text, model type, track and status; the rows
picked in the table become the selection the Curves and Checkpoints pages show (kept in the URL
as ``?exp=...``, with the filters, so a link reproduces the view). Interrupted runs get an
"Auto-resume" button that opens the Launch page prefilled, when auto-resume would continue that
very folder; folders holding weights only (the original script's format) get "Fine-tune from
here" instead, and runs already continued in another folder name it. Rows are led by short run
labels (what tells them apart); a parallel-coordinates view plots the hyperparameters against best
val EER. "Organise": notes and tags of a selected experiment (``notes.json`` in its folder,
shown by ``--list_checkpoints``) and archiving or deleting it (token, confirmation, refused while
a run or job uses it). With no experiments yet, it shows the command of a first (demo) run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import (ensure_navigation, flash, follow_running, models_root, page_title, refusal,
                          selected_experiments, set_selected_experiments, signed_in)
from training import experiment_notes
from training.dashboard import catalog, experiment_removal
from training.dashboard.hparams_view import hparams_figure
from training.dashboard.run_labels import short_labels
from training.dashboard.settings import models_root_notice
from training.dashboard.launch_form import auto_resume_refusal
from training.dashboard.views import (LAUNCH_PAGE, STATUSES, auto_resume_params, checkpoint_launch_params, continued_in,
                                      distinct_values,
                            filter_experiments, merge_selection, progress_text, selection_rows, weights_checkpoint)

DEMO_COMMAND = ("python main.py --model_type lcnn --num_epochs 3 --train_size 256 --val_size 128 "
                "--lr 0.001 --comment demo --models_root {root}")
PERCENT = "%.2f%%"
INTERRUPTED_SHOWN = 20  # interrupted runs offered an action at a time
REMOVAL_KEY = "_experiments_pending_removal"  # (archive | delete, experiment) awaiting confirmation
TABLE_WROTE_KEY = "_experiments_table_wrote"      # the selection as the table last left it
TABLE_GENERATION_KEY = "_experiments_table_generation"
TABLE_COLUMNS = ["run", "name", "status", "model_type", "track", "loss", "epochs_done", "num_epochs",
                 "best_val_eer", "best_epoch", "best_eval_eer", "latest_val_eer", "latest_val_acc", "val_eer_history",
                 "lr", "batch_size", "group_size", "contrastive", "comment", "tags", "parent_experiment",
                 "checkpoints", "size_bytes", "modified"]
COLUMN_CONFIG = {
    "run": st.column_config.TextColumn("run", pinned=True,
                                       help="What tells the runs shown apart: comment, then the differing name fields"),
    "name": st.column_config.TextColumn("experiment", help="The experiment folder's full name"),
    "status": st.column_config.TextColumn("status"),
    "model_type": st.column_config.TextColumn("model"),
    "epochs_done": st.column_config.NumberColumn("epochs done", format="%d"),
    "num_epochs": st.column_config.NumberColumn("target", format="%d"),
    "best_val_eer": st.column_config.NumberColumn("best val EER", format=PERCENT, help="Lowest validation EER"),
    "best_epoch": st.column_config.NumberColumn("best epoch", format="%d"),
    "best_eval_eer": st.column_config.TextColumn("best eval EER", help="Lowest pooled EER per evaluation set "
                                                 "(--eval results; the Evaluation page has them all)"),
    "latest_val_eer": st.column_config.NumberColumn("latest val EER", format=PERCENT),
    "latest_val_acc": st.column_config.NumberColumn("latest val acc", format=PERCENT),
    "val_eer_history": st.column_config.LineChartColumn("val EER per epoch", y_min=0, y_max=None, width="medium"),
    "lr": st.column_config.NumberColumn("lr", format="%g"),
    "batch_size": st.column_config.NumberColumn("batch", format="%d"),
    "group_size": st.column_config.NumberColumn("group", format="%d"),
    "contrastive": st.column_config.CheckboxColumn("contrastive"),
    "parent_experiment": st.column_config.TextColumn("resumed from", help="Parent folder of a resumed / fine-tuned run"),
    "checkpoints": st.column_config.NumberColumn("checkpoints", format="%d"),
    "size_bytes": st.column_config.NumberColumn("size", format="bytes"),
    "modified": st.column_config.DatetimeColumn("modified", format="YYYY-MM-DD HH:mm"),
}


# --- data: the catalog caches per file by (path, size, mtime), so a rescan on every rerun costs
# about one os.stat per file; no st.cache_data on top (it would hide runs that change on disk).

def load_experiments(root: Path) -> pd.DataFrame:
    return catalog.scan_experiments(root)  # best_eval_eer and tags included (read once per folder change)


# --- components ----------------------------------------------------------------------------

def empty_state(root: Path) -> None:
    """No experiment yet: say how to start one."""
    notice = models_root_notice(root)
    if notice:
        getattr(st, notice[0])(notice[1])
        if notice[0] == "error":  # a file or an unreadable folder: nothing to start there
            return
    st.info(f"No experiments under `{root}` yet. Start a first (demo) run on the built-in synthetic "
            "data, from a terminal in the project folder (a few minutes on a CPU):")
    st.code(DEMO_COMMAND.format(root=root), language="bash")
    st.markdown("Or start it from the **Launch** page, which runs it as a background job you can follow "
                "on the **Jobs** page. Then come back here: each epoch adds a row to the curves.")
    st.page_link(LAUNCH_PAGE, label="Open the Launch page", icon="🚀")


def filters(experiments: pd.DataFrame) -> pd.DataFrame:
    """Text, model type, track and status filters (kept in the URL); returns the rows shown."""
    cols = st.columns([3, 2, 2, 2])
    text = cols[0].text_input("Search", key="q", bind="query-params", placeholder="name or comment contains…")
    model_types = cols[1].multiselect("Model type", distinct_values(experiments, "model_type"), key="model",
                                      bind="query-params")
    tracks = cols[2].multiselect("Track", distinct_values(experiments, "track"), key="track", bind="query-params")
    statuses = cols[3].multiselect("Status", list(STATUSES), key="status", bind="query-params")
    return filter_experiments(experiments, text, model_types, tracks, statuses)


def experiments_table(shown: pd.DataFrame) -> list[str]:
    """The table with multi-row selection; returns (and stores) the new selection."""
    names = shown["name"].astype(str).tolist()
    previous = selected_experiments()
    # The widget key follows the rows shown and a generation bumped whenever the selection was
    # changed elsewhere (the Curves page, a new URL): the table then starts over from the selection
    # instead of reusing row positions that point at other experiments or an old selection.
    if previous != st.session_state.get(TABLE_WROTE_KEY, previous):
        st.session_state[TABLE_GENERATION_KEY] = st.session_state.get(TABLE_GENERATION_KEY, 0) + 1
    generation = st.session_state.get(TABLE_GENERATION_KEY, 0)
    key = f"experiments_table_{generation}_" + hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    labels = short_labels(names)
    labelled = shown.assign(run=[labels[n] for n in names])
    columns = [c for c in TABLE_COLUMNS if c in labelled]
    event = st.dataframe(
        labelled[columns], hide_index=True, column_config=COLUMN_CONFIG, key=key, on_select="rerun",
        selection_mode="multi-row", selection_default={"selection": {"rows": selection_rows(names, previous)}},
        height=min(38 + 35 * len(shown), 600),
    )
    selection = merge_selection(previous, names, event.selection.rows)
    set_selected_experiments(selection)
    st.session_state[TABLE_WROTE_KEY] = selection
    return selection


def interrupted_actions(root: Path, shown: pd.DataFrame, experiments: pd.DataFrame) -> None:
    """Per interrupted experiment shown: "Auto-resume" when it would continue that very folder,
    else why not, with "Fine-tune from here" where the folder holds weights to start from."""
    interrupted = shown[shown["status"] == "interrupted"]
    if interrupted.empty:
        return
    st.subheader("Interrupted runs")
    if len(interrupted) > INTERRUPTED_SHOWN:  # a row of buttons each: the screen's worth, not the root's
        st.caption(f"The first {INTERRUPTED_SHOWN} of {len(interrupted):,}: filter the table to reach the others.")
        interrupted = interrupted.head(INTERRUPTED_SHOWN)
    checkpoints = catalog.scan_checkpoints(root)
    checkpoints = checkpoints[checkpoints["experiment"].isin(interrupted["name"])]  # one filter, not one per row
    for name, done, target in zip(interrupted["name"], interrupted["epochs_done"], interrupted["num_epochs"]):
        name = str(name)
        left, right = st.columns([5, 1])
        children = continued_in(experiments, name)
        if children:
            left.markdown(f"`{name}` stopped after {progress_text(done, target)}; it was continued in "
                          + ", ".join(f"`{c}`" for c in children) + " (no auto-resume here: it would fork the run).")
            continue
        refusal = auto_resume_refusal(checkpoints, name)
        if refusal is None:
            left.markdown(f"`{name}` stopped after {progress_text(done, target)}.")
            if right.button("Auto-resume", key=f"auto_resume_{name}", help="Open the Launch page to continue this run"):
                st.switch_page(LAUNCH_PAGE, query_params=auto_resume_params(name))
            continue
        weights = weights_checkpoint(checkpoints, name)
        left.markdown(f"`{name}` reached {progress_text(done, target)}; no auto-resume: {refusal}.")
        if weights is not None and right.button(
                "Fine-tune from here", key=f"fine_tune_{name}",
                help=f"Open the Launch page to start a new run from the weights of {weights}"):
            st.switch_page(LAUNCH_PAGE, query_params=checkpoint_launch_params("pretrained", name, weights))


def hyperparameter_view(shown: pd.DataFrame) -> None:
    """Parallel coordinates of the shown runs' differing hyperparameters against best val EER; built
    only when asked for (a toggle kept in the URL): the figure costs more than the table's rerun."""
    if not st.toggle("Hyperparameters against best val EER", key="hparams", bind="query-params",
                     help="Parallel coordinates: one line per run shown, coloured by its best val EER"):
        return
    figure = hparams_figure(shown)
    if figure is None:
        st.caption("It takes two runs shown with a validation EER.")
        return
    st.caption("One line per run shown, coloured by its best val EER; drag along an axis to filter.")
    st.plotly_chart(figure, key="hparams_parcoords", width="stretch")


def selection_summary(selection: list[str]) -> None:
    if not selection:
        st.caption("Select rows to compare their curves and browse their checkpoints.")
        return
    st.markdown(f"**{len(selection)} selected:** " + ", ".join(f"`{n}`" for n in selection))
    left, right, _ = st.columns([1, 1, 4])
    query = {"exp": selection}
    left.page_link("pages/curves.py", label="Compare curves", icon="📈", query_params=query)
    right.page_link("pages/checkpoints.py", label="Checkpoints", icon="💾", query_params=query)


def organise_section(root: Path, selection: list[str], names: list[str]) -> None:
    """Notes and tags of one selected experiment (saved in its folder), and archiving or deleting it."""
    chosen = [n for n in selection if n in names]
    if not chosen:
        return
    st.subheader("Organise")
    name = st.selectbox("Experiment", chosen, key="organise_experiment") if len(chosen) > 1 else chosen[0]
    folder = root / name
    try:
        notes = experiment_notes.read_notes(folder)
    except experiment_notes.NotesError as exc:
        st.warning(f"{exc}; saving replaces it.")
        notes = experiment_notes.Notes()
    with st.form(f"notes_{name}", border=True):
        text = st.text_area(f"Notes on `{name}`", notes.text, max_chars=experiment_notes.MAX_TEXT_CHARS,
                            key=f"notes_text_{name}")
        tags = st.text_input("Tags (comma-separated)", ", ".join(notes.tags), key=f"notes_tags_{name}")
        saved = st.form_submit_button("Save notes")
    if saved:
        save_notes(folder, text, tags)
    if notes.updated:
        st.caption(f"Saved {notes.updated} in `{folder / experiment_notes.NOTES_NAME}` "
                   "(`--list_checkpoints` shows them).")
    removal_buttons(root, name)


def save_notes(folder: Path, text: str, tags: str) -> None:
    if not signed_in():
        st.error(refusal("Saving notes"))
        return
    try:
        experiment_notes.write_notes(folder, text, experiment_notes.parse_tags(tags))
    except (experiment_notes.NotesError, OSError) as exc:
        st.error(f"Notes not saved: {exc}")
        return
    flash("success", f"Saved the notes of {folder.name}.")
    st.rerun()


def removal_buttons(root: Path, name: str) -> None:
    """Archive / Delete the whole experiment, refused while a run or job uses it, after a confirmation."""
    refusal_text = experiment_removal.removal_refusal(root, name)
    left, right, _ = st.columns([1, 1, 4])
    archive = left.button("Archive experiment…", key="archive_experiment", disabled=refusal_text is not None,
                          help=refusal_text or f"Move the folder to {root / 'archive'}/ (nothing is deleted)")
    delete = right.button("Delete experiment…", key="delete_experiment", disabled=refusal_text is not None,
                          help=refusal_text or "Delete the folder and every file in it")
    if refusal_text:
        st.caption(f"Cannot archive or delete: {refusal_text}.")
    for clicked, action in ((archive, "archive"), (delete, "delete")):
        if clicked:
            if signed_in():
                st.session_state[REMOVAL_KEY] = (action, name)
            else:
                st.error(refusal(action.title()))
    pending = st.session_state.get(REMOVAL_KEY)
    if pending and pending[1] == name:
        confirm_removal(root, *pending)


def cancel_removal() -> None:
    st.session_state.pop(REMOVAL_KEY, None)


@st.dialog("Remove the experiment?", on_dismiss=cancel_removal)
def confirm_removal(root: Path, action: str, name: str) -> None:
    what = ("Move it to the archive folder (nothing is deleted)" if action == "archive"
            else "Delete the folder and every checkpoint, log and note in it. This cannot be undone")
    st.markdown(f"**{action.title()}** `{name}`? {what}.")
    left, right = st.columns(2)
    if left.button(action.title(), type="primary", key="confirm_removal"):
        try:
            if not signed_in():  # checked at the removal itself: a pending request may be stale
                raise catalog.CatalogError(refusal(action.title()))
            if action == "archive":
                where = experiment_removal.archive_experiment(root, name)
                flash("success", f"Archived {name} to {where}.")
            else:
                experiment_removal.delete_experiment(root, name)
                flash("success", f"Deleted {name}.")
            set_selected_experiments([n for n in selected_experiments() if n != name])
        except catalog.CatalogError as exc:
            flash("error", str(exc))
        cancel_removal()
        st.rerun()
    if right.button("Cancel", key="cancel_removal"):
        cancel_removal()
        st.rerun()


# --- layout --------------------------------------------------------------------------------

def experiments_view(root: Path) -> None:
    """The page below its title: re-run as a fragment while a run trains (follow_running)."""
    experiments = load_experiments(root)
    if experiments.empty:
        empty_state(root)
        return
    shown = filters(experiments)
    st.caption(f"{len(shown)} of {len(experiments)} experiments under `{root}`.")
    selection = experiments_table(shown)
    selection_summary(selection)
    hyperparameter_view(shown)
    organise_section(root, selection, experiments["name"].astype(str).tolist())
    interrupted_actions(root, shown, experiments)


ensure_navigation()
root = models_root()
page_title("Experiments")
follow_running(experiments_view, root, root)
