"""The Evaluation page's figures: DET curves on normal-deviate axes, bona fide / spoof score
histograms, the per-condition heatmap. Built from :mod:`training.dashboard.evaluation`'s data.

DET curves come from scikit-learn's ``det_curve`` and are thinned to a bounded number of points
(even steps along the curve as drawn, in probit space) that always keeps the two operating points
around the equal-error crossing; the EER marker itself is the metrics file's pooled EER (the
official figure), not a value read off the thinned curve. Axes are probit-scaled and labelled in
percent, as the ASVspoof challenge plots draw them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.stats import norm

from training.dashboard import evaluation as ev
from training.dashboard.plots import PALETTE

DET_MAX_POINTS = 400
DET_TICKS_PERCENT = (0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80, 95)
DET_LIMIT = 1e-5  # rates of 0 or 1 are infinite in probit space; drawn at this distance from them
HISTOGRAM_BINS = 60


@dataclass(frozen=True)
class DetCurve:
    fpr: np.ndarray  # false acceptance (spoof accepted), fraction, thinned
    fnr: np.ndarray  # false rejection (bona fide rejected)
    points_before_thinning: int


def det_points(labels: np.ndarray, scores: np.ndarray, max_points: int = DET_MAX_POINTS) -> DetCurve:
    """The DET curve (labels 1 = bona fide, higher score = bona fide), at most ``max_points``."""
    from sklearn.metrics import det_curve

    fpr, fnr, _ = det_curve(labels, scores, pos_label=1)
    return DetCurve(*thin_curve(fpr, fnr, max_points), points_before_thinning=len(fpr))


def probit(rate: np.ndarray) -> np.ndarray:
    return norm.ppf(np.clip(rate, DET_LIMIT, 1 - DET_LIMIT))


def crossing_indices(fpr: np.ndarray, fnr: np.ndarray) -> list[int]:
    """The two neighbouring points between which fnr - fpr changes sign (the EER lies there)."""
    diff = fnr - fpr
    change = np.flatnonzero(np.diff(np.sign(diff)) != 0)
    if change.size == 0:
        return [int(np.argmin(np.abs(diff)))]
    i = int(change[0])
    return [i, i + 1]


def thin_curve(fpr: np.ndarray, fnr: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of the curve: evenly spaced along its length in probit space, plus
    both ends and the points around the EER crossing (so the curve passes the EER exactly)."""
    n = len(fpr)
    if n <= max_points:
        return fpr, fnr
    x, y = probit(fpr), probit(fnr)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    targets = np.linspace(0.0, length[-1], max(2, max_points - 4))
    keep = np.unique(np.concatenate([np.searchsorted(length, targets).clip(0, n - 1), [0, n - 1],
                                     crossing_indices(fpr, fnr)]))
    return fpr[keep], fnr[keep]


def _probit_axis(title: str) -> dict:
    ticks = [t for t in DET_TICKS_PERCENT]
    return dict(title=title, tickvals=[float(norm.ppf(t / 100)) for t in ticks],
                ticktext=[f"{t:g}" for t in ticks], range=[float(norm.ppf(0.0005)), float(norm.ppf(0.6))],
                zeroline=False)


