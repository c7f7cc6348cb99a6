"""--visualize_attention: the npz and PNGs, the schedule, --model_path, refusals, resume, and a
training result that does not depend on it (training/attention.py)."""

from __future__ import annotations

import csv
import math
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import BAR_EVERY_STEP, TINY, load, run_cli, run_main, same_weights, start_main, stop_with, \
    tree_digest, wait_for
from training.attention import choose_utterances, load_attention, png_name, predicted_label, render_epochs
from training.data import build_datasets
from training.models import build_model
from training.naming import epoch_checkpoint_name as _epoch_name

G3 = ["--model_type", "g3_heatmap", "--train_size", "32", "--val_size", "16", "--clip_samples", "4000",
      "--batch_size", "8", "--lr", "0.001", "--group_size", "4"]  # 6 layers: groups of 4 and 2
EPOCHS = 5
RUN = [*G3, "--num_epochs", str(EPOCHS)]
VIZ = ["--visualize_attention", "--viz_samples", "6", "--viz_frequency", "2"]
PNG = re.compile(r"(\d{3})_(.+)_true-(bonafide|spoof)_pred-(bonafide|spoof)\.png")


def epoch_checkpoint_name(epoch: int) -> str:
    return _epoch_name(epoch, None)


def only_folder(root: Path) -> Path:
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain") / "models"
    result = run_cli(RUN, root)
    assert result.code == 0, result.text
    return only_folder(root)


@pytest.fixture(scope="module")
def viz(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("viz") / "models"
    result = run_cli([*RUN, *VIZ], root)
    assert result.code == 0, result.text
    return only_folder(root)


def attention_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "attention").iterdir())


def metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("epoch_seconds", "timestamp")}


def log_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "training_log.csv", newline="") as f:
        return [metrics(row) for row in csv.DictReader(f)]


# --- the schedule -------------------------------------------------------------------------------------

def test_schedule_every_nth_epoch_and_the_last() -> None:
    assert render_epochs(1, 5, 2) == [2, 4, 5]
    assert render_epochs(1, 5, 0) == [5]
    assert render_epochs(1, 4, 2) == [2, 4]
    assert render_epochs(4, 5, 2) == [4, 5]  # a run resumed after epoch 3


def test_a_run_renders_the_scheduled_epochs_and_trains_bit_identically(plain: Path, viz: Path) -> None:
    assert attention_folders(viz) == ["epoch_2", "epoch_4", "epoch_5"]
    assert not (plain / "attention").exists()
    for epoch in range(1, EPOCHS + 1):
        a, b = load(plain / epoch_checkpoint_name(epoch)), load(viz / epoch_checkpoint_name(epoch))
        assert same_weights(a["model_state_dict"], b["model_state_dict"]), epoch
        assert torch.equal(a["rng_state"]["torch"], b["rng_state"]["torch"])
        assert metrics(a["history_row"]) == metrics(b["history_row"])
    assert log_rows(plain) == log_rows(viz)


def test_frequency_zero_renders_only_the_last_epoch(tmp_path: Path) -> None:
    result = run_cli([*G3, "--num_epochs", "3", "--visualize_attention", "--viz_samples", "2",
                      "--viz_frequency", "0"], tmp_path)
    assert result.code == 0, result.text
    assert attention_folders(only_folder(tmp_path)) == ["epoch_3"]


# --- the arrays ----------------------------------------------------------------------------------------

