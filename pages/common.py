"""What every page shares: the navigation (the page list and dashboard.py's script), the models
root, the selected experiments, whether this browser may act (launch, stop, delete), the page
title and the one-shot (flash) message an action leaves for the next run.

The selection lives in ``st.query_params["exp"]`` (one value per experiment), so a shared URL
carries it; the models root lives in session state (seeded from the command line or the
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
from training.dashboard.settings import models_root_notice, resolve_models_root

MODELS_ROOT_KEY = "models_root"
SELECTION_PARAM = "exp"


# --- the navigation ----------------------------------------------------------------------------
# (file, title, icon, url_path); each url_path equals its file name, so a page has the same
# identity whether dashboard.py's st.navigation runs it or Streamlit's pages-folder mode does.
PAGES = (
    ("pages/experiments.py", "Experiments", "📋", "experiments"),
    ("pages/curves.py", "Curves", "📈", "curves"),
    ("pages/checkpoints.py", "Checkpoints", "💾", "checkpoints"),
    ("pages/evaluation.py", "Evaluation", "🏁", "evaluation"),
    ("pages/attention.py", "Attention", "🔍", "attention"),
    ("pages/launch.py", "Launch", "🚀", "launch"),
    ("pages/jobs.py", "Jobs", "⚙️", "jobs"),
)
SHELL_KEY = "_navigation_shell"  # whether dashboard.py ran this page: THIS_RUN, EARLIER or ASKED
THIS_RUN, EARLIER, ASKED = "this run", "earlier", "asked"


def app_pages() -> list[st.Page]:
    return [st.Page(file, title=title, icon=icon, url_path=url_path, default=(index == 0))
            for index, (file, title, icon, url_path) in enumerate(PAGES)]


def run_app() -> None:
    """dashboard.py's script: page config, navigation, sidebar, then the page the URL names."""
    from training.checkpoint import pool as ckpt_pool

    st.set_page_config(page_title="ASVspoof training", page_icon="🎙️", layout="wide")
    # The catalog reads checkpoints in reader processes; booting them (~0.2 s) now overlaps with the
    # page's imports, so the first scan finds them running. A no-op once they are.
    ckpt_pool.start()
    navigation = st.navigation(app_pages())
    sidebar_models_root()
    sidebar_access_notice()
    st.session_state[SHELL_KEY] = THIS_RUN  # read by ensure_navigation, first thing on the page
    navigation.run()


def ensure_navigation() -> None:
    """Make sure ``dashboard.py``'s st.navigation runs; call first on every page.

    With a ``pages/`` folder next to the entry script, a fresh Streamlit server starts in its old
    pages-directory mode: if its first request is a page URL (a shared ``/curves?exp=...`` link),
    it runs that page file alone, without ``dashboard.py`` (no sidebar, every file of ``pages/``
    listed as a page), and stays so until something calls st.navigation. So a page run without
    ``dashboard.py`` in a session where it never ran calls st.navigation itself (which ends that
    mode for the whole server) and reruns: ``dashboard.py`` then runs and opens the same page.
    Public API only: run_app marks the runs it makes, this function reads the mark.

    A page run alone after ``dashboard.py`` ran earlier in the session cannot happen on a real
    server (the mode is off for good); AppTest re-enters the mode on every run, and a rerun there
    would drop the clicks under test, so the page just renders, as the test means it to. If the
    rerun did not bring ``dashboard.py`` (a Streamlit release where st.navigation no longer ends
    the mode), the page renders alone rather than loop; tests/test_pages_read.py's
    test_a_page_opened_first_gets_the_dashboards_sidebar fails then.
    """
    state = st.session_state.get(SHELL_KEY)
    if state == THIS_RUN:
        st.session_state[SHELL_KEY] = EARLIER
    elif state is None:
        st.session_state[SHELL_KEY] = ASKED
        st.navigation(app_pages())
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
    notice = models_root_notice(models_root())  # a mistyped root must not look like an empty one
    if notice:
        getattr(st.sidebar, notice[0])(notice[1])
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


# --- page title and flash messages --------------------------------------------------------------

FLASH_KEY = "_flash"  # (kind, text) of a message for the next run: it survives an st.rerun()
FLASH_KINDS = ("success", "info", "warning", "error")


def flash(kind: str, text: str) -> None:
    """Show ``text`` once, under the title of the next run (an action that reruns to show its
    outcome: the rerun redraws the page, so a message drawn before it would vanish)."""
    if kind not in FLASH_KINDS:
        raise ValueError(f"flash kind {kind!r} is not one of {', '.join(FLASH_KINDS)}")
    st.session_state[FLASH_KEY] = (kind, text)


def page_title(title: str) -> None:
    """The page's title, then the message an action left for this run (once)."""
    st.title(title)
    message = st.session_state.pop(FLASH_KEY, None)
    if message:
        kind, text = message
        getattr(st, kind)(text)


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


# --- following running jobs ---------------------------------------------------------------------

def follow_running(render, root: Path, *args) -> None:
    """``render(*args)`` as a fragment that re-runs every few seconds while something trains under
    ``root`` (training.dashboard.live), and is drawn once otherwise: an idle page never refreshes.
    Once the work ends, the next refresh reruns the whole page, which then sets no timer."""
    from training.dashboard import live

    every = live.refresh_interval(root)
    first_call = [True]  # the call of this full run; later calls are the fragment's own refreshes

    def body(*body_args) -> None:
        if every and not first_call[0] and live.refresh_interval(root) is None:
            st.rerun()  # scope "app": the full run draws the page without the timer
        first_call[0] = False
        render(*body_args)

    st.fragment(body, run_every=every)(*args)
