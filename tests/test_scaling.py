"""Costs that grow with the work stay linear, or flat where the screen is: each test counts the
work (bytes a checkpoint repeats, history rows converted, logs parsed, histories read, points
drawn) so that a quadratic path fails here, not only in bench/bench_scaling.py."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests import ckpt_factories as F
from tests.cli_helpers import TINY, logged_history
from training import cli
from training.checkpoint import meta
from training.checkpoint.fsutil import sidecar_path
from training.dashboard import catalog, history
from training.dashboard.downsample import MAX_POINTS, drawn_indices, drawn_rows
from training.naming import LOG_NAME, epoch_checkpoint_name
from training.run_folder import LOG_COLUMNS
from training.run_history import rows_to_restore

EPOCHS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scaling")
    assert cli.main([*TINY, "--train_size", "16", "--num_epochs", str(EPOCHS), "--models_root", str(root)]) == 0
    return next(root.iterdir())


# --- the history lives once per run ------------------------------------------------------------

def test_checkpoints_and_sidecars_do_not_grow_with_the_history(run: Path) -> None:
    paths = [run / epoch_checkpoint_name(e, None) for e in range(1, EPOCHS + 1)]
    sidecars = [sidecar_path(p).stat().st_size for p in paths]
    assert max(sidecars) - min(sidecars) < 64, sidecars  # a history row alone is ~250 bytes
    for epoch, path in enumerate(paths, start=1):
        ckpt = torch.load(path, weights_only=True)
        assert "history" not in ckpt and ckpt["history_row"]["epoch"] == epoch
    assert [r["epoch"] for r in logged_history(run)] == list(range(1, EPOCHS + 1))


def _conversions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every value meta converts for a listing (the history rows were most of them)."""
    calls = [0]
    original = meta._jsonable

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(meta, "_jsonable", counting)
    return calls


def test_listing_an_earlier_versions_files_converts_no_history(tmp_path: Path, monkeypatch) -> None:
    """Files that repeat their whole history (earlier versions) list at the cost of one without."""
    short = F.save(F.full_checkpoint(10), tmp_path / "checkpoint_epoch_10.pth")
    long = F.save(F.full_checkpoint(2_000), tmp_path / "checkpoint_epoch_2000.pth")
    calls = _conversions(monkeypatch)
    meta.read_checkpoint_info(short)
    per_short = calls[0]
    meta.read_checkpoint_info(long)
    assert calls[0] - per_short == per_short
    rows = meta.read_checkpoint_info(long, with_history=True).history  # only when asked
    assert len(rows) == 2_000  # and not cut at the old 16,667-node budget either


def test_a_long_legacy_history_is_read_whole_when_asked(tmp_path: Path) -> None:
    path = F.save(F.full_checkpoint(20_000, numpy_metrics=False), tmp_path / "checkpoint_epoch_20000.pth")
    rows = meta.read_checkpoint_info(path, with_history=True).history
    assert len(rows) == 20_000 and rows[-1]["epoch"] == 20_000


def test_resume_rows_come_from_the_log_beside_the_checkpoint_or_an_old_files_list(run: Path, tmp_path: Path) -> None:
    archived = tmp_path / "archive" / "20260101-000000"
    archived.mkdir(parents=True)
    source = archived / epoch_checkpoint_name(3, None)
    (archived / LOG_NAME).write_text((run / LOG_NAME).read_text())
    ckpt = torch.load(run / epoch_checkpoint_name(3, None), weights_only=True)
    rows = rows_to_restore(source, ckpt)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and rows[-1] == ckpt["history_row"]
    (archived / LOG_NAME).unlink()  # no log beside it: the checkpoint's own row still comes back
    assert [int(r["epoch"]) for r in rows_to_restore(source, ckpt)] == [3]
    old = {**ckpt, "history": [{"epoch": e, "val_eer": 1.0} for e in (1, 2, 3)]}
    assert [r["epoch"] for r in rows_to_restore(source, old)] == [1, 2, 3]


# --- the dashboard ------------------------------------------------------------------------------

