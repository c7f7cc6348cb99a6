"""Streamlit entry: runs pages.common.run_app (page config, st.navigation over pages/, the sidebar).

    streamlit run dashboard.py                       # models/ under the current directory
    streamlit run dashboard.py -- --models_root runs # or MODELS_ROOT=runs streamlit run dashboard.py

The models root comes from ``--models_root`` (after ``--``), else ``MODELS_ROOT``, else ``models/``;
the sidebar can change it for this browser session. Selected experiments and page state live in
``st.query_params`` so a URL can be shared.

This one file is both the app and its server. Streamlit runs it as the script (``__name__`` is
``"__main__"``: every rerun, and AppTest). ``streamlit run`` finds the ``app = st.App(...)`` below
and serves it with uvicorn, importing this file as the module ``dashboard``: that adds
training.dashboard.access's middleware (own-origin WebSockets only, ``?token=`` sign-in) and prints
the sign-in URL with the start-up token. Launch, Stop and Delete need that token.
"""

from __future__ import annotations

import contextlib
import sys

import streamlit as st

from training.dashboard import access as dashboard_access


def render() -> None:
    from pages.common import run_app

    run_app()


@contextlib.asynccontextmanager
async def print_sign_in_url(_app):
    """After Streamlit's own "Local URL" lines: the URL that carries the token (once, at start-up)."""
    from streamlit import config
    from streamlit.web.server import server_util

    address = next((a for a in (config.get_option("browser.serverAddress"), config.get_option("server.address"))
                    if a and a not in dashboard_access.WILDCARD_ADDRESSES), "localhost")
    url = dashboard_access.sign_in_url(server_util.get_url(address), dashboard_access.server_token())
    print(f"\n  Sign in (launch, stop and delete need this token; keep it private):\n  {url}\n", flush=True)
    yield None


if __name__ == "__main__":
    render()
else:
    try:
        dashboard_access.server_token()  # a bad DASHBOARD_TOKEN stops the server before it listens
    except dashboard_access.TokenError as exc:
        print(f"dashboard: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from starlette.middleware import Middleware

    app = st.App(__file__, middleware=[Middleware(dashboard_access.AccessMiddleware)], lifespan=print_sign_in_url)
