"""Attention: the layer x time heatmaps ``--visualize_attention`` saved for an experiment.

Pick an experiment and a rendered epoch (``attention/epoch_N/attention.npz``), then one utterance
or the mean over the bona fide or spoof ones: the heatmap, each layer's importance and the intra-
and inter-group weights; a second epoch can be shown side by side. Choices live in the URL
(``?att_exp=``, ``?att_a=``, ``?att_b=``, ``?att_pick=``). Data: training.dashboard.attention_view.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.common import ensure_navigation, models_root, page_title, selected_experiments
from training.dashboard import attention_view as av
from training.dashboard import catalog

NONE = "(none)"


def pick_experiment(root: Path) -> str | None:
    names = [n for n in catalog.list_experiment_names(root) if av.attention_names(root, n)]
    if not names:
        return None
    selection = [n for n in selected_experiments() if n in names]
    return st.selectbox("Experiment", names, index=names.index(selection[0]) if selection else 0, key="att_exp",
                        bind="query-params")


def column(root: Path, experiment: str, name: str, choice: str, key: str) -> None:
    try:
        arrays = av.load_arrays(root, experiment, name)
        shown = av.view(arrays, choice)
    except av.AttentionViewError as exc:
        st.warning(str(exc))
        return
    if shown is None:
        st.info(f"{name}: no {choice.removeprefix('mean of ')} utterance among the {arrays.samples} rendered.")
        return
    what = f"{choice} ({shown.count} utterances)" if shown.count > 1 or choice.startswith("mean") else choice
    st.plotly_chart(av.heatmap_figure(shown, f"{name}: {what}"), key=f"heatmap_{key}", width="stretch")
    st.plotly_chart(av.layer_figure(shown), key=f"layers_{key}", width="stretch")
    st.plotly_chart(av.group_figure(shown), key=f"groups_{key}", width="stretch")


ensure_navigation()
root = models_root()
page_title("Attention")
experiment = pick_experiment(root)
if experiment is None:
    st.info("No attention maps yet: train a g3_heatmap model with `--visualize_attention` "
            "(maps every `--viz_frequency` epochs and after the last).")
else:
    names = av.attention_names(root, experiment)
    left, right, pick = st.columns([2, 2, 3])
    first = left.selectbox("Epoch", names, index=len(names) - 1, key="att_a", bind="query-params")
    second = right.selectbox("Side by side with", [NONE, *names], key="att_b", bind="query-params")
    try:
        options = av.choices(av.load_arrays(root, experiment, first))
    except av.AttentionViewError as exc:
        st.warning(str(exc))
    else:
        choice = pick.selectbox("Utterance", options, key="att_pick", bind="query-params")
        shown = [first] if second == NONE else [first, second]
        for col, name, key in zip(st.columns(len(shown)), shown, ("a", "b")):
            with col:
                column(root, experiment, name, choice, key)
