"""The read pages in a real browser: ``streamlit run dashboard.py`` and Debian's Chromium.

Two tiny experiments are trained with the real CLI; the Experiments table must show both
(st.dataframe draws on a canvas; its cell text sits in a hidden accessibility grid, so the
test waits for it to be attached rather than visible), and the Curves page opened from a shared
URL (``/curves?exp=a&exp=b``) must render its plotly charts.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from cli_helpers import TINY, run_main
from dashboard_server import chromium_page, require_browser, screenshot, serve_dashboard

A = "lcnn_DF_CCE_2_8_0.001_group3_contrastiveFalse_one"
B = "lcnn_DF_CCE_2_8_0.001_group3_contrastiveFalse_two"


@pytest.mark.browser
def test_experiments_table_and_curves_in_chromium(tmp_path: Path) -> None:
    require_browser()
    models = tmp_path / "models"
    for comment in ("one", "two"):
        result = run_main([*TINY, "--num_epochs", "2", "--comment", comment, "--models_root", str(models)], tmp_path)
        assert result.code == 0, result.text
    with serve_dashboard(models, tmp_path / "streamlit.log") as url, chromium_page() as page:
        # A page URL as the server's first request (a shared link) must still get dashboard.py's
        # navigation and sidebar, not Streamlit's pages-folder fallback. Without the token the
        # dashboard only reads, and says so.
        page.goto(f"{url}/experiments")
        page.get_by_role("heading", name="Experiments").wait_for()
        page.get_by_label("Models root", exact=True).wait_for()
        page.get_by_text("Read-only: to launch, stop or delete").wait_for()
        nav = page.locator("[data-testid='stSidebarNav']")
        assert nav.get_by_text("Curves", exact=True).count() == 1 and nav.get_by_text("common").count() == 0
        for name in (A, B):
            page.get_by_text(name, exact=True).first.wait_for(state="attached")
        screenshot(page, "experiments")

        # Signing in through the printed URL keeps the link's own parameters.
        page.goto(url.sign_in(f"/curves?{urlencode([('exp', A), ('exp', B)])}"))
        page.wait_for_url(f"{url}/curves?{urlencode([('exp', A), ('exp', B)])}")
        page.get_by_role("heading", name="Curves").wait_for()
        charts = page.locator(".js-plotly-plot")
        charts.first.locator(".main-svg").first.wait_for(state="visible")
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4")
        # Every chart draws one line per experiment: the legend names both runs by their short
        # labels (their comments: the rest of the names is equal).
        legend = charts.first.locator(".legendtext")
        legend.first.wait_for(state="visible")
        assert {"one", "two"} <= set(legend.all_text_contents())
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("Read-only: to launch, stop or delete").count() == 0  # the cookie signed it in
        screenshot(page, "curves")
