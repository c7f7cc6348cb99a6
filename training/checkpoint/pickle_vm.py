"""The bounded pickle interpreter: runs a checkpoint's pickle without torch, without importing
anything it names and without running pickled code. Tensors come back as stubs.

Inside the pickle a tensor is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)`` where ``storage`` is a persistent id ``('storage', torch.FloatStorage, key, location,
numel)``. We replace the storage with a :class:`StorageStub` and the tensor with a
:class:`TensorStub` that keeps only its shape and dtype. (Where the pickle sits in the file:
:mod:`training.checkpoint.torchfile`.)

Safety argument
---------------
The pickle is executed by our own small interpreter (:func:`unpickle`), not by ``pickle``:

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
  overflows the C stack: a segfault, not an exception); the metadata built from the result
  (:mod:`training.checkpoint.meta`) has depth and size limits, so shared references or cycles in
  the pickle cannot blow up.
* Any malformed input ends in ``kind='unreadable'`` with a one-line reason; nothing raises.
* One exception, for speed: the catalog's reader processes (:mod:`training.checkpoint.pool`), which
  cap their address space and may crash, run zip checkpoints through CPython's C unpickler with the
  same allowlist and fall back to the interpreter on any error (see "the C unpickler" below).
  No other process ever turns it on.

The same allowlist is what :mod:`training.checkpoint.store` lets ``torch.load(weights_only=True)``
rebuild beyond torch's own list (:func:`all_extra_safe_globals`).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import codecs
import pickle
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from training.checkpoint.errors import CheckpointReadError, TruncatedPickle, UnsafeCheckpointError

MAX_PICKLE_BYTES = 64 * 1024 * 1024
# A 1000-tensor model with Adam state is ~60k opcodes; the cap bounds time (~1 s) and memory.
MAX_PICKLE_OPS = 2_000_000
_MAX_LINE = 64 * 1024  # text-protocol lines (GLOBAL names, INT, FLOAT ...)
_MAX_DIMS = 64
_MAX_DIM = 1 << 62


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
class DTypeStub:
    """A torch dtype such as torch.float32 (``name='float32'``)."""

    name: str

    def __str__(self) -> str:
        return f"torch.{self.name}"


@dataclass(eq=False, slots=True)
class OpaqueStub:
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
class NamespaceStub:
    """argparse.Namespace: the research script stored its args this way."""

    attrs: dict


@dataclass(eq=False, slots=True)
class _NpDType:
    """A numpy dtype from its pickle (``numpy.dtype('f8', False, True)`` + BUILD state)."""

    descr: str
    byteorder: str = "="


@dataclass(eq=False, slots=True)
class NdarrayStub:
    """A (small) numpy array: only its shape and dtype are kept."""

    shape: tuple[int, ...] | None = None
    dtype: _NpDType | None = None

    def describe(self) -> str:
        shape = list(self.shape) if self.shape is not None else "?"
        name = _NP_NAMES.get(self.dtype.descr, self.dtype.descr) if self.dtype else "?"
        return f"<ndarray {name} {shape}>"


_STUB_TYPES = (StorageStub, TensorStub, DTypeStub, OpaqueStub, _StorageType, NamespaceStub, _NpDType,
               NdarrayStub)


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
        raise CheckpointReadError("tensor rebuilt from something that is not a storage")
    return storage.dtype


def _dtype_name(dtype: Any) -> str | None:
    return dtype.name if type(dtype) is DTypeStub else None


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
        raise CheckpointReadError("parameter rebuilt from something that is not a tensor")
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
        raise CheckpointReadError("torch.Size of non-integers")
    return shape


def _torch_device(kind, index=None):
    if type(kind) is not str or len(kind) > 64 or not (index is None or _is_int(index)):
        raise CheckpointReadError("malformed torch.device")
    return OpaqueStub(kind if index is None else f"{kind}:{index}")


def _get_layout(name):
    if type(name) is not str or len(name) > 64:
        raise CheckpointReadError("malformed layout")
    return OpaqueStub(name)


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
    raise CheckpointReadError("malformed bytes/bytearray arguments")


def _check_encoding(enc: str) -> str:
    if enc.lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise CheckpointReadError(f"unexpected encoding {enc[:20]!r}")
    return enc


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    if type(obj) is not str or type(encoding) is not str or errors != "strict":
        raise CheckpointReadError("malformed _codecs.encode arguments")
    return obj.encode(_check_encoding(encoding))


def _builtin_bytes(*args):
    return _byte_source(args)


def _builtin_bytearray(*args):
    return bytearray(_byte_source(args))


def _items(iterable: Any) -> list:
    if type(iterable) not in (list, tuple, set, frozenset):
        raise CheckpointReadError("set built from a non-sequence")
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
        raise CheckpointReadError("malformed complex")
    return complex(real, imag)


def _builtin_int(value=0, base=None):
    if type(value) in (int, float, bool) and base is None:
        return int(value)
    if type(value) is str and len(value) <= 4300 and (base is None or _is_int(base)):
        return int(value) if base is None else int(value, base)
    raise CheckpointReadError("malformed int")


def _builtin_float(value=0.0):
    if type(value) in (int, float) or (type(value) is str and len(value) <= 1000):
        return float(value)
    raise CheckpointReadError("malformed float")


def _int_or_none_args(args: tuple, what: str) -> tuple:
    if len(args) > 3 or not all(a is None or _is_int(a) for a in args):
        raise CheckpointReadError(f"malformed {what}")
    return args


def _builtin_slice(*args):
    return OpaqueStub(f"slice{_int_or_none_args(args, 'slice')!r}")


def _builtin_range(*args):
    if not args or None in _int_or_none_args(args, "range"):
        raise CheckpointReadError("malformed range")
    return OpaqueStub(repr(range(*args)))


def _ordered_dict(*args):
    return OrderedDict(_pairs(args))


def _counter(*args):
    return Counter(dict(_pairs(args)))


def _pairs(args: tuple) -> list:
    if not args:
        return []
    if len(args) != 1:
        raise CheckpointReadError("malformed OrderedDict/Counter arguments")
    src = args[0]
    pairs = list(src.items()) if type(src) in (dict, OrderedDict, Counter) else src
    if type(pairs) not in (list, tuple):
        raise CheckpointReadError("malformed OrderedDict/Counter arguments")
    out = []
    for pair in pairs:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise CheckpointReadError("malformed OrderedDict/Counter item")
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
        raise CheckpointReadError("malformed numpy dtype")
    return _NpDType(descr.lstrip("<>=|"))


def _np_dtype_class(descr: str) -> Callable[..., _NpDType]:
    def make(*args, **kwargs):
        return _NpDType(descr)

    return make


def _np_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar(dtype, raw bytes) -> the Python number it holds."""
    if type(dtype) is not _NpDType:
        raise CheckpointReadError("numpy scalar without a dtype")
    fmt = _NP_STRUCT.get(dtype.descr)
    if fmt is None or type(data) is not bytes:
        return OpaqueStub(f"<numpy {dtype.descr} scalar>")
    order = ">" if dtype.byteorder == ">" else "<"
    values = struct.unpack(order + fmt, data)  # struct.error when the length is wrong
    return complex(*values) if len(values) == 2 else values[0]


