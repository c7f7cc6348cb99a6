"""Jobs: running and recent training jobs of this models root — state, epoch progress k/N,
elapsed time and ETA, latest val EER — and for one job its command, a live log tail, a Stop
button (with confirmation) and a link to its curves.

Jobs are OS processes recorded in the registry under the models root (training.jobs.registry), so they
outlive the dashboard and a restarted dashboard shows them. The table and the selected job
refresh in fragments (``st.fragment(run_every=...)``), not by reloading the page.
"""

from __future__ import annotations

import streamlit as st

from pages import slurm_ui
from pages.common import ensure_navigation, models_root, page_title, refusal, signed_in
from training import jobs
from training.dashboard import catalog
from training.dashboard.job_status import (RESUMABLE_STATES, format_duration, job_label, job_progress, jobs_frame,
                                           progress_line, resume_params, visible_jobs)
from training.dashboard.log_view import LOG_VIEW_LINES, log_tail

# --- constants ----------------------------------------------------------------------------------
REFRESH_S = 2.0          # how often the table and the selected job re-read the registry and log
LOG_TAIL_BYTES = 16_384  # ~200 lines of output
STOP_GRACE_S = 30.0      # SIGTERM, then SIGKILL after this long (the trainer saves in between)
JOB_PARAM = "job"        # ?job=<id> selects a job (the Launch page links with it)
JOB_KEY = "jobs_selected"
CURVES_PAGE = "pages/curves.py"
LAUNCH_PAGE = "pages/launch.py"
STATE_ICONS = {"queued": "⏳", "running": "🟢", "stopping": "🟠", "succeeded": "✅", "failed": "❌",
               "stopped": "⏹️", "lost": "❔"}


# --- data loading ---------------------------------------------------------------------------------
# Not cached: every call reconciles the registry with the process table (a job whose processes
# vanished becomes "lost"), which is the point of looking; it is one small SQLite read.

def load_jobs(root: str) -> list[jobs.Job]:
    if not jobs.db_path(root).is_file():
        return []  # reading must not create a registry in a folder that has none
    return jobs.list_jobs(root)


# --- components -----------------------------------------------------------------------------------

def jobs_table(root: str, listed: list[jobs.Job]) -> None:
    frame = jobs_frame(root, listed)
    st.dataframe(
        frame, hide_index=True, width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "val EER %": st.column_config.NumberColumn("val EER %", format="%.2f"),
            "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
        },
    )


def pick_job(listed: list[jobs.Job]) -> int | None:
    """The selected job id: ?job=<id> from a link, else the newest job."""
    ids = [job.id for job in listed]
    wanted = st.query_params.get(JOB_PARAM)
    if wanted and wanted.isdigit() and int(wanted) in ids and st.session_state.get("jobs_url_seen") != wanted:
        st.session_state[JOB_KEY] = int(wanted)
        st.session_state["jobs_url_seen"] = wanted
    if st.session_state.get(JOB_KEY) not in ids:
        st.session_state[JOB_KEY] = ids[0]
    labels = {job.id: job_label(job) for job in listed}
    return st.selectbox("Job", ids, key=JOB_KEY, format_func=labels.get)


def stop_controls(root: str, job: jobs.Job) -> None:
    """Stop, confirmed by a checkbox first: a stop cannot be undone (the run is resumable)."""
    confirm = st.checkbox(f"Confirm stopping job #{job.id}", key=f"jobs_confirm_stop_{job.id}",
                          help=f"SIGTERM: the trainer finishes its step, saves checkpoint_interrupt and exits; "
                               f"after {STOP_GRACE_S:g}s it is killed.")
    if st.button("Stop job", key=f"jobs_stop_{job.id}", disabled=not confirm or job.state == "stopping"):
        if not signed_in():
            st.error(refusal("Stop"))
            return
        jobs.stop(root, job.id, grace_s=STOP_GRACE_S)
        st.rerun(scope="fragment")


