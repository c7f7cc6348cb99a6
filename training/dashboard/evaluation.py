"""What the Evaluation page shows, from the files ``--eval`` / ``--eval_scores`` wrote: the
``*.metrics.json`` and score files under each experiment's ``eval/`` folder.

Owns finding those files (:func:`find_results`), the leaderboard (one row per evaluated checkpoint,
one column per evaluation set, pooled EER in %; :func:`leaderboard`, :func:`best_rows`) and its
CSV / LaTeX export, the per-condition table of one result (the metrics file's breakdown, never
recomputed), and reading score files with their labels (:func:`labelled_scores`) for the DET curve
and the histograms (:mod:`training.dashboard.evaluation_plots` draws them).

Score files are large (a DF file has 611,829 lines), so each is parsed once (pandas' C parser,
:mod:`training.dashboard.score_files`) and kept while its (path, size, mtime) stays the same; keys
likewise, their labels and subsets only (:mod:`training.dashboard.key_labels`). Labels
come from the key the metrics file names (``key``, with its ``track`` and ``subset``): the same
trials the official EER was computed over. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.dashboard.key_labels import KeyLabels, read_key_labels
from training.dashboard.score_files import ScoreFile, ScoreFileError, parse_score_file
from training.naming import EVAL_DIRNAME

METRICS_SUFFIX = ".metrics.json"
ROW_COLUMNS = ("experiment", "checkpoint", "epoch")
DEFAULT_SUBSETS = ("eval", "all")  # a set's column is named by its track alone for these
_SCORE_CACHE_ENTRIES = 96  # parsed score files kept (a DF file costs ~15 MB)
_KEY_CACHE_ENTRIES = 8


class EvaluationViewError(Exception):
    """A score file, key or metrics file the page cannot use: one line naming it."""


# --- the results on disk ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalResult:
    """One metrics file: which checkpoint, which set, the pooled EER (%), where the files lie."""

    experiment: str
    checkpoint: str
    epoch: int | None
    set_name: str
    track: str
    subset: str
    eer: float | None
    min_tdcf: float | None
    metrics_path: Path
    score_path: Path
    key_path: Path | None
    written_at: str

    @property
    def row(self) -> str:
        return f"{self.experiment}/{self.checkpoint}"


def set_name(track: str, subset: str) -> str:
    """The leaderboard column of an evaluation: ``DF``, ``LA``, ``In-the-Wild``, ``LA progress``."""
    return track if subset in DEFAULT_SUBSETS else f"{track} {subset}"


def score_file_of(metrics_path: Path) -> Path:
    """The score file a metrics file belongs to: ``X.metrics.json`` or ``X.<subset>.metrics.json``
    -> ``X``; the sibling, not the absolute path recorded (folders get moved)."""
    base = metrics_path.with_name(metrics_path.name[: -len(METRICS_SUFFIX)])
    if base.is_file() or not base.suffix:
        return base
    shorter = base.with_suffix("")
    return shorter if shorter.is_file() else base


_DOCS: dict[Path, tuple[tuple[int, int], dict[str, Any] | None]] = {}
_DOCS_LOCK = threading.Lock()


def file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The metrics file as a dict, or None when it is not one (re-read only when it changed)."""
    stamp = file_stamp(path)
    if stamp is None:
        return None
    with _DOCS_LOCK:
        cached = _DOCS.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("track"), str):
        doc = None
    with _DOCS_LOCK:
        _DOCS[path] = (stamp, doc)
    return doc


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _checkpoint_label(doc: dict[str, Any], score_path: Path) -> tuple[str, int | None]:
    """The checkpoint's file name and epoch; for ``--eval_scores`` (no checkpoint recorded) the
    score file's stem without its ``_<track>`` ending."""
    ckpt = doc.get("checkpoint") if isinstance(doc.get("checkpoint"), dict) else None
    if ckpt and ckpt.get("path"):
        epoch = ckpt.get("epoch")
        return Path(str(ckpt["path"])).name, int(epoch) if isinstance(epoch, int) else None
    stem, ending = score_path.stem, f"_{doc['track']}"
    return (stem[: -len(ending)] if stem.endswith(ending) else stem), None


