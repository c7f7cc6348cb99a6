"""What the torch-free checkpoint reader raises, and the one-line rule for the reasons it reports
(a listing shows one line per problem file, never a traceback)."""

from __future__ import annotations


class CheckpointReadError(Exception):
    """The file is not a readable torch checkpoint (truncated, corrupt, not torch at all)."""


class UnsafeCheckpointError(CheckpointReadError):
    """The pickle references a global outside the allowlist; it was not run."""

    def __init__(self, global_name: str):
        super().__init__(f"pickle would call {global_name}")
        self.global_name = global_name


class TruncatedPickle(CheckpointReadError):
    """The pickle needs bytes past the end of the buffer (the legacy reader then reads more)."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace folded into single spaces, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
