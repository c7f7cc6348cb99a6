"""Curves: validation EER, validation accuracy, train/val loss and train EER per epoch for the
selected experiments, overlaid (one colour per experiment, the same in every chart).

The best epoch of each run is starred; EER charts can use a log axis; optional smoothing (EMA
with TensorBoard's debiasing) is drawn over the faded raw curve. A run resumed into another
folder continues its parent's line. Legends name runs by short labels (what tells them apart,
training.dashboard.run_labels; the full name on hover); "Group seeds" draws runs that differ only
in --seed as mean ± std (training.dashboard.seed_groups). Selection (``?exp=``), smoothing
(``?smooth=``), log scale (``?log=``) and seed grouping (``?seeds=``) live in the URL. The
figures are built by :mod:`training.dashboard.plots`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import (ensure_navigation, follow_running, models_root, page_title, selected_experiments,
                          set_selected_experiments)
from training.dashboard import catalog, story
from training.dashboard.plots import MAX_SMOOTHING, experiment_colors
from training.dashboard.run_labels import short_labels
from training.dashboard.seed_groups import band_figures, experiment_args, seed_groups
from training.dashboard.settings import models_root_notice
from training.dashboard.steps import step_history

PICKER_KEY = "curves_picker"  # not bound to the URL: the selection is ``?exp=`` (pages/common.py)
PICKER_WROTE_KEY = "_curves_picker_wrote"  # the selection as the picker last left it


# --- data: catalog.experiment_history re-reads a training_log.csv only when its (path, size,
# mtime) changed, so calling it on every rerun is cheap; no st.cache_data (runs grow while shown).

def load_histories(root: Path, names: list[str], known: list[str]) -> dict[str, pd.DataFrame]:
    """Each experiment's epochs, its parent's first when it was resumed into a new folder.

    Only folders listed under the root are read: a URL's ``exp`` can say anything (``..``,
    ``/etc``, a deleted run), and those get an empty frame, which missing_notice names."""
    listed = set(known)
    return {name: catalog.experiment_history(root, name, follow_lineage=True) if name in listed
            else pd.DataFrame() for name in names}


def load_names(root: Path) -> list[str]:
    return catalog.list_experiment_names(root)


# --- components ----------------------------------------------------------------------------

def picker(all_names: list[str], selection: list[str]) -> list[str]:
    """Which experiments to plot (defaults to the selection; changing it changes the selection)."""
    options = list(dict.fromkeys([*all_names, *selection]))
    # (Re)seed the widget from the selection when it is new on this visit or the selection was
    # changed elsewhere (the table, a URL) since the picker last wrote it; otherwise the user's
    # latest pick (already in the widget state) wins.
    if PICKER_KEY not in st.session_state or selection != st.session_state.get(PICKER_WROTE_KEY):
        st.session_state[PICKER_KEY] = [n for n in selection if n in options]
    chosen = st.multiselect("Experiments", options, key=PICKER_KEY,
                            placeholder="Pick experiments to compare (or select rows on the Experiments page)")
    set_selected_experiments(chosen)
    st.session_state[PICKER_WROTE_KEY] = chosen
    return chosen


def display_options() -> tuple[float, bool, str, bool]:
    """Smoothing weight, log scale, the x axis and seed grouping, all kept in the URL."""
    left, right, axis_column = st.columns([3, 1, 2])
    axis = axis_column.segmented_control("x axis", story.AXES, default="epoch", required=True, key="x", bind="query-params",
                                         help="Epochs, training steps (from the step log) or wall-clock time")
    smoothing = left.slider("Smoothing", 0.0, MAX_SMOOTHING, 0.0, 0.01, key="smooth", bind="query-params",
                            help="Exponential moving average with TensorBoard's debiasing; the raw curve stays, faded.")
    log_eer = right.toggle("Log scale (EER)", key="log", bind="query-params")
    group_seeds = right.toggle("Group seeds (mean ± std)", key="seeds", bind="query-params",
                               help="Runs whose settings differ only in --seed (and comment) become one line with a band")
    return float(smoothing), bool(log_eer), axis or "epoch", bool(group_seeds)


def draw_grid(figures: list[tuple[str, object]]) -> None:
    for row in range(0, len(figures), 2):
        for column, (key, figure) in zip(st.columns(2), figures[row:row + 2]):
            with column:
                st.plotly_chart(figure, key=key, width="stretch")


def missing_notice(histories: dict[str, pd.DataFrame], all_names: list[str]) -> None:
    unknown = [n for n in histories if n not in all_names]
    no_epochs = [n for n, h in histories.items() if h.empty and n not in unknown]
    if unknown:
        st.warning("Not under this models root: " + ", ".join(f"`{n}`" for n in unknown))
    if no_epochs:
        st.info("No finished epoch yet: " + ", ".join(f"`{n}`" for n in no_epochs))


def lineage_notice(histories: dict[str, pd.DataFrame]) -> None:
    for name, history in histories.items():
        parents = [p for p in dict.fromkeys(history.get("experiment", pd.Series(dtype=str)).dropna()) if p != name]
        if parents:
            st.caption(f"`{name}` continues " + " → ".join(f"`{p}`" for p in parents) + " (drawn as one line).")


def charts_view(root: Path, chosen: list[str], all_names: list[str], smoothing: float, log_eer: bool,
                axis: str, group_seeds: bool) -> None:
    """The charts, re-drawn by follow_running while a run trains (only changed logs are re-read):
    the metric charts, then the run's story (lr, epoch time, the loss per logged step), with
    markers where a run was resumed or changed hyperparameters; or, grouping seeds, mean ± std
    bands. Legends name runs by what tells them apart (run_labels); hover shows the full name."""
    histories = load_histories(root, chosen, all_names)
    missing_notice(histories, all_names)
    lineage_notice(histories)
    plotted = {n: h for n, h in histories.items() if not h.empty}
    labels = short_labels(list(plotted))
    if group_seeds and plotted:
        groups = seed_groups(list(plotted), {n: experiment_args(root, n) for n in plotted}, labels)
        draw_grid([(f"band_{i}", fig) for i, fig in enumerate(band_figures(groups, plotted))])
        return
    steps = {n: step_history(root, n) for n in chosen if n in set(all_names)}
    steps = {n: f for n, f in steps.items() if len(f)}
    colors = experiment_colors([*plotted, *chosen])  # the metric charts colour the plotted runs in this order
    figures, step_figure, markers = story.curves_figures(plotted, steps, smoothing, log_eer, axis, colors, labels)
    if plotted:  # no finished epoch yet: no per-epoch axes (plotly's empty ones run from -1), the step chart alone
        draw_grid([(f"chart_{key}", figure) for key, figure in figures])
    if step_figure is not None:
        st.plotly_chart(step_figure, key="chart_steps", width="stretch")
    if axis == "step" and set(plotted) - set(steps):
        st.caption("No step log (so not on the step axis): " + ", ".join(f"`{n}`" for n in set(plotted) - set(steps)))
    if markers:
        st.caption("↻ marks a resume: " + "; ".join(f"`{m.experiment}` after epoch {m.epoch:g}: {m.label}" for m in markers))


# --- layout --------------------------------------------------------------------------------

ensure_navigation()
root = models_root()
page_title("Curves")
all_names = load_names(root)
root_notice = models_root_notice(root) if not all_names else None
if root_notice:
    getattr(st, root_notice[0])(root_notice[1])
chosen = picker(all_names, selected_experiments())
if not chosen:
    st.info("Select experiments above, or pick rows in the table of the **Experiments** page; "
            "the selection is kept in the URL, so the link shows the same comparison.")
else:
    smoothing, log_eer, axis, group_seeds = display_options()
    follow_running(charts_view, root, root, chosen, all_names, smoothing, log_eer, axis, group_seeds)
