"""A run's story, as plotly figures for the Curves page: learning rate and epoch time per epoch,
the step-level training loss (``training_steps.csv``), the x axis by epoch, step or wall-clock
time, and markers where a run was resumed, extended or changed hyperparameters.

Markers come from what the catalog already knows, no checkpoint is read for them:

* a run resumed into another folder (a changed ``--num_epochs`` or ``--lr`` names a new folder)
  arrives with its parent's rows first; where the history's ``experiment`` column changes, the
  run was resumed there, and the two folder names say which hyperparameters changed
  (``num_epochs 5 → 10`` is an extension);
* a run resumed in its own folder shows in its step log: each process counts ``elapsed_s`` from
  0, so a row whose ``elapsed_s`` is below its predecessor's starts a new process.

The metric charts of :mod:`training.dashboard.plots` draw epochs on x; :func:`use_x_axis` moves
their points to steps or times afterwards (each trace names its experiment in ``meta``), so the
same figures serve every axis.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from training.dashboard.plots import COMPACT_LEGEND, curve_figures
from training.naming import parse_experiment_name

AXES = ("epoch", "step", "time")
AXIS_TITLES = {"epoch": "epoch", "step": "training step", "time": "time"}
MARKER_COLOR = "rgba(80, 80, 80, 0.8)"
# Keys of a folder name a resume can change; num_epochs up is an extension.
CHANGING_KEYS = ("num_epochs", "lr", "batch_size", "loss", "group_size", "use_contrastive", "model_type", "track")


@dataclass(frozen=True)
class Marker:
    """A point in a run's story: after ``epoch`` (a fraction inside an epoch for a step-log
    resume) of ``experiment``'s line, ``label`` happened."""

    experiment: str
    epoch: float
    label: str
    timestamp: float = math.nan  # when the line reached that point (the time axis)


# --- markers -----------------------------------------------------------------------------------------

def changed_hyperparameters(parent: str, child: str) -> list[str]:
    """'num_epochs 5 → 10 (extended)', 'lr 0.001 → 0.0005': what the folder names say changed."""
    a, b = parse_experiment_name(parent), parse_experiment_name(child)
    changes = []
    for key in CHANGING_KEYS:
        if key in a and key in b and a[key] != b[key]:
            note = " (extended)" if key == "num_epochs" and b[key] > a[key] else ""
            changes.append(f"{key} {a[key]} → {b[key]}{note}")
    return changes


def lineage_markers(name: str, history: pd.DataFrame) -> list[Marker]:
    """Where ``name``'s line passes from one folder to the next (a resume into a new folder)."""
    if history.empty or "experiment" not in history:
        return []
    rows = history.sort_values("epoch", kind="stable")
    markers = []
    previous = None
    for epoch, folder, stamp in zip(rows["epoch"], rows["experiment"], rows.get("timestamp", pd.Series(math.nan, index=rows.index))):
        if previous is not None and folder != previous[1]:
            changes = changed_hyperparameters(previous[1], folder)
            label = "resumed into a new folder" + (": " + ", ".join(changes) if changes else "")
            markers.append(Marker(name, float(previous[0]), label, float(previous[2])))
        previous = (epoch, folder, stamp)
    return markers


def process_markers(name: str, steps: pd.DataFrame) -> list[Marker]:
    """Resumes inside the folder: step rows whose ``elapsed_s`` went back (a new process)."""
    if steps is None or len(steps) < 2:
        return []
    elapsed = steps["elapsed_s"].to_numpy()
    markers = []
    for i in range(1, len(steps)):
        if elapsed[i] < elapsed[i - 1]:
            before = steps.iloc[i - 1]
            markers.append(Marker(name, float(before["epoch_x"]), "resumed", float(before["timestamp"])))
    return markers


def story_markers(histories: Mapping[str, pd.DataFrame], steps: Mapping[str, pd.DataFrame]) -> list[Marker]:
    markers = []
    for name, history in histories.items():
        markers += lineage_markers(name, history)
        markers += process_markers(name, steps.get(name, pd.DataFrame()))
    return markers


# --- the x axis --------------------------------------------------------------------------------------

