"""training.dashboard.catalog on real folders: written by the real trainer (``python main.py``), and in
the original research script's formats (full, weights-only with ``module.``, epoch_N /
best_model_eer names, truncated, hostile, empty, non-checkpoint files)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests import ckpt_factories as F
from tests.cli_helpers import REPO, TINY, child_env, logged_history, run_main
from training.dashboard import catalog, history, scan
from training.dashboard.catalog import CatalogError
from training.checkpoint.fsutil import sidecar_path
from training.checkpoint.meta import checkpoint_meta, list_checkpoint_files
from training.checkpoint.sidecar import file_sha256, write_sidecar
from training.lock import ExperimentLock
from training.checkpoint.store import load_checkpoint

PARENT = "lcnn_DF_CCE_3_8_0.001_group3_contrastiveFalse_a"
CHILD = "lcnn_DF_CCE_4_8_0.001_group3_contrastiveFalse_ext"
GUIDE = "g3_heatmap_DF_CCE_100_16_1e-06_group3_contrastiveFalse_my_experiment"
BASELINE = "model_LA_CCE_100_16_1e-06_x"
LOG_ONLY = "lcnn_DF_CCE_5_8_0.001_group3_contrastiveFalse_logonly"
METRICS = ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer", "best_val_eer")


# --- fixtures: built once per module ------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Two real runs: PARENT (3 epochs), and CHILD resumed from PARENT's epoch 2 into its own
    folder with --num_epochs 4 (trains epochs 3-4; lineage mode 'resume', parent_epoch 2)."""
    cwd = tmp_path_factory.mktemp("trained")
    first = run_main([*TINY, "--num_epochs", "3", "--comment", "a"], cwd)
    assert first.code == 0, first.text
    parent_ckpt = cwd / "models" / PARENT / "checkpoint_epoch_2_a.pth"
    second = run_main([*TINY, "--resume", "--model_path", str(parent_ckpt), "--num_epochs", "4",
                       "--comment", "ext"], cwd)
    assert second.code == 0, second.text
    return cwd / "models"


