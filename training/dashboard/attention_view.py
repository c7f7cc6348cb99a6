"""What the Attention page shows, from ``<experiment>/attention/<name>/attention.npz``
(``--visualize_attention``; the arrays are documented in training/attention.py).

Owns listing the rendered epochs (or checkpoints), loading an npz (``allow_pickle=False``: the
file is data, never code; cached by (path, size, mtime)), picking one utterance or the mean over
the bona fide or spoof ones, and deriving each layer's weight in the utterance vector
(intra x inter, as the trainer's PNGs draw it). Figures: plotly heatmap of layer x time and bar
charts. Torch-free (training/attention.py imports torch, so only names come from training.naming).
"""

from __future__ import annotations

import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from training.naming import ATTENTION_DIRNAME, ATTENTION_NPZ_NAME

REQUIRED = ("temporal", "intra", "inter", "label", "score", "utt_id")
MEAN_BONAFIDE, MEAN_SPOOF, MEAN_ALL = "mean of bona fide", "mean of spoof", "mean of all"
_EPOCH = re.compile(r"epoch_(\d+)$")


class AttentionViewError(Exception):
    """An npz the page cannot show: one line naming it."""


def attention_names(models_root: Path | str, experiment: str) -> list[str]:
    """The rendered folders holding an npz: ``epoch_N`` in epoch order, then checkpoint stems."""
    folder = Path(models_root) / experiment / ATTENTION_DIRNAME
    try:
        names = [e.name for e in os.scandir(folder)
                 if e.is_dir() and not e.name.startswith(".") and (Path(e.path) / ATTENTION_NPZ_NAME).is_file()]
    except OSError:
        return []

    def order(name: str) -> tuple[int, int, str]:
        m = _EPOCH.match(name)
        return (0, int(m.group(1)), "") if m else (1, 0, name)

    return sorted(names, key=order)


@dataclass(frozen=True)
class AttentionArrays:
    temporal: np.ndarray  # [S, L, T]
    intra: np.ndarray  # [S, G, group_size]
    inter: np.ndarray  # [S, G]
    label: np.ndarray  # [S] 1 = bona fide
    score: np.ndarray  # [S]
    utt_id: np.ndarray  # [S] str

    @property
    def samples(self) -> int:
        return int(self.label.shape[0])


_CACHE: dict[Path, tuple[tuple[int, int], AttentionArrays]] = {}
_LOCK = threading.Lock()


def load_arrays(models_root: Path | str, experiment: str, name: str) -> AttentionArrays:
    """The npz of ``attention/<name>``; ``name`` must be one attention_names lists (URL input)."""
    if name not in attention_names(models_root, experiment):
        raise AttentionViewError(f"{experiment}: no attention maps named '{name}'")
    path = Path(models_root) / experiment / ATTENTION_DIRNAME / name / ATTENTION_NPZ_NAME
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _CACHE.get(path)
    if hit and hit[0] == stamp:
        return hit[1]
    arrays = _read_npz(path)
    with _LOCK:
        _CACHE[path] = (stamp, arrays)
    return arrays


def _read_npz(path: Path) -> AttentionArrays:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in REQUIRED if k not in data.files]
            if missing:
                raise AttentionViewError(f"{path}: lacks {', '.join(missing)}")
            arrays = AttentionArrays(**{k: data[k] for k in REQUIRED})
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # ValueError: a pickled object array, a bad zip
        raise AttentionViewError(f"{path}: not a readable attention file ({exc})") from None
    s = arrays.samples
    if arrays.temporal.ndim != 3 or arrays.temporal.shape[0] != s or arrays.inter.shape[0] != s:
        raise AttentionViewError(f"{path}: arrays of inconsistent shapes")
    return arrays


def choices(arrays: AttentionArrays) -> list[str]:
    """What can be shown: the class means, then each utterance (``3: LA_E_001 (bona fide)``)."""
    kinds = {1: "bona fide", 0: "spoof"}
    return [MEAN_BONAFIDE, MEAN_SPOOF, MEAN_ALL,
            *(f"{i}: {arrays.utt_id[i]} ({kinds.get(int(arrays.label[i]), '?')})" for i in range(arrays.samples))]


