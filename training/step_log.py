"""A run's step-level log: ``training_steps.csv`` in its experiment folder (``--log_every_steps N``).

Owns the file's columns, the writer the trainer calls after each step, the clean-up a run does
before it appends (a torn last line, rows past the checkpoint it resumes), and the one parser
readers use (the dashboard's Curves and Jobs pages). Torch-free: the loss arrives as a tensor or
a number and is only turned into a float on the rows written.

Cheap by design: a step that writes nothing costs one modulo; a row written costs one host sync
(the loss), one formatted line and a flush (no fsync: the file is a progress trace, and what a
crash loses of it is re-logged by the resumed run). Crash-safe like the epoch log: rows are
appended whole and flushed, so a reader sees complete lines; a kill mid-write leaves a torn last
line, which readers ignore and the next run cuts off before appending. A resumed run drops the
rows past its checkpoint's position, which it trains (and logs) again, so the file tells one
story: one row per (epoch, step), in order.

Rows: every N-th step of an epoch and its last step, with ``epoch`` (1-based), ``step`` (1-based
in the epoch), ``steps_in_epoch``, ``global_step``, ``loss`` (of that step), ``lr``,
``samples_per_s`` (since the previous row of the epoch), ``elapsed_s`` (since this process began
training: it starts again from 0 at each resume) and ``timestamp`` (Unix time).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.checkpoint.fsutil import atomic_write
from training.naming import STEPS_LOG_NAME

STEP_COLUMNS = ("epoch", "step", "steps_in_epoch", "global_step", "loss", "lr", "samples_per_s", "elapsed_s",
                "timestamp", "experiment")
HEADER = ",".join(STEP_COLUMNS) + "\n"
_INTS = ("epoch", "step", "steps_in_epoch", "global_step")
_FLOATS = ("loss", "lr", "samples_per_s", "elapsed_s", "timestamp")


@dataclass(frozen=True)
class StepRow:
    epoch: int
    step: int
    steps_in_epoch: int
    global_step: int
    loss: float
    lr: float
    samples_per_s: float
    elapsed_s: float
    timestamp: float
    experiment: str

    @property
    def position(self) -> tuple[int, int]:
        return (self.epoch, self.step)


# --- reading ---------------------------------------------------------------------------------------

def _number(text: str, kind: type) -> Any:
    value = kind(float(text)) if kind is int else float(text)
    if kind is int and (value < 0 or float(text) != value):
        raise ValueError(text)
    return value


def parse_line(line: str) -> StepRow | None:
    """One complete data line as a row; None for the header, a blank or a malformed line."""
    try:
        cells = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None
    if len(cells) != len(STEP_COLUMNS) or cells[0] == "epoch":
        return None
    values = dict(zip(STEP_COLUMNS, cells))
    try:
        parsed = {k: _number(values[k], int) for k in _INTS}
        parsed.update({k: float(values[k]) if values[k] else math.nan for k in _FLOATS})
    except (ValueError, OverflowError):
        return None
    if parsed["epoch"] < 1 or parsed["step"] < 1:
        return None
    return StepRow(**parsed, experiment=values["experiment"])


def complete_lines(data: bytes) -> tuple[list[str], int]:
    """The whole lines of ``data`` and how many bytes they span; a last line without its newline
    (a write still in flight, or torn by a kill) is left for later."""
    end = data.rfind(b"\n") + 1
    text = data[:end].decode("utf-8", errors="replace")
    return text.splitlines(), end


def parse_rows(data: bytes) -> tuple[list[StepRow], int]:
    """(rows of the complete lines of ``data``, bytes consumed)."""
    lines, consumed = complete_lines(data)
    rows = [row for row in map(parse_line, lines) if row is not None]
    return rows, consumed


def read_step_log(exp_dir: Path | str) -> list[StepRow]:
    """Every complete row of a folder's step log (none when it has none)."""
    try:
        data = (Path(exp_dir) / STEPS_LOG_NAME).read_bytes()
    except OSError:
        return []
    return parse_rows(data)[0]


# --- before a run appends ---------------------------------------------------------------------------

def prepare_step_log(exp_dir: Path, keep_through: tuple[int, int] | None) -> int:
    """Make the folder's step log ready for a run to append; returns how many rows it dropped.

    Cuts off a torn last line (a kill mid-write), and with ``keep_through = (completed epochs,
    steps done of the next)`` (a resume) drops the rows past that position: the run trains those
    steps again and logs them anew. Lines are kept byte for byte; the file is replaced
    atomically, and only when something is dropped. Call it holding the folder's lock.
    """
    path = exp_dir / STEPS_LOG_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    lines, consumed = complete_lines(data)
    torn = consumed < len(data)
    kept = [line for line in lines if not _past(parse_line(line), keep_through)]
    dropped = len(lines) - len(kept)
    if dropped or torn:
        payload = "".join(line + "\n" for line in kept).encode("utf-8")
        atomic_write(path, lambda f: f.write(payload))
    return dropped


def _past(row: StepRow | None, keep_through: tuple[int, int] | None) -> bool:
    if row is None or keep_through is None:
        return False
    epochs, steps = keep_through
    return row.epoch > epochs + 1 or (row.epoch == epochs + 1 and row.step > steps)


# --- the writer ---------------------------------------------------------------------------------------

class StepLog:
    """Appends a row every ``every`` steps (and at each epoch's last step); ``every`` 0: off.

    ``lr`` reads the current learning rate (called on the rows written only).
    """

    def __init__(self, exp_dir: Path, experiment: str, every: int, lr: Callable[[], float]):
        self.path = exp_dir / STEPS_LOG_NAME
        self.experiment = experiment
        self.every = int(every or 0)
        self.lr = lr
        self._file: io.TextIOWrapper | None = None
        self._writer: Any = None
        self._began = time.perf_counter()
        self._since = self._began
        self._samples = 0
        self.created_file = False  # this process started the file (it held no row before)

    def begin_epoch(self) -> None:
        """Restart the rate clock: the time between epochs (validation, saving) is no step's."""
        self._since = time.perf_counter()
        self._samples = 0

    def step_done(self, epoch: int, step: int, steps_in_epoch: int, samples: int, loss: Any) -> None:
        if not self.every:
            return
        self._samples += samples
        if step % self.every and step != steps_in_epoch:
            return
        now = time.perf_counter()
        seconds = now - self._since
        rate = self._samples / seconds if seconds > 0 else math.nan
        self._since, self._samples = now, 0
        self._append([epoch, step, steps_in_epoch, (epoch - 1) * steps_in_epoch + step, _float(loss),
                      repr(float(self.lr())), f"{rate:.3f}", f"{now - self._began:.3f}", f"{time.time():.3f}",
                      self.experiment])

    def _append(self, cells: list[Any]) -> None:
        if self._file is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self.created_file = new
            self._writer = csv.writer(self._file, lineterminator="\n")
            if new:
                self._file.write(HEADER)
        self._writer.writerow(cells)
        self._file.flush()  # readers see whole rows; no fsync per row (see the module docstring)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def discard(self) -> None:
        """Remove the file when this process started it: a run that failed before saving
        anything (a NaN in its first epoch) leaves no trace but its error."""
        self.close()
        if self.created_file:
            self.path.unlink(missing_ok=True)


def _float(loss: Any) -> str:
    value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
    return repr(value)


def rows_between(rows: list[StepRow], start: float | None, end: float | None) -> Iterator[StepRow]:
    """The rows written in [start, end] (Unix times; None: open on that side)."""
    for row in rows:
        if (start is None or row.timestamp >= start) and (end is None or row.timestamp <= end):
            yield row

