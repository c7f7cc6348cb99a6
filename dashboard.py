"""Streamlit entry: the navigation over pages/ and the models root every page reads.

    streamlit run dashboard.py                       # models/ under the current directory
    streamlit run dashboard.py -- --models_root runs # or MODELS_ROOT=runs streamlit run dashboard.py

The models root comes from ``--models_root`` (after ``--``), else ``MODELS_ROOT``, else ``models/``;
the sidebar can change it for this browser session. Selected experiments and page state live in
``st.query_params`` so a URL can be shared.
"""

from __future__ import annotations

import streamlit as st

from pages.common import sidebar_models_root
from training import ckpt_pool

st.set_page_config(page_title="ASVspoof training", page_icon="🎙️", layout="wide")
# The catalog reads checkpoints in reader processes; booting them (~0.2 s) now overlaps with the
# page's imports, so the first scan finds them running. A no-op once they are.
ckpt_pool.start()

PAGES = [
    st.Page("pages/experiments.py", title="Experiments", icon="📋", url_path="experiments", default=True),
    st.Page("pages/curves.py", title="Curves", icon="📈", url_path="curves"),
    st.Page("pages/checkpoints.py", title="Checkpoints", icon="💾", url_path="checkpoints"),
    st.Page("pages/launch.py", title="Launch", icon="🚀", url_path="launch"),
    st.Page("pages/jobs.py", title="Jobs", icon="⚙️", url_path="jobs"),
]

navigation = st.navigation(PAGES)
sidebar_models_root()
navigation.run()
