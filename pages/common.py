"""Widgets and state shared by every page: the models root and the selected experiments.

Both live where a shared URL can carry them: the selection in ``st.query_params["exp"]`` (one
value per experiment), the models root in session state (seeded from the command line or the
environment; it is a server path, so it is not put in the URL).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from training.ui import resolve_models_root

MODELS_ROOT_KEY = "models_root"
SELECTION_PARAM = "exp"


def models_root() -> Path:
    """The models root for this session (``--models_root``, ``MODELS_ROOT`` or ``models/``)."""
    if MODELS_ROOT_KEY not in st.session_state:
        st.session_state[MODELS_ROOT_KEY] = str(resolve_models_root(sys.argv[1:]))
    return Path(st.session_state[MODELS_ROOT_KEY])


def sidebar_models_root() -> Path:
    """The sidebar's models-root field; returns the root in use."""
    models_root()  # seed the session value before the widget takes it over
    st.sidebar.text_input("Models root", key=MODELS_ROOT_KEY,
                          help="Folder holding one sub-folder per experiment (the trainer's --models_root).")
    return models_root()


def selected_experiments() -> list[str]:
    """Experiment folder names selected on any page (kept in the URL)."""
    return list(dict.fromkeys(st.query_params.get_all(SELECTION_PARAM)))


def set_selected_experiments(names: list[str]) -> None:
    """Replace the selection; a no-op when unchanged so it does not trigger a rerun loop."""
    names = list(dict.fromkeys(names))
    if names != selected_experiments():
        st.query_params[SELECTION_PARAM] = names
