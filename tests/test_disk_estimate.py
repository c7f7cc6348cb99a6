"""The disk a run will need (training/checkpoint/disk.py): the estimate against real checkpoints,
--keep_last, the refusal on a small disk, the frozen front-end left out and listed as such."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from cli_helpers import TINY, load, run_cli, tree_digest
from training.checkpoint.disk import checkpoints_kept, estimate_checkpoint_size, plan_disk
from training.config import DEFAULTS
from training.models.ssl_frontend import folder_sha256
from training.checkpoint.store import FREE_SPACE_EXTRA

G3 = ["--model_type", "g3_heatmap", "--train_size", "16", "--val_size", "8", "--clip_samples", "4000",
      "--batch_size", "8", "--lr", "0.001"]


def trained_checkpoint(args: list[str], root: Path, epochs: int = 1) -> Path:
    result = run_cli([*args, "--num_epochs", str(epochs)], root)
    assert result.code == 0, result.text
    return next(root.glob(f"*/checkpoint_epoch_{epochs}.pth"))


def assert_close(estimate: int, actual: int, within: float = 0.03) -> None:
    assert abs(estimate - actual) <= within * actual, (estimate, actual)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A tiny wav2vec2 (4 layers, width 32) as save_pretrained writes it: no download."""
    folder = tmp_path_factory.mktemp("hf") / "tiny_w2v2"
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
    Wav2Vec2Model(config).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("model", ["lcnn", "g3_heatmap"])
def test_the_estimate_is_the_real_checkpoints_size(model: str, tmp_path: Path) -> None:
    path = trained_checkpoint([*TINY, "--model_type", model, "--train_size", "16", "--val_size", "8"],
                              tmp_path, epochs=2)
    assert_close(estimate_checkpoint_size(load(path)["args"]).checkpoint_bytes, path.stat().st_size)


def test_a_300m_model_with_adam_is_about_3_6_gb() -> None:
    """The issue's figure, from parameter counts alone (the meta device allocates nothing)."""
    config = Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    with torch.device("meta"):
        params = sum(p.numel() for p in Wav2Vec2Model(config).parameters())
    assert 3.4e9 < params * 4 * 3 < 3.8e9


def test_checkpoints_kept_counts_keep_last_best_and_the_one_in_flight() -> None:
    assert checkpoints_kept(5, None) == 5
    assert checkpoints_kept(40, 1) == 3  # the newest, the best, the one written before pruning
    assert checkpoints_kept(40, 3) == 5
    assert checkpoints_kept(4, 10) == 4
    assert checkpoints_kept(0, None) == 0
    args = {**DEFAULTS, "model_type": "lcnn", "num_epochs": 40, "models_root": "/tmp"}
    plain, kept = plan_disk(args), plan_disk({**args, "keep_last": 1})
    assert plain.needed_bytes == 40 * plain.size.checkpoint_bytes
    assert kept.needed_bytes == 3 * plain.size.checkpoint_bytes
    assert plan_disk(args, start_epoch=30).needed_bytes == 10 * plain.size.checkpoint_bytes  # a resume


def test_the_cli_states_the_need_before_training(tmp_path: Path) -> None:
    result = run_cli([*TINY, "--num_epochs", "2"], tmp_path)
    assert result.code == 0, result.text
    line = next(line for line in result.out.splitlines() if line.startswith("Disk: "))
    assert "keeps up to 2 checkpoint(s)" in line and "free in" in line
    assert result.out.index("Disk: ") < result.out.index("Training ")


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A tmpfs with room for the store's margin plus five tiny lcnn checkpoints (root only)."""
    size = trained_checkpoint(TINY, tmp_path / "probe").stat().st_size
    mount = tmp_path / "disk"
    mount.mkdir()
    kib = (FREE_SPACE_EXTRA + 5 * size) // 1024
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount rights): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_run_that_cannot_fit_is_refused_in_one_line_and_keep_last_makes_it_fit(small_disk: Path) -> None:
    root = small_disk / "models"
    refused = run_cli([*TINY, "--num_epochs", "40"], root)  # 40 checkpoints: about 30 fit
    lines = refused.err.strip().splitlines()
    assert refused.code == 2 and len(lines) == 1, refused.text
    assert lines[0].startswith(f"error: not enough disk space for this run in {small_disk}: 40 checkpoint(s)")
    assert "--keep_last" in lines[0]
    assert tree_digest(small_disk) == {}  # nothing created
    kept = run_cli([*TINY, "--num_epochs", "40", "--keep_last", "1"], root)
    assert kept.code == 0, kept.text
    assert "keeps up to 3 checkpoint(s)" in kept.out


def test_a_frozen_front_end_is_left_out_of_every_checkpoint_and_the_listing_says_so(hf_folder: Path,
                                                                                      tmp_path: Path) -> None:
    trained = trained_checkpoint([*G3, "--ssl_path", str(hf_folder)], tmp_path / "trained")
    frozen = trained_checkpoint([*G3, "--ssl_path", str(hf_folder), "--freeze_ssl"], tmp_path / "frozen")
    frontend_bytes = sum(t.numel() * t.element_size() for t in Wav2Vec2Model.from_pretrained(str(hf_folder))
                         .state_dict().values())
    # Trained, the front-end is in the file three times over (weights and Adam's two moments),
    # plus the zip's per-tensor headers; frozen, only its 32-byte hash.
    saved = trained.stat().st_size - frozen.stat().st_size
    assert 3 * frontend_bytes < saved < 3.5 * frontend_bytes
    estimates = {p: estimate_checkpoint_size(load(p)["args"]) for p in (trained, frozen)}
    for path, estimate in estimates.items():
        assert_close(estimate.checkpoint_bytes, path.stat().st_size)
    assert_close(estimates[trained].checkpoint_bytes - estimates[frozen].checkpoint_bytes, saved)
    assert frontend_bytes <= estimates[frozen].frozen_frontend_bytes < 1.2 * frontend_bytes
    assert estimates[trained].frozen_frontend_bytes == 0

    listing = run_cli([*G3, "--ssl_path", str(hf_folder), "--freeze_ssl", "--num_epochs", "1",
                       "--list_checkpoints"], tmp_path / "frozen")
    assert listing.code == 0, listing.text
    digest = folder_sha256(hf_folder)[:16]
    assert f"Front-end: frozen, stored once in {hf_folder} (sha256 {digest}...), not in this file" in listing.out
    plain = run_cli([*G3, "--ssl_path", str(hf_folder), "--num_epochs", "1", "--list_checkpoints"], tmp_path / "trained")
    assert plain.code == 0 and "Front-end" not in plain.out


def test_the_launch_form_states_the_need_and_refuses_what_cannot_fit(small_disk: Path) -> None:
    from training.dashboard.launch_form import plan_launch

    root = small_disk / "models"
    values = {"model_type": "lcnn", "train_size": 32, "val_size": 16, "clip_samples": 4000, "batch_size": 8,
              "lr": 0.001}
    refused = plan_launch(root, "fresh", {**values, "num_epochs": 40}, None)
    assert refused.command is None and refused.errors[-1].startswith(
        f"not enough disk space for this run in {small_disk}: 40 checkpoint(s)")
    fits = plan_launch(root, "fresh", {**values, "num_epochs": 40, "keep_last": 1}, None)
    assert fits.ok and fits.command and "keeps up to 3 checkpoint(s)" in fits.disk
    assert tree_digest(small_disk) == {}
