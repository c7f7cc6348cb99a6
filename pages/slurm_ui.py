"""Slurm on the Launch and Jobs pages (not a page itself): the target choice with its fields, and
the Slurm jobs section with state, log tail and Stop. What they do is training.jobs.slurm."""

from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import streamlit as st

from training.jobs import slurm

TARGET_KEY = "launch_target"
TARGETS = ("This machine", "Slurm")
FIELD_PREFIX = "launch_slurm_"
JOB_KEY = "jobs_slurm_selected"
LOG_TAIL_BYTES = 16_384
REFRESH_S = 3.0  # squeue once per refresh


def launch_target() -> tuple[dict[str, Any] | None, list[str]]:
    """The target radio and, for Slurm, its fields. (launch options or None for this machine,
    errors in the Slurm fields)."""
    target = st.radio("Run on", TARGETS, key=TARGET_KEY, horizontal=True)
    if target != "Slurm":
        return None, []
    problem = slurm.scheduler_available()
    if problem:
        st.warning(f"{problem}: a submission will fail.")
    cols = st.columns(5)
    raw = {
        "slurm_partition": cols[0].text_input("slurm_partition", key=FIELD_PREFIX + "partition",
                                              help="empty: the cluster's default partition"),
        "nodes": cols[1].number_input("nodes", key=FIELD_PREFIX + "nodes", min_value=1, value=1, step=1),
        "gpus_per_node": cols[2].number_input("gpus_per_node", key=FIELD_PREFIX + "gpus", min_value=0, value=0,
                                              step=1),
        "timeout_min": cols[3].number_input("timeout_min", key=FIELD_PREFIX + "timeout", min_value=1, value=1440,
                                            step=1, help="the job saves and requeues itself before this limit"),
        "slurm_extra": cols[4].text_input("slurm_extra", key=FIELD_PREFIX + "extra",
                                          help="more sbatch options, e.g. --account=abc --qos=high"),
    }
    launch, errors = slurm.parse_launch_form(raw)
    for error in errors:
        st.error(error)
    st.caption("The job runs the command below on the cluster; the models root must be shared with it.")
    return launch, errors


def submit(root: str, mode: str, args: dict[str, Any], launch: dict[str, Any]) -> tuple[str, str, None]:
    """(kind, message, None) for the Launch page's result line."""
    try:
        job = slurm.submit(root, mode, args, launch)
    except (ValueError, OSError, RuntimeError) as exc:
        return "error", f"Not submitted: {exc}", None
    return "success", f"Submitted Slurm job {job.job_id}: {job.experiment} (see the Jobs page)", None


def command_suffix(launch: dict[str, Any] | None) -> str:
    return "" if launch is None else " " + shlex.join(slurm.launch_flags(launch))


@st.fragment(run_every=REFRESH_S)
def jobs_section(root: str, allowed: bool, refusal: str) -> None:
    """The Slurm jobs of this models root (nothing when there are none)."""
    listed = slurm.list_jobs(root)
    if not listed:
        return
    st.subheader("Slurm jobs")
    st.dataframe(pd.DataFrame([{"job": j.job_id, "state": j.state, "reason": j.reason, "experiment": j.experiment,
                                "mode": j.mode, "restarts": j.restarts} for j in listed]),
                 hide_index=True, width="stretch")
    ids = [j.job_id for j in listed]
    if st.session_state.get(JOB_KEY) not in ids:
        st.session_state[JOB_KEY] = ids[0]
    picked = st.selectbox("Slurm job", ids, key=JOB_KEY)
    job = next(j for j in listed if j.job_id == picked)
    st.markdown(f"**Slurm job {job.job_id}: {job.state}**" + (f" ({job.reason})" if job.reason else ""))
    st.code(job.command, language="bash", wrap_lines=True)
    if job.is_active:
        confirm = st.checkbox(f"Confirm stopping Slurm job {job.job_id}", key=f"slurm_confirm_{job.job_id}",
                              help="SIGTERM: the trainer saves checkpoint_interrupt, then the job ends")
        if st.button("Stop Slurm job", key=f"slurm_stop_{job.job_id}", disabled=not confirm):
            if not allowed:
                st.error(refusal)
            else:
                try:
                    slurm.stop(root, job.job_id)
                except (KeyError, RuntimeError, OSError) as exc:
                    st.error(f"Not stopped: {exc}")
    st.caption(f"Log (last {LOG_TAIL_BYTES // 1024} KiB, {job.log_path})")
    st.code(slurm.tail_log(job, LOG_TAIL_BYTES) or "(no output yet)", language=None, height=300, wrap_lines=True)