def ended_job_actions(root: str, job: jobs.Job) -> None:
    """A stopped or failed job: Resume (the Launch page, prefilled as the Checkpoints page's
    Resume does) and Open curves."""
    params = resume_params(catalog.scan_checkpoints(root), job) if job.state in RESUMABLE_STATES else None
    if params is None:
        return
    left, right, _ = st.columns([1, 1, 4])
    if left.button("Resume", key=f"jobs_resume_{job.id}", help=f"Open the Launch page to continue from {params['checkpoint']}"):
        st.switch_page(LAUNCH_PAGE, query_params=params)
    if right.button("Open curves", key=f"jobs_curves_{job.id}"):
        st.switch_page(CURVES_PAGE, query_params={"exp": job.experiment})


def job_detail(root: str, job_id: int) -> None:
    try:
        job = jobs.get_job(root, job_id)
    except jobs.JobNotFound:
        st.warning(f"Job #{job_id} is no longer in the registry.")
        return
    progress = job_progress(root, job)
    st.subheader(f"{STATE_ICONS.get(job.state, '')} Job #{job.id}: {job.state}")
    st.progress(progress.fraction, text=progress_line(progress))
    cols = st.columns(5)
    cols[0].metric("Elapsed", format_duration(progress.elapsed_s))
    cols[1].metric("ETA", format_duration(progress.eta_s) if job.is_active else "—")
    cols[2].metric("Latest val EER", f"{progress.latest_val_eer:.2f}%" if progress.latest_val_eer is not None else "—")
    cols[3].metric("Mode", job.mode)
    cols[4].metric("Exit code", "—" if job.exit_code is None else str(job.exit_code))
    if job.error:
        (st.error if job.state in ("failed", "lost") else st.info)(job.error)
    page, label, icon = (("pages/evaluation.py", f"Evaluation results of {job.experiment}", "🏁") if job.kind == "eval"
                         else (CURVES_PAGE, f"Curves of {job.experiment}", "📈"))
    st.page_link(page, label=label, icon=icon, query_params={"exp": job.experiment})
    ended_job_actions(root, job)
    st.code(job.command, language="bash", wrap_lines=True)
    if job.is_active:
        stop_controls(root, job)
    log_box(root, job)


def log_box(root: str, job: jobs.Job) -> None:
    """The newest lines in a box that fits them (in view without scrolling); the rest of the tail
    in an expander."""
    text = jobs.tail_log(root, job.id, LOG_TAIL_BYTES)
    shown, earlier = log_tail(text)
    st.caption(f"Log: the last {LOG_VIEW_LINES} lines, newest at the bottom ({job.log_path})")
    st.code(shown or "(no output yet)", language=None, wrap_lines=True)
    if earlier:
        with st.expander(f"Earlier output ({earlier} more lines, last {LOG_TAIL_BYTES // 1024} KiB in all)"):
            st.code(text, language=None, wrap_lines=True)


@st.fragment(run_every=REFRESH_S)
def jobs_view(root: str) -> None:
    """Table, picker and detail refresh together from one read, so they never disagree."""
    listed = load_jobs(root)
    if not listed:
        st.info("No jobs yet in this models root.")
        st.page_link(LAUNCH_PAGE, label="Launch a training run", icon="🚀")
        return
    pages = visible_jobs(listed, 0)[1]
    page = st.number_input(f"Finished jobs, page (of {pages})", 1, pages, key="jobs_page") if pages > 1 else 1
    shown = visible_jobs(listed, int(page) - 1)[0]  # active jobs and one page of finished ones
    jobs_table(root, shown)
    selected = pick_job(shown + [job for job in listed if str(job.id) == st.query_params.get(JOB_PARAM)
                                 and job not in shown])
    if selected is not None:
        job_detail(root, selected)


# --- layout ---------------------------------------------------------------------------------------

ensure_navigation()
page_title("Jobs")
root = str(models_root())
jobs_view(root)
slurm_ui.jobs_section(root, signed_in(), refusal("Stop"))
