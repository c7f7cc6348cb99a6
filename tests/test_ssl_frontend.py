"""The Hugging Face wav2vec2 / XLS-R front-end (``--ssl_path``) on a tiny random model that the
tests save with ``save_pretrained``: features, safe loading, clear errors, the frozen front-end
stored once, and train + SIGKILL + auto-resume bit-identical through the real CLI."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import Wav2Vec2Config, Wav2Vec2Model  # noqa: E402

from cli_helpers import TINY, load, run_main  # noqa: E402
from training.models import HEAD_VERSION, build_model  # noqa: E402
from training.models.ssl_frontend import SSLFolderError, SSLFrontend  # noqa: E402
from training.checkpoint.store import CheckpointError  # noqa: E402

LAYERS, WIDTH = 4, 32


def tiny_config(**overrides) -> Wav2Vec2Config:
    settings = dict(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
                    conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer",
                    layerdrop=0.5, mask_time_prob=0.5)  # XLS-R-like: pre-norm; drop/masking must be turned off
    settings.update(overrides)
    return Wav2Vec2Config(**settings)


def save_tiny(folder: Path, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    Wav2Vec2Model(tiny_config(**overrides)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("hf") / "tiny_w2v2")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_layers(folder: Path, x: torch.Tensor) -> tuple[list[torch.Tensor], object, Wav2Vec2Model]:
    """Each layer's output recorded by hand with hooks on a plainly loaded model."""
    model = Wav2Vec2Model.from_pretrained(str(folder), layerdrop=0.0, apply_spec_augment=False).eval()
    seen: list[torch.Tensor] = []
    for layer in model.encoder.layers:
        layer.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    return seen, out, model


# ---------------------------------------------------------------- features


def test_features_are_every_layer_before_the_final_layer_norm_from_one_pass(hf_folder):
    front = SSLFrontend(hf_folder).eval()
    encoder_calls = []
    front.model.encoder.register_forward_hook(lambda *a: encoder_calls.append(1))
    x = torch.randn(2, 4000)
    with torch.no_grad():
        feats = front(x)
    assert len(encoder_calls) == 1  # one encoder pass (the original ran it twice)
    assert (front.num_layers, front.out_dim) == (LAYERS, WIDTH)
    assert feats.shape == (2, LAYERS, 198, WIDTH)
    layers, out, plain = reference_layers(hf_folder, x)
    assert all(torch.equal(feats[:, i], layers[i]) for i in range(LAYERS))
    # The final LayerNorm is not in the features: the last one is the raw last layer.
    assert torch.allclose(out.last_hidden_state, plain.encoder.layer_norm(feats[:, -1]), atol=1e-6)
    assert not torch.allclose(out.last_hidden_state, feats[:, -1], atol=1e-3)


def test_what_hidden_states_holds_in_this_transformers_version(hf_folder):
    """Pinned because it changed: 4.x puts the final-LayerNorm'd output last for pre-norm (XLS-R)
    configs, 5.x each layer's raw output. The front-end reads neither (hooks), so both work."""
    x = torch.randn(1, 4000)
    layers, out, _ = reference_layers(hf_folder, x)
    hidden = out.hidden_states
    assert len(hidden) == LAYERS + 1
    assert all(torch.equal(hidden[i + 1], layers[i]) for i in range(LAYERS - 1))
    major = int(transformers.__version__.split(".")[0])
    last_is_normed = torch.allclose(hidden[-1], out.last_hidden_state) and not torch.allclose(hidden[-1], layers[-1])
    assert last_is_normed == (major < 5)


def test_post_norm_configs_give_each_layer_output_too(tmp_path):
    folder = save_tiny(tmp_path / "postnorm", do_stable_layer_norm=False, feat_extract_norm="group")
    x = torch.randn(1, 4000)
    with torch.no_grad():
        feats = SSLFrontend(folder).eval()(x)
    layers, out, _ = reference_layers(folder, x)
    assert all(torch.equal(feats[:, i], layers[i]) for i in range(LAYERS))
    assert torch.equal(out.last_hidden_state, feats[:, -1])  # post-norm: no final LayerNorm


def test_raw_waveform_in_and_every_layer_in_training(hf_folder):
    front = SSLFrontend(hf_folder).train()
    assert front.model.config.layerdrop == 0.0 and front.model.config.apply_spec_augment is False
    seen = []
    front.model.feature_extractor.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = 5 * torch.randn(2, 4000) + 0.3
    for _ in range(3):  # with the saved layerdrop 0.5 some pass would skip a layer
        assert front(x).shape[1] == LAYERS
    assert torch.equal(seen[0], x)


def test_the_weights_are_the_folders(hf_folder):
    front = SSLFrontend(hf_folder)
    saved = Wav2Vec2Model.from_pretrained(str(hf_folder)).state_dict()
    mine = front.model.state_dict()
    assert saved.keys() == mine.keys() and all(torch.equal(saved[k], mine[k]) for k in saved)


def test_g3_heatmap_takes_its_depth_and_width_from_the_config(hf_folder):
    model = build_model({"model_type": "g3_heatmap", "head_version": HEAD_VERSION, "ssl_path": str(hf_folder),
                         "group_size": 3, "num_layers": 9, "dim": 16})
    with torch.no_grad():
        att = model.eval()(torch.randn(1, 4000), return_attention=True).attention
    assert att["temporal"].shape == (1, LAYERS, 198) and att["intra"].shape == (1, 2, 3)


# ---------------------------------------------------------------- bad folders, hostile files


