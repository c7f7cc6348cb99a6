"""Checkpoint metadata without torch: the one reader behind ``--list_checkpoints``, auto-resume
candidate selection and the dashboard's catalog.

Why not ``torch.load``? Loading a 100M-parameter checkpoint reads and allocates every tensor
(~13 s each); listing 20 of them should take well under a second. So this module reads only the
pickle that describes the checkpoint and never touches tensor bytes, and it never imports torch
(nor numpy: numpy scalars are decoded with ``struct``).

How ``torch.save`` stores a file
--------------------------------
*Zip format* (torch >= 1.6, the default): an uncompressed ZIP archive whose entries all live in
one folder, ``<archive>/data.pkl`` first (the pickled object), then ``<archive>/data/<key>`` (raw
storage bytes), ``<archive>/version``, ``<archive>/byteorder`` ... The folder name is whatever
the file was called when it was saved, not its current name, so we take the first entry whose
name ends in ``/data.pkl``. We read the end-of-central-directory record (this is what tells a
complete file from a truncated one: it is written last), the central directory entry of
``data.pkl``, and that one entry, whose CRC-32 we check. Nothing else is read.

*Legacy format* (``_use_new_zipfile_serialization=False``): consecutive pickles: the magic number
0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict, the object, the sorted list of
storage keys, then each storage as an 8-byte element count and its bytes. We read the pickles and
check that the file is at least as long as the storages they announce.

Inside the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)`` where ``storage`` is a persistent id ``('storage', torch.FloatStorage, key, location,
numel)``. We replace the storage with a :class:`StorageStub` and the tensor with a
:class:`TensorStub` that keeps only its shape and dtype.

Safety argument
---------------
The pickle is executed by our own small interpreter (:func:`_unpickle`), not by ``pickle``:

* ``GLOBAL``/``STACK_GLOBAL`` look the name up in :data:`_GLOBALS`, an allowlist that mirrors
  torch's ``weights_only=True`` unpickler (plus data-only numpy scalars/arrays, argparse.Namespace
  and a few builtins). Every entry is a *local stand-in*: a function of ours or an inert marker.
  No module is ever imported and no real torch/numpy/os callable is ever reached. A name not in
  the list stops the read at once: the file is ``kind='unsafe'``, "pickle would call posix.system".
* ``REDUCE``/``NEWOBJ``/``INST``/``OBJ`` call only stand-ins (checked by identity), which check
  their arguments. ``BUILD`` only sets state on our own stub classes. ``APPEND``/``SETITEM`` work
  only on plain lists and dicts, so no user ``__setitem__`` or ``extend`` can run either.
* Resource bounds: the pickle is at most :data:`MAX_PICKLE_BYTES` and :data:`MAX_PICKLE_OPS`
  opcodes (each opcode creates O(1) objects, so memory is bounded too); every length is checked
  against the bytes actually present before anything is allocated (CPython's C unpickler
  preallocates ``BINBYTES`` lengths and memo indices: a 10-byte pickle can ask it for gigabytes);
  dict keys and set items are checked before they are hashed (hashing a million-deep nested tuple
  overflows the C stack: a segfault, not an exception); the metadata we return is built with depth
  and size limits, so shared references or cycles in the pickle cannot blow up.
* Any malformed input ends in ``kind='unreadable'`` with a one-line reason; nothing raises.
* One exception, for speed: the catalog's reader processes (:mod:`training.checkpoint.pool`), which cap
  their address space and may crash, run zip checkpoints through CPython's C unpickler with the
  same allowlist and fall back to the interpreter on any error (see "the C unpickler" below).
  No other process ever turns it on.

What a successful read does *not* prove: that the tensor bytes are intact. The sidecar's sha256
(written by the trainer after the ``.pth`` is complete) is what vouches for the whole file.

Sidecars
--------
``X.pth.meta.json`` holds the checkpoint's metadata (:func:`checkpoint_meta`) plus the ``.pth``'s
size, ``mtime_ns`` and sha256. It is written after the ``.pth`` is complete, so a sidecar whose
size and mtime match marks the checkpoint complete (``complete=True``) and lets the reader skip
even the pickle. A stale or corrupt sidecar is ignored.

Damage marks
------------
Neither the sidecar's size/mtime check nor this reader sees a byte flipped inside the tensor data
with the mtime put back. Only hashing the file does (:func:`verify_checkpoint_file`: the
sidecar's sha256 when a valid sidecar has one, else the zip records' CRC-32s), and that costs a
full read, so listings do not do it on every scan. Instead, whoever verifies a file and finds it
damaged (every training load, ``--list_checkpoints --verify``, the dashboard's verify action)
records the verdict in the sidecar (:func:`mark_damaged`: a ``damaged`` entry, or a new sidecar
for a file that had none). The ``.pth`` itself is never modified. A marked sidecar is keyed by the
file's size and mtime_ns like any other, so the mark holds while the damaged bytes stay, and from
then on every reader reports the file as ``kind='damaged'`` (never complete, never resumable).
A file replaced by a new save gets a new mtime: the old mark no longer applies to it.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import codecs
import hashlib
import json
import math
import numbers
import os
import pickle
import secrets
import stat
import struct
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.naming import CHECKPOINT_SUFFIX, checkpoint_sort_key

__all__ = [
    "SIDECAR_SUFFIX",
    "KINDS",
    "METRIC_KEYS",
    "CheckpointInfo",
    "TensorStub",
    "StorageStub",
    "CheckpointReadError",
    "UnsafeCheckpointError",
    "sidecar_path",
    "read_checkpoint_info",
    "read_checkpoint_object",
    "read_sidecar",
    "write_sidecar",
    "checkpoint_meta",
    "file_sha256",
    "verify_checkpoint_file",
    "mark_damaged",
    "clear_damage_mark",
    "list_checkpoint_files",
    "format_checkpoint_listing",
    "safe_globals_for",
    "TORCH_WEIGHTS_ONLY_GLOBALS",
]

SIDECAR_SUFFIX = ".meta.json"
SIDECAR_FORMAT = 1
# damaged: a verification found its bytes changed since they were written (see "Damage marks")
KINDS = ("full", "weights_only", "unreadable", "unsafe", "damaged")
METRIC_KEYS = ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer")

MAX_PICKLE_BYTES = 64 * 1024 * 1024
# A 1000-tensor model with Adam state is ~60k opcodes; the cap bounds time (~1 s) and memory.
MAX_PICKLE_OPS = 2_000_000
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
_MAX_LINE = 64 * 1024  # text-protocol lines (GLOBAL names, INT, FLOAT ...)
_MAX_DIMS = 64
_MAX_DIM = 1 << 62
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_LOCAL = b"PK\x03\x04"
_RULE = "=" * 70


# --- errors -------------------------------------------------------------------------------------

class CheckpointReadError(Exception):
    """The file is not a readable torch checkpoint (truncated, corrupt, not torch at all)."""


class UnsafeCheckpointError(CheckpointReadError):
    """The pickle references a global outside the allowlist; it was not run."""

    def __init__(self, global_name: str):
        super().__init__(f"pickle would call {global_name}")
        self.global_name = global_name


class _Truncated(CheckpointReadError):
    """The pickle needs bytes past the end of the buffer (the legacy reader then reads more)."""


def _fail(msg: str) -> CheckpointReadError:
    return CheckpointReadError(msg)


# --- stand-ins for what the pickle builds -------------------------------------------------------
# eq=False everywhere: identity hashing, so a stub is a safe dict key or set item.

@dataclass(eq=False, slots=True)
class StorageStub:
    """A tensor storage, as named by the pickle's persistent id. Its bytes are never read."""

    dtype: str | None
    numel: int | None
    key: str
    location: str


@dataclass(eq=False, slots=True)
class TensorStub:
    """A tensor without its data: shape (None when unknown), dtype name ('float32'), numel."""

    shape: tuple[int, ...] | None
    dtype: str | None
    numel: int | None

    def describe(self) -> str:
        shape = list(self.shape) if self.shape is not None else "?"
        return f"<tensor {self.dtype or '?'} {shape}>"


@dataclass(eq=False, slots=True)
class _DType:
    """A torch dtype such as torch.float32 (``name='float32'``)."""

    name: str

    def __str__(self) -> str:
        return f"torch.{self.name}"


