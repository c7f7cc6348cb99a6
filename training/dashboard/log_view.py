"""What the Jobs page shows of a job's log: its last lines, newest at the bottom, in a box that
fits them (a fixed-height box opens scrolled to its top, so the newest lines, the ones a user
watches, were out of view and every refresh scrolled back up)."""

from __future__ import annotations

LOG_VIEW_LINES = 30  # shown without a scrollbar; the whole tail read stays one click away


def log_tail(text: str, lines: int = LOG_VIEW_LINES) -> tuple[str, int]:
    """(the last ``lines`` lines of ``text``, how many earlier lines were left out)."""
    all_lines = text.rstrip("\n").split("\n") if text else []
    shown = all_lines[-lines:] if lines > 0 else []
    return "\n".join(shown), len(all_lines) - len(shown)
