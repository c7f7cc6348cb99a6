"""The checkpoint store: crash-safe saving and safe loading of checkpoint files.

Saving is atomic (:func:`training.checkpoint.fsutil.atomic_write`: a temporary file in the same
folder, fsynced, renamed into place, the folder fsynced). A reader therefore sees a checkpoint
complete or not at all. A small JSON sidecar (``X.pth.meta.json``, see
:mod:`training.checkpoint.sidecar`) is written after the file, so its presence marks the checkpoint
complete and readers can skip opening the ``.pth``. Nothing is ever overwritten in place, so a
failed save (full disk, kill) leaves every earlier checkpoint as it was.

Saving runs in a background thread (``CheckpointWriter``): the training loop only pays for
copying the state to CPU memory; serialisation, hashing, fsync and the sidecar happen while the
next epoch trains. At most one save is in flight; its errors surface on the next call.

Loading uses ``torch.load(weights_only=True)`` and never falls back to unsafe unpickling. The
only extra globals allowed are data-only ones older checkpoints contain: numpy scalars/arrays
and ``argparse.Namespace`` (the original script stored its args that way).

Every load for training is verified first (:func:`read_verified_checkpoint`): the sidecar's
sha256 when a valid sidecar has one, else the zip records' CRC-32s. A file that fails is refused
and marked damaged in its sidecar (``sidecar.mark_damaged``), so listings show it afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import stat
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.checkpoint.fsutil import atomic_place, atomic_write, sidecar_path
from training.checkpoint.meta import checkpoint_meta, read_checkpoint_info
from training.checkpoint.pickle_vm import all_extra_safe_globals
from training.checkpoint.sidecar import SIDECAR_MISMATCH, clear_damage_mark, mark_damaged, write_sidecar
from training.checkpoint.torchfile import zip_crc_problem

FREE_SPACE_MARGIN = 1.2          # need this many times the checkpoint's size free ...
FREE_SPACE_EXTRA = 16 * 2**20    # ... plus this, for the sidecar, the log and the filesystem


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and says why, in one line."""


class WriteError(CheckpointError):
    """A save failed while writing (disk full, file-size limit, I/O error): a runtime failure,
    not a usage error. The message names the file, its folder and the space needed."""


class DiskSpaceError(WriteError):
    """A save would not fit, or did not fit, on the disk. Earlier checkpoints are intact."""


# Write failures reported as one line naming the file and folder, whoever raised them.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


# --- loading ---------------------------------------------------------------------------------

def load_checkpoint(path: Path | str, data: bytes | None = None) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with one-line errors naming the file.

    ``data``: the file's bytes when the caller has already read them (to verify a checksum).
    """
    path = Path(path)
    if data is None:
        check_checkpoint_path(path)
    source: Any = path if data is None else io.BytesIO(data)  # BytesIO(bytes) shares, not copies
    try:
        # Data-only globals that older checkpoints contain beyond torch's own allowlist (numpy
        # scalars and arrays, argparse.Namespace): the reader's allowlist owns the list.
        with torch.serialization.safe_globals(all_extra_safe_globals()), warnings.catch_warnings():
            # torch warns (several lines on stderr) about pickle protocols it may not parse;
            # a failure is reported below in one line instead.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "not usable"
        raise CheckpointError(f"{path}: {_describe_load_error(exc, path)}") from None


def check_checkpoint_path(path: Path) -> None:
    """Raise a one-line CheckpointError saying what ``path`` really is when it is not a regular
    file: missing, a folder, a symbolic link loop or a dangling link, unreadable, a FIFO."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CheckpointError(f"{path}: a symbolic link loop, not a checkpoint file") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise CheckpointError(f"{path}: a dangling symbolic link (to {os.readlink(path)}), "
                                  "not a checkpoint file") from None
        if exc.errno == errno.ENOENT:
            raise CheckpointError(f"{path}: no such checkpoint file") from None
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (give the .pth file inside it)")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path}: not a regular file (a FIFO, socket or device), not a checkpoint file")