@dataclass(eq=False, slots=True)
class _Opaque:
    """A data-only value we keep only as text: a device, layout, qscheme, slice, range ..."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False, slots=True)
class _StorageType:
    """``torch.FloatStorage`` & co. as they appear in persistent ids. Not callable."""

    name: str
    dtype: str | None


@dataclass(eq=False, slots=True)
class _NamespaceStub:
    """argparse.Namespace: the research script stored its args this way."""

    attrs: dict


@dataclass(eq=False, slots=True)
class _NpDType:
    """A numpy dtype from its pickle (``numpy.dtype('f8', False, True)`` + BUILD state)."""

    descr: str
    byteorder: str = "="


@dataclass(eq=False, slots=True)
class _NdarrayStub:
    """A (small) numpy array: only its shape and dtype are kept."""

    shape: tuple[int, ...] | None = None
    dtype: _NpDType | None = None

    def describe(self) -> str:
        shape = list(self.shape) if self.shape is not None else "?"
        name = _NP_NAMES.get(self.dtype.descr, self.dtype.descr) if self.dtype else "?"
        return f"<ndarray {name} {shape}>"


_STUB_TYPES = (StorageStub, TensorStub, _DType, _Opaque, _StorageType, _NamespaceStub, _NpDType,
               _NdarrayStub)


# --- argument checks for stand-ins ---------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return type(v) is int


def _shape(size: Any) -> tuple[int, ...] | None:
    """A validated shape; None when it is not a short sequence of sane non-negative ints."""
    if type(size) not in (tuple, list) or len(size) > _MAX_DIMS:
        return None
    if not all(type(d) is int and 0 <= d < _MAX_DIM for d in size):
        return None
    return tuple(size)


def _numel(shape: tuple[int, ...] | None) -> int | None:
    if shape is None:
        return None
    n = 1
    for d in shape:
        n *= d
        if n >= _MAX_DIM:  # keeps every product small: no bignum arithmetic on hostile shapes
            return None
    return n


def _tensor(shape_like: Any, dtype: str | None) -> TensorStub:
    # Every tensor of a checkpoint comes through here: the usual short tuple of ints is handled
    # inline, with exactly the checks of _shape and _numel.
    if type(shape_like) is tuple and len(shape_like) <= 8:
        n = 1
        for d in shape_like:
            if type(d) is not int or d < 0:
                break
            n *= d
            if n >= _MAX_DIM:
                break
        else:
            return TensorStub(shape_like, dtype, n)
    shape = _shape(shape_like)
    return TensorStub(shape, dtype, _numel(shape))


def _storage_dtype(storage: Any) -> str:
    if type(storage) is not StorageStub:
        raise _fail("tensor rebuilt from something that is not a storage")
    return storage.dtype


def _dtype_name(dtype: Any) -> str | None:
    return dtype.name if type(dtype) is _DType else None


# --- torch stand-ins ---------------------------------------------------------------------------

def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor(size, _storage_dtype(storage))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _tensor(size, _storage_dtype(storage))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    _storage_dtype(storage)
    return _tensor(size, _dtype_name(dtype))


def _rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, requires_grad,
                     backward_hooks):
    return _tensor(size, _storage_dtype(storage))


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if type(data) is not TensorStub:
        raise _fail("parameter rebuilt from something that is not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad):
    return _tensor(size, _dtype_name(dtype))


def _rebuild_wrapper_subclass(cls, dtype, size, stride, storage_offset, layout, device,
                              requires_grad):
    return _tensor(size, _dtype_name(dtype))


def _rebuild_device_tensor(data, dtype, device, requires_grad):
    shape = data.shape if type(data) is TensorStub else None
    return _tensor(shape, _dtype_name(dtype))


def _rebuild_opaque_tensor(*args, **kwargs):
    """Sparse and nested tensors: allowed by torch, but their shape is not worth decoding."""
    return TensorStub(None, None, None)


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch calls func(*args) and then re-types the result; re-typing is irrelevant to us.
    return _invoke(func, args, None)


def _tensor_class(dtype: str | None) -> Callable[..., TensorStub]:
    """torch.Tensor, torch.nn.Parameter, torch.FloatTensor ...: used with NEWOBJ/REDUCE."""

    def make(*args, **kwargs):
        if args and type(args[0]) is TensorStub:  # Parameter(data, requires_grad)
            return args[0]
        return TensorStub(None, dtype, None)

    return make


def _torch_size(dims=()):
    shape = _shape(dims)
    if shape is None:
        raise _fail("torch.Size of non-integers")
    return shape


def _torch_device(kind, index=None):
    if type(kind) is not str or len(kind) > 64 or not (index is None or _is_int(index)):
        raise _fail("malformed torch.device")
    return _Opaque(kind if index is None else f"{kind}:{index}")


def _get_layout(name):
    if type(name) is not str or len(name) > 64:
        raise _fail("malformed layout")
    return _Opaque(name)


# --- builtins stand-ins (strict about arguments: bytes(10**12) must not allocate a terabyte) ----

_MAX_BUILTIN_ALLOC = 1 << 20


def _byte_source(args: tuple) -> bytes:
    if not args:
        return b""
    src = args[0]
    if len(args) == 2 and type(src) is str and type(args[1]) is str:
        return src.encode(_check_encoding(args[1]))
    if len(args) == 1:
        if type(src) in (bytes, bytearray):
            return bytes(src)
        if type(src) is int and 0 <= src <= _MAX_BUILTIN_ALLOC:
            return bytes(src)
        if type(src) in (list, tuple) and all(type(b) is int for b in src):
            return bytes(src)  # ValueError for values outside 0..255
    raise _fail("malformed bytes/bytearray arguments")


def _check_encoding(enc: str) -> str:
    if enc.lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise _fail(f"unexpected encoding {enc[:20]!r}")
    return enc


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if type(obj) is not str or type(encoding) is not str or errors != "strict":
        raise _fail("malformed _codecs.encode arguments")
    return obj.encode(_check_encoding(encoding))


def _builtin_bytes(*args):
    return _byte_source(args)


def _builtin_bytearray(*args):
    return bytearray(_byte_source(args))


def _items(iterable: Any) -> list:
    if type(iterable) not in (list, tuple, set, frozenset):
        raise _fail("set built from a non-sequence")
    items = list(iterable)
    for item in items:
        _check_hashable(item)
    return items


def _builtin_set(iterable=()):
    return set(_items(iterable))


def _builtin_frozenset(iterable=()):
    return frozenset(_items(iterable))


def _builtin_complex(real=0, imag=0):
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise _fail("malformed complex")
    return complex(real, imag)


def _builtin_int(value=0, base=None):
    if type(value) in (int, float, bool) and base is None:
        return int(value)
    if type(value) is str and len(value) <= 4300 and (base is None or _is_int(base)):
        return int(value) if base is None else int(value, base)
    raise _fail("malformed int")


def _builtin_float(value=0.0):
    if type(value) in (int, float) or (type(value) is str and len(value) <= 1000):
        return float(value)
    raise _fail("malformed float")


def _int_or_none_args(args: tuple, what: str) -> tuple:
    if len(args) > 3 or not all(a is None or _is_int(a) for a in args):
        raise _fail(f"malformed {what}")
    return args


def _builtin_slice(*args):
    return _Opaque(f"slice{_int_or_none_args(args, 'slice')!r}")


def _builtin_range(*args):
    if not args or None in _int_or_none_args(args, "range"):
        raise _fail("malformed range")
    return _Opaque(repr(range(*args)))


def _ordered_dict(*args):
    return OrderedDict(_pairs(args))


def _counter(*args):
    return Counter(dict(_pairs(args)))


def _pairs(args: tuple) -> list:
    if not args:
        return []
    if len(args) != 1:
        raise _fail("malformed OrderedDict/Counter arguments")
    src = args[0]
    pairs = list(src.items()) if type(src) in (dict, OrderedDict, Counter) else src
    if type(pairs) not in (list, tuple):
        raise _fail("malformed OrderedDict/Counter arguments")
    out = []
    for pair in pairs:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise _fail("malformed OrderedDict/Counter item")
        _check_hashable(pair[0])
        out.append((pair[0], pair[1]))
    return out


# --- numpy stand-ins: scalars decoded with struct, numpy itself is never imported --------------

_NP_NAMES = {
    "b1": "bool", "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32",
    "u4": "uint32", "i8": "int64", "u8": "uint64", "f2": "float16", "f4": "float32",
    "f8": "float64", "c8": "complex64", "c16": "complex128",
}
_NP_STRUCT = {
    "b1": "?", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I", "i8": "q",
    "u8": "Q", "f2": "e", "f4": "f", "f8": "d", "c8": "ff", "c16": "dd",
}
# numpy.dtypes.<X>DType, the class of a dtype instance; torch needs it allowlisted to BUILD one.
_NP_DTYPE_CLASSES = {
    "Bool": "b1", "Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4",
    "UInt32": "u4", "Int64": "i8", "UInt64": "u8", "Float16": "f2", "Float32": "f4",
    "Float64": "f8", "Complex64": "c8", "Complex128": "c16",
    "Byte": "i1", "UByte": "u1", "Short": "i2", "UShort": "u2", "Int": "i4", "UInt": "u4",
    "Long": "i8", "ULong": "u8", "LongLong": "i8", "ULongLong": "u8", "Half": "f2",
}
_NP_CLASS_FOR_DESCR = {descr: f"numpy.dtypes.{name}DType" for name, descr in
                       list(_NP_DTYPE_CLASSES.items())[:14]}


def _np_dtype(descr, align=False, copy=True):
    if type(descr) is not str or len(descr) > 32:
        raise _fail("malformed numpy dtype")
    return _NpDType(descr.lstrip("<>=|"))


def _np_dtype_class(descr: str) -> Callable[..., _NpDType]:
    def make(*args, **kwargs):
        return _NpDType(descr)

    return make


def _np_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar(dtype, raw bytes) -> the Python number it holds."""
    if type(dtype) is not _NpDType:
        raise _fail("numpy scalar without a dtype")
    fmt = _NP_STRUCT.get(dtype.descr)
    if fmt is None or type(data) is not bytes:
        return _Opaque(f"<numpy {dtype.descr} scalar>")
    order = ">" if dtype.byteorder == ">" else "<"
    values = struct.unpack(order + fmt, data)  # struct.error when the length is wrong
    return complex(*values) if len(values) == 2 else values[0]


