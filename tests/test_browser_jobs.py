"""End to end in a real browser: a real ``streamlit run dashboard.py`` on an empty models root,
driven through Debian's Chromium. Launch a fresh synthetic run from the form, follow it on the
Jobs page until it succeeds, open its curves, resume it from the Checkpoints page for one more
epoch, and find ``checkpoint_epoch_2.pth`` on disk. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_helpers import kill_job_leftovers
from dashboard_server import chromium_page, require_browser, screenshot, serve_dashboard
from training import jobs
from training.naming import experiment_name

pytestmark = pytest.mark.browser

TINY_FORM = {"num_epochs": "1", "batch_size": "8", "lr": "0.001", "train_size": "32", "val_size": "16",
             "clip_samples": "4000"}
FIRST = experiment_name(dict(model_type="lcnn", num_epochs=1, batch_size=8, lr=0.001))
SECOND = experiment_name(dict(model_type="lcnn", num_epochs=2, batch_size=8, lr=0.001))
RUN_TIMEOUT_MS = 240_000


def fill_field(page, name: str, value: str) -> None:
    box = page.get_by_label(name, exact=True)
    box.fill(value)
    box.press("Tab")  # number inputs commit on blur


def open_from_sidebar(page, title: str) -> None:
    # Until dashboard.py has run, the sidebar lists pages/ as files (Streamlit's automatic
    # pages): wait for its own sidebar widget, so the click goes through st.navigation.
    page.get_by_label("Models root", exact=True).wait_for()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.wait_for_url(re.compile(f"/{title.lower()}"))


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def launch(page, job_id: int) -> None:
    """Press Launch; a form changed since the preview is previewed first, then launched."""
    page.get_by_role("button", name="Launch", exact=True).click()
    launched = page.get_by_text(f"Launched job #{job_id}")
    changed = page.get_by_text("The values changed")
    launched.or_(changed).first.wait_for()
    if not launched.is_visible():
        page.get_by_role("button", name="Launch", exact=True).click()
    launched.wait_for()


def wait_succeeded(page, job_id: int) -> None:
    page.get_by_text(f"Job #{job_id}: succeeded").wait_for(timeout=RUN_TIMEOUT_MS)


def test_launch_follow_curves_resume_in_a_real_browser(tmp_path: Path) -> None:
    require_browser()
    root = tmp_path / "models"
    root.mkdir()
    try:
        with serve_dashboard(root, tmp_path / "streamlit.log") as url, chromium_page() as page:
            # 1. a fresh run from the Launch form. Enter at the root through the printed sign-in URL
            # (launching needs its token) and use the sidebar: a new session that opens /launch
            # directly runs the page without dashboard.py's navigation.
            page.goto(url.sign_in("/"))
            page.wait_for_url(f"{url}/")  # the token left the address bar; the cookie keeps it
            open_from_sidebar(page, "Launch")
            page.get_by_text("Launch a training run").wait_for()
            choose(page, "model_type", "lcnn")
            for name, value in TINY_FORM.items():
                fill_field(page, name, value)
            launch(page, 1)
            # The page reruns after the launch; under load that can come after the "Launched" text.
            page.get_by_text(f"Experiment folder: {FIRST}").wait_for(timeout=30_000)
            assert page.get_by_label("Models root", exact=True).is_visible(), "the page must run under dashboard.py"
            screenshot(page, "jobs_e2e_1_launched")

            # 2. follow it on the Jobs page until it succeeds
            page.get_by_text("Follow job #1 on the Jobs page").click()
            page.wait_for_url(re.compile(r"/jobs"))
            wait_succeeded(page, 1)
            page.get_by_text("Done: 1 epochs").first.wait_for()
            screenshot(page, "jobs_e2e_2_succeeded")

            # 3. its curves
            page.get_by_text(f"Curves of {FIRST}").click()
            page.wait_for_url(re.compile(r"/curves\?.*exp="))
            page.locator(".js-plotly-plot").first.wait_for()
            assert page.get_by_text(FIRST).first.is_visible()  # the job's experiment is the one plotted
            screenshot(page, "jobs_e2e_3_curves")

            # 4. resume it from the Checkpoints page for one more epoch
            open_from_sidebar(page, "Checkpoints")
            choose(page, "Experiment", FIRST)
            choose(page, "Checkpoint", "checkpoint_epoch_1.pth")
            page.get_by_role("button", name="Resume", exact=True).click()
            page.wait_for_url(re.compile(r"/launch\?.*mode=resume"))
            page.get_by_text("is at epoch 1: set num_epochs above 1").wait_for()
            fill_field(page, "num_epochs", "2")
            launch(page, 2)
            screenshot(page, "jobs_e2e_4_resumed")
            page.get_by_text("Follow job #2 on the Jobs page").click()
            wait_succeeded(page, 2)
            screenshot(page, "jobs_e2e_5_resume_succeeded")

        job = jobs.get_job(root, 2)
        assert (job.mode, job.state, job.exit_code) == ("resume", "succeeded", 0)
        assert job.experiment == SECOND
        assert (root / SECOND / "checkpoint_epoch_2.pth").is_file()
    finally:
        kill_job_leftovers(root)