_NP_NDARRAY = OpaqueStub("numpy.ndarray")  # a marker: the cls argument of _reconstruct


def _np_reconstruct(cls, shape, dtype_code):
    if cls is not _NP_NDARRAY:
        raise CheckpointReadError("numpy _reconstruct of something other than ndarray")
    return NdarrayStub()


def _namespace(*args, **kwargs):
    if args:
        raise CheckpointReadError("malformed argparse.Namespace")
    return NamespaceStub(dict(kwargs))


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
        g[f"torch.{name}"] = DTypeStub(name)
    for name in _QSCHEMES:
        g[f"torch.{name}"] = OpaqueStub(f"torch.{name}")
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
        raise CheckpointReadError(f"pickle calls a {type(func).__name__} that is not an allowed callable")
    if type(args) is not tuple:
        raise CheckpointReadError("call arguments are not a tuple")
    if kwargs:
        if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
            raise CheckpointReadError("malformed keyword arguments")
        return func(*args, **kwargs)
    return func(*args)


def _build(inst: Any, state: Any) -> None:
    """BUILD: set state, only on our own stubs (torch allows it on tensors and OrderedDicts)."""
    t = type(inst)
    if t is NamespaceStub:
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise CheckpointReadError("malformed argparse.Namespace state")
        inst.attrs.update(state)
    elif t is _NpDType:
        if type(state) is tuple and len(state) > 1 and type(state[1]) is str:
            inst.byteorder = state[1]
    elif t is NdarrayStub:
        if type(state) is tuple and len(state) == 5:
            inst.shape = _shape(state[1])
            inst.dtype = state[2] if type(state[2]) is _NpDType else None
    elif t in (TensorStub, OrderedDict):  # tensor set_/__setstate__, state dict _metadata
        pass
    else:
        raise CheckpointReadError(f"BUILD on a {t.__name__}")


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
        raise CheckpointReadError(f"unusable dict key or set item ({t.__name__})")


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

