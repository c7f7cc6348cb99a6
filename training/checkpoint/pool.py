"""Reading many checkpoints at once: disposable, memory-capped reader processes.

:mod:`training.checkpoint.pickle_vm`'s interpreter is safe in any process but costs about a
microsecond per opcode, and a trainer checkpoint is thousands of opcodes (every tensor of the
model and of the optimizer state), so a first scan of 1,000 small checkpoints took seconds.
CPython's C unpickler runs the same pickle, with the same allowlist, about ten times faster, but
it is only safe where a crafted file can at worst exhaust or crash a process that holds nothing
else (see "the C unpickler" in pickle_vm). So a batch of files goes to reader processes that:

* start as ``python -I -S`` (no site-packages, no environment variables, no current folder on
  ``sys.path``) and import the torch-free reader alone (training.checkpoint.meta), never torch;
* cap their own address space (``RLIMIT_AS``), write no core dumps, ignore Ctrl-C and exit when
  their stdin closes, which also happens when this process dies;
* get a chunk of paths as one JSON line and answer it with one JSON line of the files'
  CheckpointInfo fields: data only, never a pickle;
* are disposable: one that dies (a segfault on a crafted file), stops answering (``TIMEOUT_S``)
  or cannot answer costs only that process; the file it was reading is read here by the
  interpreter, its other requests go to a fresh process, and the batch goes on.

There is one process per CPU (at most ``MAX_PROCESSES``), started with the first large batch (or
by :func:`start`, which the dashboard calls when it starts) and kept for the life of this
process, so only the first batch waits for them to boot. Batches smaller than ``MIN_BATCH`` are
read here, by the interpreter. ``TRAINING_READER_PROCESSES=0`` in the environment turns the pool
off; every file is then read in this process.

Each file gets the verdict the interpreter gives it (kind, reason, metadata): the C path hands
any file it cannot read to the interpreter, and tests/test_ckpt_pool.py compares the two on real,
crafted and fuzzed files. The one documented difference: the C path does not check tensors the
metadata never reads (see pickle_vm).
"""

from __future__ import annotations

import atexit
import copy
import gc
import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from training.checkpoint.fsutil import SIDECAR_SUFFIX
from training.checkpoint.meta import KINDS, CheckpointInfo, read_checkpoint_info
from training.checkpoint.pickle_vm import enable_c_unpickler

__all__ = ["ReadRequest", "read_checkpoint_infos", "read_listed_infos", "start", "shutdown", "process_count", "MIN_BATCH"]

MIN_BATCH = 16  # fewer files than this are read in this process: no round trips, no start-up
MAX_PROCESSES = 4
TIMEOUT_S = 30.0  # no answer for this long: the reader is hung (its chunk is retried file by file)
ADDRESS_SPACE_BYTES = 2 << 30  # per reader process: Python + the largest pickle we accept, x20
_RESTARTS_PER_BATCH = 4
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from training.checkpoint.pool import reader_main; reader_main()")


# --- the reader process ------------------------------------------------------------------------------