_NP_NDARRAY = _Opaque("numpy.ndarray")  # a marker: the cls argument of _reconstruct


def _np_reconstruct(cls, shape, dtype_code):
    if cls is not _NP_NDARRAY:
        raise _fail("numpy _reconstruct of something other than ndarray")
    return _NdarrayStub()


def _namespace(*args, **kwargs):
    if args:
        raise _fail("malformed argparse.Namespace")
    return _NamespaceStub(dict(kwargs))


# --- the allowlist -----------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "Double": "float64", "Float": "float32", "BFloat16": "bfloat16", "Half": "float16",
    "Long": "int64", "Int": "int32", "Short": "int16", "Char": "int8", "Byte": "uint8",
    "Bool": "bool", "ComplexDouble": "complex128", "ComplexFloat": "complex64",
    "QUInt8": "quint8", "QInt8": "qint8", "QInt32": "qint32", "QUInt4x2": "quint4x2",
    "QUInt2x4": "quint2x4",
}
_TENSOR_TYPES = ("Double", "Float", "BFloat16", "Half", "Long", "Int", "Short", "Char", "Byte",
                 "Bool")
_TORCH_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "complex32", "complex64", "complex128", "uint8",
    "int8", "int16", "int32", "int64", "bool", "quint8", "qint8", "qint32", "quint4x2",
    "quint2x4", "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16", "float8_e5m2",
    "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2",
    "uint16", "uint32", "uint64",
    *(f"uint{i}" for i in range(1, 8)), *(f"int{i}" for i in range(1, 8)),
)
_QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
             "per_channel_symmetric", "per_channel_affine_float_qparams")
# element size in bytes, for checking that a legacy file holds all the storages it announces
_ELEMENT_SIZE = {
    "float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "bool": 1, "complex128": 16, "complex64": 8, "quint8": 1, "qint8": 1,
    "qint32": 4, "quint4x2": 1, "quint2x4": 1,
}


def _torch_globals() -> dict[str, Any]:
    """Exactly the names torch 2.13's weights_only unpickler allows, each mapped to a stand-in."""
    g: dict[str, Any] = {
        "collections.OrderedDict": _ordered_dict,
        "collections.Counter": _counter,
        "torch.nn.parameter.Parameter": _tensor_class(None),
        "torch.serialization._get_layout": _get_layout,
        "torch.Size": _torch_size,
        "torch.Tensor": _tensor_class(None),
        "torch.device": _torch_device,
        "_codecs.encode": _codecs_encode,
        "builtins.bytearray": _builtin_bytearray,
        "builtins.set": _builtin_set,
        "builtins.complex": _builtin_complex,
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_qtensor": _rebuild_qtensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
        "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta_tensor_no_storage,
        "torch._utils._rebuild_wrapper_subclass": _rebuild_wrapper_subclass,
        "torch._utils._rebuild_device_tensor_from_numpy": _rebuild_device_tensor,
        "torch._utils._rebuild_device_tensor_from_cpu_tensor": _rebuild_device_tensor,
        "torch._utils._rebuild_sparse_tensor": _rebuild_opaque_tensor,
        "torch._utils._rebuild_nested_tensor": _rebuild_opaque_tensor,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    }
    for name in _TORCH_DTYPES:
        g[f"torch.{name}"] = _DType(name)
    for name in _QSCHEMES:
        g[f"torch.{name}"] = _Opaque(f"torch.{name}")
    for kind, dtype in _STORAGE_DTYPES.items():
        g[f"torch.{kind}Storage"] = _StorageType(f"{kind}Storage", dtype)
        if not kind.startswith("Q"):
            g[f"torch.cuda.{kind}Storage"] = _StorageType(f"{kind}Storage", dtype)
    g["torch.storage.UntypedStorage"] = _StorageType("UntypedStorage", "uint8")
    g["torch.storage.TypedStorage"] = _StorageType("TypedStorage", None)
    for kind in _TENSOR_TYPES:
        dtype = _STORAGE_DTYPES[kind]
        prefixes = ("torch.", "torch.cuda.") + (
            ("torch.sparse.", "torch.cuda.sparse.") if kind != "Bool" else ())
        for prefix in prefixes:
            g[f"{prefix}{kind}Tensor"] = _tensor_class(dtype)
    return g


