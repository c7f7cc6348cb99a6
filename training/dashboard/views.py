"""What the dashboard's read pages show, shaped from the catalog's DataFrames (no Streamlit here).

The pages (Experiments, Curves, Checkpoints) only render; filtering, the rows of the checkpoint
table, which files may be deleted or resumed and the Launch page's link parameters live here so
they are tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from training.checkpoint import resumable
from training.naming import checkpoint_sort_key, parse_checkpoint_name

STATUSES = ("running", "finished", "interrupted", "empty")
RESUMABLE_KINDS = frozenset({"full", "best"})            # carry optimizer state and counters
WEIGHT_KINDS = frozenset({"full", "best", "legacy"})     # hold model weights usable as a start
LAUNCH_PAGE = "pages/launch.py"


def filter_experiments(experiments: pd.DataFrame, text: str = "", model_types: Iterable[str] = (),
                       tracks: Iterable[str] = (), statuses: Iterable[str] = ()) -> pd.DataFrame:
    """Rows whose name, comment or tags contain ``text`` (case-insensitive) and whose model type,
    track and status are among those given (an empty choice means any)."""
    keep = pd.Series(True, index=experiments.index)
    text = text.strip().lower()
    if text:
        haystack = experiments["name"].astype(str).str.lower()
        for column in ("comment", "tags"):  # tags: the Experiments page adds them (notes.json)
            if column in experiments:
                haystack = haystack + " " + experiments[column].fillna("").astype(str).str.lower()
        keep &= haystack.str.contains(text, regex=False)
    for column, wanted in (("model_type", model_types), ("track", tracks), ("status", statuses)):
        wanted = list(wanted)
        if wanted and column in experiments:
            keep &= experiments[column].isin(wanted)
    return experiments[keep]


def distinct_values(experiments: pd.DataFrame, column: str) -> list[str]:
    """The sorted non-empty values of a column (the options of a filter)."""
    if column not in experiments:
        return []
    return sorted({str(v) for v in experiments[column].dropna() if str(v)})


def selection_rows(visible_names: list[str], selected: Iterable[str]) -> list[int]:
    """Row positions in the shown table of the experiments already selected (to pre-select)."""
    chosen = set(selected)
    return [i for i, name in enumerate(visible_names) if name in chosen]


def merge_selection(previous: list[str], visible_names: list[str], picked_rows: Iterable[int]) -> list[str]:
    """The new selection after picking rows of a filtered table: experiments hidden by the
    filter stay selected, the visible ones are exactly the rows picked (in table order)."""
    visible = set(visible_names)
    picked = [visible_names[i] for i in sorted(set(picked_rows)) if 0 <= i < len(visible_names)]
    return [name for name in previous if name not in visible] + picked


def auto_resume_params(experiment: str) -> dict[str, str]:
    """The Launch page's query parameters for auto-resuming an experiment."""
    return {"mode": "auto_resume", "experiment": experiment}


def checkpoint_launch_params(mode: str, experiment: str, file: str) -> dict[str, str]:
    """The Launch page's query parameters to resume (``resume``) or fine-tune from
    (``pretrained``) one checkpoint, named ``<experiment>/<file>`` under the models root."""
    if mode not in ("resume", "pretrained"):
        raise ValueError(f"launch mode {mode!r}: expected 'resume' or 'pretrained'")
    return {"mode": mode, "checkpoint": f"{experiment}/{file}"}


def checkpoint_table(checkpoints: pd.DataFrame, experiment: str, protected: Mapping[str, str]) -> pd.DataFrame:
    """One experiment's checkpoints in ``--list_checkpoints`` order (epochs numerically, then
    interrupt, best, others) with a ``protected`` column: why the file may not be deleted, or ''."""
    rows = checkpoints[checkpoints["experiment"] == experiment].copy()
    rows["protected"] = [protected.get(f, "") for f in rows["file"]]
    order = sorted(rows["file"], key=checkpoint_sort_key)
    return rows.set_index("file", drop=False).loc[order].reset_index(drop=True)


def deletable_files(table: pd.DataFrame) -> list[str]:
    """Files of a checkpoint table that may be offered for deletion (the unprotected ones)."""
    return [f for f, reason in zip(table["file"], table["protected"]) if not reason]


def can_resume(kind: str) -> bool:
    return kind in RESUMABLE_KINDS


def can_fine_tune(kind: str) -> bool:
    return kind in WEIGHT_KINDS