def _log(folder: Path, epochs: int) -> None:
    folder.mkdir(parents=True)
    with open(folder / LOG_NAME, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        out.writeheader()
        for e in range(1, epochs + 1):
            out.writerow({"epoch": e, "val_eer": 10.0 / e, "experiment": folder.name})


def test_a_rerun_parses_no_log_on_a_root_larger_than_any_constant_cache(tmp_path: Path) -> None:
    catalog.clear_cache()
    for i in range(2_100):  # more folders than the log cache used to hold (2,000)
        _log(tmp_path / f"lcnn_DF_CCE_3_8_0.001_group3_contrastiveFalse_e{i:04d}", 3)
    catalog.scan_experiments(tmp_path)
    before = history.cache_info()["logs_parsed"]
    frame = catalog.scan_experiments(tmp_path)
    assert len(frame) == 2_100 and history.cache_info()["logs_parsed"] == before


def test_curves_draw_a_bounded_number_of_points_keeping_the_best_and_last(tmp_path: Path) -> None:
    n = 100_000
    eer = 5.0 + np.sin(np.arange(n) / 50.0)
    eer[61_234] = 0.5  # the best epoch
    frame = pd.DataFrame({"epoch": np.arange(1, n + 1), "val_eer": eer, "val_loss": eer / 10})
    drawn = drawn_rows(frame, ["val_eer", "val_loss"])
    assert len(drawn) <= 2 * MAX_POINTS + 3
    assert drawn["val_eer"].min() == 0.5 and drawn["epoch"].iloc[drawn["val_eer"].idxmin()] == 61_235
    assert drawn["epoch"].iloc[-1] == n and drawn["epoch"].iloc[0] == 1
    assert list(drawn_indices(np.arange(10.0))) == list(range(10))  # short series: every point
    with_nan = np.full(5_000, math.nan)
    with_nan[4_000] = 1.0
    assert 4_000 in drawn_indices(with_nan)


def test_the_curves_of_a_long_log_are_read_once_and_drawn_bounded(tmp_path: Path) -> None:
    from training.dashboard.plots import curve_figures

    catalog.clear_cache()
    name = "lcnn_DF_CCE_3_8_0.001_group3_contrastiveFalse_long"
    _log(tmp_path / name, 20_000)
    first = catalog.experiment_history(tmp_path, name)
    parsed = history.cache_info()["logs_parsed"]
    assert len(catalog.experiment_history(tmp_path, name)) == 20_000
    assert history.cache_info()["logs_parsed"] == parsed
    figure = curve_figures({name: first})[0].figure
    raw = next(t for t in figure.data if t.meta["role"] == "raw")
    assert len(raw.x) <= 2 * MAX_POINTS + 3 and raw.x[-1] == 20_000 and min(raw.y) == pytest.approx(10.0 / 20_000)
    # plotly gets arrays, which it encodes whole (base64), not a Python number per point
    sent = next(t for t in json.loads(figure.to_json())["data"] if t["meta"]["role"] == "raw")
    assert set(sent["x"]) == set(sent["y"]) == {"dtype", "bdata"}
    assert isinstance(raw.customdata, np.ndarray) and raw.customdata[-1] == name


def test_finished_jobs_read_their_history_once_and_show_a_page_at_a_time(tmp_path: Path, monkeypatch) -> None:
    from training.dashboard import job_status
    from training.jobs.registry import Job

    jobs = [Job(id=i, experiment="e", exp_dir=str(tmp_path / "e"), mode="resume", argv=[], log_path="",
                state="succeeded" if i else "running", created_at=1.0, started_at=1.0, ended_at=2.0, num_epochs=3)
            for i in range(200)]
    reads = [0]

    def counting(*args, **kwargs):
        reads[0] += 1
        return pd.DataFrame(columns=catalog.HISTORY_COLUMNS)

    monkeypatch.setattr(catalog, "experiment_history", counting)
    shown, pages = job_status.visible_jobs(jobs, 0)
    assert pages == 8 and len(shown) == 1 + job_status.FINISHED_PER_PAGE and shown[0].state == "running"
    assert job_status.visible_jobs(jobs, 99)[0][-1].id == 199  # clamped to the last page
    job_status.jobs_frame(tmp_path, shown)
    assert reads[0] == len(shown)
    job_status.jobs_frame(tmp_path, shown)  # the next refresh: only the active job reads again
    assert reads[0] == len(shown) + 1


def test_the_diff_targets_come_from_one_sort_not_a_filter_per_experiment() -> None:
    from training.dashboard import views

    rows = []
    for e in range(300):
        for epoch in (1, 2):
            rows.append({"experiment": f"x{e:03d}", "file": f"checkpoint_epoch_{epoch}.pth",
                         "path": f"/m/x{e:03d}/checkpoint_epoch_{epoch}.pth", "kind": "full" if e % 3 else "legacy",
                         "epoch": epoch})
    frame = pd.DataFrame(rows).astype({"epoch": "Int64"})
    expected = {name: views.args_checkpoint(frame, name) for name in frame["experiment"].unique()}
    assert views.args_checkpoints(frame) == expected
    options = views.bounded_options(sorted(expected), "x29", keep=["x000"])
    assert options == ["x000", *[f"x29{i}" for i in range(10)]]
    assert views.bounded_options(sorted(expected), "x29", keep=["x000", None, "x000", "x291"]) == options
    assert len(views.bounded_options(sorted(expected), "")) == views.PICKER_LIMIT
