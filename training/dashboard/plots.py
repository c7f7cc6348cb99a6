"""Training curves as plotly figures, built from the catalog's per-epoch histories.

Pages only render what this module builds, so the charting is testable without Streamlit:

    histories = {name: catalog.experiment_history(root, name) for name in selected}
    for chart in curve_figures(histories, smoothing=0.6, log_eer=False):
        st.plotly_chart(chart.figure)

One colour per experiment (the same in every chart), the best epoch (lowest validation EER, the
epoch of the best checkpoint) marked with a star, and optional smoothing drawn over the faded
raw curve. A run resumed into another folder arrives with its parent's rows first (the history's
``experiment`` column says which folder a row came from), so it is one continuous line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from training.dashboard.downsample import drawn_rows

PALETTE: tuple[str, ...] = tuple(qualitative.Plotly) + tuple(qualitative.Dark24)
RAW_OPACITY_WHEN_SMOOTHED = 0.3  # the raw curve stays visible (as in TensorBoard), faded
MAX_SMOOTHING = 0.99
SMALL_EPOCH_COUNT = 15  # up to this many epochs, one x tick per epoch
BEST_MARKER = dict(symbol="star", size=13, line=dict(width=1, color="black"))


@dataclass(frozen=True)
class Series:
    """One history column drawn in a chart; ``dash`` tells apart two series of one experiment."""

    column: str
    label: str
    dash: str = "solid"


@dataclass(frozen=True)
class ChartSpec:
    """A chart: its title, y-axis title, the series it overlays, and whether it is an EER chart
    (those get the log-scale option)."""

    key: str
    title: str
    y_title: str
    series: tuple[Series, ...]
    is_eer: bool = False
    percent: bool = True


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec("val_eer", "Validation EER", "EER (%)", (Series("val_eer", "val EER"),), is_eer=True),
    ChartSpec("val_acc", "Validation accuracy", "accuracy (%)", (Series("val_acc", "val accuracy"),)),
    ChartSpec("loss", "Loss (solid: validation, dashed: training)", "loss",
              (Series("val_loss", "val loss"), Series("train_loss", "train loss", "dash")), percent=False),
    ChartSpec("train_eer", "Training EER", "EER (%)", (Series("train_eer", "train EER"),), is_eer=True),
)


@dataclass(frozen=True)
class Chart:
    spec: ChartSpec
    figure: go.Figure


def ema_smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased.

    A plain EMA started at 0 drags the first points towards 0; dividing by ``1 - weight**n``
    (``n`` = finite points seen so far) removes that bias, so the first smoothed point equals the
    first value. Non-finite values (NaN, inf) are passed through and do not enter the average.
    ``weight`` 0 returns the values unchanged.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight {weight!r}: must be in [0, 1)")
    out: list[float] = []
    last, seen = 0.0, 0
    for value in values:
        v = float(value)
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1.0 - weight) * v
        seen += 1
        out.append(last / (1.0 - weight ** seen))
    return out


def experiment_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per experiment, by position in ``names`` (pass the same list to every chart)."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


def best_epoch_row(history: pd.DataFrame) -> pd.Series | None:
    """The row of the lowest validation EER (the first one on ties, as the trainer keeps the
    first best); None when no epoch has a validation EER."""
    if history.empty or "val_eer" not in history:
        return None
    eer = pd.to_numeric(history["val_eer"], errors="coerce")
    if eer.notna().sum() == 0:
        return None
    return history.loc[eer.idxmin()]


def _prepared(history: pd.DataFrame) -> pd.DataFrame:
    """Rows in epoch order with a plain integer index (the catalog's row order is kept on ties)."""
    df = history.copy()
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce")
    df = df[df["epoch"].notna()].sort_values("epoch", kind="stable").reset_index(drop=True)
    return df


def _source_column(df: pd.DataFrame, name: str) -> np.ndarray:
    """The folder each row came from (a resumed run's parent rows name the parent): an array,
    ``name`` where the row names none."""
    if "experiment" not in df:
        return np.full(len(df), name, dtype=object)
    column = df["experiment"]
    if pd.api.types.is_string_dtype(column) and not pd.api.types.is_object_dtype(column):
        named = column.notna() & column.ne("")
    else:  # a frame made by hand: only non-empty strings name a folder
        named = column.map(lambda v: isinstance(v, str) and v != "").astype(bool)
    return np.where(named.to_numpy(bool), column.to_numpy(object), name).astype(object)


def _hover(label: str, percent: bool) -> str:
    value = "%{y:.3f}%" if percent else "%{y:.4f}"
    return f"%{{customdata}}<br>epoch %{{x}}<br>{label} {value}<extra></extra>"


# A compact legend: one short entry per run, in a narrow column right of the plot (below it, the
# legend covered the x-axis title and, with 10 runs, most of the chart).
COMPACT_LEGEND = dict(orientation="v", x=1.01, xanchor="left", y=1.0, yanchor="top", font=dict(size=10),
                      itemwidth=30, tracegroupgap=2, bgcolor="rgba(255,255,255,0)")


def metric_figure(spec: ChartSpec, histories: Mapping[str, pd.DataFrame], colors: Mapping[str, str],
                  smoothing: float = 0.0, log_y: bool = False,
                  labels: Mapping[str, str] | None = None) -> go.Figure:
    """One chart: every experiment's series overlaid, best epochs starred.

    Each experiment is a legend group (clicking its name hides its raw, smoothed and best-epoch
    traces together). With ``smoothing`` > 0 the raw curve is drawn faded and the smoothed one
    over it; hover names the folder the point came from, the epoch and the value. ``labels``: the
    legend's name per experiment (short labels, training.dashboard.run_labels); the full folder
    name stays in the hover. One legend entry per experiment (the loss chart's line styles are
    told by its title), the best epoch starred on EER charts only (on a loss chart the lowest
    EER's epoch is no "best" point), and a chart with no finished epoch says so on sane axes.
    """
    labels = labels or {}
    fig = go.Figure()
    for name, history in histories.items():
        if history is None or history.empty:
            continue
        df = drawn_rows(_prepared(history), [s.column for s in spec.series])  # long runs: a bounded set of points
        color = colors.get(name, PALETTE[0])
        source = _source_column(df, name)
        for i, series in enumerate(spec.series):
            if series.column not in df:
                continue
            y = pd.to_numeric(df[series.column], errors="coerce")
            if y.notna().sum() == 0:
                continue
            trace_name = labels.get(name, name) if i == 0 else f"{labels.get(name, name)} · {series.label}"
            # one legend entry per experiment, on its first series' line drawn solid: the
            # smoothed one when smoothing, else the raw one
            in_legend = i == 0
            line = dict(color=color, dash=series.dash)
            hover = _hover(series.label, spec.percent)
            epochs, values = df["epoch"].to_numpy(), y.to_numpy(float)  # arrays: plotly encodes them whole
            fig.add_trace(go.Scatter(
                x=epochs, y=values, mode="lines+markers" if len(df) < 40 else "lines",
                name=trace_name, legendgroup=name, showlegend=in_legend and smoothing == 0,
                line=line, marker=dict(size=5, color=color), customdata=source, hovertemplate=hover,
                opacity=RAW_OPACITY_WHEN_SMOOTHED if smoothing > 0 else 1.0,
                meta={"experiment": name, "column": series.column, "role": "raw"}))
            if smoothing > 0:
                fig.add_trace(go.Scatter(
                    x=epochs, y=np.asarray(ema_smooth(values, smoothing)), mode="lines",
                    name=trace_name, legendgroup=name, showlegend=in_legend, line=line,
                    customdata=source, hovertemplate=_hover(f"{series.label} (smoothed)", spec.percent),
                    meta={"experiment": name, "column": series.column, "role": "smoothed"}))
        best = best_epoch_row(df)
        main = spec.series[0].column
        if spec.is_eer and best is not None and main in df and pd.notna(pd.to_numeric(best[main], errors="coerce")):
            fig.add_trace(go.Scatter(
                x=[best["epoch"]], y=[float(best[main])], mode="markers", name=f"{name} best epoch",
                legendgroup=name, showlegend=False, marker=dict(color=color, **BEST_MARKER),
                customdata=[_source_column(best.to_frame().T, name)[0]],
                hovertemplate=_hover(f"best epoch · {spec.series[0].label}", spec.percent),
                meta={"experiment": name, "column": main, "role": "best"}))
    fig.update_layout(title=spec.title, xaxis_title="epoch", yaxis_title=spec.y_title, hovermode="closest",
                      legend=COMPACT_LEGEND, margin=dict(t=50, b=10, r=10), height=420)
    if not fig.data:  # plotly's empty axes run from -1: show epoch 1 on, and why there is no line
        fig.update_xaxes(range=[1, 2])
        fig.add_annotation(text="No finished epoch yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    last_epoch = max((max(t.x) for t in fig.data if t.x is not None and len(t.x)), default=0)
    # whole epochs only: with few epochs plotly would put ticks at 1.5 and print them as "1", "2"
    fig.update_xaxes(tickformat="d", dtick=1 if last_epoch <= SMALL_EPOCH_COUNT else None)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def curve_figures(histories: Mapping[str, pd.DataFrame], smoothing: float = 0.0,
                  log_eer: bool = False, labels: Mapping[str, str] | None = None) -> list[Chart]:
    """Every chart of the Curves page for these experiments (in the order given).

    ``log_eer`` puts the EER charts on a log axis (epochs with EER 0 then have no point there).
    """
    colors = experiment_colors(list(histories))
    return [Chart(spec, metric_figure(spec, histories, colors, smoothing, log_y=log_eer and spec.is_eer,
                                      labels=labels))
            for spec in CHARTS]
