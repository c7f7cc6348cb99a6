"""The checkpoint store: crash-safe saving and safe loading of checkpoint files.

Saving is atomic: the bytes go to a temporary file in the same folder, are flushed and fsynced,
then ``os.replace`` puts the file in place and the folder is fsynced. A reader therefore sees a
checkpoint complete or not at all. A small JSON sidecar (``X.pth.meta.json``, see
``training.ckpt_reader``) is written after the file, so its presence marks the checkpoint
complete and readers can skip opening the ``.pth``. Nothing is ever overwritten in place, so a
failed save (full disk, kill) leaves every earlier checkpoint as it was.

Saving runs in a background thread (``CheckpointWriter``): the training loop only pays for
copying the state to CPU memory; serialisation, hashing, fsync and the sidecar happen while the
next epoch trains. At most one save is in flight; its errors surface on the next call.

Loading uses ``torch.load(weights_only=True)`` and never falls back to unsafe unpickling. The
only extra globals allowed are data-only ones older checkpoints contain: numpy scalars/arrays
and ``argparse.Namespace`` (the original script stored its args that way).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.ckpt_reader import all_extra_safe_globals, checkpoint_meta, sidecar_path, write_sidecar

TMP_MARK = ".tmp-"
FREE_SPACE_MARGIN = 1.2          # need this many times the checkpoint's size free ...
FREE_SPACE_EXTRA = 16 * 2**20    # ... plus this, for the sidecar, the log and the filesystem


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and says why, in one line."""


class DiskSpaceError(CheckpointError):
    """A save would not fit, or did not fit, on the disk. Earlier checkpoints are intact."""


# --- loading ---------------------------------------------------------------------------------

def _safe_globals() -> list[Any]:
    """Data-only globals that older checkpoints contain, beyond torch's own allowlist: numpy
    scalars and arrays (numpy 1 and 2 names) and argparse.Namespace. The reader owns the list."""
    return all_extra_safe_globals()


def load_checkpoint(path: Path | str, data: bytes | None = None) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU, with one-line errors naming the file.

    ``data``: the file's bytes when the caller has already read them (to verify a checksum).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    source: Any = path if data is None else _BytesReader(data)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "not usable"
        raise CheckpointError(f"{path}: {_describe_load_error(exc)}") from None


def _describe_load_error(exc: Exception) -> str:
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    unsafe = re.search(r"(?:Unsupported global:|unsupported GLOBAL)\s*(?:GLOBAL\s*)?([\w.]+)", text)
    if unsafe:
        return f"unsafe: the pickle would call {unsafe.group(1)}; refused (never unpickled)"
    if "Weights only load failed" in text:
        # torch wraps the cause between a long explanation and a documentation link.
        causes = [line for line in lines[1:] if not line.startswith(("Check the documentation", "Re-running", "In PyTorch"))]
        return f"not a readable checkpoint ({causes[0][:200] if causes else 'unpickling failed'})"
    first_line = lines[0].split(". ")[0] if lines else type(exc).__name__
    return f"not a readable checkpoint ({type(exc).__name__}: {first_line[:160]})"


class _BytesReader:
    """A minimal seekable reader over bytes (``io.BytesIO`` copies; this does not)."""

    def __init__(self, data: bytes):
        import io
        self._io = io.BytesIO(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


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
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
        if hashlib.sha256(data).hexdigest() != expected_sha256:
            raise CheckpointError(f"{path}: checksum does not match its sidecar (file changed or corrupt)")
    return interpret_checkpoint(path, load_checkpoint(path, data))


def verify_zip_records(path: Path) -> None:
    """Check the CRC-32 of every record of a zip-format checkpoint; ``torch.load`` does not, so a
    file with flipped bytes in its tensor data loads silently. This is the integrity check for a
    file no sidecar checksum vouches for. Legacy (non-zip) files carry no checksums to check."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # zipfile raises several types for damaged archives
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt: the checksum of {bad} does not match (bytes changed on disk)")


# --- saving ----------------------------------------------------------------------------------

class _HashingWriter:
    """File wrapper for ``torch.save``: hashes the bytes as they are written (no second read)."""

    def __init__(self, f: Any):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def atomic_save(obj: Any, path: Path) -> tuple[int, str]:
    """Write ``obj`` to ``path`` atomically. Returns (size in bytes, sha256 hex)."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            free = shutil.disk_usage(path.parent).free
            raise DiskSpaceError(
                f"disk full while saving {path}: wrote {_human(writer.size)} before the failure, "
                f"{_human(free)} free; free at least {_human(writer.size * FREE_SPACE_MARGIN + FREE_SPACE_EXTRA)} "
                f"in {path.parent} (earlier checkpoints are intact)"
            ) from None
        raise
    return writer.size, writer.sha256.hexdigest()


def save_checkpoint(obj: Mapping[str, Any], path: Path, expected_size: int | None = None) -> tuple[int, str]:
    """Atomic save plus its sidecar. The sidecar is written last: it marks the file complete."""
    if expected_size:
        ensure_free_space(path.parent, expected_size)
    size, digest = atomic_save(obj, path)
    write_sidecar(path, checkpoint_meta(dict(obj)), digest)
    return size, digest


def link_or_copy(src: Path, dst: Path, sha256: str, meta: Mapping[str, Any]) -> None:
    """Publish ``src`` under the name ``dst`` atomically (a hard link costs no I/O), with a sidecar."""
    tmp = dst.with_name(f".{dst.name}{TMP_MARK}{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # filesystems without hard links
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    write_sidecar(dst, dict(meta), sha256)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint and its sidecar (sidecar first: a .pth without one is still valid)."""
    sidecar_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


# Temporary names of interrupted saves: ``.X.pth.tmp-PID`` (atomic_save, link_or_copy) and
# ``.X.pth.meta.json.tmp.PID.HEX`` (the sidecar writer).
_STALE_TEMP = re.compile(r"^\..+\.pth(?:\.meta\.json)?\.tmp[-.]\d+")


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files that killed saves left in ``folder`` and return them.

    A process killed inside a save cannot clean up after itself, and each leftover is as large
    as a checkpoint. Call this only while holding the folder's lock: then no save is in flight.
    """
    removed = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if _STALE_TEMP.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
        self.last_blocked_s = 0.0
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
            start = time.perf_counter()
            self._thread.join()
            self.last_blocked_s = time.perf_counter() - start
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


# --- choosing a checkpoint to resume -----------------------------------------------------------

_ROLE_PREFERENCE = {"epoch": 2, "interrupt": 1, "best": 0, "other": 0}


def find_latest_good_checkpoint(exp_dir: Path, echo: Callable[[str], None]) -> LoadedCheckpoint | None:
    """The newest checkpoint in ``exp_dir`` that fully loads, walking newest first.

    Only the folder's own files are candidates: names with the tag of the folder's comment
    (``training.naming.carries_run_tag``); another run's files copied or resumed in are not.
    Incomplete, truncated, corrupt, hostile and weights-only files are skipped with one line
    each naming the file and why. Nothing is deleted or rewritten here.
    """
    from training.ckpt_reader import list_checkpoint_files, read_checkpoint_info
    from training.naming import carries_run_tag, parse_checkpoint_name, parse_experiment_name

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
    usable.sort(key=lambda i: (i.epoch, i.step_in_epoch, _ROLE_PREFERENCE[parse_checkpoint_name(i.path.name).role],
                               i.mtime), reverse=True)
    for info in usable:
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
