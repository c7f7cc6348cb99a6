"""In a real browser: the Launch form keeps what was typed when the user visits another page and
comes back through the sidebar (Streamlit drops the state of widgets a run does not draw; the
page keeps their values elsewhere and restores them), and a Resume link keeps its mode.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dashboard_server import chromium_page, require_browser, screenshot, serve_dashboard
from test_browser_jobs import choose, fill_field, open_from_sidebar

pytestmark = pytest.mark.browser

TYPED = {"num_epochs": "7", "batch_size": "12", "lr": "0.0005", "comment": "kept"}


def test_the_launch_form_keeps_its_values_across_page_switches(tmp_path: Path) -> None:
    require_browser()
    root = tmp_path / "models"
    root.mkdir()
    with serve_dashboard(root, tmp_path / "streamlit.log") as url, chromium_page() as page:
        page.goto(url.sign_in("/"))
        page.wait_for_url(f"{url}/")
        open_from_sidebar(page, "Launch")
        page.get_by_text("Launch a training run").wait_for()
        choose(page, "model_type", "lcnn")
        choose(page, "track", "In-the-Wild")
        for name, value in TYPED.items():
            fill_field(page, name, value)
        page.get_by_role("button", name="Update preview", exact=True).click()
        page.get_by_text(re.compile(r"Experiment folder: lcnn_In-the-Wild_CCE_7_12_0\.0005")).wait_for()
        open_from_sidebar(page, "Curves")  # (Experiments is the default page: its URL is "/")
        page.get_by_text("Select experiments above").wait_for()
        open_from_sidebar(page, "Launch")
        page.get_by_text("Launch a training run").wait_for()
        try:
            page.get_by_text(re.compile(r"Experiment folder: lcnn_In-the-Wild_CCE_7_12_0\.0005_group3_"
                                        r"contrastiveFalse_kept")).wait_for(timeout=15_000)
            for name, value in TYPED.items():
                assert page.get_by_label(name, exact=True).input_value() == value, name
            assert page.get_by_text("must be at least 1").count() == 0
        finally:
            screenshot(page, "launch_form_after_page_switch")