def _describe_load_error(exc: Exception, path: Path | None = None) -> str:
    text = str(exc)
    if path is not None and not re.search(r"Unsupported global:|unsupported GLOBAL", text):
        # torch's weights_only unpickler stops at opcodes it does not know (FRAME, protocol 4+)
        # before it sees the globals; the torch-free reader finds what the pickle would call.
        info = read_checkpoint_info(path, use_sidecar=False)
        if info.kind == "unsafe":
            return f"unsafe: {info.reason}; refused (never unpickled)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unsafe = re.search(r"(?:Unsupported global:|unsupported GLOBAL)\s*(?:GLOBAL\s*)?([\w.]+)", text)
    if unsafe:
        return f"unsafe: the pickle would call {unsafe.group(1)}; refused (never unpickled)"
    if "Weights only load failed" in text:
        # torch wraps the cause between a long explanation and a documentation link.
        causes = [line for line in lines[1:] if not line.startswith(
            ("Check the documentation", "Re-running", "In PyTorch", "Please file an issue", "WeightsUnpickler error"))]
        return f"not a readable checkpoint ({causes[0][:200] if causes else 'unpickling failed'})"
    first_line = lines[0].split(". ")[0] if lines else type(exc).__name__
    return f"not a readable checkpoint ({type(exc).__name__}: {first_line[:160]})"


@dataclass
class LoadedCheckpoint:
    """A loaded file, normalised: the model weights plus the full checkpoint dict if it is one."""

    path: Path
    model_state: dict[str, torch.Tensor]
    full: dict[str, Any] | None  # None for weights-only (legacy) files

    @property
    def is_full(self) -> bool:
        return self.full is not None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved from ``nn.DataParallel`` carry a ``module.`` prefix on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def interpret_checkpoint(path: Path, obj: Any) -> LoadedCheckpoint:
    """Tell a full checkpoint from a weights-only file; reject anything else naming the file."""
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        state = obj["model_state_dict"]
        if not _is_state_dict(state):
            raise CheckpointError(f"{path}: 'model_state_dict' holds no tensors")
        full = dict(obj) if "epoch" in obj and "optimizer_state_dict" in obj else None
        return LoadedCheckpoint(path, strip_module_prefix(state), full)
    if _is_state_dict(obj):
        return LoadedCheckpoint(path, strip_module_prefix(obj), None)
    raise CheckpointError(f"{path}: not a checkpoint (no model weights inside)")


def read_checkpoint_file(path: Path | str, expected_sha256: str | None = None) -> LoadedCheckpoint:
    """Load and interpret one file; with ``expected_sha256`` the bytes are verified first."""
    path = Path(path)
    data = None
    if expected_sha256:
        check_checkpoint_path(path)
        try:
            verified = os.stat(path)
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != expected_sha256:
            _refuse_damaged(path, SIDECAR_MISMATCH, verified)
    return interpret_checkpoint(path, load_checkpoint(path, data))


def _refuse_damaged(path: Path, reason: str, verified: os.stat_result | None) -> None:
    """Mark the file damaged (its sidecar, never the file) and refuse it in one line."""
    marked = mark_damaged(path, reason, verified)
    raise CheckpointError(f"{path}: damaged: {reason}; refused"
                          + ("" if marked else " (could not record the damage next to it)"))


def verify_zip_records(path: Path) -> None:
    """Check the CRC-32 of every record of a zip-format checkpoint; ``torch.load`` does not, so a
    file with flipped bytes in its tensor data loads silently. This is the integrity check for a
    file no sidecar checksum vouches for. Legacy (non-zip) files carry no checksums to check.
    A mismatch marks the file damaged (see _refuse_damaged)."""
    path = Path(path)
    check_checkpoint_path(path)
    try:
        verified = os.stat(path)
        problem = zip_crc_problem(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    if problem is not None:
        _refuse_damaged(path, problem, verified)


def read_verified_checkpoint(path: Path | str) -> LoadedCheckpoint:
    """What every load for training uses (resume, pretrained weights): verify, then load.

    The sidecar's sha256 when a sidecar valid for the file's size and mtime has one (the bytes
    are hashed and loaded from one read), else the zip CRCs. A mismatch is a CheckpointError
    naming the file, and the file is marked damaged so listings show it from then on; a file
    marked earlier that verifies now (restored) loses its mark."""
    path = Path(path)
    check_checkpoint_path(path)
    info = read_checkpoint_info(path)  # the sidecar (cheap), else the pickle alone
    if info.kind == "unsafe":
        raise CheckpointError(f"{path}: unsafe: {info.reason}; refused (never unpickled)")
    expected = info.sha256 if info.source == "sidecar" else None
    if not expected:
        verify_zip_records(path)
    loaded = read_checkpoint_file(path, expected_sha256=expected)
    if info.kind == "damaged":
        clear_damage_mark(path)
    return loaded


# --- saving ----------------------------------------------------------------------------------

class _HashingWriter:
    """File wrapper for ``torch.save``: hashes the bytes as they are written (no second read)."""

    def __init__(self, f: Any):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        try:
            return self._f.write(data)
        except OSError as exc:  # torch.save replaces it by a RuntimeError: keep it for the message
            self.error = exc
            raise

    def flush(self) -> None:
        self._f.flush()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def ensure_free_space(folder: Path, expected_size: int) -> None:
    """Refuse a save that would not fit, before a byte is written."""
    needed = int(expected_size * FREE_SPACE_MARGIN) + FREE_SPACE_EXTRA
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"not enough disk space in {folder}: a checkpoint needs about {_human(needed)}, "
            f"{_human(free)} free; free space there (earlier checkpoints are intact)"
        )


