"""Checkpoints: one experiment's files as ``--list_checkpoints`` shows them, and what to do with them.

The table lists every checkpoint (kind, epoch, metrics in %, size, whether a sidecar vouches for
it, why it is unusable, why it is protected). Below it: every argument and metric of one
checkpoint, with "Resume" and "Fine-tune from here" buttons that open the Launch page prefilled;
a hyperparameter diff between any two experiments or checkpoints (only the differing keys by
default); and deleting intermediate checkpoints after a confirmation (protected files, e.g. the
best and newest checkpoints, cannot be chosen). Experiment, checkpoint and diff choices live in
the URL.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import (ensure_navigation, flash, follow_running, models_root, page_title, refusal,
                          selected_experiments, signed_in)
from pages.evaluate_form import evaluate_form
from training.dashboard import catalog, evaluation
from training.dashboard.settings import models_root_notice
from training.dashboard.views import (LAUNCH_PAGE, PICKER_LIMIT, bounded_options, can_fine_tune, can_resume,
                                      checkpoint_launch_params, checkpoint_table, default_detail_file, deletable_files,
                                      diff_targets, format_metric)

PERCENT = "%.2f%%"
PENDING_KEY = "_checkpoints_pending_delete"  # (experiment, files) awaiting confirmation
DELETE_BOX_KEY = "delete_files"
ROW_PICK_KEY = "_checkpoints_row_pick"  # the table row last clicked (so only a new click moves the details)
TABLE_COLUMNS = ["file", "role", "kind", "epoch", "step_in_epoch", "train_loss", "train_eer", "val_loss",
                 "val_acc", "val_eer", "best_val_eer", "size_bytes", "modified", "complete", "protected", "reason"]
COLUMN_CONFIG = {
    "file": st.column_config.TextColumn("file", pinned=True),
    "epoch": st.column_config.NumberColumn("epoch", format="%d"),
    "step_in_epoch": st.column_config.NumberColumn("step", format="%d", help="Steps done in the next epoch (interrupt checkpoints)"),
    "train_loss": st.column_config.NumberColumn("train loss", format="%.4f"),
    "train_eer": st.column_config.NumberColumn("train EER", format=PERCENT),
    "val_loss": st.column_config.NumberColumn("val loss", format="%.4f"),
    "val_acc": st.column_config.NumberColumn("val acc", format=PERCENT),
    "val_eer": st.column_config.NumberColumn("val EER", format=PERCENT),
    "best_val_eer": st.column_config.NumberColumn("best EER", format=PERCENT),
    "size_bytes": st.column_config.NumberColumn("size", format="bytes"),
    "modified": st.column_config.DatetimeColumn("modified", format="YYYY-MM-DD HH:mm:ss"),
    "complete": st.column_config.CheckboxColumn("sidecar", help="A .meta.json sidecar vouches the file is complete"),
    "protected": st.column_config.TextColumn("protected", help="Why it cannot be deleted"),
    "reason": st.column_config.TextColumn("problem", help="Why the file cannot be used"),
}


# --- data: the catalog caches per file by (path, size, mtime); scans run on every rerun so a
# deletion or a new epoch shows at once, with no st.cache_data to invalidate.

def load_checkpoints(root: Path) -> pd.DataFrame:
    return catalog.scan_checkpoints(root)


def load_names(root: Path) -> list[str]:
    return catalog.list_experiment_names(root)


# --- components ----------------------------------------------------------------------------

def pick_experiment(names: list[str]) -> str:
    """The experiment shown: from the URL (``?ckpt_exp=``), else the first selected one."""
    selection = [n for n in selected_experiments() if n in names]
    names = bounded_options(names, find_text("Find an experiment", "ckpt_find", len(names)),
                            [current_choice("ckpt_exp"), *selection[:1]])
    default = names.index(selection[0]) if selection else 0
    return st.selectbox("Experiment", names, index=default, key="ckpt_exp", bind="query-params")


def find_text(label: str, key: str, options: int) -> str:
    """A type-to-narrow box above a picker, shown only when its options would not all fit."""
    return st.text_input(label, key=key, placeholder=f"{options:,} choices: type part of a name") \
        if options > PICKER_LIMIT else ""


def current_choice(key: str) -> str | None:
    return st.session_state.get(key) or st.query_params.get(key)


def table(rows: pd.DataFrame, experiment: str) -> None:
    """The listing; clicking a row shows that checkpoint's details and actions below."""
    evals = [c for c in rows if c.startswith("eval EER")]  # training.dashboard.evaluation.with_eval_columns
    event = st.dataframe(rows[[c for c in TABLE_COLUMNS if c in rows] + evals], hide_index=True,
                         column_config={**COLUMN_CONFIG, **{c: st.column_config.NumberColumn(c, format=PERCENT)
                                                            for c in evals}}, key=f"checkpoint_table_{experiment}",
                         on_select="rerun", selection_mode="single-row")
    picked = [rows["file"].iloc[i] for i in event.selection.rows if 0 <= i < len(rows)]
    # Only a new click moves the details; otherwise the "Checkpoint" box keeps its own choice.
    if picked and picked != st.session_state.get(ROW_PICK_KEY):
        st.session_state["ckpt_file"] = picked[0]
    st.session_state[ROW_PICK_KEY] = picked


