"""The fairseq -> Hugging Face converter on a fairseq-shaped checkpoint the test builds from a tiny
random wav2vec2: the same features come out, and the pickled objects next to the tensors (an
argparse.Namespace, an omegaconf-like config, a hostile object) are never executed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from transformers import Wav2Vec2Config, Wav2Vec2Model  # noqa: E402

from cli_helpers import REPO, child_env  # noqa: E402
from training.models.convert_fairseq import ConversionError, convert, main, parse_conv_layers  # noqa: E402
from training.models.ssl_frontend import SSLFrontend  # noqa: E402

TO_FAIRSEQ = {
    "attention.k_proj": "self_attn.k_proj", "attention.v_proj": "self_attn.v_proj",
    "attention.q_proj": "self_attn.q_proj", "attention.out_proj": "self_attn.out_proj",
    "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
    "feed_forward.output_dense": "fc2", "final_layer_norm": "final_layer_norm",
}


def fairseq_name(key: str) -> str:
    """Hugging Face -> fairseq names, written independently of the converter's table."""
    parts = key.split(".")
    if key.startswith("feature_extractor.conv_layers."):
        i, kind, leaf = parts[2], parts[3], parts[-1]
        return f"feature_extractor.conv_layers.{i}.0.{leaf}" if kind == "conv" else \
            f"feature_extractor.conv_layers.{i}.2.1.{leaf}"
    if key.startswith("encoder.layers."):
        i, mid, leaf = parts[2], ".".join(parts[3:-1]), parts[-1]
        return f"encoder.layers.{i}.{TO_FAIRSEQ[mid]}.{leaf}"
    return {
        "masked_spec_embed": "mask_emb",
        "feature_projection.layer_norm.weight": "layer_norm.weight",
        "feature_projection.layer_norm.bias": "layer_norm.bias",
        "feature_projection.projection.weight": "post_extract_proj.weight",
        "feature_projection.projection.bias": "post_extract_proj.bias",
        "encoder.pos_conv_embed.conv.bias": "encoder.pos_conv.0.bias",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v",
        "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv.0.weight_v",
    }.get(key, key)


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class FakeDictConfig:
    """Shaped like omegaconf's DictConfig pickle (a class plus a _content state), but its
    reconstruction would run a command if anyone called it."""

    def __init__(self, marker: Path, content: dict):
        self.marker, self.content = marker, content

    def __reduce__(self):
        return (os.system, (f"echo pwned-cfg > {self.marker}",), {"_content": self.content})


def fairseq_checkpoint(tmp_path: Path, marker: Path, *, cfg: bool) -> tuple[Path, Wav2Vec2Model]:
    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                            conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
    hf = Wav2Vec2Model(config).eval()
    state = {fairseq_name(k): v.clone() for k, v in hf.state_dict().items()}
    state["quantizer.vars"] = torch.randn(1, 8, 4)  # pre-training heads the converter drops
    state["project_q.weight"] = torch.randn(4, 4)
    settings = {"encoder_attention_heads": 4, "layer_norm_first": True,
                "conv_feature_layers": "[(32, 10, 5)] + [(32, 8, 4)] * 1"}
    obj = {
        "args": argparse.Namespace(**settings, hook=Evil(marker)),
        "cfg": FakeDictConfig(marker, {"model": settings}) if cfg else None,
        "model": state,
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "payload": Evil(marker)}],
        "extra_state": {"epoch": 3},
    }
    path = tmp_path / "xlsr_tiny.pt"
    torch.save(obj, path)
    return path, hf


@pytest.mark.parametrize("cfg", [False, True], ids=["args-namespace", "omegaconf-cfg"])
def test_converted_folder_gives_the_same_features_and_runs_no_pickled_code(tmp_path, cfg):
    marker = tmp_path / "pwned"
    src, hf = fairseq_checkpoint(tmp_path, marker, cfg=cfg)
    out = convert(src, tmp_path / "hf")
    assert not marker.exists(), "a pickled object was executed"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    saved = Wav2Vec2Config.from_pretrained(str(out))
    assert (saved.num_attention_heads, tuple(saved.conv_stride), saved.do_stable_layer_norm) == (4, (5, 4), True)
    front = SSLFrontend(out).eval()
    x = torch.randn(2, 4000)
    seen = []
    for layer in hf.encoder.layers:
        layer.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        hf(x)
        feats = front(x)
    assert all(torch.equal(feats[:, i], seen[i]) for i in range(3))


def test_the_command_line(tmp_path):
    import subprocess
    import sys

    src, _ = fairseq_checkpoint(tmp_path, tmp_path / "pwned", cfg=False)
    ok = subprocess.run([sys.executable, "-m", "training.models.convert_fairseq", str(src), str(tmp_path / "out")],
                        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "--ssl_path" in ok.stdout, ok.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    again = subprocess.run([sys.executable, "-m", "training.models.convert_fairseq", str(src), str(tmp_path / "out")],
                           cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "not an empty folder" in again.stderr and "Traceback" not in again.stderr


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ConversionError, match="no such file"):
        convert(tmp_path / "missing.pt", tmp_path / "o1")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="not a zip-format"):
        convert(tmp_path / "junk.pt", tmp_path / "o2")
    torch.save({"model": {"classifier.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match="no wav2vec2 encoder layers"):
        convert(tmp_path / "other.pt", tmp_path / "o3")
    assert main([str(tmp_path / "junk.pt"), str(tmp_path / "o4")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))


def test_conv_layer_strings_are_parsed_as_literals_only():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2") == \
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    for bad in ("__import__('os').system('true')", "[(1, 2, 3)] * 10**9", "[x for x in ()]"):
        with pytest.raises((ValueError, SyntaxError)):
            parse_conv_layers(bad)
