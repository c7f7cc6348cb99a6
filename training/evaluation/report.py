"""What an evaluation leaves behind: ``<score file>.metrics.json`` and the table printed.

The JSON (EER in percent, as checkpoints store it; NaN -> null)::

    {"track": "LA", "subset": "eval", "eer": 2.85, "min_tdcf": 0.2767 | null,
     "counts": {"key_trials": 181566, "trials": 148176, "bonafide": 14816, "spoof": 133360},
     "breakdown": {"rows": {"column": "attack", "values": [...], "tags": [...]},
                   "cols": {"column": "codec", "values": [...], "tags": ["C1", ...]},
                   "eer": [[...]], "min_tdcf": [[...]] | null, "bonafide": [[...]], "spoof": [[...]]} | null,
     "score_file": ..., "key": ..., "asv": {"key": ..., "scores": ...} | null,
     "checkpoint": {"path": ..., "sha256": ..., "epoch": 12, "model_type": ..., "head_version": 1} | null,
     "written_at": "2025-...Z"}

Rows and columns end in ``Pooled``; ``breakdown.eer[-1][-1]`` is ``eer``. For a subset other
than ``eval`` the file is ``<score file>.<subset>.metrics.json``, so one score file keeps the
metrics of each subset.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint.fsutil import atomic_write
from training.evaluation.keys import AsvTrials, TrialKey
from training.evaluation.official import Breakdown, Factor

DEFAULT_SUBSET = "eval"


def metrics_path(score_path: Path, subset: str) -> Path:
    suffix = ".metrics.json" if subset == DEFAULT_SUBSET else f".{subset}.metrics.json"
    return score_path.with_name(score_path.name + suffix)


def _number(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _matrix(values: np.ndarray, scale: float = 1.0) -> list[list[float | None]]:
    return [[_number(v * scale) for v in row] for row in values]


def _factor(f: Factor) -> dict[str, Any]:
    return {"column": f.column, "values": list(f.values), "tags": list(f.tags)}


def metrics_document(*, track: str, subset: str, key: TrialKey, score_path: Path, table: Breakdown,
                     asv: AsvTrials | None, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """Everything ``metrics.json`` holds (see the module docstring)."""
    only_pooled = table.rows.column is None and table.cols.column is None
    doc: dict[str, Any] = {
        "track": track,
        "subset": subset,
        # eer_array * 100, as the package prints it
        "eer": _number(table.eer[-1, -1] * 100),
        "min_tdcf": None if table.min_tdcf is None else _number(table.min_tdcf[-1, -1]),
        "counts": {"key_trials": len(key), "trials": int(table.bonafide[-1, -1] + table.spoof[-1, -1]),
                   "bonafide": int(table.bonafide[-1, -1]), "spoof": int(table.spoof[-1, -1])},
        "breakdown": None if only_pooled else {
            "rows": _factor(table.rows), "cols": _factor(table.cols),
            "eer": _matrix(table.eer, 100),
            "min_tdcf": None if table.min_tdcf is None else _matrix(table.min_tdcf),
            "bonafide": table.bonafide.tolist(), "spoof": table.spoof.tolist()},
        "score_file": str(score_path.absolute()),
        "key": str(key.path.absolute()),
        "asv": None if asv is None else {"key": str(asv.key_path.absolute()), "scores": str(asv.score_path.absolute())},
        "checkpoint": checkpoint,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return doc


def write_metrics(path: Path, doc: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(doc: dict[str, Any]) -> str:
    """The summary and the EER table (min t-DCF table too when there is one), as text."""
    counts = doc["counts"]
    lines = [f"{doc['track']} {doc['subset']}: {counts['trials']} trials ({counts['bonafide']} bona fide, "
             f"{counts['spoof']} spoof) of {counts['key_trials']} in the key",
             f"Pooled EER: {_cell(doc['eer'], 2)} %"
             + (f"   min t-DCF: {_cell(doc['min_tdcf'], 4)}" if doc["min_tdcf"] is not None else "")]
    table = doc["breakdown"]
    if table is not None:
        lines += ["", *_table_lines("EER (%)", table, table["eer"], 2)]
        if table["min_tdcf"] is not None:
            lines += ["", *_table_lines("min t-DCF", table, table["min_tdcf"], 4)]
    return "\n".join(lines)


def _table_lines(title: str, table: dict[str, Any], values: list[list[float | None]], digits: int) -> list[str]:
    row_tags, col_tags = table["rows"]["tags"], table["cols"]["tags"]
    first = max(len(title), *(len(t) for t in row_tags))
    width = max(digits + 4, *(len(t) for t in col_tags))
    head = title.ljust(first) + "".join(t.rjust(width + 1) for t in col_tags)
    body = [tag.ljust(first) + "".join(_cell(v, digits).rjust(width + 1) for v in row)
            for tag, row in zip(row_tags, values)]
    return [head, *body]
