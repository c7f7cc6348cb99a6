"""Keeping a page's widget values across page switches.

Streamlit forgets the state of every widget that a run does not draw: leave a page and come
back, and its widgets start from their defaults (the Launch form came back with every number 0,
the track on LA and the mode on "fresh"). Values kept under ordinary (non-widget) session keys
survive, so a page copies its widgets' values there after drawing them (:func:`remember`) and
puts them back, for the widgets whose state was dropped, before drawing them (:func:`restore`).

Works on any mutable mapping (``st.session_state`` in a page, a dict in a test); no Streamlit here.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any


def restore(state: MutableMapping[str, Any], memory_key: str, keys: Iterable[str]) -> list[str]:
    """Put back the remembered value of each widget key the session no longer holds (a value the
    session still holds, e.g. one a link just set, wins). Call before the widgets are drawn.
    Returns the keys restored."""
    saved = state.get(memory_key) or {}
    restored = []
    for key in keys:
        if key not in state and key in saved:
            state[key] = saved[key]
            restored.append(key)
    return restored


def remember(state: MutableMapping[str, Any], memory_key: str, keys: Iterable[str]) -> None:
    """Copy the current value of each widget key into the memory (under ``memory_key``)."""
    saved = dict(state.get(memory_key) or {})
    for key in keys:
        if key in state:
            saved[key] = state[key]
    state[memory_key] = saved