def _extra_globals() -> dict[str, Any]:
    """Data-only globals that torch's default list lacks but real checkpoints contain."""
    g: dict[str, Any] = {
        "argparse.Namespace": _namespace,
        "numpy.dtype": _np_dtype,
        "numpy.ndarray": _NP_NDARRAY,
        "builtins.frozenset": _builtin_frozenset,
        "builtins.bytes": _builtin_bytes,
        "builtins.slice": _builtin_slice,
        "builtins.int": _builtin_int,
        "builtins.float": _builtin_float,
        "builtins.range": _builtin_range,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        g[f"{module}.scalar"] = _np_scalar
        g[f"{module}._reconstruct"] = _np_reconstruct
    for name, descr in _NP_DTYPE_CLASSES.items():
        g[f"numpy.dtypes.{name}DType"] = _np_dtype_class(descr)
    return g


_TORCH_GLOBALS = _torch_globals()
TORCH_WEIGHTS_ONLY_GLOBALS: frozenset[str] = frozenset(_TORCH_GLOBALS)
_GLOBALS: dict[str, Any] = {**_TORCH_GLOBALS, **_extra_globals()}
# What REDUCE/NEWOBJ may call, by identity: our own functions only, never a marker value.
_INVOCABLE: dict[int, Any] = {id(v): v for v in _GLOBALS.values() if callable(v)}


def _invoke(func: Any, args: Any, kwargs: dict | None) -> Any:
    if _INVOCABLE.get(id(func)) is not func:
        raise _fail(f"pickle calls a {type(func).__name__} that is not an allowed callable")
    if type(args) is not tuple:
        raise _fail("call arguments are not a tuple")
    if kwargs:
        if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
            raise _fail("malformed keyword arguments")
        return func(*args, **kwargs)
    return func(*args)


def _build(inst: Any, state: Any) -> None:
    """BUILD: set state, only on our own stubs (torch allows it on tensors and OrderedDicts)."""
    t = type(inst)
    if t is _NamespaceStub:
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise _fail("malformed argparse.Namespace state")
        inst.attrs.update(state)
    elif t is _NpDType:
        if type(state) is tuple and len(state) > 1 and type(state[1]) is str:
            inst.byteorder = state[1]
    elif t is _NdarrayStub:
        if type(state) is tuple and len(state) == 5:
            inst.shape = _shape(state[1])
            inst.dtype = state[2] if type(state[2]) is _NpDType else None
    elif t in (TensorStub, OrderedDict):  # tensor set_/__setstate__, state dict _metadata
        pass
    else:
        raise _fail(f"BUILD on a {t.__name__}")


# Keys and set items are hashed; a deeply nested tuple would overflow the C stack in hash().
_HASHABLE_LEAVES = (str, int, float, bool, bytes, complex, type(None)) + _STUB_TYPES


def _check_hashable(key: Any) -> None:
    todo = [(key, 0)]
    seen = 0
    while todo:
        item, depth = todo.pop()
        seen += 1
        t = type(item)
        if t in _HASHABLE_LEAVES:
            continue
        if t in (tuple, frozenset) and depth < 16 and seen < 10_000:
            todo.extend((x, depth + 1) for x in item)
            continue
        raise _fail(f"unusable dict key or set item ({t.__name__})")


def _global_name(module: str, name: str) -> str:
    # Protocol-2 pickles (torch's default) spell builtins as __builtin__, copyreg as copy_reg.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _resolve_global(module: str, name: str, used: set[str]) -> Any:
    full = _global_name(module, name)
    if full not in _GLOBALS:
        raise UnsafeCheckpointError(full)
    used.add(full)
    return _GLOBALS[full]


# --- the pickle interpreter ----------------------------------------------------------------------

_U8 = struct.Struct("<B").unpack_from
_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct(">d").unpack_from

PersistentLoad = Callable[[Any], Any]


def _decode_py2_str(raw: bytes) -> str:
    # torch.load unpickles with encoding="utf-8": Python 2 str objects become str
    return raw.decode("utf-8")


def _unpickle(data: bytes, pos: int, persistent_load: PersistentLoad, used: set[str],
              max_ops: int = MAX_PICKLE_OPS) -> tuple[Any, int]:
    """Run one pickle starting at ``data[pos]``; return (object, position after STOP).

    Reads past the end of ``data`` raise ``_Truncated``; anything else malformed raises some
    Exception, which the caller turns into ``kind='unreadable'``.
    """
    return _run(data, pos, persistent_load, used, max_ops)


def _run(data: bytes, pos: int, persistent_load: PersistentLoad, used: set[str],
         max_ops: int) -> tuple[Any, int]:
    """The interpreter loop: locals only, and the opcodes torch.save emits most come first
    (LONG_BINPUT, BINGET, BININT1, MARK ... make up 90% of a real data.pkl)."""
    end = len(data)
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    memo: dict[int, Any] = {}
    append = stack.append
    ops = 0

    def line() -> bytes:
        nonlocal pos
        nl = data.find(b"\n", pos, min(end, pos + _MAX_LINE))
        if nl < 0:
            raise _Truncated("pickle data was truncated") if end - pos < _MAX_LINE else _fail(
                "overlong pickle line")
        out = data[pos:nl]
        pos = nl + 1
        return out

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > end:
            raise _Truncated("pickle data was truncated")
        out = data[pos:pos + n]
        pos += n
        return out

    # Fixed-size arguments are read without bounds checks (the hot path): an IndexError or
    # struct.error within 8 bytes of the end is a read past it. Elsewhere it is a stack underflow,
    # which a well-formed pickle never causes. (A try block costs nothing in Python 3.11.)
    try:
        while True:
            op = data[pos]
            pos += 1
            ops += 1
            if ops > max_ops:
                raise _fail(f"pickle too complex (more than {max_ops:,} opcodes)")

            if op == 0x72:  # r LONG_BINPUT
                memo[_U32(data, pos)[0]] = stack[-1]
                pos += 4
            elif op == 0x68:  # h BINGET
                append(memo[data[pos]])
                pos += 1
            elif op == 0x4B:  # K BININT1
                append(data[pos])
                pos += 1
            elif op == 0x28:  # ( MARK
                metastack.append(stack)
                stack = []
                append = stack.append
            elif op == 0x6A:  # j LONG_BINGET
                append(memo[_U32(data, pos)[0]])
                pos += 4
            elif op == 0x74:  # t TUPLE
                items = stack
                stack = metastack.pop()
                append = stack.append
                append(tuple(items))
            elif op == 0x52:  # R REDUCE
                args = stack.pop()
                func = stack[-1]
                if func is _rebuild_tensor_v2 and type(args) is tuple and len(args) >= 4:
                    stack[-1] = _rebuild_tensor_v2(*args)  # every tensor: skip _invoke's checks
                else:
                    stack[-1] = _invoke(func, args, None)
            elif op == 0x29:  # ) EMPTY_TUPLE
                append(())
            elif op == 0x58:  # X BINUNICODE
                (n,) = _U32(data, pos)
                pos += 4
                append(take(n).decode("utf-8", "surrogatepass"))
            elif op == 0x71:  # q BINPUT
                memo[data[pos]] = stack[-1]
                pos += 1
            elif op == 0x89:  # NEWFALSE
                append(False)
            elif op == 0x51:  # Q BINPERSID
                append(persistent_load(stack.pop()))
            elif op == 0x85:  # TUPLE1
                stack[-1] = (stack[-1],)
            elif op == 0x8A:  # LONG1
                n = data[pos]
                pos += 1
                append(int.from_bytes(take(n), "little", signed=True))
            elif op == 0x7D:  # } EMPTY_DICT
                append({})
            elif op == 0x75:  # u SETITEMS
                items = stack
                stack = metastack.pop()
                append = stack.append
                target = stack[-1]
                if type(target) not in (dict, OrderedDict, Counter) or len(items) % 2:
                    raise _fail("SETITEMS on a non-dict or with an odd item count")
                for i in range(0, len(items), 2):
                    key = items[i]
                    if type(key) is not str:
                        _check_hashable(key)
                    target[key] = items[i + 1]
            elif op == 0x4A:  # J BININT
                append(_I32(data, pos)[0])
                pos += 4
            elif op == 0x86:  # TUPLE2
                b = stack.pop()
                stack[-1] = (stack[-1], b)
            elif op == 0x4D:  # M BININT2
                append(_U16(data, pos)[0])
                pos += 2
            elif op == 0x88:  # NEWTRUE
                append(True)
            elif op == 0x94:  # MEMOIZE (protocol 4+)
                memo[len(memo)] = stack[-1]
            elif op == 0x8C:  # SHORT_BINUNICODE
                n = data[pos]
                pos += 1
                append(take(n).decode("utf-8", "surrogatepass"))
            elif op == 0x47:  # G BINFLOAT
                append(_F64(data, pos)[0])
                pos += 8
            elif op == 0x4E:  # N NONE
                append(None)
            elif op == 0x5D:  # ] EMPTY_LIST
                append([])
            elif op == 0x73:  # s SETITEM
                value = stack.pop()
                key = stack.pop()
                target = stack[-1]
                if type(target) not in (dict, OrderedDict, Counter):
                    raise _fail("SETITEM on a non-dict")
                _check_hashable(key)
                target[key] = value
            elif op == 0x87:  # TUPLE3
                c = stack.pop()
                b = stack.pop()
                stack[-1] = (stack[-1], b, c)
            elif op == 0x65:  # e APPENDS
                items = stack
                stack = metastack.pop()
                append = stack.append
                if type(stack[-1]) is not list:
                    raise _fail("APPENDS to a non-list")
                stack[-1].extend(items)
            elif op == 0x61:  # a APPEND
                item = stack.pop()
                if type(stack[-1]) is not list:
                    raise _fail("APPEND to a non-list")
                stack[-1].append(item)
            elif op == 0x63:  # c GLOBAL
                module = line().decode("utf-8")
                name = line().decode("utf-8")
                append(_resolve_global(module, name, used))
            elif op == 0x93:  # STACK_GLOBAL
                name = stack.pop()
                module = stack.pop()
                if type(module) is not str or type(name) is not str:
                    raise _fail("STACK_GLOBAL with non-string names")
                append(_resolve_global(module, name, used))
            elif op == 0x81:  # NEWOBJ
                args = stack.pop()
                cls = stack.pop()
                append(_invoke(cls, args, None))
            elif op == 0x92:  # NEWOBJ_EX
                kwargs = stack.pop()
                args = stack.pop()
                cls = stack.pop()
                append(_invoke(cls, args, kwargs))
            elif op == 0x62:  # b BUILD
                build_state = stack.pop()
                inst = stack[-1]
                _build(inst, build_state)
                if type(inst) is _NpDType and inst.descr in _NP_CLASS_FOR_DESCR:
                    # torch.load(weights_only=True) can only BUILD a dtype whose class it allows
                    used.add(_NP_CLASS_FOR_DESCR[inst.descr])
            elif op == 0x80:  # PROTO
                if data[pos] > 5:
                    raise _fail(f"unsupported pickle protocol {data[pos]}")
                pos += 1
            elif op == 0x95:  # FRAME: framing is only a read-ahead hint, the data is all here
                _U64(data, pos)
                pos += 8
            elif op == 0x2E:  # . STOP
                return stack.pop(), pos
            elif op == 0x8B:  # LONG4
                (n,) = _I32(data, pos)
                pos += 4
                append(int.from_bytes(take(n), "little", signed=True))
            elif op == 0x43:  # C SHORT_BINBYTES
                n = data[pos]
                pos += 1
                append(take(n))
            elif op == 0x42:  # B BINBYTES
                (n,) = _U32(data, pos)
                pos += 4
                append(take(n))
            elif op == 0x8E:  # BINBYTES8
                (n,) = _U64(data, pos)
                pos += 8
                append(take(n))
            elif op == 0x96:  # BYTEARRAY8
                (n,) = _U64(data, pos)
                pos += 8
                append(bytearray(take(n)))
            elif op == 0x8D:  # BINUNICODE8
                (n,) = _U64(data, pos)
                pos += 8
                append(take(n).decode("utf-8", "surrogatepass"))
            elif op == 0x55:  # U SHORT_BINSTRING (Python 2 str)
                n = data[pos]
                pos += 1
                append(_decode_py2_str(take(n)))
            elif op == 0x54:  # T BINSTRING
                (n,) = _I32(data, pos)
                pos += 4
                append(_decode_py2_str(take(n)))
            elif op == 0x8F:  # EMPTY_SET
                append(set())
            elif op == 0x90:  # ADDITEMS
                items = stack
                stack = metastack.pop()
                append = stack.append
                if type(stack[-1]) is not set:
                    raise _fail("ADDITEMS to a non-set")
                for item in items:
                    _check_hashable(item)
                    stack[-1].add(item)
            elif op == 0x91:  # FROZENSET
                items = stack
                stack = metastack.pop()
                append = stack.append
                for item in items:
                    _check_hashable(item)
                append(frozenset(items))
            elif op == 0x6C:  # l LIST
                items = stack
                stack = metastack.pop()
                append = stack.append
                append(items)
            elif op == 0x64:  # d DICT
                items = stack
                stack = metastack.pop()
                append = stack.append
                if len(items) % 2:
                    raise _fail("DICT with an odd item count")
                d = {}
                for i in range(0, len(items), 2):
                    _check_hashable(items[i])
                    d[items[i]] = items[i + 1]
                append(d)
            elif op == 0x30:  # 0 POP
                if stack:
                    stack.pop()
                else:
                    stack = metastack.pop()
                    append = stack.append
            elif op == 0x31:  # 1 POP_MARK
                stack = metastack.pop()
                append = stack.append
            elif op == 0x32:  # 2 DUP
                append(stack[-1])
            elif op == 0x49:  # I INT (text); I01/I00 are True/False
                text = line()
                append(True if text == b"01" else False if text == b"00" else int(text))
            elif op == 0x4C:  # L LONG (text)
                text = line()
                append(int(text[:-1] if text.endswith(b"L") else text))
            elif op == 0x46:  # F FLOAT (text)
                append(float(line()))
            elif op == 0x53:  # S STRING (quoted, escaped Python 2 str)
                text = line()
                if len(text) < 2 or text[0] != text[-1] or text[:1] not in (b"'", b'"'):
                    raise _fail("malformed STRING opcode")
                append(_decode_py2_str(codecs.escape_decode(text[1:-1])[0]))
            elif op == 0x56:  # V UNICODE (text)
                append(line().decode("raw-unicode-escape"))
            elif op == 0x67:  # g GET (text)
                append(memo[int(line())])
            elif op == 0x70:  # p PUT (text)
                memo[int(line())] = stack[-1]
            elif op == 0x50:  # P PERSID (text)
                append(persistent_load(line().decode("ascii")))
            elif op == 0x69:  # i INST
                module = line().decode("utf-8")
                name = line().decode("utf-8")
                cls = _resolve_global(module, name, used)
                items = stack
                stack = metastack.pop()
                append = stack.append
                append(_invoke(cls, tuple(items), None))
            elif op == 0x6F:  # o OBJ
                items = stack
                stack = metastack.pop()
                append = stack.append
                if not items:
                    raise _fail("OBJ without a class")
                append(_invoke(items[0], tuple(items[1:]), None))
            elif op in (0x82, 0x83, 0x84):
                raise _fail("pickle uses the copyreg extension registry (not a torch checkpoint)")
            elif op in (0x97, 0x98):
                raise _fail("pickle uses out-of-band buffers (not a torch checkpoint)")
            else:
                raise _fail(f"invalid pickle opcode 0x{op:02x} at byte {pos - 1}")
    except (IndexError, struct.error):
        if pos + 9 >= end:
            raise _Truncated("pickle data was truncated") from None
        raise _fail("corrupt pickle (stack underflow)") from None


def _storage_from_pid(pid: Any, seen: dict[str, StorageStub] | None = None) -> StorageStub:
    """persistent_load: ('storage', storage_type, key, location, numel[, view_metadata])."""
    if type(pid) is not tuple or len(pid) < 5:
        raise _fail("persistent id is not a storage tuple")
    tag, storage_type, key, location, numel = pid if len(pid) == 5 else pid[:5]
    if isinstance(tag, bytes):
        tag = tag.decode("ascii", "replace")
    if tag != "storage" or type(storage_type) is not _StorageType:
        raise _fail("persistent id is not a storage")
    if type(key) is not str or type(location) is not str or type(numel) is not int or numel < 0:
        raise _fail("malformed storage persistent id")
    stub = StorageStub(storage_type.dtype, numel, key, location)
    if seen is not None:
        seen.setdefault(key, stub)
    return stub


# --- reading the pickle out of the file ------------------------------------------------------------

def _read_exact(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    out = f.read(n)
    if len(out) != n:
        raise _fail(f"truncated or not a torch checkpoint (BadZipFile: short read at {offset})")
    return out


def _bad_zip(detail: str) -> CheckpointReadError:
    return _fail(f"truncated or not a torch checkpoint (BadZipFile: {detail})")


def _zip_central_directory(f, size: int) -> tuple[int, int, int]:
    """(offset, size, entry count) of the central directory, from the end records.

    The end-of-central-directory record is written last, so a file cut anywhere lacks it: this is
    the completeness check for zip checkpoints.
    """
    # The record, then a comment of up to 64 KiB (torch writes none: try the short tail first);
    # before it, room for the zip64 locator and end record.
    for tail_len in (min(size, 22 + 20 + 56), min(size, 22 + 0xFFFF + 20 + 56)):
        tail = _read_exact(f, size - tail_len, tail_len)
        i = tail.rfind(b"PK\x05\x06")
        while i >= 0:
            if i + 22 <= tail_len and i + 22 + _U16(tail, i + 20)[0] == tail_len:
                break
            i = tail.rfind(b"PK\x05\x06", 0, i)
        if i >= 0:
            break
    else:
        raise _bad_zip("File is not a zip file")
    entries, cd_size, cd_offset = _U16(tail, i + 10)[0], _U32(tail, i + 12)[0], _U32(tail, i + 16)[0]
    record_start = size - tail_len + i
    if 0xFFFF == entries or 0xFFFFFFFF in (cd_size, cd_offset):
        # zip64: a locator just before the record points at the zip64 end record
        if i < 20 or tail[i - 20:i - 16] != b"PK\x06\x07":
            raise _bad_zip("zip64 locator missing")
        z64_offset = _U64(tail, i - 12)[0]
        if z64_offset + 56 > size:
            raise _bad_zip("zip64 end record out of range")
        z64 = _read_exact(f, z64_offset, 56)
        if z64[:4] != b"PK\x06\x06":
            raise _bad_zip("zip64 end record missing")
        entries, cd_size, cd_offset = _U64(z64, 32)[0], _U64(z64, 40)[0], _U64(z64, 48)[0]
        record_start = z64_offset
    if cd_offset + cd_size > record_start or entries == 0:
        raise _bad_zip("central directory out of range")
    return cd_offset, cd_size, entries


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset stored as 0xFFFFFFFF live in the zip64 extra field (id 1), in order."""
    p = 0
    while p + 4 <= len(extra):
        tag, length = _U16(extra, p)[0], _U16(extra, p + 2)[0]
        body = extra[p + 4:p + 4 + length]
        if tag == 1:
            values = [_U64(body, k)[0] for k in range(0, len(body) - 7, 8)]
            out = []
            for v in (usize, csize, offset):
                out.append(values.pop(0) if v == 0xFFFFFFFF and values else v)
            return out[0], out[1], out[2]
        p += 4 + length
    return usize, csize, offset


def _read_zip_pickle(f, size: int) -> bytes:
    """The bytes of the first ``*/data.pkl`` entry, CRC-checked."""
    cd_offset, cd_size, entries = _zip_central_directory(f, size)
    # torch writes data.pkl first: a small read of the central directory usually finds it
    for window in (min(cd_size, 4096), min(cd_size, MAX_PICKLE_BYTES)):
        cd = _read_exact(f, cd_offset, window)
        entry = _find_data_pkl(cd, entries)
        if entry is not None:
            return _read_zip_member(f, cd_offset, *entry)
        if window == min(cd_size, MAX_PICKLE_BYTES):
            break
    raise _fail("zip archive without data.pkl (not a torch checkpoint)")


def _find_data_pkl(cd: bytes, entries: int) -> tuple | None:
    """(name, flags, method, crc, csize, usize, offset) of the first data.pkl entry wholly
    inside ``cd`` (a prefix of the central directory), else None."""
    p = 0
    for _ in range(min(entries, 1_000_000)):
        if p + 46 > len(cd) or cd[p:p + 4] != b"PK\x01\x02":
            break
        flags, method, crc = _U16(cd, p + 8)[0], _U16(cd, p + 10)[0], _U32(cd, p + 16)[0]
        csize, usize = _U32(cd, p + 20)[0], _U32(cd, p + 24)[0]
        name_len, extra_len, comment_len = _U16(cd, p + 28)[0], _U16(cd, p + 30)[0], _U16(cd, p + 32)[0]
        offset = _U32(cd, p + 42)[0]
        if p + 46 + name_len + extra_len + comment_len > len(cd):
            break  # cut off by the prefix
        name = cd[p + 46:p + 46 + name_len]
        extra = cd[p + 46 + name_len:p + 46 + name_len + extra_len]
        p += 46 + name_len + extra_len + comment_len
        if name.endswith(b"/data.pkl") or name == b"data.pkl":
            usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
            return name, flags, method, crc, csize, usize, offset
    return None


def _read_zip_member(f, cd_offset: int, name: bytes, flags: int, method: int, crc: int,
                     csize: int, usize: int, offset: int) -> bytes:
    if flags & 1:
        raise _fail("encrypted zip entry (not a torch checkpoint)")
    if usize > MAX_PICKLE_BYTES:
        raise _fail(f"pickle too large ({usize:,} bytes; limit {MAX_PICKLE_BYTES:,})")
    if offset + 30 > cd_offset:
        raise _bad_zip("bad local header for data.pkl")
    # One read for the local header, name, extra field (torch pads it to 64-byte alignment) and
    # data; a second only when the extra field is longer.
    guess = min(30 + len(name) + 64 + csize, cd_offset - offset)
    chunk = _read_exact(f, offset, guess)
    if chunk[:4] != _ZIP_LOCAL:
        raise _bad_zip("bad local header for data.pkl")
    local_name_len, local_extra_len = _U16(chunk, 26)[0], _U16(chunk, 28)[0]
    start = 30 + local_name_len + local_extra_len
    if offset + start + csize > cd_offset:
        raise _bad_zip("data.pkl overlaps the central directory")
    if start + csize > len(chunk):
        chunk = _read_exact(f, offset, start + csize)
    if chunk[30:30 + local_name_len] != name:
        raise _bad_zip("local header name differs from the central directory")
    raw = chunk[start:start + csize]
    if method == 0:
        data = raw
    elif method == 8:  # torch stores uncompressed, but a re-zipped archive may deflate
        inflater = zlib.decompressobj(-15)
        data = inflater.decompress(raw, MAX_PICKLE_BYTES + 1)
    else:
        raise _fail(f"unsupported zip compression method {method}")
    if len(data) != usize or zlib.crc32(data) != crc:
        raise _fail("corrupt data.pkl (CRC or size mismatch)")
    return data


def _read_legacy_object(f, size: int, used: set[str]) -> Any:
    """The object pickle of a pre-1.6 (non-zip) torch file."""
    chunk = min(size, 1 << 20)
    while True:
        data = _read_exact(f, 0, chunk)
        try:
            return _parse_legacy(data, size, used)
        except _Truncated:
            if chunk >= size:
                raise _fail("truncated legacy torch file (pickle data was truncated)") from None
            if chunk >= MAX_PICKLE_BYTES:
                raise _fail(f"pickle too large (over {MAX_PICKLE_BYTES:,} bytes)") from None
            chunk = min(size, chunk * 8, MAX_PICKLE_BYTES + (1 << 20))


def _parse_legacy(data: bytes, size: int, used: set[str]) -> Any:
    def no_persistent(pid):
        raise _fail("unexpected persistent id")

    # The whole first pickle runs (not just a magic-number-sized one), so a plain pickle that
    # calls os.system is reported as unsafe, which is also where torch.load stops.
    try:
        magic, pos = _unpickle(data, 0, no_persistent, used)
    except UnsafeCheckpointError:
        raise
    except _Truncated:
        if len(data) < size:
            raise
        magic, pos = None, 0
    except Exception:
        magic, pos = None, 0
    if magic != _LEGACY_MAGIC:
        raise _fail("not a torch checkpoint (neither a zip archive nor a legacy torch file)")
    version, pos = _unpickle(data, pos, no_persistent, used, max_ops=64)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise _fail(f"unsupported legacy torch protocol version {version!r:.20}")
    _sys_info, pos = _unpickle(data, pos, no_persistent, used, max_ops=1000)
    storages: dict[str, StorageStub] = {}
    obj, pos = _unpickle(data, pos, lambda pid: _storage_from_pid(pid, storages), used)
    keys, pos = _unpickle(data, pos, no_persistent, used)
    # Then each storage: an 8-byte element count and its bytes. A file shorter than that lost
    # its tail (tensor data written last), even though the pickles read fine.
    expected = pos
    if type(keys) is list:
        for key in keys:
            stub = storages.get(key) if type(key) is str else None
            elsize = _ELEMENT_SIZE.get(stub.dtype) if stub is not None else None
            if elsize is None:
                return obj
            expected += 8 + stub.numel * elsize
    if size < expected:
        raise _fail(f"truncated legacy torch file ({size:,} of {expected:,} bytes)")
    return obj


def _load_object(path: Path, used: set[str]) -> Any:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise _fail("empty file")
        if f.read(4) == _ZIP_LOCAL:
            data = _read_zip_pickle(f, size)
            if _C_UNPICKLER_ENABLED and len(data) <= MAX_PICKLE_OPS:
                try:
                    return _c_unpickle(data, used)
                except Exception:  # anything at all: the interpreter decides what the file is
                    used.clear()
            return _unpickle(data, 0, _storage_from_pid, used)[0]
        return _read_legacy_object(f, size, used)


# --- the C unpickler: only in sandboxed reader processes ------------------------------------------
# CPython's C unpickler runs a checkpoint's pickle ~20x faster than _run, and with find_class
# limited to the same allowlist it calls nothing else. But it trusts sizes in the stream (a memo
# index of 2**30 makes it allocate and clear 8 GiB) and hashes dict keys without a depth check (a
# deep tuple key overflows the C stack). So only a process that has capped its address space and
# may crash, training.checkpoint.pool's reader, turns it on. Whatever goes wrong (an exception, a name
# outside the C path's list, a MemoryError), the interpreter reads the file again and its verdict
# and reason are the ones reported. A pickle of at most MAX_PICKLE_OPS bytes cannot exceed the
# interpreter's opcode bound either.
#
# Per tensor, the interpreter's stand-ins cost two Python calls, which would be most of the C
# path's time. Instead persistent_load is ``tuple`` and the rebuild functions are exception
# classes: CPython records each call's arguments without running Python code, and only the
# tensors the metadata reads (the model's state dict, or a bare state dict) are then made into
# TensorStubs by the interpreter's own stand-ins, with their checks. Tensors it never reads
# (optimizer and RNG state) are not checked: a file that is malformed only there reads as
# ``full`` here, and torch.load(weights_only=True) refuses it when a run resumes from it.
#
# BUILD is the one opcode that could change our shared stand-ins for later files in the process
# (CPython sets attributes on whatever object is on the stack): every stand-in class and function
# has a __setstate__, which BUILD calls instead, and which does what the interpreter's _build does.

_C_UNPICKLER_ENABLED = False


class _NotForCUnpickler(Exception):
    """A global the C path leaves to the interpreter (numpy values, whose dtype BUILD the
    interpreter records for extra_globals, and anything else outside _C_GLOBALS)."""


def enable_c_unpickler() -> None:
    """Let this process read zip checkpoints with the C unpickler. For a sandboxed process only."""
    global _C_UNPICKLER_ENABLED
    _C_UNPICKLER_ENABLED = True


def _stand_in_setstate(self: Any, state: Any) -> None:
    _build(self, state)


def _refuse_build(state: Any) -> None:
    raise _fail("BUILD on a function")


for _cls in _STUB_TYPES:
    _cls.__setstate__ = _stand_in_setstate
for _value in _GLOBALS.values():
    if callable(_value) and not isinstance(_value, type):
        _value.__setstate__ = _refuse_build  # BUILD looks __setstate__ up on the function itself


class _Deferred(Exception):
    """A rebuild call recorded by CPython (an exception is the cheapest object it builds from
    any arguments); :meth:`resolve` makes the call through the interpreter's stand-in."""

    stand_in: Callable[..., Any]  # set by each subclass

    def resolve(self) -> Any:
        args = [a.resolve() if isinstance(a, _Deferred) else a for a in self.args]
        return self.stand_in(*args)

    def __setstate__(self, state: Any) -> None:
        pass  # BUILD on a tensor: ignored, as _build does


class _DeferredTensor(_Deferred):
    def resolve(self) -> TensorStub:
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]),
        # inlined: this runs for every tensor of the model
        args = self.args
        if not 4 <= len(args) <= 7:
            raise _fail("malformed tensor rebuild call")
        return _tensor(args[2], _storage_from_pid(args[0]).dtype)