def write_failure_errno(exc: BaseException) -> int | None:
    """The errno of the OSError behind ``exc``: itself, its cause or context chain (torch.save
    raises a RuntimeError whose context is the write's OSError), or one its message quotes."""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        current = current.__cause__ or current.__context__
    quoted = re.search(r"\[Errno (\d+)\]", str(exc))
    return int(quoted.group(1)) if quoted else None


def write_failure(exc: BaseException, path: Path, written: int, expected: int | None = None) -> WriteError | None:
    """A one-line WriteError for a write that failed with a full disk, a file-size limit or an
    I/O error (naming the file, the folder and the space needed); None for any other failure."""
    code = write_failure_errno(exc)
    if code not in WRITE_ERRNOS:
        return None
    try:
        free = _human(shutil.disk_usage(path.parent).free)
    except OSError:
        free = "unknown"
    needed = _human(max(written, expected or 0) * FREE_SPACE_MARGIN + FREE_SPACE_EXTRA)
    if code == errno.EIO:
        return WriteError(f"I/O error while saving {path}: wrote {_human(written)} before the failure; check the "
                          f"disk behind {path.parent} ({free} free, about {needed} needed; earlier checkpoints are intact)")
    what = "file-size limit reached" if code == errno.EFBIG else "disk full"
    return DiskSpaceError(
        f"{what} while saving {path}: wrote {_human(written)} before the failure, {free} free; free at least "
        f"{needed} in {path.parent} (earlier checkpoints are intact)")


def atomic_save(obj: Any, path: Path) -> tuple[int, str]:
    """Write ``obj`` to ``path`` atomically. Returns (size in bytes, sha256 hex)."""
    writer: _HashingWriter | None = None

    def write(f: Any) -> None:
        nonlocal writer
        writer = _HashingWriter(f)
        torch.save(obj, writer)

    try:
        atomic_write(path, write)
    except BaseException as exc:
        cause = writer.error if writer is not None and writer.error is not None else exc
        failure = write_failure(cause, path, writer.size if writer is not None else 0)
        if failure is not None:
            raise failure from None
        raise
    return writer.size, writer.sha256.hexdigest()


def save_checkpoint(obj: Mapping[str, Any], path: Path, expected_size: int | None = None) -> tuple[int, str]:
    """Atomic save plus its sidecar. The sidecar is written last: it marks the file complete."""
    if expected_size:
        ensure_free_space(path.parent, expected_size)
    size, digest = atomic_save(obj, path)
    try:
        write_sidecar(path, checkpoint_meta(dict(obj)), digest)
    except OSError as exc:  # the .pth is complete and loads; only its sidecar is missing
        failure = write_failure(exc, sidecar_path(path), 0, size)
        if failure is not None:
            raise failure from None
        raise
    return size, digest


