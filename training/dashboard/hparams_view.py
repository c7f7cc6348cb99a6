"""Hyperparameters against best validation EER for many runs at once: a parallel-coordinates
figure (plotly ``Parcoords``), one line per experiment, coloured by its best val EER.

Built from :func:`training.dashboard.catalog.scan_experiments` rows; only the axes whose values
differ between the runs are drawn (a constant axis tells nothing), then best val EER last.
Categorical values (model, track, loss) are coded 0..k-1 with their names as tick labels; the
learning rate is drawn on a log10 axis.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

# (scan column, axis label); lr is drawn as log10
NUMERIC_AXES = (("lr", "log10 lr"), ("batch_size", "batch"), ("num_epochs", "epochs"), ("group_size", "group"),
                ("epochs_done", "epochs done"))
CATEGORICAL_AXES = (("model_type", "model"), ("track", "track"), ("loss", "loss"), ("contrastive", "contrastive"))
TARGET = ("best_val_eer", "best val EER (%)")
MIN_RUNS = 2


def _numeric(values: pd.Series, column: str) -> pd.Series | None:
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    if numbers.isna().any():
        return None
    if column == "lr":
        if (numbers <= 0).any():
            return None
        numbers = numbers.map(math.log10)
    return numbers


def hparams_figure(experiments: pd.DataFrame) -> go.Figure | None:
    """The figure for the rows with a best val EER; None when fewer than two have one."""
    if experiments.empty or TARGET[0] not in experiments:
        return None
    rows = experiments[pd.to_numeric(experiments[TARGET[0]], errors="coerce").notna()]
    if len(rows) < MIN_RUNS:
        return None
    dimensions = []
    for column, label in NUMERIC_AXES:
        if column in rows and rows[column].nunique(dropna=False) > 1:
            values = _numeric(rows[column], column)
            if values is not None:
                dimensions.append(dict(label=label, values=values.tolist()))
    for column, label in CATEGORICAL_AXES:
        if column in rows and rows[column].astype(str).nunique() > 1:
            text = rows[column].astype(str)
            names = sorted(set(text))
            code = {name: i for i, name in enumerate(names)}
            dimensions.append(dict(label=label, values=[code[t] for t in text], tickvals=list(range(len(names))),
                                   ticktext=names))
    eer = pd.to_numeric(rows[TARGET[0]]).astype("float64")
    dimensions.append(dict(label=TARGET[1], values=eer.tolist()))
    line = dict(color=eer.tolist(), colorscale="Viridis", reversescale=True, showscale=True,
                colorbar=dict(title="best val EER (%)"))
    figure = go.Figure(go.Parcoords(line=line, dimensions=dimensions,
                                    meta={"experiments": rows["name"].astype(str).tolist()}))
    figure.update_layout(height=380, margin=dict(l=60, r=40, t=40, b=20))
    return figure