def write_log(folder: Path, rows: list[dict]) -> None:
    from training.naming import LOG_NAME
    from training.run_folder import LOG_COLUMNS

    with open(folder / LOG_NAME, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        out.writeheader()
        out.writerows(rows)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory) -> Path:
    """A models root in the original script's formats, plus problem files and folders."""
    root = tmp_path_factory.mktemp("legacy") / "models"
    guide = root / GUIDE
    guide.mkdir(parents=True)
    F.save(F.full_checkpoint(10, val_eer=0.16, val_acc=99.84), guide / "checkpoint_epoch_10_my_experiment.pth")
    F.save(F.full_checkpoint(20, val_eer=0.12, val_acc=99.88), guide / "checkpoint_epoch_20_my_experiment.pth")
    F.save(F.full_checkpoint(20, val_eer=0.12, val_acc=99.88), guide / "best_checkpoint_eer_my_experiment.pth",
           legacy=True)  # the pre-zip torch.save format
    whole = (guide / "checkpoint_epoch_10_my_experiment.pth").read_bytes()
    (guide / "checkpoint_epoch_30_my_experiment.pth").write_bytes(whole[: len(whole) // 2])
    F.hostile_torch_file(guide / "checkpoint_evil.pth", root.parent / "PWNED")
    (guide / "notes.txt").write_text("not a checkpoint")
    (guide / "folder.pth").mkdir()
    os.mkfifo(guide / "pipe.pth")  # open() would block: must be skipped, not read

    baseline = root / BASELINE
    baseline.mkdir()
    state = {f"module.{k}": v for k, v in F.tiny_model().state_dict().items()}  # nn.DataParallel
    F.save(state, baseline / "epoch_3.pth")
    F.save(F.tiny_model().state_dict(), baseline / "best_model_eer.pth")

    (root / "empty_experiment").mkdir()
    log_only = root / LOG_ONLY
    log_only.mkdir()
    write_log(log_only, [
        {"epoch": 1, "val_eer": 30.0, "val_acc": 70.0, "lr": 0.001},
        {"epoch": 2, "val_eer": 25.0, "val_acc": 75.0, "lr": 0.001},
        {"epoch": 2, "val_eer": 20.0, "val_acc": 80.0, "lr": 0.001},  # re-appended after a kill
        {"epoch": 3, "val_eer": 22.0, "val_acc": 78.0, "lr": 0.0005},
    ])
    for not_an_experiment in (".jobs", ".hidden", "archive"):
        (root / not_an_experiment).mkdir()
        F.save(F.full_checkpoint(1), root / not_an_experiment / "checkpoint_epoch_1.pth")
    (root / "README.txt").write_text("top-level file")
    return root


@pytest.fixture(autouse=True)
def fresh_cache():
    catalog.clear_cache()
    yield


def copy_root(src: Path, dst: Path) -> Path:
    """A private copy for tests that change files (copy2 keeps mtime_ns: sidecars stay valid)."""
    shutil.copytree(src, dst, symlinks=True, ignore=lambda d, names: [n for n in names if n == "pipe.pth"])
    return dst


def reference(path: Path) -> dict:
    """The file as torch.load(weights_only=True) sees it: the values the catalog must show."""
    return load_checkpoint(path)


# --- scan_checkpoints ----------------------------------------------------------------------------

def test_trained_checkpoints_match_torch_load(trained):
    frame = catalog.scan_checkpoints(trained)
    assert list(frame.columns) == list(catalog.CHECKPOINT_COLUMNS)
    on_disk = sorted(str(p) for p in trained.glob("*/*.pth"))
    assert sorted(frame["path"]) == on_disk and len(on_disk) == 7
    parent = frame[frame["experiment"] == PARENT]
    assert list(parent["file"]) == ["checkpoint_epoch_1_a.pth", "checkpoint_epoch_2_a.pth",
                                    "checkpoint_epoch_3_a.pth", "best_checkpoint_eer_a.pth"]
    assert list(frame["experiment"]) == sorted(frame["experiment"])
    assert frame["epoch"].dtype == "Int64"
    for row in frame.itertuples():
        ref = reference(Path(row.path))
        assert row.epoch == ref["epoch"] and row.step_in_epoch == 0
        for key in METRICS:
            assert getattr(row, key) == pytest.approx(float(ref[key])), (row.file, key)
        assert row.kind == ("best" if row.role == "best" else "full")
        assert row.complete is True and row.reason is None
        st = os.stat(row.path)
        assert row.size_bytes == st.st_size
        assert row.modified == pd.Timestamp(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))) \
            + pd.Timedelta(microseconds=int(round(st.st_mtime % 1 * 1e6)))


def test_original_formats_and_problem_files(legacy):
    frame = catalog.scan_checkpoints(legacy).set_index("file")
    assert set(frame["experiment"]) == {GUIDE, BASELINE}  # not .jobs, .hidden, archive
    assert list(frame.loc[frame["experiment"] == GUIDE].index) == [
        "checkpoint_epoch_10_my_experiment.pth", "checkpoint_epoch_20_my_experiment.pth",
        "checkpoint_epoch_30_my_experiment.pth", "best_checkpoint_eer_my_experiment.pth",
        "checkpoint_evil.pth"]  # numeric order; folder.pth, pipe.pth and notes.txt are not listed
    for name in ("checkpoint_epoch_10_my_experiment.pth", "best_checkpoint_eer_my_experiment.pth"):
        ref, row = reference(legacy / GUIDE / name), frame.loc[name]
        assert row["epoch"] == ref["epoch"]
        assert [row[k] for k in METRICS] == pytest.approx([float(ref[k]) for k in METRICS])
        assert row["complete"] is False or row["complete"] == False  # noqa: E712 (no sidecar)
    assert frame.loc["best_checkpoint_eer_my_experiment.pth", "kind"] == "best"
    truncated = frame.loc["checkpoint_epoch_30_my_experiment.pth"]
    assert truncated["kind"] == "unreadable" and truncated["reason"]
    assert pd.isna(truncated["epoch"]) and math.isnan(truncated["val_eer"])
    evil = frame.loc["checkpoint_evil.pth"]
    assert evil["kind"] == "unsafe" and "system" in evil["reason"] and evil["role"] == "other"
    assert not (legacy.parent / "PWNED").exists()
    weights = frame.loc["epoch_3.pth"]
    # epoch: completed epochs its name states (the original script's names count from 0)
    assert (weights["kind"], weights["role"], weights["epoch"]) == ("legacy", "epoch", 4)
    assert frame.loc["best_model_eer.pth", "kind"] == "legacy"
    # the catalog's one-read listing follows the reader's rule exactly
    for folder in (legacy / GUIDE, legacy / BASELINE):
        assert [n for n, _ in scan.list_folder(folder)] == [p.name for p in list_checkpoint_files(folder)]
    assert pd.isna(frame.loc["best_model_eer.pth", "epoch"])