def reader_main() -> None:
    """A reader process: cap resources, then answer each request line (a JSON list of
    ``[path, with_history, use_sidecar]``) with one line: the JSON list of their CheckpointInfo
    dicts (see _SAME)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is for the dashboard
    enable_c_unpickler()
    # A checkpoint's pickle makes tens of thousands of objects, freed by reference counting; the
    # cyclic collector would walk them again and again while they live (~10% of the time for a
    # large model). It runs once per chunk instead, over what was made since start-up (frozen):
    # cycles only come from crafted files.
    gc.freeze()
    gc.disable()
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        answers = []
        previous: dict[str, Any] = {}
        for job in json.loads(line):
            answers.append(_answer(*job, previous))
        out.write(b"[" + b",".join(answers) + b"]\n")
        out.flush()
        gc.collect()


# Checkpoints of one run share their args and top-level keys: within a chunk, a value equal to the
# previous file's is sent as this marker (args and keys are never strings), and copied back.
_SAME = "="
_SHARED_FIELDS = ("args", "keys")


def _answer(path: str, with_history: bool, use_sidecar: bool, previous: dict[str, Any]) -> bytes:
    try:
        info = read_checkpoint_info(path, with_history=with_history, use_sidecar=use_sidecar)
        fields = info.to_dict()
        for name in _SHARED_FIELDS:
            value = fields[name]
            if value and value == previous.get(name):
                fields[name] = _SAME
            else:
                previous[name] = value
        return json.dumps(fields).encode()
    except Exception:  # e.g. MemoryError outside the pickle: the parent reads this file itself
        return b"null"


# --- the parent's side -----------------------------------------------------------------------------
# Requests go in chunks (one line, one answer line, one wake-up for CHUNK files) and each reader
# has two in flight, so it never waits for us. A reader handles its chunks in order, so when one
# dies or hangs, the culprit is in its oldest unanswered chunk: a chunk of one file is read here,
# by the interpreter; a larger one is split into chunks of one and retried, like the rest.

CHUNK = 16
_CHUNK_BYTES = 16 << 10  # two chunks in flight stay under a pipe's 64 KiB: our writes never block
_IN_FLIGHT = 2


class _Reader:
    """One reader process, its unanswered chunks and the unread part of its answers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, _PACKAGE_PARENT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True, bufsize=0,
        )
        self.fd = self.proc.stdout.fileno()
        self.in_flight: deque[list[int]] = deque()
        self.deadline = math.inf
        self._pending = bytearray()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, chunk: list[int], jobs: list[tuple]) -> bool:
        if not self.in_flight:
            self.deadline = time.monotonic() + TIMEOUT_S
        self.in_flight.append(chunk)
        line = memoryview(json.dumps([jobs[i] for i in chunk]).encode() + b"\n")
        try:
            while line:  # a raw pipe write may take only part of it
                line = line[self.proc.stdin.write(line):]
            return True
        except OSError:  # BrokenPipeError: it died
            return False

    def read_answers(self) -> list[bytes] | None:
        """Complete answer lines available now; None once the process has closed its output."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        self._pending += chunk
        lines = self._pending.split(b"\n")
        self._pending = bytearray(lines.pop())
        if lines:
            self.deadline = time.monotonic() + TIMEOUT_S
        return [bytes(line) for line in lines]

    def close(self, kill: bool = False) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


_LOCK = threading.Lock()  # one batch at a time owns the readers
_READERS: list[_Reader] = []


def process_count() -> int:
    """How many reader processes a batch uses: one per CPU this process may run on, at most
    MAX_PROCESSES; TRAINING_READER_PROCESSES=N sets it (0: read everything in this process)."""
    setting = os.environ.get("TRAINING_READER_PROCESSES", "").strip()
    if setting.isdigit():
        return min(int(setting), MAX_PROCESSES)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PROCESSES))


def _start_readers() -> None:
    """With _LOCK held: process_count() live readers, replacing any that died."""
    for reader in [r for r in _READERS if not r.alive()]:
        _READERS.remove(reader)
        reader.close(kill=True)
    wanted = process_count()
    while len(_READERS) > wanted:
        _READERS.pop().close()
    while len(_READERS) < wanted:
        try:
            _READERS.append(_Reader())
        except OSError:  # no processes or file descriptors left: fewer readers (or none)
            break


def start(wait: bool = False) -> None:
    """Boot the reader processes now (~0.2 s each, in parallel), so the first scan need not;
    ``wait``: return once each answers (an empty request), i.e. is ready to read."""
    with _LOCK:
        _start_readers()
        if wait:
            for reader in _READERS:
                reader.send([], [])
            batch = _Batch([])
            batch.run()


@atexit.register
def shutdown() -> None:
    """Stop the reader processes (they also exit by themselves when this process ends)."""
    with _LOCK:
        while _READERS:
            _READERS.pop().close()


def _decode(answer: Any, path: str, previous: dict[str, Any]) -> CheckpointInfo | None:
    """One entry of a reader's answer as CheckpointInfo; None if it is not one (the file is
    then read here). ``previous``: the shared fields of the chunk's files so far."""
    if not isinstance(answer, dict) or answer.get("kind") not in KINDS:
        return None
    for name in _SHARED_FIELDS:
        value = answer.get(name)
        if value == _SAME:
            if name not in previous:
                return None
            answer[name] = copy.copy(previous[name])  # each info owns its own (shallow) copy
        else:
            previous[name] = value
    answer["path"] = Path(path)
    try:
        return CheckpointInfo(**answer)
    except TypeError:
        return None


def _chunks(indices: Sequence[int], jobs: list[tuple]) -> deque[list[int]]:
    out: deque[list[int]] = deque()
    chunk: list[int] = []
    size = 0
    for i in indices:
        cost = len(jobs[i][0]) * 6 + 16  # JSON escapes at most 6 bytes per character
        if chunk and (len(chunk) == CHUNK or size + cost > _CHUNK_BYTES):
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(i)
        size += cost
    if chunk:
        out.append(chunk)
    return out


