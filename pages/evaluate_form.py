"""The "Evaluate on ..." form the Checkpoints and Launch pages share: the set (track, audio folder,
keys folder) and a button that starts ``--eval`` of one checkpoint as a background job
(training.jobs.evaluate.launch_eval, which checks everything). Not a page of its own.

The fields keep their values for the session (a copy outside the widgets' state, which Streamlit
drops when a page stops drawing them), so the set is typed once and reused for every checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.common import refusal, signed_in
from training.config import TRACKS
from training.jobs import launch_eval

JOBS_PAGE = "pages/jobs.py"
FIELDS = {"track": "eval_form_track", "database_path": "eval_form_database", "protocols_path": "eval_form_protocols"}
MEMORY_KEY = "_eval_form_values"
RESULT_KEY = "_eval_form_result"  # (kind, message, job id) of the last click


def _remember() -> None:
    st.session_state[MEMORY_KEY] = {name: st.session_state.get(key) for name, key in FIELDS.items()}


def _seed() -> None:
    for name, key in FIELDS.items():
        remembered = st.session_state.get(MEMORY_KEY, {}).get(name)
        if key not in st.session_state and remembered is not None:
            st.session_state[key] = remembered


def evaluate_form(root: Path | str, checkpoint: Path | str, key: str) -> None:
    """Fields and the button for ``checkpoint``; the outcome (job link or one-line error) below."""
    _seed()
    track_col, data_col, keys_col = st.columns([1, 3, 3])
    track = track_col.selectbox("Evaluation set", TRACKS, key=FIELDS["track"], on_change=_remember)
    database = data_col.text_input("Database path", key=FIELDS["database_path"], on_change=_remember,
                                   help="The folder holding the set's audio (as --database_path)")
    protocols = keys_col.text_input("Protocols path", key=FIELDS["protocols_path"], on_change=_remember,
                                    help="Where the key lies (as --protocols_path); empty: look under the database path")
    if st.button(f"Evaluate on {track}", key=f"evaluate_{key}",
                 help="Score this checkpoint with --eval as a background job (Jobs page); the result "
                      "appears on the Evaluation page when it finishes"):
        _remember()
        st.session_state[RESULT_KEY] = _start(root, checkpoint, track, database, protocols)
    result = st.session_state.get(RESULT_KEY)
    if result:
        kind, message, job_id = result
        getattr(st, kind)(message)
        if job_id is not None:
            st.page_link(JOBS_PAGE, label=f"Follow job #{job_id} on the Jobs page", icon="⚙️",
                         query_params={"job": str(job_id)})


def _start(root: Path | str, checkpoint: Path | str, track: str, database: str, protocols: str) -> tuple:
    if not signed_in():
        return "error", refusal("Evaluate"), None
    args = {"model_path": str(checkpoint), "track": track, "database_path": database.strip() or None,
            "protocols_path": protocols.strip() or None}
    try:
        job = launch_eval(root, args)
    except (ValueError, OSError, RuntimeError) as exc:
        return "error", f"Not started: {exc}", None
    return "success", f"Started job #{job.id}: {Path(checkpoint).name} on {track}", job.id