class _DeferredParameter(_Deferred):
    stand_in = staticmethod(_rebuild_parameter)


class _NamespaceType:
    """argparse.Namespace for the C path, which creates it with NEWOBJ (a type is required)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _NamespaceStub:  # type: ignore[misc]
        return _namespace(*args, **kwargs)


_C_CALLS: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _DeferredTensor,
    "torch._utils._rebuild_parameter": _DeferredParameter,
    "collections.OrderedDict": OrderedDict,  # e.g. every tensor's empty backward hooks
    "argparse.Namespace": _NamespaceType,  # the original script's args
}
_C_GLOBALS = frozenset(TORCH_WEIGHTS_ONLY_GLOBALS | {"argparse.Namespace"})


class _PickleBytes:
    """The pickle as the file the C unpickler wants. With ``peek`` it takes the bytes in large
    slices (over a bare BytesIO it calls read() per opcode); without ``readinto`` it copies
    BINBYTES/BYTEARRAY8 payloads from those slices instead of asking us to fill its buffers."""

    def __init__(self, data: bytes):
        self._view = memoryview(data)
        self._pos = 0

    def peek(self, n: int = 1) -> memoryview:
        return self._view[self._pos:self._pos + max(n, 1)]

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else min(self._pos + n, len(self._view))
        out = self._view[self._pos:end].tobytes()
        self._pos = end
        return out

    def readline(self) -> bytes:
        window = self._view[self._pos:self._pos + _MAX_LINE].tobytes()
        nl = window.find(b"\n")
        return self.read(nl + 1 if nl >= 0 else len(window))


class _CUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, used: set[str]):
        super().__init__(_PickleBytes(data), fix_imports=False, encoding="utf-8")
        self.used = used

    def find_class(self, module: str, name: str) -> Any:
        value = _resolve_global(module, name, self.used)
        full = _global_name(module, name)
        if full not in _C_GLOBALS:
            raise _NotForCUnpickler(full)
        return _C_CALLS.get(full, value)

    persistent_load = tuple  # the raw persistent id; _storage_from_pid checks it on resolve


def _resolve_state_dict(state: dict) -> None:
    for key, value in state.items():
        if type(value) is _DeferredTensor:
            # _DeferredTensor.resolve inlined for a well-formed persistent id (this runs for
            # every tensor of the model); anything else takes the checking path
            args = value.args
            pid = args[0] if 4 <= len(args) <= 7 else None
            if (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage"
                    and type(pid[1]) is _StorageType and type(pid[2]) is str
                    and type(pid[3]) is str and type(pid[4]) is int and pid[4] >= 0):
                state[key] = _tensor(args[2], pid[1].dtype)
                continue
        if isinstance(value, _Deferred):
            state[key] = value.resolve()


def _c_unpickle(data: bytes, used: set[str]) -> Any:
    """The object, with the tensors checkpoint_meta reads resolved (see above)."""
    if not _C_UNPICKLER_ENABLED:
        raise RuntimeError("the C unpickler runs only in sandboxed reader processes")
    obj = _CUnpickler(data, used).load()
    if isinstance(obj, _Deferred):
        return obj.resolve()
    if isinstance(obj, dict):
        state = obj.get("model_state_dict") if "model_state_dict" in obj else obj
        if isinstance(state, dict):
            _resolve_state_dict(state)
    return obj


def read_checkpoint_object(path: Path | str) -> Any:
    """The checkpoint's object with tensors as :class:`TensorStub` (no tensor bytes are read).

    Raises :class:`UnsafeCheckpointError` (pickle references a non-allowlisted global) or
    :class:`CheckpointReadError` (anything else wrong with the file), ``OSError`` if unreadable.
    """
    return _load_object(Path(path), set())


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
    if isinstance(k, _Deferred):  # a tensor as a key, from the C path: named as the interpreter does
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
    if t is _NamespaceStub:
        return _jsonable(v.attrs, budget, depth)
    if isinstance(v, argparse.Namespace):
        return _jsonable(vars(v), budget, depth)
    if t is TensorStub:
        return v.describe()
    if isinstance(v, _Deferred):  # a tensor in args or history, from the C path
        return _jsonable(v.resolve(), budget, depth)
    if t is _NdarrayStub:
        return v.describe()
    if t in (_DType, _Opaque):
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


def checkpoint_meta(obj: Any, with_history: bool = True) -> dict[str, Any]:
    """The JSON-able metadata of a checkpoint object: what the sidecar stores and what
    :class:`CheckpointInfo` reports.

    Called by the trainer on the live dict it is about to save (real tensors inside) and by the
    reader on the unpickled stubs: both give the same result. Only named keys are looked at, so
    state dicts and RNG states are never walked (tensors count only by ``numel()``).
    ``with_history=False`` leaves ``history`` empty: every checkpoint repeats the run's whole
    history, and converting it is most of the cost of a scan that only needs each file's metrics.
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
    if isinstance(args, (dict, argparse.Namespace)) or type(args) is _NamespaceStub:
        meta["args"] = _jsonable(args, budget)
    history = obj.get("history") if with_history else None
    if type(history) is list:
        meta["history"] = [h for h in (_jsonable(x, budget) for x in history) if type(h) is dict]
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


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _info_from_meta(path: Path, st: os.stat_result, meta: dict, with_history: bool = True,
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
        reason=_one_line(meta["reason"]) if isinstance(meta.get("reason"), str) else None,
        size_bytes=st.st_size,
        mtime=st.st_mtime,
        num_params=opt("num_params", int),
        frontend_sha256=opt("frontend_sha256", str),
        **extra,
    )


