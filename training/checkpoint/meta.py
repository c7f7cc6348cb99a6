"""Checkpoint metadata without torch: what a checkpoint holds (:func:`checkpoint_meta`,
:class:`CheckpointInfo`), read from its sidecar or its pickle (:func:`read_checkpoint_info`), and
the ``--list_checkpoints`` listing. The one reader behind ``--list_checkpoints``, auto-resume
candidate selection and the dashboard's catalog.

Why not ``torch.load``? Loading a 100M-parameter checkpoint reads and allocates every tensor
(~13 s each); listing 20 of them should take well under a second. So only the pickle that
describes the checkpoint is read (:mod:`training.checkpoint.torchfile`) and run by our own
interpreter (:mod:`training.checkpoint.pickle_vm`); tensor bytes are never touched, and neither
torch nor numpy is imported. A matching sidecar (:mod:`training.checkpoint.sidecar`) spares even
the pickle.

What a successful read does *not* prove: that the tensor bytes are intact. The sidecar's sha256
(written by the trainer after the ``.pth`` is complete) is what vouches for the whole file.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.checkpoint.errors import CheckpointReadError, UnsafeCheckpointError, one_line
from training.checkpoint.pickle_vm import (
    TORCH_WEIGHTS_ONLY_GLOBALS,
    DeferredCall,
    DTypeStub,
    NamespaceStub,
    NdarrayStub,
    OpaqueStub,
    TensorStub,
)
from training.checkpoint.sidecar import damage_reason, load_sidecar
from training.checkpoint.torchfile import load_checkpoint_object
from training.naming import CHECKPOINT_SUFFIX, checkpoint_sort_key

# damaged: a verification found its bytes changed since they were written (see
# training.checkpoint.sidecar, "Damage marks")
KINDS = ("full", "weights_only", "unreadable", "unsafe", "damaged")
METRIC_KEYS = ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer")
_RULE = "=" * 70


# --- metadata: one extraction for pickled stubs (reader) and live objects (trainer) ----------------

def _is_tensor(v: Any) -> bool:
    if type(v) is TensorStub:
        return True
    # a real torch.Tensor / Parameter, recognised without importing torch
    return type(v).__module__.startswith("torch") and hasattr(v, "numel") and hasattr(v, "shape")


def _tensor_numel(v: Any) -> int | None:
    if type(v) is TensorStub:
        return v.numel
    try:
        return int(v.numel())
    except Exception:
        return None


def _as_int(v: Any) -> int | None:
    if type(v) is int:
        return v
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return int(f) if math.isfinite(f) and f.is_integer() else None
    return None


def _as_float(v: Any) -> float | None:
    if type(v) is float:
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or type(v).__module__.startswith("torch"):
        return None
    try:
        return float(v)
    except (OverflowError, ValueError, TypeError):
        return None


def _key_str(k: Any) -> str:
    if type(k) is str:
        return k
    if isinstance(k, DeferredCall):  # a tensor as a key, from the C path: named as the interpreter does
        try:
            k = k.resolve()
        except Exception:
            pass
    if type(k) in (int, float, bool, type(None)):
        try:
            return str(k)
        except ValueError:  # an int too long to print
            return "<int>"
    try:
        text = repr(k)
    except Exception:
        text = f"<{type(k).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


class _Budget:
    """How much of a value :func:`_jsonable` may still copy (shared references, cycles)."""

    def __init__(self, nodes: int = 200_000):
        self.nodes = nodes


# A history row is a dozen scalars; shared references in a hostile pickle stay bounded by the
# row cap (an old file of a million epochs is not a real one).
_HISTORY_NODES_PER_ROW = 16
_MAX_HISTORY_ROWS = 1_000_000

_PLAIN_VALUES = (str, bool, float, type(None))


def _plain_dict(d: dict) -> bool:
    """String keys and scalar values only: _jsonable would return an equal copy."""
    return (all(type(k) is str for k in d)
            and all(type(x) in _PLAIN_VALUES or type(x) is int and x.bit_length() <= 256
                    for x in d.values()))


def _jsonable(v: Any, budget: _Budget, depth: int = 0) -> Any:
    """A JSON-able copy. The same output for a pickled stub and the live object it stands for."""
    budget.nodes -= 1
    if budget.nodes < 0 or depth > 32:
        return "<...>"
    t = type(v)
    if v is None or t in (str, bool, float):
        return v
    if t is int:
        return v if v.bit_length() <= 256 else "<int>"
    if isinstance(v, (dict, OrderedDict)):
        if depth < 32 and budget.nodes >= len(v) and _plain_dict(v):  # e.g. args: copied as is
            budget.nodes -= len(v)
            return dict(v)
        return {_key_str(k): _jsonable(x, budget, depth + 1) for k, x in v.items()}
    if t in (list, tuple):
        return [_jsonable(x, budget, depth + 1) for x in v]
    if t in (set, frozenset):
        items = [_jsonable(x, budget, depth + 1) for x in v]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True, default=str))
    if t is NamespaceStub:
        return _jsonable(v.attrs, budget, depth)
    if isinstance(v, argparse.Namespace):
        return _jsonable(vars(v), budget, depth)
    if t is TensorStub:
        return v.describe()
    if isinstance(v, DeferredCall):  # a tensor in args or history, from the C path
        return _jsonable(v.resolve(), budget, depth)
    if t is NdarrayStub:
        return v.describe()
    if t in (DTypeStub, OpaqueStub):
        return str(v)
    if t is complex:
        return str(v)
    if t in (bytes, bytearray):
        return f"<bytes {len(v)}>"
    if t in (range, slice):
        return repr(v)
    return _jsonable_foreign(v, budget, depth)


def _jsonable_foreign(v: Any, budget: _Budget, depth: int) -> Any:
    """Live objects in a checkpoint dict the trainer is about to save: numpy, torch values."""
    module = type(v).__module__ or ""
    if module.startswith("numpy"):
        if hasattr(v, "ndim") and getattr(v, "ndim", 0) == 0 and hasattr(v, "item"):
            return _jsonable(v.item(), budget, depth)
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            return f"<ndarray {v.dtype} {list(v.shape)}>"
    if module.startswith("torch"):
        if _is_tensor(v):
            dtype = str(getattr(v, "dtype", "?")).removeprefix("torch.")
            return f"<tensor {dtype} {list(v.shape)}>"
        if type(v).__name__ == "Size":
            return [int(x) for x in v]
        if type(v).__name__ in ("dtype", "device", "layout", "qscheme"):
            return str(v)
    if isinstance(v, numbers.Integral):
        return _jsonable(int(v), budget, depth)
    if isinstance(v, numbers.Real):
        return float(v)
    return f"<{type(v).__name__}>"


def _describe_top(obj: Any) -> str:
    if type(obj) is TensorStub:
        return "a tensor"
    return f"a {type(obj).__name__.lstrip('_')}"


def checkpoint_meta(obj: Any, with_history: bool = False) -> dict[str, Any]:
    """The JSON-able metadata of a checkpoint object: what the sidecar stores and what
    :class:`CheckpointInfo` reports.

    Called by the trainer on the live dict it is about to save (real tensors inside) and by the
    reader on the unpickled stubs: both give the same result. Only named keys are looked at, so
    state dicts and RNG states are never walked (tensors count only by ``numel()``).
    ``history`` is filled only with ``with_history=True``, from files of earlier versions, which
    repeated the run's whole history in every checkpoint (new files keep it once, in the log:
    :mod:`training.run_history`); nobody who did not ask for it pays for converting it, and a
    sidecar never copies it.
    """
    meta: dict[str, Any] = {
        "kind": "unreadable", "epoch": None, "step_in_epoch": 0, "metrics": {},
        "best_epoch": None, "args": None, "history": [], "lineage": None, "keys": [],
        "has_optimizer": False, "num_params": None,
    }
    if not isinstance(obj, dict):
        meta["reason"] = f"not a checkpoint: the pickle holds {_describe_top(obj)}"
        return meta
    meta["keys"] = [_key_str(k) for k in obj]
    state = obj.get("model_state_dict")
    if "model_state_dict" in obj:
        if not isinstance(state, dict):
            meta["reason"] = "model_state_dict is not a state dict"
            return meta
        meta["epoch"] = _as_int(obj.get("epoch"))
        meta["kind"] = "full" if meta["epoch"] is not None else "weights_only"
    elif obj and all(_is_tensor(v) for v in obj.values()):
        state = obj  # a bare state dict (keys maybe prefixed 'module.' by DataParallel)
        meta["kind"] = "weights_only"
    else:
        shown = ", ".join(meta["keys"][:5]) + (", ..." if len(meta["keys"]) > 5 else "")
        meta["reason"] = f"not a checkpoint: no model_state_dict (keys: {shown or 'none'})"
        return meta

    meta["num_params"] = _state_numel(state)
    meta["frontend_sha256"] = _frontend_digest(state)
    meta["has_optimizer"] = obj.get("optimizer_state_dict") is not None
    meta["step_in_epoch"] = max(_as_int(obj.get("step_in_epoch")) or 0, 0)
    meta["best_epoch"] = _as_int(obj.get("best_epoch"))
    for key in METRIC_KEYS:
        value = _as_float(obj.get(key))
        if value is not None:
            meta["metrics"][key] = value
    budget = _Budget()
    args = obj.get("args")
    if isinstance(args, (dict, argparse.Namespace)) or type(args) is NamespaceStub:
        meta["args"] = _jsonable(args, budget)
    history = obj.get("history") if with_history else None
    if type(history) is list:  # its own budget: a long history must not be cut at the args' limit
        rows = _Budget(max(_Budget().nodes, _HISTORY_NODES_PER_ROW * min(len(history), _MAX_HISTORY_ROWS)))
        meta["history"] = [h for h in (_jsonable(x, rows) for x in history) if type(h) is dict]
    lineage = obj.get("lineage")
    if isinstance(lineage, dict):
        meta["lineage"] = _jsonable(lineage, budget)
    return meta


# The buffer in which a frozen --ssl_path front-end records its folder's content hash
# (training.models.ssl_frontend): its weights are stored once, in that folder, not per checkpoint.
FRONTEND_HASH_KEY = "frontend.weights_sha256"


def _frontend_digest(state: dict) -> str | None:
    """The frozen front-end's hash, hex, from a live state dict (the trainer's save, so every
    sidecar has it); the reader's stubs carry no tensor bytes: None there."""
    value = state.get(FRONTEND_HASH_KEY)
    if value is None or type(value) is TensorStub or not _is_tensor(value):
        return None
    try:
        return bytes(int(v) for v in value.tolist()).hex()
    except (TypeError, ValueError, OverflowError):
        return None