_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct(">d").unpack_from

PersistentLoad = Callable[[Any], Any]


def _decode_py2_str(raw: bytes) -> str:
    # torch.load unpickles with encoding="utf-8": Python 2 str objects become str
    return raw.decode("utf-8")


def unpickle(data: bytes, pos: int, persistent_load: PersistentLoad, used: set[str],
             max_ops: int = MAX_PICKLE_OPS) -> tuple[Any, int]:
    """Run one pickle starting at ``data[pos]``; return (object, position after STOP).

    Reads past the end of ``data`` raise ``TruncatedPickle``; anything else malformed raises some
    Exception, which the caller turns into ``kind='unreadable'``. The loop uses locals only, and
    the opcodes torch.save emits most come first (LONG_BINPUT, BINGET, BININT1, MARK ... make up
    90% of a real data.pkl).
    """
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
            raise TruncatedPickle("pickle data was truncated") if end - pos < _MAX_LINE else CheckpointReadError(
                "overlong pickle line")
        out = data[pos:nl]
        pos = nl + 1
        return out

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > end:
            raise TruncatedPickle("pickle data was truncated")
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
                raise CheckpointReadError(f"pickle too complex (more than {max_ops:,} opcodes)")

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
                    raise CheckpointReadError("SETITEMS on a non-dict or with an odd item count")
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
                    raise CheckpointReadError("SETITEM on a non-dict")
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
                    raise CheckpointReadError("APPENDS to a non-list")
                stack[-1].extend(items)
            elif op == 0x61:  # a APPEND
                item = stack.pop()
                if type(stack[-1]) is not list:
                    raise CheckpointReadError("APPEND to a non-list")
                stack[-1].append(item)
            elif op == 0x63:  # c GLOBAL
                module = line().decode("utf-8")
                name = line().decode("utf-8")
                append(_resolve_global(module, name, used))
            elif op == 0x93:  # STACK_GLOBAL
                name = stack.pop()
                module = stack.pop()
                if type(module) is not str or type(name) is not str:
                    raise CheckpointReadError("STACK_GLOBAL with non-string names")
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
                    raise CheckpointReadError(f"unsupported pickle protocol {data[pos]}")
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
                    raise CheckpointReadError("ADDITEMS to a non-set")
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
                    raise CheckpointReadError("DICT with an odd item count")
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
                    raise CheckpointReadError("malformed STRING opcode")
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
                    raise CheckpointReadError("OBJ without a class")
                append(_invoke(items[0], tuple(items[1:]), None))
            elif op in (0x82, 0x83, 0x84):
                raise CheckpointReadError("pickle uses the copyreg extension registry (not a torch checkpoint)")
            elif op in (0x97, 0x98):
                raise CheckpointReadError("pickle uses out-of-band buffers (not a torch checkpoint)")
            else:
                raise CheckpointReadError(f"invalid pickle opcode 0x{op:02x} at byte {pos - 1}")
    except (IndexError, struct.error):
        if pos + 9 >= end:
            raise TruncatedPickle("pickle data was truncated") from None
        raise CheckpointReadError("corrupt pickle (stack underflow)") from None