def test_missing_and_empty_roots(tmp_path):
    for root in (tmp_path / "does-not-exist", tmp_path):
        checkpoints = catalog.scan_checkpoints(root)
        assert checkpoints.empty and list(checkpoints.columns) == list(catalog.CHECKPOINT_COLUMNS)
        experiments = catalog.scan_experiments(str(root))
        assert experiments.empty and list(experiments.columns) == list(catalog.EXPERIMENT_COLUMNS)
    assert not (tmp_path / "does-not-exist").exists()


# --- scan_experiments -----------------------------------------------------------------------------

def test_trained_experiments(trained):
    frame = catalog.scan_experiments(trained).set_index("name")
    assert list(frame.index) == [PARENT, CHILD]
    parent, child = frame.loc[PARENT], frame.loc[CHILD]
    assert (parent["model_type"], parent["track"], parent["num_epochs"], parent["batch_size"],
            parent["lr"], parent["group_size"], parent["contrastive"], parent["comment"]) == \
        ("lcnn", "DF", 3, 8, 0.001, 3, False, "a")
    assert (child["num_epochs"], child["comment"], child["epochs_done"]) == (4, "ext", 4)
    assert parent["status"] == child["status"] == "finished"
    assert parent["checkpoints"] == 4 and child["checkpoints"] == 3
    final = reference(trained / PARENT / "checkpoint_epoch_3_a.pth")
    curve = [float(r["val_eer"]) for r in logged_history(trained / PARENT)]
    assert parent["val_eer_history"] == pytest.approx(curve)
    assert parent["best_val_eer"] == pytest.approx(float(final["best_val_eer"]))
    assert parent["best_epoch"] == final["best_epoch"]
    assert parent["latest_val_eer"] == pytest.approx(float(final["val_eer"]))
    assert parent["latest_val_acc"] == pytest.approx(float(final["val_acc"]))
    # the child's curve: the parent's epochs 1-2, then its own 3-4
    child_final = reference(trained / CHILD / "checkpoint_epoch_4_ext.pth")
    inherited = [r for r in logged_history(trained / PARENT) if r["epoch"] <= 2] + logged_history(trained / CHILD)
    assert child_final["epoch"] == 4
    assert child["val_eer_history"] == pytest.approx([float(r["val_eer"]) for r in inherited])
    assert len(child["val_eer_history"]) == 4
    assert (parent["has_lineage"], parent["parent_experiment"]) == (False, None)
    assert (child["has_lineage"], child["lineage_mode"], child["parent_experiment"], child["parent_epoch"]) == \
        (True, "resume", PARENT, 2)
    files = [p for p in (trained / PARENT).rglob("*") if p.is_file()]
    inodes = {os.stat(p).st_ino: os.stat(p).st_size for p in files}  # best is a hard link: once
    assert parent["size_bytes"] == sum(inodes.values())
    assert parent["modified"] == max(pd.Timestamp.fromtimestamp(os.stat(p).st_mtime) for p in files)