def _state_numel(state: dict) -> int | None:
    total = 0
    for v in state.values():
        if type(v) is TensorStub:  # the reader's case, first: a model has hundreds of tensors
            if v.numel is None:
                return None
            total += v.numel
        elif _is_tensor(v):
            n = _tensor_numel(v)
            if n is None:
                return None
            total += n
    return total


# --- CheckpointInfo -------------------------------------------------------------------------------

@dataclass
class CheckpointInfo:
    """What one checkpoint file holds, read without torch. See the module docstring."""

    path: Path
    kind: str  # 'full' | 'weights_only' | 'unreadable' | 'unsafe' | 'damaged'
    epoch: int | None = None  # completed epochs
    step_in_epoch: int = 0  # steps of epoch+1 already done (mid-epoch checkpoint)
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    args: dict | None = None
    history: list[dict] = field(default_factory=list)
    lineage: dict | None = None
    keys: list[str] = field(default_factory=list)
    has_optimizer: bool = False
    reason: str | None = None
    size_bytes: int = 0
    mtime: float = 0.0
    source: str = "pickle"  # 'sidecar' | 'pickle'
    complete: bool = False  # a matching sidecar vouches for the file
    sha256: str | None = None
    num_params: int | None = None
    frontend_sha256: str | None = None  # a frozen front-end's content hash (sidecars only)
    # Globals outside torch's default weights_only allowlist that the pickle uses (numpy scalars,
    # argparse.Namespace ...): torch.load(weights_only=True) needs safe_globals_for(these).
    extra_globals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["path"] = str(self.path)
        return out