def result_of(experiment: str, metrics_path: Path) -> EvalResult | None:
    doc = read_metrics(metrics_path)
    if doc is None:
        return None
    score_path = score_file_of(metrics_path)
    checkpoint, epoch = _checkpoint_label(doc, score_path)
    subset = str(doc.get("subset") or "eval")
    key = doc.get("key")
    return EvalResult(experiment=experiment, checkpoint=checkpoint, epoch=epoch,
                      set_name=set_name(doc["track"], subset), track=doc["track"], subset=subset,
                      eer=_number(doc.get("eer")), min_tdcf=_number(doc.get("min_tdcf")),
                      metrics_path=metrics_path, score_path=score_path,
                      key_path=Path(key) if isinstance(key, str) and key else None,
                      written_at=str(doc.get("written_at") or ""))


def experiment_results(models_root: Path | str, experiment: str) -> list[EvalResult]:
    """The results under ``<root>/<experiment>/eval/`` (unreadable metrics files left out)."""
    folder = Path(models_root) / experiment / EVAL_DIRNAME
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(METRICS_SUFFIX) and e.is_file())
    except OSError:
        return []
    results = [result_of(experiment, folder / name) for name in names]
    return [r for r in results if r is not None]


def find_results(models_root: Path | str, experiments: list[str]) -> list[EvalResult]:
    """Every readable result of these experiments (folder names under the root)."""
    return [r for name in experiments for r in experiment_results(models_root, name)]


def unreadable_metrics(models_root: Path | str, experiments: list[str]) -> list[Path]:
    """Metrics files that are not JSON metrics (truncated, foreign): the page names them."""
    out = []
    for name in experiments:
        folder = Path(models_root) / name / EVAL_DIRNAME
        if folder.is_dir():
            out += [p for p in sorted(folder.glob("*" + METRICS_SUFFIX)) if read_metrics(p) is None]
    return out


# --- the leaderboard ---------------------------------------------------------------------------------

def set_names(results: list[EvalResult]) -> list[str]:
    return sorted({r.set_name for r in results})


def _newest_per_cell(results: list[EvalResult]) -> dict[tuple[str, str], EvalResult]:
    """One result per (row, set): the newest written when a checkpoint was scored twice."""
    cells: dict[tuple[str, str], EvalResult] = {}
    for r in sorted(results, key=lambda r: r.written_at):
        cells[(r.row, r.set_name)] = r
    return cells


def leaderboard(results: list[EvalResult]) -> pd.DataFrame:
    """One row per evaluated checkpoint (experiment, checkpoint, epoch), one column per set: the
    pooled EER in % as the metrics file states it (NaN where that set was not scored)."""
    sets = set_names(results)
    cells = _newest_per_cell(results)
    rows: dict[str, dict[str, Any]] = {}
    for (row, name), r in cells.items():
        entry = rows.setdefault(row, {"experiment": r.experiment, "checkpoint": r.checkpoint, "epoch": r.epoch})
        entry[name] = r.eer if r.eer is not None else math.nan
        if entry["epoch"] is None:
            entry["epoch"] = r.epoch
    frame = pd.DataFrame(list(rows.values()), columns=[*ROW_COLUMNS, *sets])
    frame["epoch"] = pd.array(frame["epoch"], dtype="Int64")
    for name in sets:
        frame[name] = frame[name].astype(float)
    return frame.sort_values(["experiment", "checkpoint"], ignore_index=True)


def best_rows(board: pd.DataFrame) -> dict[str, int]:
    """Set column -> index of its lowest EER (sets nobody scored are left out)."""
    return {c: int(board[c].idxmin()) for c in board.columns if c not in ROW_COLUMNS and board[c].notna().any()}