def test_original_format_experiments(legacy):
    frame = catalog.scan_experiments(legacy).set_index("name")
    assert sorted(frame.index) == sorted([GUIDE, BASELINE, "empty_experiment", LOG_ONLY])
    baseline = frame.loc[BASELINE]
    assert (baseline["model_type"], baseline["track"], baseline["loss"], baseline["num_epochs"],
            baseline["batch_size"], baseline["lr"], baseline["comment"], baseline["group_size"]) == \
        ("baseline", "LA", "CCE", 100, 16, 1e-06, "x", None)
    # epoch_3.pth: the original script's 0-based loop index, so 4 epochs done
    assert (baseline["epochs_done"], baseline["status"], baseline["checkpoints"]) == (4, "interrupted", 2)
    empty = frame.loc["empty_experiment"]
    assert (empty["status"], empty["checkpoints"], empty["size_bytes"]) == ("empty", 0, 0)
    assert empty["model_type"] is None and pd.isna(empty["epochs_done"]) and empty["val_eer_history"] == []
    guide = frame.loc[GUIDE]  # args from the newest readable checkpoint (epoch 20)
    assert (guide["model_type"], guide["num_epochs"], guide["comment"], guide["epochs_done"]) == \
        ("g3_heatmap", 100, "my_experiment", 20)
    assert guide["val_eer_history"] == pytest.approx([10.0 / e for e in range(1, 21)])
    log_only = frame.loc[LOG_ONLY]
    assert (log_only["epochs_done"], log_only["num_epochs"], log_only["status"]) == (3, 5, "interrupted")
    assert log_only["val_eer_history"] == [30.0, 20.0, 22.0]
    assert (log_only["best_val_eer"], log_only["best_epoch"]) == (20.0, 2)


def test_status_running_and_interrupted(trained, tmp_path):
    root = copy_root(trained, tmp_path / "models")
    with ExperimentLock(root / PARENT):
        assert catalog.scan_experiments(root).set_index("name").loc[PARENT, "status"] == "running"
    assert catalog.scan_experiments(root).set_index("name").loc[PARENT, "status"] == "finished"
    # a run killed after epoch 2: no epoch-3 checkpoint and no log row for it
    for name in ("checkpoint_epoch_3_a.pth", "best_checkpoint_eer_a.pth"):
        (root / PARENT / name).unlink()
    rows = list(csv.DictReader(open(root / PARENT / "training_log.csv")))
    write_log(root / PARENT, [r for r in rows if r["epoch"] != "3"])
    row = catalog.scan_experiments(root).set_index("name").loc[PARENT]
    assert (row["epochs_done"], row["num_epochs"], row["status"]) == (2, 3, "interrupted")


# --- experiment_history ---------------------------------------------------------------------------

def test_history_from_log_last_row_wins(legacy):
    history = catalog.experiment_history(legacy, LOG_ONLY)
    assert list(history.columns) == list(catalog.HISTORY_COLUMNS)
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(history["val_eer"]) == [30.0, 20.0, 22.0] and list(history["val_acc"]) == [70.0, 80.0, 78.0]
    assert list(history["lr"]) == [0.001, 0.001, 0.0005] and set(history["experiment"]) == {LOG_ONLY}
    assert history["train_loss"].isna().all()
    # no log: the newest full checkpoint's history
    guide = catalog.experiment_history(legacy, GUIDE)
    assert list(guide["epoch"]) == list(range(1, 21))
    assert list(guide["train_loss"]) == pytest.approx([1.0 / e for e in range(1, 21)])
    # only weights: no curve; unknown folder: empty; a traversal name: refused
    assert catalog.experiment_history(legacy, BASELINE).empty
    assert catalog.experiment_history(legacy, "no_such_experiment").empty
    with pytest.raises(CatalogError, match="not an experiment folder name"):
        catalog.experiment_history(legacy, "../models")


def test_history_follows_resume_lineage(trained, tmp_path):
    parent_log = list(csv.DictReader(open(trained / PARENT / "training_log.csv")))
    child_log = list(csv.DictReader(open(trained / CHILD / "training_log.csv")))
    assert [r["epoch"] for r in child_log] == ["3", "4"]  # the child's log holds only its own rows
    full = catalog.experiment_history(trained, CHILD)
    assert list(full["epoch"]) == [1, 2, 3, 4]
    assert list(full["experiment"]) == [PARENT, PARENT, CHILD, CHILD]
    expected = [float(r["val_eer"]) for r in parent_log[:2] + child_log]
    assert list(full["val_eer"]) == pytest.approx(expected)  # parent's epoch 3 (a branch) left out
    own = catalog.experiment_history(trained, CHILD, follow_lineage=False)
    assert list(own["epoch"]) == [3, 4] and set(own["experiment"]) == {CHILD}

    # curves survive deleting intermediate checkpoints: the history lives in the logs
    root = copy_root(trained, tmp_path / "models")
    (root / PARENT / "checkpoint_epoch_1_a.pth").unlink()
    (root / PARENT / "checkpoint_epoch_2_a.pth").unlink()
    pd.testing.assert_frame_equal(catalog.experiment_history(root, CHILD), full)
    # with the logs deleted too, what is left is each remaining checkpoint's own row: checkpoints
    # no longer repeat the whole history (an earlier version's files still do: see the legacy test)
    (root / CHILD / "training_log.csv").unlink()
    (root / CHILD / "checkpoint_epoch_3_ext.pth").unlink()
    shutil.rmtree(root / PARENT)
    without = catalog.experiment_history(root, CHILD)
    assert list(without["epoch"]) == [4] and list(without["val_eer"]) == pytest.approx(expected[-1:])