def test_arrays_have_the_documented_shapes_and_attention_sums_to_one(viz: Path) -> None:
    arrays = load_attention(viz / "attention" / "epoch_5")
    assert set(arrays) == {"temporal", "intra", "inter", "label", "score", "utt_id"}
    s, layers, frames = arrays["temporal"].shape
    assert (s, layers) == (6, 6) and frames > 1
    assert arrays["intra"].shape == (6, 2, 4) and arrays["inter"].shape == (6, 2)
    assert arrays["label"].shape == arrays["score"].shape == arrays["utt_id"].shape == (6,)
    np.testing.assert_allclose(arrays["temporal"].sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(arrays["intra"][:, 0].sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(arrays["intra"][:, 1, :2].sum(-1), 1, atol=1e-5)  # the last group: 2 layers
    assert np.all(arrays["intra"][:, 1, 2:] == 0)
    np.testing.assert_allclose(arrays["inter"].sum(-1), 1, atol=1e-5)
    assert sorted(arrays["label"].tolist()) == [0, 0, 0, 1, 1, 1]  # balanced


def test_labels_ids_and_scores_are_the_checkpoints_own_on_those_utterances(viz: Path) -> None:
    """The maps of epoch 4 come from the weights of checkpoint 4 on the validation clips named."""
    arrays = load_attention(viz / "attention" / "epoch_4")
    ckpt = load(viz / epoch_checkpoint_name(4))
    model = build_model(ckpt["args"])
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()
    _, val = build_datasets(ckpt["args"])
    by_id = {val[i][2]: i for i in range(len(val))}
    indices = [by_id[u] for u in arrays["utt_id"]]
    assert indices == choose_utterances(val.labels, 6, ckpt["args"]["seed"])
    with torch.no_grad():
        out = model(torch.stack([val[i][0] for i in indices]), return_attention=True)
    np.testing.assert_allclose(arrays["score"], out.score.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["temporal"], out.attention["temporal"].numpy(), rtol=1e-5, atol=1e-6)
    assert arrays["label"].tolist() == [val[i][1] for i in indices]


def test_utterances_are_fixed_by_the_seed_and_balanced_where_possible() -> None:
    labels = [1] * 3 + [0] * 50
    chosen = choose_utterances(labels, 10, 7)
    assert chosen == choose_utterances(labels, 10, 7) and chosen != choose_utterances(labels, 10, 8)
    assert sum(labels[i] for i in chosen) == 3 and len(chosen) == 10  # all 3 bona fide, 7 spoof
    assert len(choose_utterances([0, 1], 20, 1)) == 2


# --- the PNGs --------------------------------------------------------------------------------------------

def test_png_names_carry_the_true_label_and_the_prediction() -> None:
    # label 1 = bona fide; predicted bona fide when log p(bona fide) > log 0.5 (the original swaps them)
    assert png_name(0, "LA_E_1", 1, math.log(0.9)) == "000_LA_E_1_true-bonafide_pred-bonafide.png"
    assert png_name(1, "LA_E_2", 0, math.log(0.9)) == "001_LA_E_2_true-spoof_pred-bonafide.png"
    assert png_name(2, "LA_E_3", 1, math.log(0.1)) == "002_LA_E_3_true-bonafide_pred-spoof.png"
    assert png_name(3, "../x/y z", 0, math.log(0.5)) == "003_.._x_y_z_true-spoof_pred-spoof.png"
    assert predicted_label(math.log(0.5)) == 0 and predicted_label(math.log(0.5001)) == 1


def test_every_sample_has_a_png_named_after_its_label_and_score(viz: Path) -> None:
    folder = viz / "attention" / "epoch_5"
    arrays = load_attention(folder)
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert len(pngs) == 6
    for name in pngs:
        index, utt, true, pred = PNG.fullmatch(name).groups()
        i = int(index)
        assert utt == arrays["utt_id"][i]
        assert true == ("bonafide" if arrays["label"][i] == 1 else "spoof")
        assert pred == ("bonafide" if arrays["score"][i] > math.log(0.5) else "spoof")
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp files left


# --- --model_path: one checkpoint --------------------------------------------------------------------

def test_model_path_renders_that_checkpoint_alone_and_exits(viz: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(viz, tmp_path / "models" / viz.name)
    before = tree_digest(folder)
    result = run_cli(["--visualize_attention", "--viz_samples", "6", "--model_path",
                      str(folder / epoch_checkpoint_name(4))], tmp_path / "models")
    assert result.code == 0, result.text
    out = folder / "attention" / "checkpoint_epoch_4"
    after = tree_digest(folder)
    assert {k: v for k, v in after.items() if not k.startswith("attention/checkpoint_epoch_4")} == before
    rendered, trained = load_attention(out), load_attention(folder / "attention" / "epoch_4")
    for key in rendered:  # the same utterances, the same weights: the same maps
        np.testing.assert_array_equal(rendered[key], trained[key], err_msg=key)
    assert len(list(out.glob("*.png"))) == 6


# --- refusals ------------------------------------------------------------------------------------------

def one_line_error(result) -> str:
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.text
    return lines[0]


def test_a_model_without_attention_is_refused_with_one_line_before_anything_is_created(tmp_path: Path) -> None:
    root = tmp_path / "models"
    line = one_line_error(run_cli([*TINY, "--num_epochs", "1", "--visualize_attention"], root))
    assert "--visualize_attention" in line and "lcnn" in line
    assert not root.exists()
    # The model type a checkpoint brings (resume, --model_path) is checked too.
    assert run_cli([*TINY, "--num_epochs", "1"], root).code == 0
    ckpt = next(root.glob("lcnn*/checkpoint_epoch_1.pth"))
    before = tree_digest(root)
    line = one_line_error(run_cli(["--visualize_attention", "--model_path", str(ckpt)], root))
    assert "lcnn" in line
    line = one_line_error(run_cli(["--visualize_attention", "--resume", "--model_path", str(ckpt),
                                   "--num_epochs", "2"], root))
    assert "lcnn" in line
    assert tree_digest(root) == before


def test_viz_counts_are_checked(tmp_path: Path) -> None:
    assert "--viz_samples" in one_line_error(run_cli([*G3, "--visualize_attention", "--viz_samples", "0"], tmp_path))
    assert "--viz_frequency" in one_line_error(run_cli([*G3, "--visualize_attention", "--viz_frequency", "-1"], tmp_path))
    assert not tmp_path.joinpath("models").exists()


# --- resume ----------------------------------------------------------------------------------------------

def assert_same_attention(reference: Path, folder: Path) -> None:
    assert attention_folders(folder) == attention_folders(reference)
    for name in attention_folders(reference):
        a, b = load_attention(reference / "attention" / name), load_attention(folder / "attention" / name)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}/{key}")
        assert sorted(p.name for p in (folder / "attention" / name).iterdir()) == \
            sorted(p.name for p in (reference / "attention" / name).iterdir())


def test_a_stopped_and_resumed_run_renders_the_epochs_an_uninterrupted_one_does(viz: Path, tmp_path: Path) -> None:
    args = [*RUN, *VIZ, "--models_root", "models"]
    log = tmp_path / "run.log"
    proc = start_main(args, tmp_path, log, BAR_EVERY_STEP)
    wait_for(lambda: any(tmp_path.glob(f"models/*/{epoch_checkpoint_name(3)}")), timeout=240)
    assert stop_with(proc, signal.SIGTERM) == 143, log.read_text()
    folder = only_folder(tmp_path / "models")
    assert "epoch_5" not in attention_folders(folder)
    result = run_main([*args, "--auto_resume"], tmp_path)
    assert result.code == 0, result.text
    assert_same_attention(viz, folder)
    assert same_weights(load(folder / epoch_checkpoint_name(5))["model_state_dict"],
                        load(viz / epoch_checkpoint_name(5))["model_state_dict"])


def test_a_kill_between_the_maps_and_the_checkpoint_still_completes_the_schedule(viz: Path, tmp_path: Path) -> None:
    """Epoch 4 rendered, its checkpoint never written: the resume retrains and renders it again."""
    root = tmp_path / "models"
    folder = shutil.copytree(viz, root / viz.name)
    for epoch in (4, 5):
        for path in folder.glob(epoch_checkpoint_name(epoch) + "*"):
            path.unlink()
    shutil.rmtree(folder / "attention" / "epoch_5")
    for path in folder.glob("best_checkpoint_eer.pth*"):
        path.unlink()  # whichever epoch it was, the resume republishes the best of 1-3
    rows = (folder / "training_log.csv").read_text().splitlines()
    (folder / "training_log.csv").write_text("\n".join(rows[:4]) + "\n")  # header + epochs 1-3
    result = run_cli([*RUN, *VIZ, "--auto_resume"], root)
    assert result.code == 0, result.text
    assert_same_attention(viz, folder)
    assert not (folder / "archive").exists()  # the unfinished epoch's maps were redone, not archived


def test_resuming_an_earlier_epoch_archives_the_abandoned_branchs_maps(viz: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = shutil.copytree(viz, root / viz.name)
    old4 = tree_digest(folder / "attention" / "epoch_4")
    result = run_cli([*RUN, *VIZ, "--resume", "--model_path", str(folder / epoch_checkpoint_name(2))], root)
    assert result.code == 0, result.text
    (archived,) = (folder / "archive").iterdir()
    assert sorted(p.name for p in (archived / "attention").iterdir()) == ["epoch_4", "epoch_5"]
    assert tree_digest(archived / "attention" / "epoch_4") == old4  # nothing lost
    assert_same_attention(viz, folder)  # the same seed and data: the branch renders the same maps


def test_a_fresh_start_archives_the_earlier_runs_maps(viz: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = shutil.copytree(viz, root / viz.name)
    result = run_cli([*G3, "--num_epochs", str(EPOCHS), "--fresh_start"], root)
    assert result.code == 0, result.text
    (archived,) = (folder / "archive").iterdir()
    assert sorted(p.name for p in (archived / "attention").iterdir()) == ["epoch_2", "epoch_4", "epoch_5"]
    assert not (folder / "attention").exists()