def link_or_copy(src: Path, dst: Path, sha256: str, meta: Mapping[str, Any]) -> None:
    """Publish ``src`` under the name ``dst`` atomically (a hard link costs no I/O), with a sidecar."""

    def link_or_copy_to(tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:  # filesystems without hard links
            shutil.copyfile(src, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())

    try:
        atomic_place(dst, link_or_copy_to)
        write_sidecar(dst, dict(meta), sha256)
    except OSError as exc:
        failure = write_failure(exc, dst, 0, src.stat().st_size if src.exists() else None)
        if failure is not None:
            raise failure from None
        raise


def snapshot_to_cpu(obj: Any) -> Any:
    """A deep copy in which every tensor is a fresh CPU copy, so training can go on mutating."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {k: snapshot_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snapshot_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(snapshot_to_cpu(v) for v in obj)
    return obj


def state_nbytes(obj: Any) -> int:
    """Bytes of tensor data in a nested state: the expected size of its checkpoint."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(state_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v) for v in obj)
    return 0


class CheckpointWriter:
    """Runs save tasks one at a time in a background thread.

    ``submit`` waits for the previous task, so at most one save is in flight and a failure is
    reported (re-raised) by the next ``submit`` or ``wait`` instead of being lost.
    """

    def __init__(self, background: bool = True):
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: dict[tuple, torch.Tensor] = {}

    def snapshot(self, obj: Any) -> Any:
        """Like ``snapshot_to_cpu``, but into CPU buffers kept from the previous save.

        Fresh allocations of a checkpoint's size cost as much in page faults as the copy itself
        (about what a plain ``torch.save`` costs), so after the first save the loop only pays for
        a memory copy. The buffers hold the previous save's bytes, so this waits for it first.
        """
        self.wait()
        return self._copy(obj, ())

    def _copy(self, obj: Any, key: tuple) -> Any:
        if isinstance(obj, torch.Tensor):
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != obj.shape or buffer.dtype != obj.dtype:
                buffer = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=obj.is_cuda)
                self._buffers[key] = buffer
            return buffer.copy_(obj.detach())
        if isinstance(obj, Mapping):
            return {k: self._copy(v, (*key, k)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._copy(v, (*key, i)) for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return tuple(self._copy(v, (*key, i)) for i, v in enumerate(obj))
        return obj

    def submit(self, task: Callable[[], None]) -> None:
        self.wait()
        if not self.background:
            task()
            return

        def run() -> None:
            try:
                task()
            except BaseException as exc:  # re-raised in the training thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="checkpoint-writer", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# --- choosing a checkpoint to resume -----------------------------------------------------------


def find_latest_good_checkpoint(exp_dir: Path, echo: Callable[[str], None]) -> LoadedCheckpoint | None:
    """The newest checkpoint in ``exp_dir`` that fully loads, walking newest first.

    Only the folder's own files are candidates: names with the tag of the folder's comment
    (``training.naming.carries_run_tag``); another run's files copied or resumed in are not.
    Incomplete, truncated, corrupt, hostile and weights-only files are skipped with one line
    each naming the file and why. Nothing is deleted or rewritten here.
    """
    from training.checkpoint.meta import list_checkpoint_files, read_checkpoint_info
    from training.checkpoint.resumable import newest_first, resume_rank
    from training.naming import carries_run_tag, parse_experiment_name

    folder = parse_experiment_name(Path(exp_dir).name)  # {} for a name of no known scheme: any tag
    infos = [read_checkpoint_info(p) for p in list_checkpoint_files(exp_dir)
             if not folder or carries_run_tag(p.name, folder.get("comment"))]
    usable = []
    for info in infos:
        if info.kind != "full" or info.epoch is None:
            why = info.reason or ("weights only: cannot resume optimizer or epoch" if info.kind == "weights_only"
                                  else "no epoch recorded")
            echo(f"Auto-resume: skipping {info.path}: {why}")
            continue
        usable.append(info)
    for info in newest_first(usable, lambda i: resume_rank(i.epoch, i.step_in_epoch, i.path.name, i.mtime)):
        try:
            if not info.complete:
                verify_zip_records(info.path)  # no sidecar checksum vouches for its tensor bytes
            loaded = read_checkpoint_file(info.path, expected_sha256=info.sha256 if info.complete else None)
        except CheckpointError as exc:
            echo(f"Auto-resume: skipping {exc}")
            continue
        if not loaded.is_full:
            echo(f"Auto-resume: skipping {info.path}: no optimizer state or epoch inside")
            continue
        return loaded
    return None
