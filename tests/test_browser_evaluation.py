"""The Evaluation and Attention pages in a real browser: ``streamlit run dashboard.py`` and
Debian's Chromium, on folders the real CLI wrote (``--eval`` on the synthetic LA set, a tiny
g3_heatmap run with ``--visualize_attention``). Screenshots are kept in test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from cli_helpers import TINY, run_cli
from dashboard_server import chromium_page, require_browser, screenshot, serve_dashboard
from training.evaluation.synthetic import write_synthetic_eval_set

LCNN = "lcnn_DF_CCE_1_8_0.001_group3_contrastiveFalse_br"
G3 = ["--model_type", "g3_heatmap", "--train_size", "32", "--val_size", "16", "--clip_samples", "4000",
      "--batch_size", "8", "--lr", "0.001", "--group_size", "4", "--algo", "0", "--num_epochs", "1",
      "--visualize_attention", "--viz_samples", "4"]


@pytest.mark.browser
def test_evaluation_and_attention_pages_in_chromium(tmp_path: Path) -> None:
    require_browser()
    models = tmp_path / "models"
    assert run_cli([*TINY, "--num_epochs", "1", "--comment", "br"], models).code == 0
    write_synthetic_eval_set(tmp_path / "la", "LA", 30, clip_samples=4000)
    scored = run_cli(["--eval", "--model_path", str(models / LCNN / "checkpoint_epoch_1_br.pth"), "--track", "LA",
                      "--database_path", str(tmp_path / "la"), "--protocols_path", str(tmp_path / "la" / "keys")],
                     models)
    assert scored.code == 0, scored.text
    viz = run_cli(G3, models)
    assert viz.code == 0, viz.text
    g3 = next(p.name for p in models.iterdir() if p.name.startswith("g3_heatmap"))
    with serve_dashboard(models, tmp_path / "streamlit.log") as url, chromium_page() as page:
        row = f"{LCNN}/checkpoint_epoch_1_br.pth"
        page.goto(f"{url}/evaluation?{urlencode([('ev_set', 'LA'), ('ev_rows', row)])}")
        page.get_by_role("heading", name="Evaluation").wait_for()
        page.get_by_text("checkpoint_epoch_1_br.pth", exact=True).first.wait_for(state="attached")  # leaderboard
        # condition heatmap, DET curve, two histograms... the heatmap is first, the DET curve next
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
        page.get_by_text("DET curves").first.wait_for()
        page.get_by_role("button", name="Leaderboard CSV").wait_for()
        assert page.locator("[data-testid='stException']").count() == 0
        screenshot(page, "evaluation")

        page.goto(f"{url}/attention?{urlencode([('att_exp', g3), ('att_a', 'epoch_1')])}")
        page.get_by_role("heading", name="Attention").wait_for()
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
        page.locator(".js-plotly-plot .heatmaplayer, .js-plotly-plot image").first.wait_for(state="attached")
        assert page.locator("[data-testid='stException']").count() == 0
        screenshot(page, "attention")
