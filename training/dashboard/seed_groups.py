"""Runs that differ only in their seed, grouped, and their curves drawn as mean ± std.

Two runs belong together when every hyperparameter their checkpoints store is equal except the
seed, the comment (seeded repeats need distinct folders, so their comments differ) and options
that do not change what is trained (``training.config.ACTION_OPTIONS``: device, workers, paths,
evaluation...). Args come from the checkpoint auto-resume would continue (through the catalog's
cache); a run with no readable args stays alone. Per epoch, the mean and the (sample) standard
deviation over the group's runs that reached it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from training.checkpoint import resumable
from training.config import ACTION_OPTIONS
from training.dashboard import scan
from training.dashboard.plots import CHARTS, PALETTE, ChartSpec

IGNORED_KEYS = frozenset({"seed", "comment"}) | ACTION_OPTIONS
BAND_OPACITY = 0.2


@dataclass(frozen=True)
class SeedGroup:
    label: str
    members: tuple[str, ...]


def experiment_args(models_root: Path | str, experiment: str) -> dict[str, Any]:
    """The args of the newest readable checkpoint of the folder ({} when none has args)."""
    try:
        checkpoints = scan.folder_checkpoints(scan.experiment_dir(models_root, experiment))
    except scan.CatalogError:
        return {}
    with_args = [c for c in checkpoints if c.readable and isinstance(c.info.args, dict)]
    return dict(resumable.newest(with_args, scan.resume_rank).info.args) if with_args else {}


def _group_key(args: Mapping[str, Any]) -> str | None:
    if not args:
        return None
    kept = {k: v for k, v in args.items() if k not in IGNORED_KEYS}
    return json.dumps(kept, sort_keys=True, default=str)


def seed_groups(names: Sequence[str], args_by_name: Mapping[str, Mapping[str, Any]],
                labels: Mapping[str, str] | None = None) -> list[SeedGroup]:
    """Every run in a group (alone when nothing matches it), in the order of first appearance."""
    labels = labels or {}
    by_key: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        key = _group_key(args_by_name.get(name, {})) or f"\0{name}"  # no args: a group of its own
        by_key.setdefault(key, []).append(name)
    groups = []
    for members in by_key.values():
        first = labels.get(members[0], members[0])
        label = first if len(members) == 1 else f"{first} (+{len(members) - 1} seeds, mean ± std)"
        groups.append(SeedGroup(label, tuple(members)))
    return groups


def mean_std(histories: Sequence[pd.DataFrame], column: str) -> pd.DataFrame:
    """Per epoch: mean, std (0 for a single run) and n of ``column`` over the histories."""
    parts = [pd.DataFrame({"epoch": pd.to_numeric(h["epoch"], errors="coerce"),
                           "value": pd.to_numeric(h[column], errors="coerce")})
             for h in histories if not h.empty and column in h]
    if not parts:
        return pd.DataFrame(columns=["epoch", "mean", "std", "n"])
    values = pd.concat(parts).dropna()
    stats = values.groupby("epoch")["value"].agg(["mean", "std", "count"]).reset_index()
    return stats.rename(columns={"count": "n"}).assign(std=lambda f: f["std"].fillna(0.0))


def band_figure(spec: ChartSpec, groups: Sequence[SeedGroup], histories: Mapping[str, pd.DataFrame]) -> go.Figure:
    """One chart: per group, the mean of the chart's first series with a ± std band."""
    column = spec.series[0].column
    fig = go.Figure()
    for i, group in enumerate(groups):
        stats = mean_std([histories[m] for m in group.members if m in histories], column)
        if stats.empty:
            continue
        color = PALETTE[i % len(PALETTE)]
        epochs = stats["epoch"].tolist()
        upper = (stats["mean"] + stats["std"]).tolist()
        lower = (stats["mean"] - stats["std"]).tolist()
        meta = {"group": group.label, "members": list(group.members)}
        fig.add_trace(go.Scatter(x=epochs + epochs[::-1], y=upper + lower[::-1], fill="toself", fillcolor=color,
                                 opacity=BAND_OPACITY, line=dict(width=0), hoverinfo="skip", showlegend=False,
                                 legendgroup=group.label, meta={**meta, "role": "std"}))
        fig.add_trace(go.Scatter(x=epochs, y=stats["mean"].tolist(), mode="lines+markers", name=group.label,
                                 legendgroup=group.label, line=dict(color=color), marker=dict(size=5),
                                 customdata=stats[["std", "n"]].values.tolist(),
                                 hovertemplate=("epoch %{x}<br>mean %{y:.3f} ± %{customdata[0]:.3f} "
                                                "(%{customdata[1]} runs)<extra>" + group.label + "</extra>"),
                                 meta={**meta, "role": "mean"}))
    fig.update_layout(title=f"{spec.title.split(' (')[0]}: mean ± std over seeds", xaxis_title="epoch",
                      yaxis_title=spec.y_title, height=420, margin=dict(t=50, b=10, r=10),
                      legend=dict(orientation="v", x=1.01, xanchor="left", y=1.0, font=dict(size=10)))
    fig.update_xaxes(tickformat="d")
    return fig


def band_figures(groups: Sequence[SeedGroup], histories: Mapping[str, pd.DataFrame]) -> list[go.Figure]:
    """The Curves page's charts as mean ± std bands (validation EER, accuracy, loss, training EER)."""
    return [band_figure(spec, groups, histories) for spec in CHARTS]