def read_checkpoint_info(path: Path | str, *, use_sidecar: bool = True,
                         with_history: bool = True) -> CheckpointInfo:
    """Metadata of one checkpoint. Never raises for bad content (or a missing file): those come
    back as ``kind='unreadable'`` / ``'unsafe'`` with a one-line ``reason``.
    ``with_history=False``: ``history`` is left empty (see :func:`checkpoint_meta`)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        return CheckpointInfo(path, "unreadable", reason=_one_line(f"cannot read file ({e})"))
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block open() forever
        return _problem(path, st, "unreadable", "not a regular file")
    if use_sidecar:
        doc = _load_sidecar(path, st)
        if doc is not None and _damage_reason(doc) is not None:
            return _damaged_info(path, st, doc)
        if doc is not None:
            try:
                return _info_from_meta(path, st, doc["checkpoint"], with_history, source="sidecar",
                                       complete=True, sha256=doc.get("sha256"))
            except (ValueError, TypeError, AttributeError):
                pass  # a sidecar with a malformed body: read the pickle instead
    used: set[str] = set()
    try:
        obj = _load_object(path, used)
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
    reason = f"damaged: {_damage_reason(doc)}"
    try:
        info = _info_from_meta(path, st, doc["checkpoint"], False, source="sidecar",
                               sha256=doc.get("sha256"))
    except (ValueError, TypeError, AttributeError):
        return _problem(path, st, "damaged", reason)
    info.kind, info.reason, info.complete = "damaged", _one_line(reason), False
    return info


def _problem(path: Path, st: os.stat_result, kind: str, reason: str) -> CheckpointInfo:
    return CheckpointInfo(path, kind, reason=_one_line(reason), size_bytes=st.st_size,
                          mtime=st.st_mtime)


def safe_globals_for(names: Iterable[str]) -> list[tuple[Any, str]]:
    """``(object, name)`` pairs for ``torch.serialization.safe_globals`` so that
    ``torch.load(weights_only=True)`` accepts the extra globals a file uses (numpy scalars,
    argparse.Namespace ...). Only names this reader allows are resolved; numpy is imported only
    when a numpy name is asked for. Torch itself is never imported here."""
    out: list[tuple[Any, str]] = []
    for name in names:
        if name not in _GLOBALS or name in TORCH_WEIGHTS_ONLY_GLOBALS:
            continue
        module, _, attr = name.rpartition(".")
        if module == "builtins":
            out.append((__builtins__[attr] if isinstance(__builtins__, dict)
                        else getattr(__builtins__, attr), name))
        elif module == "argparse":
            out.append((argparse.Namespace, name))
        elif module.startswith("numpy"):
            import numpy  # noqa: PLC0415  (lazy: only for files that hold numpy values)

            if module.endswith("multiarray"):
                core = getattr(numpy, "_core", None) or numpy.core
                out.append((getattr(core.multiarray, attr), name))
            elif module == "numpy.dtypes":
                obj = getattr(numpy.dtypes, attr, None)
                if obj is not None:
                    out.append((obj, name))
            else:
                out.append((getattr(numpy, attr), name))
    return out


# --- sidecars ----------------------------------------------------------------------------------

def sidecar_path(pth: Path | str) -> Path:
    p = Path(pth)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _load_sidecar(pth: Path, st: os.stat_result | None = None) -> dict | None:
    """The whole sidecar document when it exists, parses and matches the file; else None."""
    try:
        if st is None:
            st = os.stat(pth)
        with open(sidecar_path(pth), "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
        if len(raw) > MAX_SIDECAR_BYTES:
            return None
        doc = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        return None
    # size + mtime_ns: a .pth replaced or touched after the sidecar was written is not vouched for
    if doc.get("size") != st.st_size or doc.get("mtime_ns") != st.st_mtime_ns:
        return None
    if not isinstance(doc.get("checkpoint"), dict):
        return None
    if doc.get("sha256") is not None and not isinstance(doc.get("sha256"), str):
        return None
    return doc


def read_sidecar(path: Path | str) -> dict | None:
    """The sidecar's ``checkpoint`` dict when it matches the ``.pth``'s size and mtime_ns and
    no verification has marked the file damaged."""
    doc = _load_sidecar(Path(path))
    return doc["checkpoint"] if doc is not None and _damage_reason(doc) is None else None


def write_sidecar(path: Path | str, checkpoint_meta: dict, sha256: str) -> None:
    """Write ``X.pth.meta.json`` for the complete file ``X.pth``, atomically.

    Call it after the ``.pth`` is in place (renamed): the sidecar records that file's size and
    mtime_ns, and its presence is what marks the checkpoint complete.
    """
    pth = Path(path)
    _write_sidecar_doc(pth, _sidecar_doc(pth, os.stat(pth), checkpoint_meta, sha256))


def _sidecar_doc(pth: Path, st: os.stat_result, checkpoint_meta: dict, sha256: str | None) -> dict:
    return {
        "format": SIDECAR_FORMAT,
        "file": pth.name,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": sha256,
        "checkpoint": checkpoint_meta,
    }


def _write_sidecar_doc(pth: Path, doc: dict) -> None:
    """Replace ``pth``'s sidecar by ``doc`` atomically (temp file, fsync, rename, fsync folder)."""
    payload = json.dumps(doc, indent=1).encode("utf-8")
    target = sidecar_path(pth)
    # a dot-name in the same folder: same filesystem for os.replace, ignored by listings
    tmp = target.with_name(f".{target.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def file_sha256(path: Path | str, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file (what the sidecar records; what a paranoid resume verifies)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- verifying and damage marks -------------------------------------------------------------------

def _damage_reason(doc: dict) -> str | None:
    mark = doc.get("damaged")
    if mark is None:
        return None
    reason = mark.get("reason") if isinstance(mark, dict) else None
    return _one_line(reason) if isinstance(reason, str) and reason else "found damaged by a verification"


def zip_crc_problem(path: Path | str) -> str | None:
    """None when every record of a zip checkpoint matches its CRC-32 (or the file is not a zip:
    legacy files carry no checksums); else a one-line reason. ``torch.load`` checks none of them,
    so a flipped byte in the tensor data loads silently. Raises OSError if the file cannot be read."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        return _one_line(f"not a readable zip archive ({type(exc).__name__}: {exc})")
    if bad is not None:
        return f"corrupt: the checksum of {bad} does not match (bytes changed on disk)"
    return None


SIDECAR_MISMATCH = "checksum does not match its sidecar (bytes changed on disk since it was saved)"


def verify_checkpoint_file(path: Path | str) -> tuple[os.stat_result, str | None]:
    """Hash ``path`` against what vouches for it: (the stat it was verified at, None when intact
    or a one-line reason when damaged). The sidecar's sha256 when a sidecar valid for this size
    and mtime has one, else the zip CRCs. Raises OSError when the file cannot be read."""
    pth = Path(path)
    st = os.stat(pth)
    doc = _load_sidecar(pth, st)
    expected = doc.get("sha256") if doc is not None else None
    if expected:
        return st, None if file_sha256(pth) == expected else SIDECAR_MISMATCH
    return st, zip_crc_problem(pth)


def mark_damaged(path: Path | str, reason: str, verified: os.stat_result | None = None) -> bool:
    """Record in ``path``'s sidecar that a verification found it damaged (see "Damage marks").

    ``verified``: the stat the verification read; when the file has changed since (a new save
    replaced it), nothing is marked. Keeps the sidecar's metadata; creates a sidecar for a file
    without one. Never touches the ``.pth``. Returns whether a mark is now in place (False in a
    folder this process cannot write: the caller's refusal still names the file)."""
    pth = Path(path)
    try:
        st = os.stat(pth)
        if verified is not None and (st.st_size, st.st_mtime_ns) != (verified.st_size, verified.st_mtime_ns):
            return False
        doc = _load_sidecar(pth, st) or _sidecar_doc(pth, st, {"kind": "unreadable", "reason": reason}, None)
        doc["damaged"] = {"reason": _one_line(reason), "found_at": time.time()}
        _write_sidecar_doc(pth, doc)
        return True
    except OSError:
        return False


def clear_damage_mark(path: Path | str) -> bool:
    """Drop a damage mark once the file verifies again (e.g. restored from a backup with its
    mtime kept). Returns whether there was one."""
    pth = Path(path)
    try:
        doc = _load_sidecar(pth)
        if doc is None or "damaged" not in doc:
            return False
        del doc["damaged"]
        if doc.get("sha256") is None and doc.get("checkpoint", {}).get("kind") == "unreadable":
            sidecar_path(pth).unlink()  # a sidecar made only to carry the mark
        else:
            _write_sidecar_doc(pth, doc)
        return True
    except OSError:
        return False


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


def all_extra_safe_globals() -> list[tuple[Any, str]]:
    """Every data-only global this reader accepts beyond torch's own list, as ``safe_globals``
    pairs: what ``training.checkpoint.store`` allows ``torch.load(weights_only=True)`` to rebuild."""
    return safe_globals_for(_GLOBALS)