class _Batch:
    """One call's files, spread over the readers by a single-threaded select loop."""

    def __init__(self, jobs: list[tuple]):
        self.jobs = jobs
        self.results: list[CheckpointInfo | None] = [None] * len(jobs)
        self.todo = _chunks(range(len(jobs)), jobs)
        self.restarts = 0

    def run(self) -> None:
        while _READERS and (self.todo or any(r.in_flight for r in _READERS)):
            for reader in list(_READERS):
                while self.todo and len(reader.in_flight) < _IN_FLIGHT:
                    if not reader.send(self.todo.popleft(), self.jobs):
                        break
            busy = [r for r in _READERS if r.in_flight]
            timeout = max(0.0, min(r.deadline for r in busy) - time.monotonic())
            ready = select.select([r.fd for r in busy], [], [], timeout)[0]
            for reader in busy:
                if reader.fd in ready:
                    self._take_answers(reader)
                elif time.monotonic() > reader.deadline:
                    self._replace(reader)  # hung

    def _take_answers(self, reader: _Reader) -> None:
        lines = reader.read_answers()
        if lines is None:
            self._replace(reader)  # died
            return
        for line in lines:
            chunk = reader.in_flight.popleft()
            try:
                answers = json.loads(line)
            except ValueError:
                answers = None
            if not isinstance(answers, list) or len(answers) != len(chunk):
                answers = [None] * len(chunk)
            previous: dict[str, Any] = {}
            for i, answer in zip(chunk, answers):
                self.results[i] = _decode(answer, self.jobs[i][0], previous) or self._read_here(i)

    def _replace(self, reader: _Reader) -> None:
        """The reader died or hung: read or split its oldest chunk, requeue the others."""
        culprit, *others = reader.in_flight
        reader.in_flight.clear()
        if len(culprit) == 1:
            self.results[culprit[0]] = self._read_here(culprit[0])
        else:
            others = [[i] for i in culprit] + others
        self.todo.extendleft(reversed(others))
        _READERS.remove(reader)
        reader.close(kill=True)
        self.restarts += 1
        if self.restarts <= _RESTARTS_PER_BATCH:
            try:
                _READERS.append(_Reader())
            except OSError:
                pass

    def _read_here(self, i: int) -> CheckpointInfo:
        return _read_here(self.jobs[i])


class ReadRequest(NamedTuple):
    """One file for :func:`read_checkpoint_infos`, with read_checkpoint_info's options: a scan
    asks for ``history`` only when it wants an earlier version's per-checkpoint history (converting
    it is most of the work for files that repeat a long one), and one that knows no sidecar exists
    skips looking for it."""

    path: str
    with_history: bool = False
    use_sidecar: bool = True


def read_checkpoint_infos(requests: Sequence[ReadRequest | str | os.PathLike[str]]) -> list[CheckpointInfo]:
    """``read_checkpoint_info`` of every file, in order, through the reader processes."""
    jobs = [tuple(r) if isinstance(r, ReadRequest) else (os.fspath(r), False, True) for r in requests]
    results: list[CheckpointInfo | None] = [None] * len(jobs)
    if len(jobs) >= MIN_BATCH and process_count() > 0:
        with _LOCK:
            _start_readers()
            batch = _Batch(jobs)
            batch.run()
            results = batch.results
    # Small batches, the pool turned off, or no reader left: the interpreter, here.
    return [info if info is not None else _read_here(job) for info, job in zip(results, jobs)]


def read_listed_infos(paths: Sequence[os.PathLike[str] | str]) -> list[CheckpointInfo]:
    """``read_checkpoint_info`` of every file, in order, for a listing: a file with a sidecar is
    read here (its small JSON costs less than a round trip), the pickles of the others go to the
    reader processes when there are many (about ten times faster per file than the interpreter)."""
    paths = [os.fspath(p) for p in paths]
    with_sidecar = [os.path.isfile(p + SIDECAR_SUFFIX) for p in paths]
    pickles = iter(read_checkpoint_infos([ReadRequest(p, use_sidecar=False)
                                          for p, side in zip(paths, with_sidecar) if not side]))
    return [read_checkpoint_info(p) if side else next(pickles) for p, side in zip(paths, with_sidecar)]


def _read_here(job: tuple) -> CheckpointInfo:
    path, with_history, use_sidecar = job
    return read_checkpoint_info(path, with_history=with_history, use_sidecar=use_sidecar)