def test_history_lineage_cycle_stops(tmp_path):
    root = tmp_path / "models"
    for me, other in (("loop_a", "loop_b"), ("loop_b", "loop_a")):
        (root / me).mkdir(parents=True)
        lineage = {"mode": "resume", "parent_experiment": other, "parent_epoch": 2}
        F.save(F.full_checkpoint(4, numpy_metrics=False, lineage=lineage), root / me / "checkpoint_epoch_4.pth")
    history = catalog.experiment_history(root, "loop_a")
    assert list(history["epoch"]) == [1, 2, 3, 4]
    # epochs 1-2 from the parent loop_b, whose own parent (loop_a) is already on the path: stop
    assert list(history["experiment"]) == ["loop_b", "loop_b", "loop_a", "loop_a"]
    assert catalog.scan_experiments(root)["parent_experiment"].tolist() == ["loop_b", "loop_a"]


# --- cache ---------------------------------------------------------------------------------------

def test_rescan_reads_only_changed_files(legacy, tmp_path):
    root = copy_root(legacy, tmp_path / "models")
    n_files = len(catalog.scan_checkpoints(root))
    assert catalog.cache_info()["misses"] == n_files == 7
    again = catalog.scan_checkpoints(root)
    assert catalog.cache_info()["misses"] == n_files  # nothing re-read
    catalog.scan_experiments(root)  # served from the cache too
    assert catalog.cache_info()["misses"] == n_files and catalog.cache_info()["hits"] >= n_files
    changed = root / GUIDE / "checkpoint_epoch_10_my_experiment.pth"
    F.save(F.full_checkpoint(11, val_eer=0.5), changed)
    after = catalog.scan_checkpoints(root).set_index("file")
    assert catalog.cache_info()["misses"] == n_files + 1
    assert after.loc[changed.name, "epoch"] == 11 and after.loc[changed.name, "val_eer"] == 0.5
    assert len(again) == n_files

    # a sidecar written after the file (as the trainer does) is picked up: complete flips
    assert not after.loc[changed.name, "complete"]
    write_sidecar(changed, checkpoint_meta(load_checkpoint(changed)), file_sha256(changed))
    assert catalog.scan_checkpoints(root).set_index("file").loc[changed.name, "complete"]

    # vanished files leave the cache; a changed log is re-read, an unchanged one is not
    (root / BASELINE / "epoch_3.pth").unlink()
    catalog.scan_checkpoints(root)
    assert catalog.cache_info()["entries"] == n_files - 1
    catalog.experiment_history(root, LOG_ONLY)
    parsed = catalog.cache_info()["logs_parsed"]
    catalog.experiment_history(root, LOG_ONLY)
    assert catalog.cache_info()["logs_parsed"] == parsed
    with open(root / LOG_ONLY / "training_log.csv", "a") as f:
        f.write("4,,,,,19.0,,,,,\n")
    assert list(catalog.experiment_history(root, LOG_ONLY)["val_eer"]) == [30.0, 20.0, 22.0, 19.0]
    assert catalog.cache_info()["logs_parsed"] == parsed + 1


def _age(path: Path, seconds: float) -> None:
    """Every file and folder under ``path`` (and itself) as last written at ``seconds``: past the
    folder memo's racy window, and distinct per step so that each change shows in the keys."""
    for folder, _, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(folder, name), (seconds, seconds), follow_symlinks=False)
        os.utime(folder, (seconds, seconds))