def live_table(root: Path, experiment: str) -> None:
    """The listing, re-scanned by follow_running while a run trains (new epochs appear). A row
    clicked here reruns only this part, so a new pick reruns the page: the details follow it."""
    rows = checkpoint_table(load_checkpoints(root), experiment, catalog.protected_checkpoints(root, experiment))
    if rows.empty:
        st.info(f"`{experiment}` has no checkpoint yet.")
        return
    st.caption(f"{len(rows)} checkpoint(s) in `{root / experiment}`, in `--list_checkpoints` order.")
    rows = evaluation.with_eval_columns(rows, root, experiment)
    st.caption(evaluation.best_checkpoints_text(rows, root, experiment))
    before = st.session_state.get(ROW_PICK_KEY) or []
    table(rows, experiment)
    if (st.session_state.get(ROW_PICK_KEY) or []) != before:
        st.rerun()


def launch_buttons(experiment: str, row: pd.Series) -> None:
    """Resume / fine-tune from the checkpoint: opens the Launch page with it prefilled."""
    left, right, _ = st.columns([1, 1, 3])
    file = str(row["file"])
    if left.button("Resume", key="resume", disabled=not can_resume(row["kind"]),
                   help="Continue this run from here (optimizer, counters, data position)"):
        st.switch_page(LAUNCH_PAGE, query_params=checkpoint_launch_params("resume", experiment, file))
    if right.button("Fine-tune from here", key="fine_tune", disabled=not can_fine_tune(row["kind"]),
                    help="Start a new run from these weights (fresh optimizer, epoch 1)"):
        st.switch_page(LAUNCH_PAGE, query_params=checkpoint_launch_params("pretrained", experiment, file))


def details(rows: pd.DataFrame, experiment: str) -> None:
    """One checkpoint: actions, metrics, every argument, lineage and the rest the reader knows."""
    st.subheader("Checkpoint details")
    files = rows["file"].tolist()
    best = default_detail_file(rows)
    files = bounded_options(files, find_text("Find a checkpoint", "ckpt_file_find", len(files)),
                            [current_choice("ckpt_file"), best])
    file = st.selectbox("Checkpoint", files, index=files.index(best) if best in files else 0, key="ckpt_file",
                        bind="query-params", help="Or click a row of the table (opens on the best checkpoint)")
    row = rows[rows["file"] == file].iloc[0]
    launch_buttons(experiment, row)
    with st.expander("Evaluate on ...", expanded=False):
        evaluate_form(models_root(), row["path"], "checkpoint")
    info = catalog.checkpoint_details(row["path"])
    if info.get("reason"):
        st.error(f"{file}: {info['reason']}")
    metrics = info.get("metrics") or {}
    facts = {"kind": info.get("catalog_kind"), "epoch": info.get("epoch"), "best epoch": info.get("best_epoch"),
             "parameters": info.get("num_params"), "sidecar": "matches" if info.get("complete") else "none"}
    st.markdown(" · ".join(f"**{k}** {v}" for k, v in facts.items() if v is not None))
    left, right = st.columns(2)
    with left:
        st.markdown("**Metrics**")
        values = [format_metric(k, v) for k, v in metrics.items()]
        st.dataframe(pd.DataFrame({"metric": list(metrics), "value": values}),
                     hide_index=True, key="details_metrics")
        if info.get("lineage"):
            st.markdown("**Lineage**")
            st.json(info["lineage"])
    with right:
        args = info.get("args") or {}
        st.markdown("**Arguments**")
        st.dataframe(pd.DataFrame({"argument": [str(k) for k in args], "value": [str(v) for v in args.values()]}),
                     hide_index=True, key="details_args")
    with st.expander("Everything else in the file's metadata"):
        st.json({k: v for k, v in info.items() if k not in ("args", "metrics", "history", "lineage")}, expanded=False)


