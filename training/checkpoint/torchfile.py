"""The torch.save container, read without torch: where the pickle of a checkpoint is, and
whether the file around it is complete. The pickle itself is run by
:mod:`training.checkpoint.pickle_vm`.

*Zip format* (torch >= 1.6, the default): an uncompressed ZIP archive whose entries all live in
one folder, ``<archive>/data.pkl`` first (the pickled object), then ``<archive>/data/<key>`` (raw
storage bytes), ``<archive>/version``, ``<archive>/byteorder`` ... The folder name is whatever
the file was called when it was saved, not its current name, so we take the first entry whose
name ends in ``/data.pkl``. We read the end-of-central-directory record (this is what tells a
complete file from a truncated one: it is written last), the central directory entry of
``data.pkl``, and that one entry, whose CRC-32 we check. Nothing else is read.
(:func:`zip_crc_problem` is the full check of every record, for verification.)

*Legacy format* (``_use_new_zipfile_serialization=False``): consecutive pickles: the magic number
0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict, the object, the sorted list of
storage keys, then each storage as an 8-byte element count and its bytes. We read the pickles and
check that the file is at least as long as the storages they announce.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

from training.checkpoint.errors import CheckpointReadError, TruncatedPickle, UnsafeCheckpointError, one_line
from training.checkpoint.pickle_vm import (
    MAX_PICKLE_BYTES,
    StorageStub,
    run_checkpoint_pickle,
    storage_from_pid,
    unpickle,
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_LOCAL = b"PK\x03\x04"
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
# element size in bytes, for checking that a legacy file holds all the storages it announces
_ELEMENT_SIZE = {
    "float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "bool": 1, "complex128": 16, "complex64": 8, "quint8": 1, "qint8": 1,
    "qint32": 4, "quint4x2": 1, "quint2x4": 1,
}


def _read_exact(f, offset: int, n: int) -> bytes:
    f.seek(offset)
    out = f.read(n)
    if len(out) != n:
        raise CheckpointReadError(f"truncated or not a torch checkpoint (BadZipFile: short read at {offset})")
    return out


def _bad_zip(detail: str) -> CheckpointReadError:
    return CheckpointReadError(f"truncated or not a torch checkpoint (BadZipFile: {detail})")


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
    raise CheckpointReadError("zip archive without data.pkl (not a torch checkpoint)")


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
        raise CheckpointReadError("encrypted zip entry (not a torch checkpoint)")
    if usize > MAX_PICKLE_BYTES:
        raise CheckpointReadError(f"pickle too large ({usize:,} bytes; limit {MAX_PICKLE_BYTES:,})")
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
        raise CheckpointReadError(f"unsupported zip compression method {method}")
    if len(data) != usize or zlib.crc32(data) != crc:
        raise CheckpointReadError("corrupt data.pkl (CRC or size mismatch)")
    return data


def _read_legacy_object(f, size: int, used: set[str]) -> Any:
    """The object pickle of a pre-1.6 (non-zip) torch file."""
    chunk = min(size, 1 << 20)
    while True:
        data = _read_exact(f, 0, chunk)
        try:
            return _parse_legacy(data, size, used)
        except TruncatedPickle:
            if chunk >= size:
                raise CheckpointReadError("truncated legacy torch file (pickle data was truncated)") from None
            if chunk >= MAX_PICKLE_BYTES:
                raise CheckpointReadError(f"pickle too large (over {MAX_PICKLE_BYTES:,} bytes)") from None
            chunk = min(size, chunk * 8, MAX_PICKLE_BYTES + (1 << 20))


def _parse_legacy(data: bytes, size: int, used: set[str]) -> Any:
    def no_persistent(pid):
        raise CheckpointReadError("unexpected persistent id")

    # The whole first pickle runs (not just a magic-number-sized one), so a plain pickle that
    # calls os.system is reported as unsafe, which is also where torch.load stops.
    try:
        magic, pos = unpickle(data, 0, no_persistent, used)
    except UnsafeCheckpointError:
        raise
    except TruncatedPickle:
        if len(data) < size:
            raise
        magic, pos = None, 0
    except Exception:
        magic, pos = None, 0
    if magic != _LEGACY_MAGIC:
        raise CheckpointReadError("not a torch checkpoint (neither a zip archive nor a legacy torch file)")
    version, pos = unpickle(data, pos, no_persistent, used, max_ops=64)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise CheckpointReadError(f"unsupported legacy torch protocol version {version!r:.20}")
    _sys_info, pos = unpickle(data, pos, no_persistent, used, max_ops=1000)
    storages: dict[str, StorageStub] = {}
    obj, pos = unpickle(data, pos, lambda pid: storage_from_pid(pid, storages), used)
    keys, pos = unpickle(data, pos, no_persistent, used)
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
        raise CheckpointReadError(f"truncated legacy torch file ({size:,} of {expected:,} bytes)")
    return obj


def load_checkpoint_object(path: Path, used: set[str]) -> Any:
    """The object pickled in ``path`` (stubs for tensors); ``used`` collects the allowlisted
    globals it names. Raises CheckpointReadError / UnsafeCheckpointError, OSError."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointReadError("empty file")
        if f.read(4) == _ZIP_LOCAL:
            return run_checkpoint_pickle(_read_zip_pickle(f, size), used)
        return _read_legacy_object(f, size, used)


def read_checkpoint_object(path: Path | str) -> Any:
    """The checkpoint's object with tensors as :class:`TensorStub` (no tensor bytes are read).

    Raises :class:`UnsafeCheckpointError` (pickle references a non-allowlisted global) or
    :class:`CheckpointReadError` (anything else wrong with the file), ``OSError`` if unreadable.
    """
    return load_checkpoint_object(Path(path), set())


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
        return one_line(f"not a readable zip archive ({type(exc).__name__}: {exc})")
    if bad is not None:
        return f"corrupt: the checksum of {bad} does not match (bytes changed on disk)"
    return None