def storage_from_pid(pid: Any, seen: dict[str, StorageStub] | None = None) -> StorageStub:
    """persistent_load: ('storage', storage_type, key, location, numel[, view_metadata])."""
    if type(pid) is not tuple or len(pid) < 5:
        raise CheckpointReadError("persistent id is not a storage tuple")
    tag, storage_type, key, location, numel = pid if len(pid) == 5 else pid[:5]
    if isinstance(tag, bytes):
        tag = tag.decode("ascii", "replace")
    if tag != "storage" or type(storage_type) is not _StorageType:
        raise CheckpointReadError("persistent id is not a storage")
    if type(key) is not str or type(location) is not str or type(numel) is not int or numel < 0:
        raise CheckpointReadError("malformed storage persistent id")
    stub = StorageStub(storage_type.dtype, numel, key, location)
    if seen is not None:
        seen.setdefault(key, stub)
    return stub


# --- the C unpickler: only in sandboxed reader processes ------------------------------------------
# CPython's C unpickler runs a checkpoint's pickle ~20x faster than :func:`unpickle`, and with find_class
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
    raise CheckpointReadError("BUILD on a function")


for _cls in _STUB_TYPES:
    _cls.__setstate__ = _stand_in_setstate
for _value in _GLOBALS.values():
    if callable(_value) and not isinstance(_value, type):
        _value.__setstate__ = _refuse_build  # BUILD looks __setstate__ up on the function itself


class DeferredCall(Exception):
    """A rebuild call recorded by CPython (an exception is the cheapest object it builds from
    any arguments); :meth:`resolve` makes the call through the interpreter's stand-in."""

    stand_in: Callable[..., Any]  # set by each subclass

    def resolve(self) -> Any:
        args = [a.resolve() if isinstance(a, DeferredCall) else a for a in self.args]
        return self.stand_in(*args)

    def __setstate__(self, state: Any) -> None:
        pass  # BUILD on a tensor: ignored, as _build does


class _DeferredTensor(DeferredCall):
    def resolve(self) -> TensorStub:
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]),
        # inlined: this runs for every tensor of the model
        args = self.args
        if not 4 <= len(args) <= 7:
            raise CheckpointReadError("malformed tensor rebuild call")
        return _tensor(args[2], storage_from_pid(args[0]).dtype)


class _DeferredParameter(DeferredCall):
    stand_in = staticmethod(_rebuild_parameter)


class _NamespaceType:
    """argparse.Namespace for the C path, which creates it with NEWOBJ (a type is required)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NamespaceStub:  # type: ignore[misc]
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

    persistent_load = tuple  # the raw persistent id; storage_from_pid checks it on resolve


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
        if isinstance(value, DeferredCall):
            state[key] = value.resolve()


def _c_unpickle(data: bytes, used: set[str]) -> Any:
    """The object, with the tensors checkpoint_meta reads resolved (see above)."""
    if not _C_UNPICKLER_ENABLED:
        raise RuntimeError("the C unpickler runs only in sandboxed reader processes")
    obj = _CUnpickler(data, used).load()
    if isinstance(obj, DeferredCall):
        return obj.resolve()
    if isinstance(obj, dict):
        state = obj.get("model_state_dict") if "model_state_dict" in obj else obj
        if isinstance(state, dict):
            _resolve_state_dict(state)
    return obj


def run_checkpoint_pickle(data: bytes, used: set[str]) -> Any:
    """The object of a zip checkpoint's ``data.pkl``: through the C unpickler where this process
    enabled it (see above), by the interpreter otherwise or whenever the C path fails."""
    if _C_UNPICKLER_ENABLED and len(data) <= MAX_PICKLE_OPS:
        try:
            return _c_unpickle(data, used)
        except Exception:  # anything at all: the interpreter decides what the file is
            used.clear()
    return unpickle(data, 0, storage_from_pid, used)[0]


# --- the allowlist for torch.load ---------------------------------------------------------------

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


def all_extra_safe_globals() -> list[tuple[Any, str]]:
    """Every data-only global this reader accepts beyond torch's own list, as ``safe_globals``
    pairs: what ``training.checkpoint.store`` allows ``torch.load(weights_only=True)`` to rebuild."""
    return safe_globals_for(_GLOBALS)
