"""SIGKILL a real training run again and again, auto-resume after each kill, compare with a run
that was never interrupted.

Used by ``tests/test_crash_safety.py`` (10 kills) and ``bench/bench_kill_resume.py`` (50 kills)::

    report = run_kill_experiment(args, workdir, kills=10, seed=0)
    print(report.summary())   # kills survived 10/10, unreadable files 0, mismatched tensors 0

``args`` are ``main.py`` arguments that include ``--auto_resume``; the same list trains the
reference (in its own folder, uninterrupted) and every killed attempt. Kill moments are drawn
from a seeded generator, in three kinds:

* ``launch``: a delay from process start: lands in the torch import, setup or folder preparation;
* ``train``: a delay after the run printed ``Training ...``: lands in an epoch or a save;
* ``save``: poll the experiment folder for a save's temporary file (``.X.pth.tmp.PID.HEX`` or
  ``.X.pth.meta.json.tmp.PID.HEX``, training.checkpoint.fsutil's one scheme) and kill as soon as one
  appears, i.e. inside ``atomic_save`` or between a checkpoint and its sidecar.

Each kill must lose no complete checkpoint: the next run must resume at least from the newest
epoch whose sidecar existed before the kill. At the end every ``.pth`` on disk must be readable
(metadata reader and ``torch.load(weights_only=True)``), no temporary file may be left, and the
weights, optimizer state and metrics of every epoch must equal the reference's bit for bit.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cli_helpers import run_main, start_main
from training.checkpoint.fsutil import SIDECAR_SUFFIX
from training.checkpoint.meta import read_checkpoint_info
from training.naming import CHECKPOINT_SUFFIX, parse_checkpoint_name
from training.naming import LOG_NAME

STARTED_LINE = "Training "  # printed once setup is done and the loop begins
RESUMED = re.compile(r"Auto-resume: resuming from .*: epoch (\d+) completed")
FRESH = "Auto-resume: no usable checkpoint"
METRIC_KEYS = ("epoch", "train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer", "best_epoch")
ROW_KEYS = ("epoch", "train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer", "lr")
KILL_MODES = (("launch", 0.2), ("train", 0.45), ("save", 0.35))  # (kind, share of the kills)
POLL_S = 0.0005  # the save window of a tiny model is a few milliseconds


# --- what happened ----------------------------------------------------------------------------

@dataclass
class Timing:
    """Measured on the reference run: seconds to the ``Training`` line and per epoch."""

    startup_s: float
    epoch_s: float


@dataclass
class Kill:
    mode: str
    delay_s: float
    complete_epoch: int           # newest epoch checkpoint with a sidecar just before the kill
    temp_left: bool = False       # a save's temporary file was still there: killed inside a save
    resumed_epoch: int | None = None  # where the next run resumed (None: it never said)
    next_run_failed: str = ""     # the next run exited non-zero on its own: why


@dataclass
class KillReport:
    """Everything the test asserts on and the bench prints."""

    planned: int
    kills: list[Kill] = field(default_factory=list)
    final_code: int | None = None
    final_output: str = ""
    finished_early: bool = False   # a run completed before all planned kills happened
    unreadable: list[str] = field(default_factory=list)
    mismatched_tensors: list[str] = field(default_factory=list)
    mismatched_metrics: list[str] = field(default_factory=list)
    temp_files_left: list[str] = field(default_factory=list)
    skip_lines: list[str] = field(default_factory=list)  # "Auto-resume: skipping ..." (none expected)
    run_failures: list[str] = field(default_factory=list)  # attempts that exited non-zero on their own

    @property
    def lost_progress(self) -> list[str]:
        return [f"kill {i + 1} ({k.mode}): epoch {k.complete_epoch} was complete, next run resumed at "
                f"{k.resumed_epoch}" for i, k in enumerate(self.kills)
                if k.resumed_epoch is not None and k.resumed_epoch < k.complete_epoch]

    @property
    def survived(self) -> int:
        """Kills after which the next run resumed without losing a complete checkpoint or failing."""
        return sum(1 for k in self.kills if not k.next_run_failed and k.resumed_epoch is not None
                   and k.resumed_epoch >= k.complete_epoch)

    @property
    def inside_save(self) -> int:
        return sum(1 for k in self.kills if k.temp_left)

    def summary(self) -> str:
        return (f"kills survived {self.survived}/{self.planned}, unreadable files {len(self.unreadable)}, "
                f"mismatched tensors {len(self.mismatched_tensors)}")

    def problems(self) -> list[str]:
        """Every way the run differs from 'all kills survived, identical result'; empty is good."""
        out = [f"only {len(self.kills)} of {self.planned} kills happened (a run finished first)"] \
            if len(self.kills) < self.planned else []
        out += self.run_failures
        out += self.lost_progress
        if self.final_code != 0:
            out.append(f"final run exited {self.final_code}: {self.final_output[-2000:]}")
        out += [f"unreadable: {u}" for u in self.unreadable]
        out += [f"tensor differs: {t}" for t in self.mismatched_tensors]
        out += [f"metric differs: {m}" for m in self.mismatched_metrics]
        out += [f"temp file left: {t}" for t in self.temp_files_left]
        out += [f"unexpected skip: {s}" for s in self.skip_lines]
        return out


# --- the experiment folder --------------------------------------------------------------------

def experiment_folder(cwd: Path) -> Path:
    """The one experiment folder under ``cwd/models`` (each attempt runs in its own cwd)."""
    folders = [p for p in (cwd / "models").iterdir() if p.is_dir()] if (cwd / "models").is_dir() else []
    if len(folders) != 1:
        raise AssertionError(f"expected one experiment folder under {cwd / 'models'}, found {folders}")
    return folders[0]


def temp_files(cwd: Path) -> list[Path]:
    """Unfinished-save files anywhere under ``cwd/models``: dot-names with a ``.tmp`` mark."""
    root = cwd / "models"
    return sorted(p for p in root.rglob(".*") if ".tmp" in p.name) if root.is_dir() else []


def newest_complete_epoch(cwd: Path) -> int:
    """The newest epoch checkpoint whose sidecar exists: the sidecar is written after the file."""
    root = cwd / "models"
    epochs = [parse_checkpoint_name(p.name[: -len(SIDECAR_SUFFIX)]).epoch or 0
              for p in root.glob(f"*/*{CHECKPOINT_SUFFIX}{SIDECAR_SUFFIX}")
              if parse_checkpoint_name(p.name[: -len(SIDECAR_SUFFIX)]).role == "epoch"] if root.is_dir() else []
    return max(epochs, default=0)


def unreadable_files(folder: Path) -> list[str]:
    """Every ``.pth`` under ``folder`` (archive included) that the metadata reader or
    ``torch.load(weights_only=True)`` cannot read, with the reason."""
    bad = []
    for path in sorted(folder.rglob(f"*{CHECKPOINT_SUFFIX}")):
        if path.name.startswith("."):
            continue  # temp files are counted separately
        info = read_checkpoint_info(path)
        if info.kind in ("unreadable", "unsafe"):
            bad.append(f"{path}: {info.kind}: {info.reason}")
            continue
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any failure means the file is not usable
            bad.append(f"{path}: torch.load(weights_only=True) failed: {type(exc).__name__}: {str(exc)[:200]}")
    return bad


# --- comparing two runs -----------------------------------------------------------------------

def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Flatten nested dicts/lists to (dotted name, leaf)."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}.{i}")
    else:
        yield prefix, obj


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def compare_states(name: str, ref: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Names of leaves (tensors, step counts, hyperparameters) that differ between two states."""
    ref_leaves, got_leaves = dict(_tensors(ref, name)), dict(_tensors(got, name))
    return [key for key in sorted(ref_leaves.keys() | got_leaves.keys())
            if key not in ref_leaves or key not in got_leaves or not _same_value(ref_leaves[key], got_leaves[key])]