def progress_text(epochs_done: object, target: object) -> str:
    """"epoch 3 of 100"; the target is left out when unknown (no args, an unparsed folder name)."""
    done = int(epochs_done) if pd.notna(epochs_done) else 0
    return f"epoch {done} of {int(target)}" if pd.notna(target) else f"epoch {done} (target unknown)"


def weights_checkpoint(checkpoints: pd.DataFrame, experiment: str) -> str | None:
    """The file to fine-tune from when an experiment cannot be resumed: its best file, else the
    highest epoch holding weights; None when it has no readable weights."""
    rows = checkpoints[(checkpoints["experiment"] == experiment) & checkpoints["kind"].isin(list(WEIGHT_KINDS))]
    if rows.empty:
        return None
    best = rows[rows["role"] == "best"]
    if len(best):
        return str(best["file"].iloc[0])
    return str(rows.assign(_epoch=rows["epoch"].fillna(-1)).sort_values("_epoch", kind="stable")["file"].iloc[-1])


def resume_rank_of_row(row: pd.Series) -> tuple[Any, ...]:
    """A scan row's place in auto-resume's order (``training.checkpoint.resumable``)."""
    modified = row.get("modified")  # a frame made by hand may lack the scan's time and step columns
    mtime = modified.timestamp() if modified is not None and pd.notna(modified) else None
    step = row.get("step_in_epoch")
    return resumable.resume_rank(row["epoch"], 0 if step is None or pd.isna(step) else step, row["file"], mtime)


def newest_resumable(checkpoints: pd.DataFrame, experiment: str) -> pd.Series | None:
    """The scan's row of the checkpoint ``--auto_resume`` would continue ``experiment`` from
    (None when it holds no full checkpoint with an epoch: weights-only files cannot resume)."""
    rows = checkpoints[(checkpoints["experiment"] == experiment) & checkpoints["kind"].isin(list(RESUMABLE_KINDS))
                       & checkpoints["epoch"].notna()]
    return resumable.newest((row for _, row in rows.iterrows()), resume_rank_of_row)


def args_checkpoint(checkpoints: pd.DataFrame, experiment: str) -> Path | None:
    """The checkpoint whose ``args`` stand for an experiment's hyperparameters: the one
    auto-resume would continue (:func:`newest_resumable`), else the readable one furthest along."""
    newest = newest_resumable(checkpoints, experiment)
    if newest is not None:
        return Path(newest["path"])
    rows = checkpoints[(checkpoints["experiment"] == experiment) & checkpoints["kind"].isin(list(WEIGHT_KINDS))]
    if rows.empty:
        return None
    rank = {"full": 0, "best": 1, "legacy": 2}
    rows = rows.assign(_epoch=rows["epoch"].fillna(-1).astype("int64"), _rank=rows["kind"].map(rank))
    best = rows.sort_values(["_rank", "_epoch"], ascending=[True, False], kind="stable").iloc[0]
    return Path(best["path"])


def args_checkpoints(checkpoints: pd.DataFrame) -> dict[str, Path]:
    """:func:`args_checkpoint` of every experiment at once, by sorting the frame once (a filter
    per experiment would cost the whole frame per experiment: quadratic on a large root)."""
    if checkpoints.empty:
        return {}
    ranked = checkpoints.assign(
        _epoch=pd.to_numeric(checkpoints["epoch"], errors="coerce"),
        _step=pd.to_numeric(checkpoints["step_in_epoch"], errors="coerce").fillna(0) if "step_in_epoch" in checkpoints else 0,
        _role=_roles(checkpoints).map(resumable.ROLE_PREFERENCE).fillna(0),
        _mtime=_seconds(checkpoints["modified"]) if "modified" in checkpoints else -math.inf)
    resumable_rows = ranked[ranked["kind"].isin(list(RESUMABLE_KINDS)) & ranked["_epoch"].notna()]
    # newest first; ties keep the frame's order, as max() over the rows would
    newest = resumable_rows.sort_values(["_epoch", "_step", "_role", "_mtime"], ascending=False, kind="stable")
    chosen = _path_by_experiment(newest.drop_duplicates("experiment"))
    rank = {"full": 0, "best": 1, "legacy": 2}
    weights = ranked[ranked["kind"].isin(list(WEIGHT_KINDS)) & ~ranked["experiment"].isin(list(chosen))]
    weights = weights.assign(_rank=weights["kind"].map(rank), _epoch=weights["_epoch"].fillna(-1))
    fallback = weights.sort_values(["_rank", "_epoch"], ascending=[True, False], kind="stable")
    chosen.update(_path_by_experiment(fallback.drop_duplicates("experiment")))
    return {str(name): Path(path) for name, path in chosen.items()}