def steps_per_epoch(steps: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Each experiment's steps per epoch, from its step log (the latest row)."""
    return {name: int(frame["steps_in_epoch"].iloc[-1]) for name, frame in steps.items()
            if frame is not None and len(frame)}


def _epoch_times(history: pd.DataFrame) -> dict[float, float]:
    if history is None or history.empty or "timestamp" not in history:
        return {}
    return {float(e): float(t) for e, t in zip(history["epoch"], history["timestamp"])}


def _as_time(stamp: float) -> datetime | None:
    return datetime.fromtimestamp(stamp) if stamp == stamp and math.isfinite(stamp) else None


def axis_value(axis: str, epoch: float, per_epoch: int | None, times: Mapping[float, float]) -> object:
    """Where the point at ``epoch`` (a whole epoch's end) lies on ``axis``; None where unknown."""
    if axis == "step":
        return epoch * per_epoch if per_epoch else None
    if axis == "time":
        return _as_time(times.get(float(epoch), math.nan))
    return epoch


def use_x_axis(figure: go.Figure, axis: str, histories: Mapping[str, pd.DataFrame],
               per_epoch: Mapping[str, int]) -> go.Figure:
    """Move an epoch-based figure's points to ``axis`` (in place; returns it). Points with no
    place there (no step log for steps, no time for an epoch) are left out."""
    if axis == "epoch":
        return figure
    for trace in figure.data:
        name = (trace.meta or {}).get("experiment") if isinstance(trace.meta, dict) else None
        if name is None or trace.x is None:
            continue
        times = _epoch_times(histories.get(name))
        trace.x = [axis_value(axis, float(x), per_epoch.get(name), times) for x in trace.x]
        if trace.hovertemplate:
            trace.hovertemplate = trace.hovertemplate.replace("epoch %{x}", f"{AXIS_TITLES[axis]} %{{x}}")
    figure.update_xaxes(title_text=AXIS_TITLES[axis], dtick=None, tickformat=None if axis == "time" else "d",
                        type="date" if axis == "time" else "linear")
    return figure


def add_markers(figure: go.Figure, markers: list[Marker], axis: str, per_epoch: Mapping[str, int],
                colors: Mapping[str, str]) -> go.Figure:
    """Dotted vertical lines with a short label, hover for the whole story (in place)."""
    for marker in markers:
        if axis == "step":
            x = marker.epoch * per_epoch[marker.experiment] if marker.experiment in per_epoch else None
        elif axis == "time":
            x = _as_time(marker.timestamp)
        else:
            x = marker.epoch
        if x is None:
            continue
        x = x.isoformat() if isinstance(x, datetime) else x
        figure.add_vline(x=x, line_dash="dot",
                         line_color=colors.get(marker.experiment, MARKER_COLOR), opacity=0.8)
        figure.add_annotation(x=x, y=1, yref="paper", text="↻", showarrow=False, yanchor="bottom",
                              hovertext=f"{marker.experiment}: {marker.label}",
                              font=dict(color=colors.get(marker.experiment, MARKER_COLOR)))
    return figure


# --- figures built once per data version --------------------------------------------------------------
# Building the plotly figures costs far more than reading the logs (about 50 ms a chart for five
# runs of 100 epochs): a page refreshing while a job runs rebuilds only the figures whose data
# changed (the step chart at each logged step, the epoch charts at each epoch).

FIGURE_CACHE_ENTRIES = 64
_FIGURES: OrderedDict[str, object] = OrderedDict()


def frames_signature(frames: Mapping[str, pd.DataFrame]) -> str:
    """What identifies the frames' data for the cache: rows and the newest row's time, per run."""
    parts = []
    for name, frame in frames.items():
        last = float(frame["timestamp"].iloc[-1]) if len(frame) and "timestamp" in frame else None
        parts.append((name, len(frame), last))
    return repr(parts)


def cached(key: str, build: Callable[[], object]) -> object:
    """``build()`` once per ``key`` (the newest ``FIGURE_CACHE_ENTRIES`` kept); callers must not
    modify what it returns."""
    if key in _FIGURES:
        _FIGURES.move_to_end(key)
        return _FIGURES[key]
    value = build()
    _FIGURES[key] = value
    while len(_FIGURES) > FIGURE_CACHE_ENTRIES:
        _FIGURES.popitem(last=False)
    return value


# --- the story's own charts --------------------------------------------------------------------------

def _layout(figure: go.Figure, title: str, y_title: str, axis: str) -> go.Figure:
    figure.update_layout(title=title, xaxis_title=AXIS_TITLES[axis], yaxis_title=y_title, hovermode="closest",
                         legend=dict(orientation="h", yanchor="top", y=-0.2), margin=dict(t=50, b=10), height=360)
    if axis == "time":
        figure.update_xaxes(type="date")
    return figure


def per_epoch_figure(column: str, title: str, y_title: str, histories: Mapping[str, pd.DataFrame],
                     colors: Mapping[str, str], log_y: bool = False) -> go.Figure:
    """One history column per epoch, one line per experiment (epoch axis; see use_x_axis)."""
    figure = go.Figure()
    for name, history in histories.items():
        if history is None or history.empty or column not in history:
            continue
        rows = history.sort_values("epoch", kind="stable")
        y = pd.to_numeric(rows[column], errors="coerce")
        if y.notna().sum() == 0:
            continue
        figure.add_trace(go.Scatter(
            x=rows["epoch"].tolist(), y=y.tolist(), mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=colors.get(name)), marker=dict(size=5),
            hovertemplate=f"{name}<br>epoch %{{x}}<br>{y_title} %{{y:.4g}}<extra></extra>",
            meta={"experiment": name, "column": column, "role": "raw"}))
    _layout(figure, title, y_title, "epoch")
    figure.update_xaxes(tickformat="d")
    if log_y:
        figure.update_yaxes(type="log")
    return figure