def selected_rows(arrays: AttentionArrays, choice: str) -> np.ndarray:
    """Indices of the utterances a choice covers (empty: none of that class)."""
    if choice == MEAN_BONAFIDE:
        return np.flatnonzero(arrays.label == 1)
    if choice == MEAN_SPOOF:
        return np.flatnonzero(arrays.label != 1)
    if choice == MEAN_ALL:
        return np.arange(arrays.samples)
    head = choice.split(":", 1)[0]
    if not head.isdigit() or int(head) >= arrays.samples:
        raise AttentionViewError(f"no utterance '{choice}'")
    return np.array([int(head)])


@dataclass(frozen=True)
class AttentionView:
    temporal: np.ndarray  # [L, T]
    layer_weight: np.ndarray  # [L]: intra x inter
    intra: np.ndarray  # [G, group_size]
    inter: np.ndarray  # [G]
    count: int


def layer_weights(intra: np.ndarray, inter: np.ndarray, layers: int) -> np.ndarray:
    """Each layer's weight in the utterance vector: its intra-group weight x its group's weight
    (the padding slots of a smaller last group dropped), as training/attention.py draws it."""
    return (intra * inter[..., None]).reshape(*intra.shape[:-2], -1)[..., :layers]


def view(arrays: AttentionArrays, choice: str) -> AttentionView | None:
    """One utterance's maps or a class mean; None when the class has no utterance."""
    rows = selected_rows(arrays, choice)
    if rows.size == 0:
        return None
    layers = arrays.temporal.shape[1]
    per_sample = layer_weights(arrays.intra[rows], arrays.inter[rows], layers)
    return AttentionView(temporal=arrays.temporal[rows].mean(axis=0), layer_weight=per_sample.mean(axis=0),
                         intra=arrays.intra[rows].mean(axis=0), inter=arrays.inter[rows].mean(axis=0),
                         count=int(rows.size))


# --- figures ---------------------------------------------------------------------------------------

def heatmap_figure(v: AttentionView, title: str) -> go.Figure:
    layers = v.temporal.shape[0]
    fig = go.Figure(go.Heatmap(z=v.temporal.tolist(), y=list(range(1, layers + 1)), colorscale="Viridis",
                               colorbar=dict(title="weight"), meta={"role": "temporal"}))
    fig.update_layout(title=title, xaxis_title="frame", yaxis_title="layer", margin=dict(l=10, r=10, t=40, b=10))
    return fig


def layer_figure(v: AttentionView) -> go.Figure:
    layers = len(v.layer_weight)
    fig = go.Figure(go.Bar(x=v.layer_weight.tolist(), y=list(range(1, layers + 1)), orientation="h",
                           meta={"role": "layer_importance"}))
    fig.update_layout(title="Layer importance (intra x inter)", xaxis_title="weight", yaxis_title="layer",
                      margin=dict(l=10, r=10, t=40, b=10), height=300)
    return fig


def group_figure(v: AttentionView) -> go.Figure:
    """Inter-group weights as bars, each group's intra weights stacked inside its bar."""
    groups, size = v.intra.shape
    fig = go.Figure()
    for slot in range(size):
        fig.add_trace(go.Bar(x=[f"group {g + 1}" for g in range(groups)], y=(v.inter * v.intra[:, slot]).tolist(),
                             name=f"layer {slot + 1} of the group", meta={"role": "intra", "slot": slot}))
    fig.add_trace(go.Scatter(x=[f"group {g + 1}" for g in range(groups)], y=v.inter.tolist(), mode="markers+text",
                             text=[f"{w:.2f}" for w in v.inter], textposition="top center", name="inter-group",
                             meta={"role": "inter"}))
    fig.update_layout(barmode="stack", title="Inter-group weights (stacked by intra-group weight)",
                      yaxis_title="weight", margin=dict(l=10, r=10, t=40, b=10), height=300)
    return fig