def test_a_rerun_rebuilds_only_the_experiment_folders_that_changed(trained, tmp_path, monkeypatch):
    from training.dashboard import folder_memo
    from training.proc import process_start_time

    root = copy_root(trained, tmp_path / "models")
    then = time.time() - 600
    _age(root, then)
    built: list[str] = []
    original = catalog._experiment_row
    monkeypatch.setattr(catalog, "_experiment_row", lambda r, name, c: built.append(name) or original(r, name, c))

    def rescan(step: int | None = None, *changed: str) -> pd.DataFrame:
        for name in changed:
            _age(root / name, then + step)
        built.clear()
        return catalog.scan_experiments(root).set_index("name")

    first = rescan()
    assert sorted(built) == [PARENT, CHILD]
    pd.testing.assert_frame_equal(rescan(), first)
    assert built == []  # unchanged folders: a few os.stat calls each, no row rebuilt

    # a new checkpoint
    shutil.copy2(root / CHILD / "checkpoint_epoch_4_ext.pth", root / CHILD / "checkpoint_epoch_5_ext.pth")
    frame = rescan(1, CHILD)
    assert built == [CHILD] and frame.loc[CHILD, "checkpoints"] == first.loc[CHILD, "checkpoints"] + 1

    # a log row appended in place (epoch 1 again, last row wins): the child's curve starts with the
    # parent's rows, so it is rebuilt too
    with open(root / PARENT / "training_log.csv", "a") as f:
        f.write("1,0.1,1.0,0.2,99.0,0.01,0.01,0.001,1.0,0.0," + PARENT + "\n")
    frame = rescan(2, PARENT)
    assert sorted(built) == [PARENT, CHILD]
    assert frame.loc[PARENT, "best_val_eer"] == frame.loc[CHILD, "best_val_eer"] == 0.01

    # the lock taken, then released
    with ExperimentLock(root / PARENT):
        assert rescan(3, PARENT).loc[PARENT, "status"] == "running"
    assert rescan(4, PARENT).loc[PARENT, "status"] == "finished"

    # a holder that died without emptying its record: the lock is re-checked on every rerun
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (root / PARENT / ".lock").write_text(json.dumps(
            {"pid": sleeper.pid, "start_time": process_start_time(sleeper.pid), "argv": [], "started_at": 0}))
        assert rescan(5, PARENT).loc[PARENT, "status"] == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    frame = rescan()
    assert frame.loc[PARENT, "status"] == "finished" and PARENT not in built

    # a file added in a sub-folder only (the folder's own mtime stays)
    (root / PARENT / "archive" / "old").mkdir(parents=True)
    before = rescan(6, PARENT).loc[PARENT, "size_bytes"]
    (root / PARENT / "archive" / "old" / "notes.txt").write_bytes(b"x" * 1000)
    _age(root / PARENT / "archive" / "old", then + 7)
    assert rescan().loc[PARENT, "size_bytes"] == before + 1000 and sorted(built) == [PARENT, CHILD]

    # a folder changed right now (within the racy window) is not memoised: rebuilt until it settles
    (root / CHILD / "checkpoint_epoch_5_ext.pth").unlink()
    assert rescan().loc[CHILD, "checkpoints"] == first.loc[CHILD, "checkpoints"]
    rescan()
    assert CHILD in built and len(folder_memo.memo_for(root, "", "")) == 1


def test_cache_holds_no_histories(legacy):
    """Every checkpoint repeats the run's history: the cache keeps it only for the files whose
    curve is shown, and a curve comes back even once the raw copy is gone (file re-read)."""
    catalog.scan_checkpoints(legacy)
    assert all(not info.history for _, info in scan._INFO_CACHE._entries.values())
    history._RECENT_HISTORY.clear()
    guide = catalog.experiment_history(legacy, GUIDE)
    assert list(guide["val_eer"]) == pytest.approx([10.0 / e for e in range(1, 21)])
    assert len(catalog.checkpoint_details(legacy / GUIDE / "checkpoint_epoch_20_my_experiment.pth")["history"]) == 20


def test_returned_frames_are_copies(trained):
    first = catalog.scan_checkpoints(trained)
    first.loc[:, "val_eer"] = -1.0
    assert (catalog.scan_checkpoints(trained)["val_eer"] >= 0).all()


# --- details and diff ---------------------------------------------------------------------------

