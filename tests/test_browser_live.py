"""In a real browser, a real job launched from the dashboard, watched during its first epoch
without reloading: the Jobs page shows the step k/N, a rate and an ETA, and the Curves page's
step-level loss chart gains points (the pages re-run their data part in a fragment while a job
runs). The job is slow enough (1000 steps an epoch, a row per step) to be watched in epoch 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_helpers import kill_job_leftovers
from dashboard_server import chromium_page, require_browser, screenshot, serve_dashboard
from test_browser_jobs import choose, fill_field, launch, open_from_sidebar
from training.naming import experiment_name

pytestmark = pytest.mark.browser

SLOW_FORM = {"num_epochs": "2", "batch_size": "4", "lr": "0.001", "train_size": "4000", "val_size": "16",
             "clip_samples": "4000", "log_every_steps": "1"}
EXPERIMENT = experiment_name(dict(model_type="lcnn", num_epochs=2, batch_size=4, lr=0.001))
STEP = re.compile(r"Epoch 0/2 · step (\d+)/1000")
STEP_CHART_POINTS = """() => {
  const chart = [...document.querySelectorAll('.js-plotly-plot')]
    .find(c => c.layout && c.layout.title && c.layout.title.text.includes('Training loss per logged step'));
  const trace = chart && chart._fullData && chart._fullData[0];  // x decoded (the data may be typed arrays)
  return trace ? {n: trace._length, last: trace.x[trace._length - 1]} : null;
}"""


def step_chart_points(page) -> dict:
    """The step chart's points, waiting through the moments plotly redraws it (no data then)."""
    return page.wait_for_function(f"() => ({STEP_CHART_POINTS})()", timeout=60_000).json_value()


def step_shown(page) -> int:
    text = page.get_by_text(STEP).first.inner_text()
    return int(STEP.search(text).group(1))


def test_jobs_and_curves_follow_a_running_job_during_its_first_epoch(tmp_path: Path) -> None:
    require_browser()
    root = tmp_path / "models"
    root.mkdir()
    try:
        with serve_dashboard(root, tmp_path / "streamlit.log") as url, chromium_page() as page:
            page.goto(url.sign_in("/"))
            page.wait_for_url(f"{url}/")
            open_from_sidebar(page, "Launch")
            page.get_by_text("Launch a training run").wait_for()
            choose(page, "model_type", "lcnn")
            for name, value in SLOW_FORM.items():
                fill_field(page, name, value)
            launch(page, 1)

            # Jobs: step k/N moves and an ETA appears, in epoch 1, without a reload.
            page.get_by_text("Follow job #1 on the Jobs page").click()
            page.wait_for_url(re.compile(r"/jobs"))
            page.get_by_text(STEP).first.wait_for(timeout=180_000)
            first = step_shown(page)
            page.wait_for_function(
                f"() => {{ const m = document.body.innerText.match(/step (\\d+)\\/1000/); return m && +m[1] > {first}; }}",
                timeout=60_000)
            eta = page.get_by_test_id("stMetric").filter(has_text="ETA")
            page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stMetric]')]"
                                   ".some(m => m.innerText.startsWith('ETA') && !m.innerText.includes('—'))",
                                   timeout=60_000)
            assert re.search(r"\d+(s|m)", eta.inner_text()), eta.inner_text()
            page.get_by_text(re.compile(r"step \d+/1000 · [\d.]+ samples/s")).first.wait_for()
            assert STEP.search(page.get_by_text(STEP).first.inner_text()), "still in epoch 1"
            screenshot(page, "live_1_jobs_step_progress")

            # Curves: the step-level loss gains points while epoch 1 runs, without a reload.
            page.get_by_text(f"Curves of {EXPERIMENT}").click()
            page.wait_for_url(re.compile(r"/curves\?.*exp="))
            before = step_chart_points(page)
            page.wait_for_function(f"() => ({STEP_CHART_POINTS})()?.n > {before['n']}", timeout=60_000)
            after = step_chart_points(page)
            assert after["n"] > before["n"] and after["last"] < 1.0, (before, after)  # inside epoch 1
            screenshot(page, "live_2_curves_gain_points")
    finally:
        kill_job_leftovers(root)