def leaderboard_csv(board: pd.DataFrame) -> bytes:
    return board.to_csv(index=False, float_format="%.4f").encode("utf-8")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def leaderboard_latex(board: pd.DataFrame) -> str:
    """A ``tabular`` (booktabs) of the leaderboard: EER in %, two decimals, the best per set bold."""
    sets = [c for c in board.columns if c not in ROW_COLUMNS]
    best = best_rows(board)
    head = ["Experiment", "Checkpoint", "Epoch", *(f"{latex_escape(s)} EER (\\%)" for s in sets)]
    lines = [r"\begin{tabular}{ll r" + "r" * len(sets) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for i, row in board.iterrows():
        cells = [latex_escape(row["experiment"]), latex_escape(row["checkpoint"]),
                 "" if pd.isna(row["epoch"]) else str(int(row["epoch"]))]
        for s in sets:
            value = row[s]
            text = "--" if pd.isna(value) else f"{value:.2f}"
            cells.append(f"\\textbf{{{text}}}" if best.get(s) == i else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def best_by_eval(results: list[EvalResult]) -> dict[str, EvalResult]:
    """Set -> the result with the lowest pooled EER (the "best by eval EER" checkpoint)."""
    best: dict[str, EvalResult] = {}
    for r in results:
        if r.eer is not None and (r.set_name not in best or r.eer < best[r.set_name].eer):
            best[r.set_name] = r
    return best


def checkpoint_eval_columns(results: list[EvalResult]) -> pd.DataFrame:
    """Checkpoint file name -> one ``eval EER <set>`` column per set (for the Checkpoints table)."""
    board = leaderboard(results)
    sets = [c for c in board.columns if c not in ROW_COLUMNS]
    return board[["checkpoint", *sets]].rename(columns={s: eval_column(s) for s in sets})


def eval_column(name: str) -> str:
    return f"eval EER {name}"


def best_eval_text(results: list[EvalResult]) -> str:
    """``DF 1.90% (checkpoint_epoch_3.pth) · LA 2.85% (...)`` for the Experiments table."""
    return " · ".join(f"{name} {r.eer:.2f}% ({r.checkpoint})" for name, r in sorted(best_by_eval(results).items()))


# --- one result's conditions ----------------------------------------------------------------------------

def condition_table(metrics_path: Path, what: str = "eer") -> pd.DataFrame | None:
    """The breakdown the metrics file holds (attack x codec for LA, vocoder x compression for DF)
    as rows x columns, ``Pooled`` last; None when the set has no conditions (In-the-Wild)."""
    doc = read_metrics(metrics_path)
    table = (doc or {}).get("breakdown")
    if not isinstance(table, dict) or not isinstance(table.get(what), list):
        return None
    values = [[math.nan if v is None else float(v) for v in row] for row in table[what]]
    return pd.DataFrame(values, index=list(table["rows"]["tags"]), columns=list(table["cols"]["tags"]))


def condition_axes(metrics_path: Path) -> tuple[str, str]:
    """What the breakdown's rows and columns are (``attack``, ``codec``)."""
    table = (read_metrics(metrics_path) or {}).get("breakdown") or {}
    return str(table.get("rows", {}).get("column") or "condition"), str(table.get("cols", {}).get("column") or "")


# --- score files: parsed once per (path, size, mtime) ---------------------------------------------------

class _StampedCache:
    """A small LRU of values keyed by path, valid while the file's (size, mtime) is unchanged."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.items: OrderedDict[Path, tuple[tuple[int, int], Any]] = OrderedDict()
        self.lock = threading.Lock()
        self.loads = 0

    def get(self, path: Path, stamp: tuple[int, int]) -> Any | None:
        with self.lock:
            hit = self.items.get(path)
            if hit is None or hit[0] != stamp:
                return None
            self.items.move_to_end(path)
            return hit[1]

    def put(self, path: Path, stamp: tuple[int, int], value: Any) -> None:
        with self.lock:
            self.loads += 1
            self.items[path] = (stamp, value)
            self.items.move_to_end(path)
            while len(self.items) > self.entries:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.loads = 0


_SCORES = _StampedCache(_SCORE_CACHE_ENTRIES)
_KEYS = _StampedCache(_KEY_CACHE_ENTRIES)


def clear_cache() -> None:
    _SCORES.clear()
    _KEYS.clear()
    with _DOCS_LOCK:
        _DOCS.clear()


def score_loads() -> int:
    """How many times a score file was parsed (tests: a warm page parses none)."""
    return _SCORES.loads


def read_scores(path: Path) -> ScoreFile:
    """The score file (:mod:`training.dashboard.score_files`), parsed once while its (size,
    mtime) stays the same."""
    stamp = file_stamp(path)
    if stamp is None or not path.is_file():
        raise EvaluationViewError(f"{path}: score file not found")
    cached = _SCORES.get(path, stamp)
    if cached is not None:
        return cached
    try:
        parsed = parse_score_file(path.read_bytes(), path)
    except OSError as exc:
        raise EvaluationViewError(f"{path}: cannot read the score file ({exc.strerror})") from None
    except ScoreFileError as exc:
        raise EvaluationViewError(str(exc)) from None
    _SCORES.put(path, stamp, parsed)
    return parsed


def read_labels_cached(path: Path, track: str) -> KeyLabels:
    """The key's labels and subsets (:mod:`training.dashboard.key_labels`), read once per (size, mtime)."""
    from training.evaluation.keys import EvalInputError

    stamp = file_stamp(path)
    if stamp is None:
        raise EvaluationViewError(f"{path}: the key this evaluation used is gone")
    cached = _KEYS.get((path, track), stamp)
    if cached is not None:
        return cached
    try:
        key = read_key_labels(path, track)
    except EvalInputError as exc:
        raise EvaluationViewError(str(exc)) from None
    _KEYS.put((path, track), stamp, key)
    return key


@dataclass(frozen=True)
class LabelledScores:
    scores: np.ndarray  # float64, the trials of the evaluated subset
    labels: np.ndarray  # int8: 1 bona fide, 0 spoof


def labelled_scores(result: EvalResult) -> LabelledScores:
    """The scores of the trials the pooled EER covers (the key's subset), with their labels."""
    if result.key_path is None:
        raise EvaluationViewError(f"{result.metrics_path}: names no key, so its trials have no labels")
    key = read_labels_cached(result.key_path, result.track)
    parsed = read_scores(result.score_path)
    if len(parsed) == len(key) and parsed.ids.equals(key.ids):
        scores = parsed.scores  # --eval writes key order: no join needed
    else:
        rows = key.positions(parsed.ids)  # both unique, so equal lengths and no -1 mean a permutation
        if len(rows) != len(key) or (rows < 0).any():
            raise EvaluationViewError(f"{result.score_path}: does not match the key {result.key_path}")
        scores = np.empty(len(key))
        scores[rows] = parsed.scores
    keep = key.subset_mask(result.subset)
    if keep is None:
        raise EvaluationViewError(f"{result.key_path}: has no subset column, so subset '{result.subset}' is unknown")
    return LabelledScores(scores[keep], key.labels[keep])


# --- eval EER next to the validation EER (Experiments and Checkpoints pages) ------------------------------
# The Experiments table's best_eval_eer column is built by the catalog's scan (best_eval_text), once per
# folder change.

def with_eval_columns(rows: pd.DataFrame, models_root: Path | str, experiment: str) -> pd.DataFrame:
    """One experiment's checkpoint rows plus an ``eval EER <set>`` column per set it was scored on,
    matched by checkpoint file name."""
    results = experiment_results(models_root, experiment)
    if not results or rows.empty:
        return rows
    return rows.merge(checkpoint_eval_columns(results), how="left", left_on="file", right_on="checkpoint",
                      suffixes=("", "_eval")).drop(columns=["checkpoint"])


def best_checkpoints_text(rows: pd.DataFrame, models_root: Path | str, experiment: str) -> str:
    """``Best by val EER: X (2.10%) · best by eval EER: DF Y (1.90%)`` for the Checkpoints page."""
    parts = []
    if "val_eer" in rows and rows["val_eer"].notna().any():
        best = rows.loc[rows["val_eer"].idxmin()]
        parts.append(f"best by val EER: `{best['file']}` ({best['val_eer']:.2f}%)")
    for name, r in sorted(best_by_eval(experiment_results(models_root, experiment)).items()):
        parts.append(f"best by eval EER ({name}): `{r.checkpoint}` ({r.eer:.2f}%)")
    return " · ".join(parts)