def test_checkpoint_details(trained, legacy):
    path = trained / PARENT / "best_checkpoint_eer_a.pth"
    details = catalog.checkpoint_details(path)
    ref = reference(path)
    assert (details["kind"], details["catalog_kind"], details["role"]) == ("full", "best", "best")
    assert details["epoch"] == ref["epoch"] and details["args"]["lr"] == ref["args"]["lr"]
    assert details["metrics"]["val_eer"] == pytest.approx(float(ref["val_eer"]))
    assert set(ref) <= set(details["keys"]) and details["num_params"] == sum(
        v.numel() for v in ref["model_state_dict"].values())
    assert details["sidecar"] == {"path": str(sidecar_path(path)), "exists": True, "matches": True}
    assert details["size"] == os.path.getsize(path) and details["lineage"] is None
    child = catalog.checkpoint_details(trained / CHILD / "checkpoint_epoch_4_ext.pth")
    assert child["lineage"]["parent_experiment"] == PARENT and child["lineage"]["parent_epoch"] == 2
    evil = catalog.checkpoint_details(legacy / GUIDE / "checkpoint_evil.pth")
    assert evil["kind"] == "unsafe" and evil["sidecar"]["exists"] is False
    assert not (legacy.parent / "PWNED").exists()


def test_hyperparameter_diff():
    a = {"lr": 1e-06, "batch_size": 16, "use_contrastive": False, "comment": "x", "betas": [0.9, 0.99]}
    b = {"lr": 0.000001, "batch_size": 32, "use_contrastive": 0, "seed": 1, "betas": [0.9, 0.99]}
    diff = catalog.hyperparameter_diff(a, b)
    assert list(diff.columns) == ["key", "a", "b", "differs"]
    assert diff.to_dict("records") == [
        {"key": "batch_size", "a": "16", "b": "32", "differs": True},
        {"key": "comment", "a": "x", "b": "—", "differs": True},
        {"key": "seed", "a": "—", "b": "1", "differs": True},
        {"key": "use_contrastive", "a": "False", "b": "0", "differs": True},
    ]
    everything = catalog.hyperparameter_diff(a, b, only_differences=False)
    assert list(everything["key"]) == ["batch_size", "betas", "comment", "lr", "seed", "use_contrastive"]
    assert everything.set_index("key").loc["lr", "differs"] == False  # noqa: E712
    assert catalog.hyperparameter_diff({}, {}).empty


# --- protecting and deleting ---------------------------------------------------------------------

def _best_epoch(root: Path) -> int:
    return int(reference(root / PARENT / "checkpoint_epoch_3_a.pth")["best_epoch"])


def test_protected_checkpoints(trained, legacy):
    protected = catalog.protected_checkpoints(trained, PARENT)
    best = _best_epoch(trained)
    assert protected["best_checkpoint_eer_a.pth"] == "best checkpoint"
    assert "newest checkpoint" in protected["checkpoint_epoch_3_a.pth"]
    assert f"holds the best epoch ({best})" in protected[f"checkpoint_epoch_{best}_a.pth"]
    assert set(protected) == {"best_checkpoint_eer_a.pth", "checkpoint_epoch_3_a.pth", f"checkpoint_epoch_{best}_a.pth"}
    guide = catalog.protected_checkpoints(legacy, GUIDE)
    assert set(guide) == {"best_checkpoint_eer_my_experiment.pth", "checkpoint_epoch_20_my_experiment.pth"}


def test_delete_and_refusals(trained, tmp_path):
    root = copy_root(trained, tmp_path / "models")
    folder = root / PARENT
    deletable = sorted(set(p.name for p in folder.glob("*.pth")) - set(catalog.protected_checkpoints(root, PARENT)))
    assert deletable  # epoch 1 or 2, whichever is not the best
    before = sorted(p.name for p in folder.iterdir())
    outside = tmp_path / "outside.pth"
    outside.write_bytes(b"x")
    (folder / "link.pth").symlink_to(outside)
    refusals = {
        "best_checkpoint_eer_a.pth": "best checkpoint",
        "checkpoint_epoch_3_a.pth": "newest checkpoint",
        "../outside.pth": "not a file name directly in",
        f"../{CHILD}/checkpoint_epoch_3_ext.pth": "not a file name directly in",
        "training_log.csv": "not a checkpoint",
        "link.pth": "not a regular file",
        "checkpoint_epoch_9_a.pth": "no such file",
    }
    for name, why in refusals.items():
        with pytest.raises(CatalogError, match=why) as err:
            catalog.delete_checkpoints(root, PARENT, [deletable[0], name])  # all-or-nothing
        assert "\n" not in str(err.value)
    for experiment in ("..", "../models", ".jobs", ""):
        with pytest.raises(CatalogError):
            catalog.delete_checkpoints(root, experiment, [deletable[0]])
    (folder / "link.pth").unlink()
    assert sorted(p.name for p in folder.iterdir()) == before and outside.exists()

    catalog.scan_checkpoints(root)
    assert catalog.delete_checkpoints(root, PARENT, deletable) == deletable
    for name in deletable:
        assert not (folder / name).exists() and not sidecar_path(folder / name).exists()
    assert set(catalog.scan_checkpoints(root)["file"]) & set(deletable) == set()
    # the curve is still whole
    assert list(catalog.experiment_history(root, PARENT)["epoch"]) == [1, 2, 3]