def hyperparameter_diff_section(checkpoints: pd.DataFrame, experiment: str) -> None:
    """Arguments of two experiments or checkpoints side by side."""
    st.subheader("Compare hyperparameters")
    targets = diff_targets(checkpoints)
    if len(targets) < 2:
        st.caption("Nothing to compare yet: it takes two readable checkpoints.")
        return
    others = [n for n in selected_experiments() if n in targets and n != experiment]
    labels = bounded_options(list(targets), find_text("Find what to compare", "diff_find", len(targets)),
                             [current_choice("diff_a"), current_choice("diff_b"), experiment, *others[:1]])
    first = labels.index(experiment) if experiment in targets else 0
    second = labels.index(others[0]) if others else (1 if first == 0 else 0)
    left, right, toggle = st.columns([4, 4, 2])
    a = left.selectbox("A", labels, index=first, key="diff_a", bind="query-params")
    b = right.selectbox("B", labels, index=second, key="diff_b", bind="query-params")
    only = toggle.toggle("Only differences", value=True, key="only_diff", bind="query-params")
    diff = catalog.hyperparameter_diff(catalog.checkpoint_details(targets[a]).get("args"),
                                       catalog.checkpoint_details(targets[b]).get("args"), only_differences=only)
    if diff.empty:
        st.success("Same hyperparameters." if only else "No arguments recorded.")
        return
    st.dataframe(diff.rename(columns={"a": f"A: {a}", "b": f"B: {b}"}), hide_index=True, key="diff_table",
                 column_config={"differs": st.column_config.CheckboxColumn("differs")})


def cancel_delete() -> None:
    st.session_state.pop(PENDING_KEY, None)


@st.dialog("Delete checkpoints?", on_dismiss=cancel_delete)
def confirm_delete(root: Path, experiment: str, files: list[str], total_bytes: int) -> None:
    """Asks before deleting; the catalog re-checks protection and deletes nothing on refusal."""
    st.markdown(f"Delete {len(files)} checkpoint(s) of `{experiment}` ({total_bytes / 2**20:.1f} MiB) "
                "with their sidecars? This cannot be undone.")
    st.markdown("\n".join(f"- `{f}`" for f in files))
    left, right = st.columns(2)
    if left.button("Delete", type="primary", key="confirm_delete"):
        try:
            if not signed_in():  # checked here, at the deletion itself: a pending request may be stale
                raise catalog.CatalogError(refusal("Delete"))
            deleted = catalog.delete_checkpoints(root, experiment, files)
        except catalog.CatalogError as exc:
            flash("error", str(exc))
        else:
            flash("success", f"Deleted {', '.join(deleted)}.")
        cancel_delete()
        st.rerun()
    if right.button("Cancel", key="cancel_delete"):
        cancel_delete()
        st.rerun()


def drop_vanished_choices(deletable: list[str]) -> None:
    """Take files no longer offered (deleted here, by retention, or now protected) out of the
    delete box. Set through session state, not popped: only a value set so reaches the browser,
    which otherwise keeps showing the deleted file while the page counts nothing chosen."""
    chosen = st.session_state.get(DELETE_BOX_KEY) or []
    kept = [f for f in chosen if f in deletable]
    if kept != list(chosen):
        st.session_state[DELETE_BOX_KEY] = kept


def delete_section(root: Path, experiment: str, rows: pd.DataFrame) -> None:
    """Pick unprotected checkpoints to delete; protected ones are listed with the reason."""
    st.subheader("Free disk space")
    deletable = deletable_files(rows)
    protected = rows[rows["protected"] != ""]
    if not protected.empty:
        st.caption("Kept: " + "; ".join(f"`{f}` ({why})" for f, why in zip(protected["file"], protected["protected"])))
    if not deletable:
        st.caption("No intermediate checkpoint to delete.")
        return
    drop_vanished_choices(deletable)
    deletable = bounded_options(deletable, find_text("Find checkpoints to delete", "delete_find", len(deletable)),
                                st.session_state.get(DELETE_BOX_KEY) or [])
    files = st.multiselect("Intermediate checkpoints to delete", deletable, key=DELETE_BOX_KEY)
    if st.button("Delete selected…", disabled=not files, key="delete"):
        if signed_in():
            st.session_state[PENDING_KEY] = (experiment, list(files))
        else:
            st.error(refusal("Delete"))
    # The dialog stays open across reruns until confirmed, cancelled or dismissed (the pending
    # request lives in session state, so a full rerun shows it again).
    pending = st.session_state.get(PENDING_KEY)
    if pending and pending[0] == experiment:
        sizes = dict(zip(rows["file"], rows["size_bytes"]))
        confirm_delete(root, experiment, pending[1], int(sum(sizes.get(f, 0) for f in pending[1])))


# --- layout --------------------------------------------------------------------------------

ensure_navigation()
root = models_root()
page_title("Checkpoints")
names = load_names(root)
root_notice = models_root_notice(root) if not names else None
if root_notice:
    getattr(st, root_notice[0])(root_notice[1])
if not names and (root_notice is None or root_notice[0] != "error"):
    st.info(f"No experiments under `{root}` yet: the **Experiments** page shows how to start one.")
elif names:
    experiment = pick_experiment(names)
    checkpoints = load_checkpoints(root)
    rows = checkpoint_table(checkpoints, experiment, catalog.protected_checkpoints(root, experiment))
    follow_running(live_table, root, root, experiment)
    if not rows.empty:
        details(rows, experiment)
        delete_section(root, experiment, rows)
    hyperparameter_diff_section(checkpoints, experiment)
