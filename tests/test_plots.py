"""training.dashboard.plots (figures, EMA smoothing) and training.dashboard.views (what the read pages show)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from training.dashboard.plots import CHARTS, PALETTE, curve_figures, ema_smooth, experiment_colors
from training.dashboard.views import (args_checkpoint, checkpoint_launch_params, checkpoint_table, deletable_files,
                            diff_targets, filter_experiments, merge_selection, selection_rows)


def history(eers: list[float], experiment: str | list[str] = "run") -> pd.DataFrame:
    n = len(eers)
    return pd.DataFrame({"epoch": list(range(1, n + 1)), "val_eer": eers, "val_acc": [100 - e for e in eers],
                         "train_loss": [1.0 / (i + 1) for i in range(n)], "val_loss": [2.0 / (i + 1) for i in range(n)],
                         "train_eer": [e * 2 for e in eers],
                         "experiment": experiment if isinstance(experiment, list) else [experiment] * n})


# --- smoothing -------------------------------------------------------------------------------

def test_ema_debiasing_matches_a_hand_computed_case() -> None:
    # weight 0.5 on [1, 2, 3]: biased EMA 0.5, 1.25, 2.125; debias by 1 - 0.5**n = 0.5, 0.75, 0.875
    assert ema_smooth([1, 2, 3], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    # weight 0.9 on a constant: debiased, the curve stays on the constant from the first point
    assert ema_smooth([4.0] * 5, 0.9) == pytest.approx([4.0] * 5)


def test_ema_passes_non_finite_values_through_without_poisoning_the_average() -> None:
    out = ema_smooth([1.0, math.nan, 3.0], 0.5)
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == pytest.approx((0.25 + 1.5) / 0.75)


def test_ema_weight_zero_is_identity_and_bad_weights_are_refused() -> None:
    assert ema_smooth([3, 1, 2], 0.0) == [3, 1, 2]
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="smoothing weight"):
            ema_smooth([1.0], bad)


# --- figures --------------------------------------------------------------------------------

def test_figures_overlay_experiments_with_one_colour_each_and_mark_the_best_epoch() -> None:
    charts = curve_figures({"a": history([30, 20, 25]), "b": history([40, 10])})
    assert [c.spec.key for c in charts] == [s.key for s in CHARTS]
    eer = charts[0].figure
    raw = {t.meta["experiment"]: t for t in eer.data if t.meta["role"] == "raw"}
    assert list(raw["a"].x) == [1, 2, 3] and list(raw["a"].y) == [30, 20, 25]
    best = {t.meta["experiment"]: (list(t.x), list(t.y)) for t in eer.data if t.meta["role"] == "best"}
    assert best == {"a": ([2], [20.0]), "b": ([2], [10.0])}
    assert raw["a"].line.color == PALETTE[0] and raw["b"].line.color == PALETTE[1]
    for chart in charts:  # the same colour for an experiment in every chart
        colours = {t.meta["experiment"]: t.line.color for t in chart.figure.data if t.meta["role"] == "raw"}
        assert colours == {"a": PALETTE[0], "b": PALETTE[1]}
    # the best-EER star only on EER charts (issue 16: on the loss chart it sat on the worst loss)
    assert [c.spec.key for c in charts if any(t.meta["role"] == "best" for t in c.figure.data)] == \
        [c.spec.key for c in charts if c.spec.is_eer]
    loss = {(t.meta["column"], t.line.dash) for t in charts[2].figure.data if t.meta["role"] == "raw"}
    assert loss == {("val_loss", "solid"), ("train_loss", "dash")}


def test_smoothing_adds_a_smoothed_trace_over_a_faded_raw_one_and_log_only_on_eer() -> None:
    charts = curve_figures({"a": history([30, 20, 25])}, smoothing=0.5, log_eer=True)
    eer = charts[0].figure
    raw = next(t for t in eer.data if t.meta["role"] == "raw")
    smooth = next(t for t in eer.data if t.meta["role"] == "smoothed")
    assert raw.opacity < 1 and list(smooth.y) == pytest.approx(ema_smooth([30, 20, 25], 0.5))
    assert [c.figure.layout.yaxis.type for c in charts] == ["log", None, None, "log"]
    assert [t.meta["role"] for t in eer.data if t.showlegend] == ["smoothed"]  # the legend shows the solid line
    plain = curve_figures({"a": history([30, 20, 25])})[0].figure
    assert [t.meta["role"] for t in plain.data] == ["raw", "best"] and plain.data[0].opacity == 1
    assert [t.meta["role"] for t in plain.data if t.showlegend is not False] == ["raw"]


def test_a_resumed_run_is_one_trace_whose_hover_names_each_point_s_folder() -> None:
    h = history([50, 40, 30, 35], ["parent", "parent", "child", "child"])
    trace = curve_figures({"child": h})[0].figure.data[0]
    assert list(trace.x) == [1, 2, 3, 4] and list(trace.customdata) == ["parent", "parent", "child", "child"]
    assert "%{customdata}" in trace.hovertemplate and "epoch %{x}" in trace.hovertemplate


def test_empty_histories_and_missing_columns_draw_nothing() -> None:
    charts = curve_figures({"a": history([])[["epoch", "val_eer"]], "b": history([5])[["epoch", "val_eer"]]})
    assert [t.meta["experiment"] for t in charts[0].figure.data] == ["b", "b"]
    assert len(charts[1].figure.data) == 0  # no accuracy column: no trace, no error


def test_colours_follow_the_order_given() -> None:
    assert experiment_colors(["x", "y", "x"]) == {"x": PALETTE[0], "y": PALETTE[1]}


# --- views -----------------------------------------------------------------------------------

EXPERIMENTS = pd.DataFrame({"name": ["lcnn_a", "lcnn_b", "g3_c"], "comment": ["first", None, "Demo"],
                            "model_type": ["lcnn", "lcnn", "g3_heatmap"], "track": ["DF", "LA", "DF"],
                            "status": ["finished", "interrupted", "running"]})


def test_filter_experiments_by_text_model_track_and_status() -> None:
    names = lambda df: df["name"].tolist()  # noqa: E731
    assert names(filter_experiments(EXPERIMENTS, "DEMO")) == ["g3_c"]  # comment, case-insensitive
    assert names(filter_experiments(EXPERIMENTS, model_types=["lcnn"], tracks=["DF"])) == ["lcnn_a"]
    assert names(filter_experiments(EXPERIMENTS, statuses=["interrupted", "running"])) == ["lcnn_b", "g3_c"]
    assert names(filter_experiments(EXPERIMENTS, "  ")) == ["lcnn_a", "lcnn_b", "g3_c"]


def test_selection_survives_filtering() -> None:
    assert selection_rows(["b", "c"], ["a", "c"]) == [1]
    assert merge_selection(["a", "c"], ["b", "c"], [0]) == ["a", "b"]  # a hidden: kept; c unpicked: dropped
    assert merge_selection(["a"], ["b"], [5]) == ["a"]  # stale row positions are ignored


CHECKPOINTS = pd.DataFrame({
    "experiment": ["e"] * 4 + ["f"],
    "file": ["best_checkpoint_eer.pth", "checkpoint_epoch_10.pth", "checkpoint_epoch_9.pth", "junk.pth",
             "checkpoint_epoch_1.pth"],
    "path": ["/m/e/best_checkpoint_eer.pth", "/m/e/checkpoint_epoch_10.pth", "/m/e/checkpoint_epoch_9.pth",
             "/m/e/junk.pth", "/m/f/checkpoint_epoch_1.pth"],
    "kind": ["best", "full", "full", "unreadable", "legacy"],
    "epoch": pd.array([9, 10, 9, None, 1], dtype="Int64"),
})


def test_checkpoint_table_orders_like_list_checkpoints_and_marks_protected_files() -> None:
    table = checkpoint_table(CHECKPOINTS, "e", {"best_checkpoint_eer.pth": "best checkpoint"})
    assert table["file"].tolist() == ["checkpoint_epoch_9.pth", "checkpoint_epoch_10.pth",
                                      "best_checkpoint_eer.pth", "junk.pth"]
    assert deletable_files(table) == ["checkpoint_epoch_9.pth", "checkpoint_epoch_10.pth", "junk.pth"]


def test_diff_targets_and_the_checkpoint_standing_for_an_experiment() -> None:
    assert args_checkpoint(CHECKPOINTS, "e") == Path("/m/e/checkpoint_epoch_10.pth")  # newest full
    assert args_checkpoint(CHECKPOINTS, "f") == Path("/m/f/checkpoint_epoch_1.pth")
    assert args_checkpoint(CHECKPOINTS, "nothing") is None
    assert list(diff_targets(CHECKPOINTS)) == ["e", "f", "e/checkpoint_epoch_9.pth", "e/checkpoint_epoch_10.pth",
                                               "e/best_checkpoint_eer.pth", "f/checkpoint_epoch_1.pth"]


def test_launch_params() -> None:
    assert checkpoint_launch_params("pretrained", "e", "x.pth") == {"mode": "pretrained", "checkpoint": "e/x.pth"}
    with pytest.raises(ValueError, match="launch mode 'fresh'"):
        checkpoint_launch_params("fresh", "e", "x.pth")