def _info_from_meta(path: Path, st: os.stat_result, meta: dict, with_history: bool = False,
                    **extra: Any) -> CheckpointInfo:
    """Build the info from checkpoint_meta output (or a sidecar's copy of it), type-checked."""
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ValueError("unknown kind")
    metrics = meta.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ValueError("metrics not a dict")

    def opt(key: str, typ: type) -> Any:
        v = meta.get(key)
        return v if isinstance(v, typ) and not isinstance(v, bool) or v is None else None

    return CheckpointInfo(
        path=path,
        kind=kind,
        epoch=opt("epoch", int),
        step_in_epoch=opt("step_in_epoch", int) or 0,
        metrics={k: float(v) for k, v in metrics.items()
                 if k in METRIC_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)},
        best_epoch=opt("best_epoch", int),
        args=opt("args", dict),
        history=[h for h in (meta.get("history") or []) if isinstance(h, dict)]
        if with_history and isinstance(meta.get("history"), list) else [],
        lineage=opt("lineage", dict),
        keys=[str(k) for k in meta.get("keys") or []] if isinstance(meta.get("keys"), list) else [],
        has_optimizer=meta.get("has_optimizer") is True,
        reason=one_line(meta["reason"]) if isinstance(meta.get("reason"), str) else None,
        size_bytes=st.st_size,
        mtime=st.st_mtime,
        num_params=opt("num_params", int),
        frontend_sha256=opt("frontend_sha256", str),
        **extra,
    )