def _metrics(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ckpt.get(k) for k in METRIC_KEYS}


def _rows(history: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: row.get(k) for k in ROW_KEYS} for row in history]


def _own_rows(ckpt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The history rows a checkpoint itself holds: its last row (an earlier version's whole list)."""
    if isinstance(ckpt.get("history"), list):
        return ckpt["history"]
    return [ckpt["history_row"]] if ckpt.get("history_row") else []


def log_rows_by_epoch(folder: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``training_log.csv`` deduplicated by epoch, and epochs whose repeated rows disagree."""
    rows: dict[str, dict[str, str]] = {}
    conflicts = []
    with open(folder / LOG_NAME, newline="") as f:
        for row in csv.DictReader(f):
            values = {k: row[k] for k in ROW_KEYS}
            if row["epoch"] in rows and rows[row["epoch"]] != values:
                conflicts.append(f"{LOG_NAME}: epoch {row['epoch']} logged twice with different values")
            rows[row["epoch"]] = values
    return rows, conflicts


def compare_runs(reference: Path, candidate: Path) -> tuple[list[str], list[str]]:
    """(mismatched tensors, mismatched metrics) between two experiment folders, over every epoch
    checkpoint and the best checkpoint of the reference, and the deduplicated CSV log."""
    tensors: list[str] = []
    metrics: list[str] = []
    names = sorted((p.name for p in reference.glob(f"*{CHECKPOINT_SUFFIX}")),
                   key=lambda n: (parse_checkpoint_name(n).role, parse_checkpoint_name(n).epoch or 0))
    for name in names:
        if not (candidate / name).is_file():
            metrics.append(f"{name}: missing")
            continue
        ref = torch.load(reference / name, map_location="cpu", weights_only=True)
        got = torch.load(candidate / name, map_location="cpu", weights_only=True)
        for part in ("model_state_dict", "optimizer_state_dict"):
            tensors += compare_states(f"{name}:{part}", ref[part], got[part])
        if _metrics(ref) != _metrics(got):
            metrics.append(f"{name}: {_metrics(ref)} != {_metrics(got)}")
        if _rows(_own_rows(ref)) != _rows(_own_rows(got)):  # the rest of the history: the log, below
            metrics.append(f"{name}: history differs")
    ref_log, _ = log_rows_by_epoch(reference)
    got_log, conflicts = log_rows_by_epoch(candidate)
    metrics += conflicts
    if ref_log != got_log:
        differing = sorted((e for e in ref_log.keys() | got_log.keys() if ref_log.get(e) != got_log.get(e)), key=int)
        metrics.append(f"{LOG_NAME}: rows differ for epochs {differing}")
    return tensors, metrics


# --- running and killing ----------------------------------------------------------------------

def _read(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except OSError:
        return ""


def _wait_until(proc: subprocess.Popen, predicate, timeout: float, interval: float) -> bool:
    """Poll ``predicate`` until true (True) or the process exits / time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(interval)
    return False


def run_reference(args: list[str], cwd: Path) -> Timing:
    """The uninterrupted run; returns how long setup and an epoch take on this machine now."""
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd / "reference.log"
    launched = time.monotonic()
    proc = start_main(args, cwd, log)
    _wait_until(proc, lambda: STARTED_LINE in _read(log), timeout=300, interval=0.01)
    started = time.monotonic()
    code = proc.wait(timeout=600)
    if code != 0:
        raise AssertionError(f"reference run exited {code}: {_read(log)[-2000:]}")
    epochs = int(args[args.index("--num_epochs") + 1])
    return Timing(startup_s=started - launched, epoch_s=max((time.monotonic() - started) / epochs, 0.01))


def _resumed_epoch(output: str) -> int | None:
    match = RESUMED.search(output)
    if match:
        return int(match.group(1))
    return 0 if FRESH in output else None


def _kill_one(args: list[str], cwd: Path, log: Path, mode: str, rng: random.Random, timing: Timing,
              epochs: int) -> tuple[Kill | None, int | None, str]:
    """Start one attempt and SIGKILL it at the moment ``mode`` picks.

    Returns (the kill or None if the run exited first, its exit code if it did, its output).
    """
    start_epoch = newest_complete_epoch(cwd)
    remaining = max(epochs - start_epoch, 1)
    temps_before = set(temp_files(cwd))  # left by earlier kills: not this attempt's saves

    def new_temp() -> bool:
        return bool(set(temp_files(cwd)) - temps_before)

    proc = start_main(args, cwd, log)
    delay = 0.0
    try:
        if mode == "save" and remaining == 1:
            # The last epoch's save may complete the run before the kill lands (a kill after its
            # sidecar leaves nothing to resume): kill inside that epoch's training instead.
            mode = "train"
        # Never let an attempt finish the run: kill at once when the last epoch is all that is
        # left (however fast the machine runs compared with the reference run's timing).
        def only_last_left() -> bool:
            return start_epoch < epochs - 1 <= newest_complete_epoch(cwd)

        if mode == "launch":
            delay = rng.uniform(0.0, timing.startup_s + 0.5 * timing.epoch_s)
            _wait_until(proc, only_last_left, timeout=delay, interval=0.01)
        elif _wait_until(proc, lambda: STARTED_LINE in _read(log), timeout=300, interval=0.005):
            if mode == "train":
                # Up to 2.5 epochs in, but well inside the epochs still to train, so the kill
                # comes before the run ends and the attempts make progress between kills.
                delay = rng.uniform(0.0, min(2.5, 0.5 * remaining) * timing.epoch_s)
                _wait_until(proc, only_last_left, timeout=delay, interval=0.01)
            else:
                # Let 0-2 saves complete first, then kill inside the next one.
                skip = rng.randint(0, max(0, min(2, remaining - 2)))
                deadline = 120 + 5 * remaining * timing.epoch_s
                _wait_until(proc, lambda: newest_complete_epoch(cwd) >= start_epoch + skip, deadline, 0.005)
                _wait_until(proc, new_temp, timeout=deadline, interval=POLL_S)
        if proc.poll() is not None:
            return None, proc.returncode, _read(log)
        complete = newest_complete_epoch(cwd)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # an assertion or timeout above: never leave a trainer behind
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    return Kill(mode, round(delay, 4), complete, temp_left=new_temp()), None, _read(log)


def kill_loop(args: list[str], cwd: Path, kills: int, seed: int, timing: Timing) -> KillReport:
    """``kills`` SIGKILLs in a row, auto-resuming after each, then one run to the end."""
    cwd.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    epochs = int(args[args.index("--num_epochs") + 1])
    report = KillReport(planned=kills)
    modes, weights = zip(*KILL_MODES)
    for attempt in range(kills):
        log = cwd / f"attempt_{attempt:03d}.log"
        kill, code, output = _kill_one(args, cwd, log, rng.choices(modes, weights)[0], rng, timing, epochs)
        _note_next_run(report, output, code)
        report.skip_lines += [line for line in output.splitlines() if "Auto-resume: skipping" in line]
        if kill is None:
            report.finished_early = code == 0
            if code != 0:
                continue  # recorded on the previous kill; keep trying so the report shows all
            break
        report.kills.append(kill)
    final = run_main(args, cwd, timeout=600)
    _note_next_run(report, final.text, final.code)
    report.skip_lines += [line for line in final.text.splitlines() if "Auto-resume: skipping" in line]
    report.final_code, report.final_output = final.code, final.text
    return report


def _note_next_run(report: KillReport, output: str, code: int | None) -> None:
    """Record where the run after a kill resumed, and whether it failed on its own. A run killed
    before it chose a checkpoint says nothing: its kill waits for the next run that does."""
    resumed = _resumed_epoch(output)
    for kill in report.kills:
        if kill.resumed_epoch is None and resumed is not None:
            kill.resumed_epoch = resumed
    if code not in (None, 0):
        last_line = output.strip().splitlines()[-1] if output.strip() else ""
        report.run_failures.append(f"a run after kill {len(report.kills)} exited {code} on its own: {last_line}")
        if report.kills and not report.kills[-1].next_run_failed:
            report.kills[-1].next_run_failed = f"exit {code}: {last_line}"


def check_result(report: KillReport, reference: Path, killed_cwd: Path) -> KillReport:
    """Fill in the on-disk checks: unreadable files, leftover temp files, and (if the last run
    finished) every difference from the reference experiment folder."""
    candidate = experiment_folder(killed_cwd)
    report.unreadable = unreadable_files(candidate)
    report.temp_files_left = [str(p) for p in temp_files(killed_cwd)]
    if report.final_code == 0:
        report.mismatched_tensors, report.mismatched_metrics = compare_runs(reference, candidate)
    return report


def run_kill_experiment(args: list[str], workdir: Path, kills: int, seed: int) -> KillReport:
    """Reference run, kill loop, final checks. ``args`` must contain --auto_resume and --num_epochs."""
    if "--auto_resume" not in args:
        raise ValueError("the kill harness needs --auto_resume in args")
    timing = run_reference(args, workdir / "reference")
    report = kill_loop(args, workdir / "killed", kills, seed, timing)
    return check_result(report, experiment_folder(workdir / "reference"), workdir / "killed")
