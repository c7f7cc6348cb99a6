"""Notes and tags a user keeps about an experiment, in the experiment folder (``notes.json``).

Written by the dashboard's Experiments page, printed by ``--list_checkpoints``; the trainer never
touches it. The file is small (``MAX_NOTES_BYTES``) and validated on write *and* on read: a
hand-edited, truncated or hostile file is reported in one line and treated as no notes. Writes go
through :func:`training.checkpoint.fsutil.atomic_write`, so a crash leaves the old or the new file.
Torch-free (the catalog imports it).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.checkpoint.fsutil import atomic_write
from training.naming import NOTES_NAME

MAX_TEXT_CHARS = 4000
MAX_TAGS = 20
TAG_PATTERN = re.compile(r"^[\w.+-]{1,32}$")  # word characters (unicode letters too), . + -
MAX_NOTES_BYTES = 64 * 1024  # a larger file is not read
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # newlines and tabs are fine in a note


class NotesError(ValueError):
    """Notes that cannot be written or read; the message names the value or the file."""


@dataclass(frozen=True)
class Notes:
    text: str = ""
    tags: tuple[str, ...] = ()
    updated: str | None = None  # local time of the last save, ISO 8601

    @property
    def empty(self) -> bool:
        return not self.text and not self.tags


def parse_tags(text: str) -> tuple[str, ...]:
    """``"baseline, lr-sweep"`` -> ``("baseline", "lr-sweep")``: comma- or space-separated, each
    checked, duplicates dropped; NotesError names the first bad tag."""
    tags = [t for t in re.split(r"[,\s]+", text or "") if t]
    return check_tags(tags)


def check_tags(tags: Any) -> tuple[str, ...]:
    if not isinstance(tags, (list, tuple)):
        raise NotesError(f"tags must be a list of words, got {type(tags).__name__}")
    out = tuple(dict.fromkeys(tags))
    for tag in out:
        if not isinstance(tag, str) or not TAG_PATTERN.match(tag):
            raise NotesError(f"tag {tag!r}: use 1 to 32 letters, digits, '_', '.', '+' or '-'")
    if len(out) > MAX_TAGS:
        raise NotesError(f"{len(out)} tags: at most {MAX_TAGS}")
    return out


def check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise NotesError(f"notes must be text, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise NotesError(f"notes of {len(text)} characters: at most {MAX_TEXT_CHARS}")
    bad = _CONTROL.search(text)
    if bad:
        raise NotesError(f"notes must not contain the control character {bad.group()!r}")
    return text


def read_notes(exp_dir: Path | str) -> Notes:
    """The folder's notes (empty when it has none); NotesError when the file is unusable."""
    path = Path(exp_dir) / NOTES_NAME
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise NotesError(f"{path}: not a regular file")
        if path.stat().st_size > MAX_NOTES_BYTES:
            raise NotesError(f"{path}: larger than {MAX_NOTES_BYTES // 1024} KiB, not read")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Notes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotesError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise NotesError(f"{path}: not a JSON object")
    try:
        return Notes(check_text(data.get("text", "")), check_tags(data.get("tags", [])),
                     data.get("updated") if isinstance(data.get("updated"), str) else None)
    except NotesError as exc:
        raise NotesError(f"{path}: {exc}") from None


def write_notes(exp_dir: Path | str, text: str, tags: Any) -> Notes:
    """Check, then replace the folder's notes atomically; empty notes remove the file.
    The folder must exist (notes never create an experiment)."""
    folder = Path(exp_dir)
    notes = Notes(check_text(text).strip(), check_tags(list(tags)), time.strftime("%Y-%m-%dT%H:%M:%S"))
    if not folder.is_dir() or folder.is_symlink():
        raise NotesError(f"{folder}: not an experiment folder")
    path = folder / NOTES_NAME
    if notes.empty:
        path.unlink(missing_ok=True)
        return Notes()
    body = json.dumps({"text": notes.text, "tags": list(notes.tags), "updated": notes.updated},
                      ensure_ascii=False, indent=1).encode("utf-8")
    atomic_write(path, lambda f: f.write(body))
    return notes


def notes_lines(exp_dir: Path | str) -> list[str]:
    """What ``--list_checkpoints`` prints about the notes (nothing when there are none)."""
    try:
        notes = read_notes(exp_dir)
    except NotesError as exc:
        return [f"Notes: {exc}"]
    if notes.empty:
        return []
    lines = [f"Tags: {', '.join(notes.tags)}"] if notes.tags else []
    if notes.text:
        lines.append("Notes: " + notes.text.replace("\n", "\n       "))
    return lines


def tags_text(exp_dir: Path | str) -> str:
    """The folder's tags as ``"a, b"`` for a table cell ('' without notes or with a bad file)."""
    try:
        return ", ".join(read_notes(exp_dir).tags)
    except NotesError:
        return ""