def test_bad_folders_are_one_line_errors(tmp_path, hf_folder):
    with pytest.raises(SSLFolderError, match="not a folder"):
        SSLFrontend(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSLFolderError, match="no config.json"):
        SSLFrontend(tmp_path / "empty")
    shutil.copy(hf_folder / "config.json", tmp_path / "empty" / "config.json")
    with pytest.raises(SSLFolderError, match="no weights"):
        SSLFrontend(tmp_path / "empty")
    # Weights of a smaller model: some front-end weights would stay random.
    partial = save_tiny(tmp_path / "partial", num_hidden_layers=2)
    shutil.copy(hf_folder / "config.json", partial / "config.json")
    with pytest.raises(SSLFolderError, match="missing or of the wrong shape") as err:
        SSLFrontend(partial)
    assert "\n" not in str(err.value)


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_a_hostile_bin_is_never_unpickled(tmp_path, hf_folder):
    folder = tmp_path / "hostile"
    folder.mkdir()
    shutil.copy(hf_folder / "config.json", folder / "config.json")
    marker = tmp_path / "pwned"
    torch.save({"payload": Evil(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(SSLFolderError):
        SSLFrontend(folder)
    assert not marker.exists()
    with open(folder / "pytorch_model.bin", "wb") as f:  # an old-style plain pickle too
        pickle.dump({"payload": Evil(marker)}, f)
    with pytest.raises(SSLFolderError):
        SSLFrontend(folder)
    assert not marker.exists()


def test_a_pytorch_model_bin_of_plain_tensors_loads(tmp_path, hf_folder):
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(hf_folder / "config.json", folder / "config.json")
    state = Wav2Vec2Model.from_pretrained(str(hf_folder)).state_dict()
    torch.save({f"wav2vec2.{k}": v for k, v in state.items()}, folder / "pytorch_model.bin")  # hub layout
    mine = SSLFrontend(folder).model.state_dict()
    assert all(torch.equal(state[k], mine[k]) for k in state)


# ---------------------------------------------------------------- frozen front-end


def test_a_frozen_front_end_is_stored_once_and_checked_by_hash(tmp_path, hf_folder):
    args = {"model_type": "g3_heatmap", "head_version": HEAD_VERSION, "ssl_path": str(hf_folder)}
    trained = build_model(args)
    frozen = build_model({**args, "freeze_ssl": True}).train()
    assert not frozen.frontend.model.training  # no dropout in a frozen front-end
    assert not any(p.requires_grad for p in frozen.frontend.parameters())
    state = frozen.state_dict()
    assert not any(k.startswith("frontend.model.") for k in state)
    assert "frontend.weights_sha256" in state
    front_bytes = sum(v.numel() * v.element_size() for k, v in trained.state_dict().items()
                      if k.startswith("frontend."))
    full, small = tmp_path / "full.pth", tmp_path / "small.pth"
    torch.save(trained.state_dict(), full)
    torch.save(state, small)
    assert full.stat().st_size - small.stat().st_size >= front_bytes - 4096

    again = build_model({**args, "freeze_ssl": True})
    result = again.load_state_dict(load(small), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    with pytest.raises(RuntimeError):  # strict loading agrees
        again.load_state_dict({k: v for k, v in load(small).items() if "weights_sha256" not in k})

    other = save_tiny(tmp_path / "other", seed=1)
    changed = build_model({**args, "ssl_path": str(other), "freeze_ssl": True})
    with pytest.raises(CheckpointError, match="differ from the ones this checkpoint was trained with"):
        changed.load_state_dict(load(small), strict=False)


def test_freeze_ssl_without_ssl_path_is_an_error():
    with pytest.raises(ValueError, match="--freeze_ssl needs --ssl_path"):
        build_model({"model_type": "g3_heatmap", "head_version": HEAD_VERSION, "freeze_ssl": True})


# ---------------------------------------------------------------- the CLI


def test_a_frozen_run_resumes_and_its_checkpoints_hold_no_front_end(tmp_path, hf_folder):
    base = [*TINY, "--model_type", "g3_heatmap", "--train_size", "16", "--val_size", "8",
            "--ssl_path", str(hf_folder), "--freeze_ssl", "--auto_resume"]
    first = run_main([*base, "--num_epochs", "1"], tmp_path)
    assert first.code == 0, first.text
    resumed = run_main([*base, "--num_epochs", "1"], tmp_path)
    assert resumed.code == 0, resumed.text
    [ckpt_path] = (tmp_path / "models").glob("*/checkpoint_epoch_1.pth")
    state = load(ckpt_path)["model_state_dict"]
    assert not any(k.startswith("frontend.model.") for k in state) and "frontend.weights_sha256" in state


def test_bad_ssl_path_is_one_line(tmp_path):
    res = run_main([*TINY, "--model_type", "g3_heatmap", "--num_epochs", "1", "--ssl_path",
                    str(tmp_path / "missing")], tmp_path)
    assert res.code == 2 and "--ssl_path" in res.err and "Traceback" not in res.text, res.text
    assert not (tmp_path / "models").exists(), "nothing is created before the input is known good"
    res = run_main([*TINY, "--model_type", "g3_heatmap", "--num_epochs", "1", "--freeze_ssl"], tmp_path)
    assert res.code == 2 and "--freeze_ssl needs --ssl_path" in res.err, res.text
    assert not (tmp_path / "models").exists()


def test_train_kill_auto_resume_is_bit_identical_with_ssl_path(tmp_path, hf_folder):
    from kill_harness import run_kill_experiment

    args = [*TINY, "--model_type", "g3_heatmap", "--train_size", "16", "--val_size", "8",
            "--ssl_path", str(hf_folder), "--num_epochs", "3", "--auto_resume", "--comment", "ssl"]
    report = run_kill_experiment(args, tmp_path, kills=3, seed=0)
    assert not report.problems(), report.summary()
