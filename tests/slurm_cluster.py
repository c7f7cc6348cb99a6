"""A real single-node Slurm for the tests: ``tools/slurm_local.sh`` starts munged, slurmctld and
slurmd (installing Debian's slurm-wlm and munge when missing). Started when the tests run as
root with apt-get available (as CI does); the tests skip with the reason otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cli_helpers import REPO

SCRIPT = REPO / "tools" / "slurm_local.sh"


def why_no_slurm() -> str | None:
    if os.geteuid() != 0:
        return "the local Slurm needs root (its daemons run as SlurmUser=root)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and apt-get is not available to install it"
    return None


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    """The partition of the running local cluster (started here when needed)."""
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"tools/slurm_local.sh could not start Slurm: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def scontrol_field(job_id: str, name: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return ""


def cancel(job_ids: list[str]) -> None:
    """Whatever a test left queued or running is cancelled (its own jobs, by id)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True)


def wait_for_state(models_root: Path, job_id: str, done: set[str], timeout: float) -> str:
    from training.jobs import slurm

    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = slurm.get_job(models_root, job_id).state
        if state in done:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"Slurm job {job_id} still {state} after {timeout:.0f}s")