def read_checkpoint_info(path: Path | str, *, use_sidecar: bool = True,
                         with_history: bool = False) -> CheckpointInfo:
    """Metadata of one checkpoint. Never raises for bad content (or a missing file): those come
    back as ``kind='unreadable'`` / ``'unsafe'`` with a one-line ``reason``.
    ``with_history=True``: ``history`` holds an earlier version's per-checkpoint history (see
    :func:`checkpoint_meta`); else it is left empty without being converted."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        return CheckpointInfo(path, "unreadable", reason=one_line(f"cannot read file ({e})"))
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block open() forever
        return _problem(path, st, "unreadable", "not a regular file")
    if use_sidecar:
        doc = load_sidecar(path, st)
        if doc is not None and damage_reason(doc) is not None:
            return _damaged_info(path, st, doc)
        if doc is not None:
            try:
                return _info_from_meta(path, st, doc["checkpoint"], with_history, source="sidecar",
                                       complete=True, sha256=doc.get("sha256"))
            except (ValueError, TypeError, AttributeError):
                pass  # a sidecar with a malformed body: read the pickle instead
    used: set[str] = set()
    try:
        obj = load_checkpoint_object(path, used)
    except UnsafeCheckpointError as e:
        if e.global_name.startswith("__torch__."):
            return _problem(path, st, "unreadable",
                            "a TorchScript archive (torch.jit.save), not a training checkpoint")
        return _problem(path, st, "unsafe", str(e))
    except CheckpointReadError as e:
        return _problem(path, st, "unreadable", str(e))
    except OSError as e:
        return _problem(path, st, "unreadable", f"cannot read file ({e})")
    except Exception as e:  # anything malformed in the pickle: one line, never a traceback
        return _problem(path, st, "unreadable", f"corrupt pickle ({type(e).__name__}: {e})")
    try:
        meta = checkpoint_meta(obj, with_history)
    except Exception as e:  # defensive: metadata extraction must not take the listing down
        return _problem(path, st, "unreadable", f"corrupt checkpoint ({type(e).__name__}: {e})")
    extra_globals = sorted(used - TORCH_WEIGHTS_ONLY_GLOBALS)
    return _info_from_meta(path, st, meta, with_history, source="pickle", extra_globals=extra_globals)


def _damaged_info(path: Path, st: os.stat_result, doc: dict) -> CheckpointInfo:
    """A marked file: what its sidecar recorded when it was written (epoch, metrics), for the
    listing, but kind 'damaged' and never complete."""
    reason = f"damaged: {damage_reason(doc)}"
    try:
        info = _info_from_meta(path, st, doc["checkpoint"], False, source="sidecar",
                               sha256=doc.get("sha256"))
    except (ValueError, TypeError, AttributeError):
        return _problem(path, st, "damaged", reason)
    info.kind, info.reason, info.complete = "damaged", one_line(reason), False
    return info


def _problem(path: Path, st: os.stat_result, kind: str, reason: str) -> CheckpointInfo:
    return CheckpointInfo(path, kind, reason=one_line(reason), size_bytes=st.st_size,
                          mtime=st.st_mtime)


# --- listing -----------------------------------------------------------------------------------

def list_checkpoint_files(exp_dir: Path | str) -> list[Path]:
    """Every ``*.pth`` file in the folder, in checkpoint order (epochs numerically, interrupt,
    best, others). Temp files (``*.pth.tmp*``) and dot-files are not checkpoints."""
    folder = Path(exp_dir)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    names = []
    for e in entries:
        if e.name.startswith(".") or not e.name.endswith(CHECKPOINT_SUFFIX):
            continue
        try:
            if e.is_file():
                names.append(e.name)
        except OSError:
            continue
    return [folder / n for n in sorted(names, key=checkpoint_sort_key)]


def _pct(value: float) -> str:
    return f"{value:.2f}%"


def _entry_lines(info: CheckpointInfo) -> list[str]:
    if info.kind == "damaged":
        reason = (info.reason or "damaged").removeprefix("damaged: ")
        was = f" (was epoch {info.epoch})" if info.epoch is not None else ""
        return [f"   Damaged{was}: {reason}; not usable for training"]
    if info.kind == "unreadable":
        return [f"   Unreadable: {info.reason or 'unknown reason'}"]
    if info.kind == "unsafe":
        return [f"   Unsafe: {info.reason or 'unknown reason'}"]
    lines = []
    if info.kind == "weights_only":
        lines.append("   Legacy checkpoint (weights only): cannot resume optimizer or epoch")
    if info.epoch is not None:
        epoch = f"   Epoch: {info.epoch}"
        if info.step_in_epoch:
            epoch += f" (+ {info.step_in_epoch} steps of epoch {info.epoch + 1})"
        lines.append(epoch)
    for key, label in (("val_eer", "Val EER"), ("val_acc", "Val Acc"), ("best_val_eer", "Best EER")):
        if key in info.metrics:
            lines.append(f"   {label}: {_pct(info.metrics[key])}")
    lines += _frontend_lines(info)
    return lines


def _frontend_lines(info: CheckpointInfo) -> list[str]:
    """A frozen --ssl_path front-end is not in the file: say where its weights are."""
    args = info.args or {}
    if not (args.get("freeze_ssl") is True and args.get("ssl_path")):
        return []
    digest = (f"sha256 {info.frontend_sha256[:16]}..." if info.frontend_sha256
              else "its content hash is recorded in the checkpoint")
    return [f"   Front-end: frozen, stored once in {args['ssl_path']} ({digest}), not in this file"]


def format_checkpoint_listing(exp_dir: Path | str, infos: list[CheckpointInfo]) -> str:
    """The ``--list_checkpoints`` text, exactly as the checkpoint guide shows it (no trailing
    newline). Problem files get a line saying why instead of failing the listing."""
    lines = [_RULE, f"📋 Available Checkpoints in {exp_dir}", _RULE]
    for info in sorted(infos, key=lambda i: checkpoint_sort_key(i.path.name)):
        lines += ["", f"📦 {info.path.name}", *_entry_lines(info)]
    if not infos:
        lines += ["", "   No checkpoints found."]
    lines.append(_RULE)
    return "\n".join(lines)