def test_running_experiment_protects_everything(trained, tmp_path):
    root = copy_root(trained, tmp_path / "models")
    with ExperimentLock(root / PARENT):
        protected = catalog.protected_checkpoints(root, PARENT)
        assert set(protected) == {p.name for p in (root / PARENT).glob("*.pth")}
        assert all(f"the experiment is running (pid {os.getpid()})" in why for why in protected.values())
        with pytest.raises(CatalogError, match="running"):
            catalog.delete_checkpoints(root, PARENT, ["checkpoint_epoch_1_a.pth"])


def test_active_job_protects_its_model_path(trained, tmp_path):
    from training import jobs

    root = copy_root(trained, tmp_path / "models")
    unprotected = sorted(set(p.name for p in (root / PARENT).glob("*.pth"))
                         - set(catalog.protected_checkpoints(root, PARENT)))[0]
    assert not (root / jobs.JOBS_DIRNAME).exists()  # reading never creates the registry
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]  # stands in for the trainer
    job = jobs.launch(root, "pretrained", {"model_path": str(root / PARENT / unprotected),
                                           "comment": "from_pretrained", "model_type": "lcnn"},
                      _program_argv=sleeper)
    try:
        protected = catalog.protected_checkpoints(root, PARENT)
        assert protected[unprotected] == f"used by job #{job.id} ({jobs.get_job(root, job.id).state})"
        with pytest.raises(CatalogError, match=f"used by job #{job.id}"):
            catalog.delete_checkpoints(root, PARENT, [unprotected])
    finally:
        jobs.stop(root, job.id, grace_s=1)
        deadline = time.monotonic() + 30
        while jobs.get_job(root, job.id).is_active and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not jobs.get_job(root, job.id).is_active
    assert unprotected not in catalog.protected_checkpoints(root, PARENT)


# --- contracts with other modules ---------------------------------------------------------------

def test_log_constants_match_trainer():
    from training import naming, run_folder

    assert catalog.LOG_NAME == naming.LOG_NAME  # the trainer writes naming.LOG_NAME (run_folder)
    assert set(catalog.HISTORY_COLUMNS) <= set(run_folder.LOG_COLUMNS)


def test_import_does_not_load_torch():
    code = "import sys, training.dashboard.catalog; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


DELETE_AND_REPORT_TORCH = """
import sys
from pathlib import Path
from training.dashboard import catalog
root, experiment = Path(sys.argv[1]), sys.argv[2]
folder = root / experiment
deletable = sorted({p.name for p in folder.glob("*.pth")} - set(catalog.protected_checkpoints(root, experiment)))
print(catalog.delete_checkpoints(root, experiment, deletable[:1]), 'torch' in sys.modules)
"""


def test_deleting_a_checkpoint_does_not_load_torch(trained, tmp_path):
    """The dashboard's delete action removes files: it has no reason to pay for importing torch."""
    root = copy_root(trained, tmp_path / "models")
    out = subprocess.run([sys.executable, "-c", DELETE_AND_REPORT_TORCH, str(root), PARENT], cwd=REPO,
                         env=child_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    deleted, torch_loaded = out.stdout.strip().rsplit(" ", 1)
    assert deleted.startswith("['checkpoint_epoch_") and torch_loaded == "False", out.stdout
    name = deleted.split("'")[1]
    assert not (root / PARENT / name).exists() and not sidecar_path(root / PARENT / name).exists()
