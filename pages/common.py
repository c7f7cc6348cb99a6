"""Widgets and state shared by every page: the models root, the selected experiments, and
whether this browser may act (launch, stop, delete).

Both live where a shared URL can carry them: the selection in ``st.query_params["exp"]`` (one
value per experiment), the models root in session state (seeded from the command line or the
environment; it is a server path, so it is not put in the URL). Acting needs the dashboard's
start-up token (training.dashboard.access): the sign-in cookie this session's WebSocket came with,
or the token put in ``st.session_state["dashboard_token"]`` (how AppTest tests sign in; a browser
cannot set that key, and either way the secret itself must be known).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from training.dashboard import access as dashboard_access
from training.dashboard.settings import resolve_models_root

MODELS_ROOT_KEY = "models_root"
SELECTION_PARAM = "exp"


def ensure_navigation() -> None:
    """Make sure ``dashboard.py``'s st.navigation runs; call first on every page.

    With a ``pages/`` folder next to the entry script, a fresh Streamlit server starts in its old
    pages-directory mode: if its first request is a page URL (a shared ``/curves?exp=...`` link),
    it runs that page file alone, without ``dashboard.py`` (no sidebar, every file of ``pages/``
    listed as a page), and stays so until someone opens ``/``. Calling st.navigation switches the
    mode off; here we switch it off and rerun, so ``dashboard.py`` runs and opens the same page
    (each ``url_path`` equals its file name, so the page identity is the same in both modes).
    """
    from streamlit import config
    from streamlit.runtime.pages_manager import PagesManager

    # AppTest re-enters that mode on every run (it resets the flag per run), and a rerun there
    # would drop the clicks under test; it runs the page itself, which is what tests exercise.
    # An internal flag (streamlit is pinned to 1.67.x for it); if a release drops it, do nothing.
    if getattr(PagesManager, "uses_pages_directory", False) and not config.get_option("global.appTest"):
        PagesManager.uses_pages_directory = False
        st.rerun()


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


SELECTION_MEMORY_KEY = "_selected_experiments"  # session copy: sidebar navigation drops the query string


def selected_experiments() -> list[str]:
    """Experiment folder names selected on any page (kept in the URL).

    The URL wins (a shared link opens with its selection). Moving to another page through the
    sidebar clears the query string, so the session keeps a copy and puts it back into the URL.
    """
    from_url = list(dict.fromkeys(st.query_params.get_all(SELECTION_PARAM)))
    if from_url:
        st.session_state[SELECTION_MEMORY_KEY] = from_url
        return from_url
    remembered = list(st.session_state.get(SELECTION_MEMORY_KEY, []))
    if remembered:
        st.query_params[SELECTION_PARAM] = remembered
    return remembered


def set_selected_experiments(names: list[str]) -> None:
    """Replace the selection; a no-op when unchanged so it does not trigger a rerun loop."""
    names = list(dict.fromkeys(names))
    st.session_state[SELECTION_MEMORY_KEY] = names
    if names != list(dict.fromkeys(st.query_params.get_all(SELECTION_PARAM))):
        if names:
            st.query_params[SELECTION_PARAM] = names
        else:
            st.query_params.pop(SELECTION_PARAM, None)


# --- who may act -----------------------------------------------------------------------------

SIGN_IN_HINT = ("open the sign-in URL the dashboard printed when it started "
                "(`http://…/?token=…`, or `DASHBOARD_TOKEN` when it was set)")


def signed_in() -> bool:
    """This session holds the dashboard's token (its sign-in cookie, or the session value)."""
    from streamlit import config

    cookie = st.context.cookies.get(dashboard_access.cookie_name(int(config.get_option("server.port"))))
    return dashboard_access.token_matches(cookie) or dashboard_access.token_matches(
        st.session_state.get(dashboard_access.SESSION_KEY))


def refusal(action: str) -> str:
    """What an action refused for want of the token says."""
    return f"{action} refused: this browser has not signed in with the dashboard's token; {SIGN_IN_HINT}."


def sidebar_access_notice() -> None:
    if not signed_in():
        st.sidebar.caption(f"🔒 Read-only: to launch, stop or delete, {SIGN_IN_HINT}.")
