"""Which points of a long curve to draw: at most about ``max_points`` of them, so a chart of a
100,000-epoch (or 100,000-step) series costs what a chart of a few thousand does.

Min/max per bucket: the series is cut into ``max_points // 2`` equal buckets of consecutive
points and each bucket keeps its lowest and highest point, so every spike and dip a pixel column
could show is still drawn. The first and last points and any point named in ``keep`` (the best
epoch) are always kept, exactly. Vectorised with numpy; no per-point Python work.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MAX_POINTS = 1_000  # a min and a max per pixel column of a half-width chart (the Curves page draws two per row)


def drawn_indices(values: np.ndarray, keep: Iterable[int] = (), max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted positions of ``values`` to draw: all of them when there are at most ``max_points``;
    else the min and max of each bucket, the first and last point and ``keep``. NaN and inf
    never win a bucket's min or max (a bucket of NaNs keeps its first point)."""
    y = np.asarray(values, dtype=float)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max(max_points // 2, 1)
    width = -(-n // buckets)  # ceil
    padded = np.full(buckets * width, np.nan)
    padded[:n] = y
    grid = padded.reshape(buckets, width)
    finite = np.isfinite(grid)
    starts = np.arange(buckets) * width
    lows = starts + np.argmin(np.where(finite, grid, np.inf), axis=1)
    highs = starts + np.argmax(np.where(finite, grid, -np.inf), axis=1)
    extra = np.fromiter((int(i) for i in keep if 0 <= int(i) < n), dtype=np.int64)
    picked = np.concatenate([lows, highs, extra, [0, n - 1]]).astype(np.int64)
    return np.unique(picked[picked < n])


def drawn_rows(history: "pd.DataFrame", columns: Iterable[str], best_column: str = "val_eer",
               max_points: int = MAX_POINTS) -> "pd.DataFrame":
    """The rows of a history (in drawing order) worth drawing for ``columns``: every row when
    there are at most ``max_points``, else the union of each column's :func:`drawn_indices`, with
    the first lowest ``best_column`` row (the best epoch) and the last row kept exactly. With
    smoothing, the average runs over the drawn points."""
    import pandas as pd  # noqa: PLC0415  (the indices above need numpy only)

    if len(history) <= max_points:
        return history
    keep: list[int] = []
    if best_column in history:
        best = pd.to_numeric(history[best_column], errors="coerce").to_numpy(float)
        if np.isfinite(best).any():
            keep.append(int(np.argmin(np.where(np.isfinite(best), best, np.inf))))
    picked = [np.arange(0)]
    for column in columns:
        if column in history:
            values = pd.to_numeric(history[column], errors="coerce").to_numpy(float)
            picked.append(drawn_indices(values, keep, max_points))
    rows = np.unique(np.concatenate(picked + [np.asarray(keep, dtype=np.int64), [0, len(history) - 1]]))
    return history.iloc[rows].reset_index(drop=True)