def lr_figure(histories: Mapping[str, pd.DataFrame], colors: Mapping[str, str]) -> go.Figure:
    return per_epoch_figure("lr", "Learning rate", "lr", histories, colors, log_y=True)


def epoch_time_figure(histories: Mapping[str, pd.DataFrame], colors: Mapping[str, str]) -> go.Figure:
    return per_epoch_figure("epoch_seconds", "Epoch time", "seconds", histories, colors)


def step_x(frame: pd.DataFrame, axis: str) -> object:
    """Arrays, not lists: plotly checks a list element by element (most of a refresh's time)."""
    if axis == "step":
        return frame["global_step"].to_numpy()
    if axis == "time":
        return np.array([_as_time(t) for t in frame["timestamp"]], dtype="datetime64[ms]")  # local time
    return frame["epoch_x"].to_numpy()


def step_loss_figure(steps: Mapping[str, pd.DataFrame], colors: Mapping[str, str], axis: str) -> go.Figure:
    """The training loss of the logged steps: progress inside an epoch, before it ends.
    On the epoch axis, step k of N in epoch e sits at e - 1 + k/N."""
    figure = go.Figure()
    for name, frame in steps.items():
        if frame is None or frame.empty:
            continue
        figure.add_trace(go.Scatter(
            x=step_x(frame, axis), y=frame["loss"].to_numpy(), mode="lines", name=name, legendgroup=name,
            line=dict(color=colors.get(name), width=1.5),
            customdata=frame[["epoch", "step", "steps_in_epoch"]].to_numpy(),
            hovertemplate=(f"{name}<br>epoch %{{customdata[0]}}, step %{{customdata[1]}}/%{{customdata[2]}}"
                           "<br>loss %{y:.4f}<extra></extra>"),
            meta={"experiment": name, "column": "loss", "role": "steps"}))
    return _layout(figure, "Training loss per logged step", "loss", axis)


# --- the Curves page's figures ----------------------------------------------------------------------

def _epoch_figures(plotted: Mapping[str, pd.DataFrame], smoothing: float, log_eer: bool, axis: str,
                   per_epoch: Mapping[str, int], markers: list[Marker], colors: Mapping[str, str],
                   labels: Mapping[str, str]) -> list[tuple[str, go.Figure]]:
    figures = [(chart.spec.key, chart.figure) for chart in curve_figures(plotted, smoothing, log_eer, labels=labels)]
    story = [("lr", lr_figure(plotted, colors)), ("epoch_time", epoch_time_figure(plotted, colors))]
    figures += [(key, short_legend(figure, labels)) for key, figure in story]
    for _, figure in figures:
        use_x_axis(figure, axis, plotted, per_epoch)
        add_markers(figure, markers, axis, per_epoch, colors)
    return figures


def short_legend(figure: go.Figure, labels: Mapping[str, str]) -> go.Figure:
    """Legend entries named by the runs' short labels (training.dashboard.run_labels), in the
    metric charts' compact legend; each trace's hover keeps the full folder name."""
    for trace in figure.data:
        experiment = (trace.meta or {}).get("experiment") if isinstance(trace.meta, dict) else None
        if experiment in labels:
            trace.name = labels[experiment]
    return figure.update_layout(legend=COMPACT_LEGEND)


def curves_figures(plotted: Mapping[str, pd.DataFrame], steps: Mapping[str, pd.DataFrame], smoothing: float,
                   log_eer: bool, axis: str, colors: Mapping[str, str], labels: Mapping[str, str] | None = None
                   ) -> tuple[list[tuple[str, go.Figure]], go.Figure | None, list[Marker]]:
    """Everything the Curves page draws: (key, figure) of the per-epoch charts (metrics, lr, epoch
    time), the step-loss figure (None without step logs) and the markers, each figure built once
    per data version (:func:`cached`): while a job runs, a refresh between two epochs rebuilds
    only the step chart."""
    per_epoch = steps_per_epoch(steps)
    markers = story_markers(plotted, steps)
    labels = dict(labels or {})
    shown = repr((smoothing, log_eer, axis, markers, dict(colors), per_epoch, labels))
    figures = cached("epochs" + shown + frames_signature(plotted),
                     lambda: _epoch_figures(plotted, smoothing, log_eer, axis, per_epoch, markers, colors, labels))
    step_figure = cached("steps" + shown + frames_signature(steps), lambda: add_markers(
        short_legend(step_loss_figure(steps, colors, axis), labels), markers, axis, per_epoch, colors)) if steps else None
    return figures, step_figure, markers
