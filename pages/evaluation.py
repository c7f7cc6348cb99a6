"""Evaluation: the results ``--eval`` wrote under each experiment's ``eval/`` folder.

A leaderboard (one row per evaluated checkpoint, one column per evaluation set, pooled EER in %,
the best of each column highlighted) with CSV and LaTeX downloads; the per-condition EER table of
one result as a heatmap; DET curves and bona fide / spoof score histograms of the results picked.
The set (``?ev_set=``), the picked results (``?ev_rows=``) and the result whose conditions are
shown (``?ev_cond=``) live in the URL. Everything comes from training.dashboard.evaluation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import ensure_navigation, models_root, page_title
from training.dashboard import catalog
from training.dashboard import evaluation as ev
from training.dashboard.evaluation_plots import condition_figure, det_figure, histogram_figure, result_curves

EVAL_COMMAND = ("python main.py --eval --model_path {root}/<experiment>/<checkpoint>.pth --track DF "
                "--database_path <ASVspoof2021_DF folder> --protocols_path <keys folder>")
PERCENT = "%.2f%%"
MAX_HISTOGRAMS = 4


def load_results(root: Path) -> tuple[list[str], list[ev.EvalResult]]:
    names = catalog.list_experiment_names(root)
    return names, ev.find_results(root, names)


def leaderboard_section(board: pd.DataFrame) -> None:
    sets = [c for c in board.columns if c not in ev.ROW_COLUMNS]
    best = ev.best_rows(board)
    styled = board.style.apply(lambda col: ["font-weight: bold; background-color: #d4f4dd"
                                            if best.get(col.name) == i else "" for i in col.index], subset=sets)
    styled = styled.format({s: "{:.2f}%" for s in sets}, na_rep="–")
    st.dataframe(styled, hide_index=True, key="leaderboard",
                 column_config={"epoch": st.column_config.NumberColumn("epoch", format="%d"),
                                **{s: st.column_config.NumberColumn(f"{s} EER", help="Pooled EER (%) from metrics.json")
                                   for s in sets}})
    st.caption("Best per set: " + " · ".join(f"**{s}** {board.loc[i, s]:.2f}% ({board.loc[i, 'experiment']}/"
                                             f"{board.loc[i, 'checkpoint']})" for s, i in best.items()))
    left, right, _ = st.columns([1, 1, 4])
    left.download_button("Leaderboard CSV", ev.leaderboard_csv(board), "leaderboard.csv", "text/csv",
                         key="download_csv")
    right.download_button("Leaderboard LaTeX", ev.leaderboard_latex(board), "leaderboard.tex", "text/x-tex",
                          key="download_latex")


def conditions_section(results: list[ev.EvalResult]) -> None:
    st.subheader("Per condition")
    by_label = {f"{r.row} · {r.set_name}": r for r in results}
    label = st.selectbox("Result", list(by_label), key="ev_cond", bind="query-params")
    result = by_label[label]
    table = ev.condition_table(result.metrics_path)
    if table is None:
        st.caption(f"{result.set_name} has no condition breakdown; pooled EER {result.eer}%.")
        return
    rows_name, cols_name = ev.condition_axes(result.metrics_path)
    st.plotly_chart(condition_figure(table, f"EER (%) by {rows_name} x {cols_name}: {label}", rows_name, cols_name),
                    key="condition_heatmap", width="stretch")


def curves_section(results: list[ev.EvalResult]) -> None:
    st.subheader("DET curves and score histograms")
    sets = ev.set_names(results)
    chosen_set = st.selectbox("Evaluation set", sets, key="ev_set", bind="query-params")
    in_set = {r.row: r for r in sorted(results, key=lambda r: r.written_at) if r.set_name == chosen_set}
    best = ev.best_by_eval(list(in_set.values())).get(chosen_set)
    picked = st.multiselect("Checkpoints", list(in_set), default=[best.row] if best else [], key="ev_rows",
                            bind="query-params")
    if not picked:
        st.info("Pick checkpoints to draw their DET curves.")
        return
    curves, histograms = {}, {}
    for row in picked:
        try:
            curves[row], histograms[row] = result_curves(in_set[row])
        except ev.EvaluationViewError as exc:
            st.warning(str(exc))
    if not curves:
        return
    st.plotly_chart(det_figure(curves, {row: in_set[row].eer for row in curves}), key="det_curve", width="stretch")
    shown = list(histograms)[:MAX_HISTOGRAMS]
    for column, row in zip(st.columns(len(shown)), shown):
        with column:
            st.plotly_chart(histogram_figure(row, histograms[row]), key=f"histogram_{row}", width="stretch")


# --- layout --------------------------------------------------------------------------------

ensure_navigation()
root = models_root()
page_title("Evaluation")
names, results = load_results(root)
for path in ev.unreadable_metrics(root, names):
    st.warning(f"`{path}` is not a metrics file written by --eval; left out.")
if not results:
    st.info("No evaluation results yet. Score a checkpoint from the **Checkpoints** page (Evaluate on ...), "
            "or on the command line:")
    st.code(EVAL_COMMAND.format(root=root), language="bash")
else:
    board = ev.leaderboard(results)
    st.caption(f"{len(board)} evaluated checkpoint(s), {len(ev.set_names(results))} evaluation set(s); "
               "pooled EER (%) as each metrics.json states it.")
    leaderboard_section(board)
    conditions_section(results)
    curves_section(results)