def _path_by_experiment(rows: pd.DataFrame) -> dict[str, str]:
    # two columns as lists: transposing the frame would build one column per row
    return dict(zip(rows["experiment"].tolist(), rows["path"].tolist()))


def _roles(checkpoints: pd.DataFrame) -> pd.Series:
    """The scan's role column; a frame made by hand gets it from the file names."""
    if "role" in checkpoints:
        return checkpoints["role"]
    return checkpoints["file"].map(lambda name: parse_checkpoint_name(str(name)).role)


def _seconds(modified: pd.Series) -> pd.Series:
    """File times as comparable numbers (NaT: older than any)."""
    times = pd.to_datetime(modified, errors="coerce")
    return pd.Series(times.astype("int64"), index=modified.index).where(times.notna(), -math.inf).astype(float)


PICKER_LIMIT = 200  # options a picker sends to the browser; more are reached by typing


def bounded_options(options: list[str], text: str, keep: Iterable[str | None] = (),
                    limit: int | None = None) -> list[str]:
    """A picker's options: those containing ``text`` (case-insensitive), at most ``limit`` of
    them (PICKER_LIMIT), plus ``keep`` (the current choice) when it is an option; a select box of
    20,000 options is sent to the browser whole, this one stays small while the text narrows it."""
    limit = PICKER_LIMIT if limit is None else limit
    needle = text.strip().lower()
    shown = [o for o in options if needle in o.lower()][:limit] if needle else options[:limit]
    known = set(options)
    extra = [k for k in dict.fromkeys(keep) if k is not None and k in known and k not in shown]
    return extra + shown


def diff_targets(checkpoints: pd.DataFrame) -> dict[str, Path]:
    """What the hyperparameter diff can compare, by label -> the checkpoint to read ``args``
    from: each experiment (``name``, its newest full checkpoint) and each checkpoint
    (``name/file``), experiments first."""
    chosen = args_checkpoints(checkpoints)
    experiments = {name: chosen[name] for name in sorted(chosen)}
    files: dict[str, Path] = {}
    readable = checkpoints[checkpoints["kind"].isin(list(WEIGHT_KINDS))]
    for exp, file, path in sorted(zip(readable["experiment"], readable["file"], readable["path"]),
                                  key=lambda r: (r[0], checkpoint_sort_key(r[1]))):
        files[f"{exp}/{file}"] = Path(path)
    return {**experiments, **files}


def default_detail_file(table: pd.DataFrame) -> str | None:
    """The checkpoint whose details a page opens with: the best checkpoint file, else the epoch of
    the lowest validation EER, else the newest (last) file; None for an empty table."""
    if table.empty:
        return None
    best = table[table["role"] == "best"]
    if len(best):
        return str(best["file"].iloc[0])
    eer = pd.to_numeric(table.get("val_eer", pd.Series(dtype=float)), errors="coerce")
    if eer.notna().any():
        return str(table.loc[eer.idxmin(), "file"])
    return str(table["file"].iloc[-1])


PERCENT_WORDS = ("eer", "acc")  # metrics stored in percent (the guide's EER and accuracy)


def format_metric(name: str, value: Any) -> str:
    """A metric as the tables show it: EER and accuracy as ``29.69 %``, losses and other numbers
    with 4 decimals, anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) and not any(w in name.lower() for w in PERCENT_WORDS):
        return str(value)
    if any(w in name.lower() for w in PERCENT_WORDS):
        return f"{float(value):.2f} %"
    return f"{float(value):.4f}"


def continued_in(experiments: pd.DataFrame, name: str) -> list[str]:
    """Experiments that resumed ``name`` into their own folder from its latest epoch (or later):
    the run goes on there, so continuing ``name`` itself would fork it. Uses the scan's lineage
    columns (``lineage_mode``, ``parent_experiment``, ``parent_epoch``, ``epochs_done``)."""
    needed = {"name", "lineage_mode", "parent_experiment", "parent_epoch", "epochs_done"}
    if experiments.empty or not needed <= set(experiments.columns):
        return []
    own = experiments[experiments["name"] == name]
    done = own["epochs_done"].iloc[0] if len(own) else None
    done = int(done) if done is not None and pd.notna(done) else 0
    children = experiments[(experiments["lineage_mode"] == "resume") & (experiments["parent_experiment"] == name)]
    return [str(child) for child, epoch in zip(children["name"], children["parent_epoch"])
            if pd.notna(epoch) and int(epoch) >= done]