def det_figure(curves: Mapping[str, DetCurve], eers: Mapping[str, float | None]) -> go.Figure:
    """One line per selected result, its EER (the metrics file's) as a marker on the diagonal."""
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=probit(curve.fpr).tolist(), y=probit(curve.fnr).tolist(), mode="lines", name=name,
                                 line=dict(color=color), meta={"role": "det", "result": name},
                                 customdata=np.stack([curve.fpr * 100, curve.fnr * 100], axis=-1).tolist(),
                                 hovertemplate="FAR %{customdata[0]:.3f}%<br>FRR %{customdata[1]:.3f}%"))
        eer = eers.get(name)
        if eer is not None:
            at = float(norm.ppf(min(max(eer / 100, DET_LIMIT), 1 - DET_LIMIT)))
            fig.add_trace(go.Scatter(x=[at], y=[at], mode="markers", name=f"EER {eer:.2f}%", showlegend=False,
                                     marker=dict(color=color, size=9, line=dict(width=1, color="black")),
                                     meta={"role": "eer", "result": name, "eer": eer},
                                     hovertemplate=f"{name}<br>EER {eer:.3f}%<extra></extra>"))
    low, high = float(norm.ppf(0.0005)), float(norm.ppf(0.6))
    fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", showlegend=False, hoverinfo="skip",
                             line=dict(color="grey", dash="dot", width=1), meta={"role": "diagonal"}))
    fig.update_layout(title="DET curves", xaxis=_probit_axis("False acceptance rate (%)"),
                      yaxis=_probit_axis("False rejection rate (%)"), legend=dict(orientation="h", y=-0.2),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


@dataclass(frozen=True)
class ScoreHistogram:
    centres: np.ndarray
    width: float
    bonafide: np.ndarray  # density per bin
    spoof: np.ndarray


def score_histogram(labels: np.ndarray, scores: np.ndarray, bins: int = HISTOGRAM_BINS) -> ScoreHistogram:
    """Bona fide and spoof densities over shared bins: ``bins`` numbers per class for the browser,
    not a point per trial."""
    finite = np.isfinite(scores)
    edges = np.histogram_bin_edges(scores[finite], bins=bins)
    density = [np.histogram(scores[finite & (labels == label)], bins=edges, density=True)[0] for label in (1, 0)]
    return ScoreHistogram((edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0]), *density)


_CURVES: dict[tuple, tuple[tuple, tuple[DetCurve, ScoreHistogram]]] = {}
_CURVES_LOCK = threading.Lock()


def result_curves(result: ev.EvalResult) -> tuple[DetCurve, ScoreHistogram]:
    """The DET curve and histogram of one result, computed once while its score file and key keep
    their (size, mtime): a warm page redraws them without touching 600,000 scores."""
    entry = (result.score_path, result.key_path, result.subset)
    stamp = (ev.file_stamp(result.score_path), ev.file_stamp(result.key_path) if result.key_path else None)
    with _CURVES_LOCK:
        hit = _CURVES.get(entry)
    if hit and hit[0] == stamp:
        return hit[1]
    data = ev.labelled_scores(result)
    value = (det_points(data.labels, data.scores), score_histogram(data.labels, data.scores))
    with _CURVES_LOCK:
        _CURVES[entry] = (stamp, value)
    return value


def histogram_figure(name: str, hist: ScoreHistogram) -> go.Figure:
    """Bona fide and spoof score densities overlaid."""
    fig = go.Figure()
    for text, values, color in (("bona fide", hist.bonafide, "#2ca02c"), ("spoof", hist.spoof, "#d62728")):
        fig.add_trace(go.Bar(x=hist.centres.tolist(), y=values.tolist(), name=text, marker_color=color, opacity=0.55,
                             meta={"role": "histogram", "label": text}, width=hist.width))
    fig.update_layout(barmode="overlay", title=f"Scores: {name}", xaxis_title="score (log p(bona fide))",
                      yaxis_title="density", margin=dict(l=10, r=10, t=40, b=10))
    return fig


def condition_figure(table: pd.DataFrame, title: str, rows_name: str, cols_name: str) -> go.Figure:
    """The per-condition EER table as a heatmap, each cell labelled with its value."""
    z = table.to_numpy(dtype=float)
    text = [["–" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    cells = [[None if np.isnan(v) else float(v) for v in row] for row in z]  # lists: plain JSON for the browser
    fig = go.Figure(go.Heatmap(z=cells, x=list(table.columns), y=list(table.index), text=text, texttemplate="%{text}",
                               colorscale="Reds", colorbar=dict(title="EER %"), hoverongaps=False))
    fig.update_layout(title=title, xaxis_title=cols_name, yaxis_title=rows_name, yaxis_autorange="reversed",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig
