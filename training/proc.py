"""Process identity that survives pid reuse: a pid plus its kernel start time.

A pid alone is not an identity: after a process dies the kernel hands its pid to the next one.
The start time (field 22 of /proc/PID/stat, in clock ticks since boot) tells them apart.
Used by the experiment lock (to name the running holder) and the job registry.
"""

from __future__ import annotations

import os


def process_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks since boot, or None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state = fields[0]
    if state in ("Z", "X"):  # zombie or dead: finished, only waiting to be reaped
        return None
    return int(fields[19])


def is_alive(pid: int | None, start_time: int | None) -> bool:
    """True when ``pid`` is running and is the same process that had ``start_time``."""
    if not pid:
        return False
    now = process_start_time(pid)
    return now is not None and (start_time is None or now == start_time)


def current_identity() -> tuple[int, int | None]:
    pid = os.getpid()
    return pid, process_start_time(pid)
