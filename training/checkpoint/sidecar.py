"""Sidecars: ``X.pth.meta.json`` next to each checkpoint, read, written and checked without torch,
and the damage marks that verifications record in them.

A sidecar holds the checkpoint's metadata (:func:`training.checkpoint.meta.checkpoint_meta`) plus
the ``.pth``'s size, ``mtime_ns`` and sha256. It is written after the ``.pth`` is complete, so a
sidecar whose size and mtime match marks the checkpoint complete (``complete=True``) and lets the
reader skip even the pickle. A stale or corrupt sidecar is ignored.

Damage marks
------------
Neither the sidecar's size/mtime check nor the pickle reader sees a byte flipped inside the
tensor data with the mtime put back. Only hashing the file does (:func:`verify_checkpoint_file`:
the sidecar's sha256 when a valid sidecar has one, else the zip records' CRC-32s), and that costs
a full read, so listings do not do it on every scan. Instead, whoever verifies a file and finds it
damaged (every training load, ``--list_checkpoints --verify``, the dashboard's verify action)
records the verdict in the sidecar (:func:`mark_damaged`: a ``damaged`` entry, or a new sidecar
for a file that had none). The ``.pth`` itself is never modified. A marked sidecar is keyed by the
file's size and mtime_ns like any other, so the mark holds while the damaged bytes stay, and from
then on every reader reports the file as ``kind='damaged'`` (never complete, never resumable).
A file replaced by a new save gets a new mtime: the old mark no longer applies to it.

Sidecars of earlier versions
----------------------------
They also hold the run's history up to their epoch (``checkpoint.history``; new ones do not:
:mod:`training.run_history`). Reading one still parses that list (``json.loads``, in C: about
3 ms per 1,000 rows), the one cost of such a folder that still grows with its history; it is not
converted unless asked (``with_history``), and is left in place: saved files are never rewritten
to drop it. A folder of N such checkpoints lists in N^2/2 parsed rows until it is trained again
or its intermediate checkpoints are deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from training.checkpoint.errors import one_line
from training.checkpoint.fsutil import atomic_write, sidecar_path
from training.checkpoint.torchfile import zip_crc_problem

SIDECAR_FORMAT = 1
MAX_SIDECAR_BYTES = 16 * 1024 * 1024


def load_sidecar(pth: Path, st: os.stat_result | None = None) -> dict | None:
    """The whole sidecar document when it exists, parses and matches the file (``st``: its stat,
    when the caller has it); else None. Damage marks included: see :func:`damage_reason`."""
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
    doc = load_sidecar(Path(path))
    return doc["checkpoint"] if doc is not None and damage_reason(doc) is None else None


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
    """Replace ``pth``'s sidecar by ``doc`` atomically."""
    payload = json.dumps(doc, indent=1).encode("utf-8")
    atomic_write(sidecar_path(pth), lambda f: f.write(payload))


def file_sha256(path: Path | str, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file (what the sidecar records; what a paranoid resume verifies)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- verifying and damage marks -------------------------------------------------------------------

def damage_reason(doc: dict) -> str | None:
    """The reason a verification recorded in a sidecar document; None when it has no mark."""
    mark = doc.get("damaged")
    if mark is None:
        return None
    reason = mark.get("reason") if isinstance(mark, dict) else None
    return one_line(reason) if isinstance(reason, str) and reason else "found damaged by a verification"


SIDECAR_MISMATCH = "checksum does not match its sidecar (bytes changed on disk since it was saved)"


def verify_checkpoint_file(path: Path | str) -> tuple[os.stat_result, str | None]:
    """Hash ``path`` against what vouches for it: (the stat it was verified at, None when intact
    or a one-line reason when damaged). The sidecar's sha256 when a sidecar valid for this size
    and mtime has one, else the zip CRCs. Raises OSError when the file cannot be read."""
    pth = Path(path)
    st = os.stat(pth)
    doc = load_sidecar(pth, st)
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
        doc = load_sidecar(pth, st) or _sidecar_doc(pth, st, {"kind": "unreadable", "reason": reason}, None)
        doc["damaged"] = {"reason": one_line(reason), "found_at": time.time()}
        _write_sidecar_doc(pth, doc)
        return True
    except OSError:
        return False


def clear_damage_mark(path: Path | str) -> bool:
    """Drop a damage mark once the file verifies again (e.g. restored from a backup with its
    mtime kept). Returns whether there was one."""
    pth = Path(path)
    try:
        doc = load_sidecar(pth)
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
