"""Probes in every rank of a torchrun run, for tests/test_distributed.py: who writes, how each exits.

Put this folder on PYTHONPATH and set RANK_AUDIT_ROOT (the models root) and RANK_AUDIT_REPORT (a
file outside it): every process launched by torchrun records, through a Python audit hook, each
attempt to change anything under the root (open for writing, create, rename, remove, link, chmod,
utime) as one line ``rank N ...`` of the report. Rank 0's lines show the audit sees the writes a
run makes; a rank without lines never wrote there.

With RANK_EXIT_REPORT set, each rank appends ``rank N exit C`` when main.py calls ``sys.exit(C)``:
torchrun reports its workers' exit codes only when it was not itself signalled.
"""

import os
import sys

_ROOT = os.environ.get("RANK_AUDIT_ROOT")
_REPORT = os.environ.get("RANK_AUDIT_REPORT")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.link", "os.symlink", "os.chmod",
            "os.utime", "os.truncate", "shutil.move", "shutil.copyfile", "shutil.rmtree"}
_busy = False


def _under_root(path) -> bool:
    try:
        path = os.fsdecode(path) if not isinstance(path, int) else ""
    except TypeError:
        return False
    return bool(path) and os.path.abspath(path).startswith(os.path.abspath(_ROOT))


def _hook(event, args):
    global _busy
    if _busy:
        return
    if event == "open":
        path, mode, flags = args
        writes = (flags or 0) & _WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))
        touched = [path] if writes else []
    elif event in _CHANGES:
        touched = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    hits = [p for p in touched if _under_root(p)]
    if hits:
        _busy = True
        try:
            with open(_REPORT, "a") as report:
                report.write(f"rank {os.environ['RANK']} pid {os.getpid()}: {event} {hits}\n")
        finally:
            _busy = False


def _reporting_exit(code=None, _exit=sys.exit):
    with open(os.environ["RANK_EXIT_REPORT"], "a") as report:
        report.write(f"rank {os.environ['RANK']} exit {code}\n")
    _exit(code)


if "RANK" in os.environ and "LOCAL_RANK" in os.environ:
    if _ROOT and _REPORT:
        sys.addaudithook(_hook)
    if os.environ.get("RANK_EXIT_REPORT"):
        sys.exit = _reporting_exit
