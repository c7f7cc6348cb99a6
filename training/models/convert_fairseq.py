"""Convert a fairseq wav2vec2 / XLS-R checkpoint (the original's ``xlsr2_300m.pt``) into a Hugging
Face folder that ``--ssl_path`` reads, without fairseq and without running any pickled code::

    python -m training.models.convert_fairseq xlsr2_300m.pt xlsr2_300m_hf/

fairseq checkpoints pickle ``argparse.Namespace`` / omegaconf objects (and whatever else the
training run held) next to the tensors, so ``torch.load`` would have to import and call them.
Here ``RestrictedUnpickler.find_class`` is the only door from the pickle to Python: it returns
our own tensor-rebuild functions for torch's three tensor globals, ``OrderedDict`` for itself,
dtype markers for torch's storage classes, and for EVERY other global an inert stand-in
(``Inert``) that only records the arguments and state it is given. Nothing a file names is
imported or called, so a hostile file can at worst produce a wrong tensor (then the shapes do
not fit and conversion fails) or a stand-in.

The architecture comes from the tensor shapes (layers, widths, kernels, norms), plus, from the
recorded ``args`` / ``cfg``: attention heads (else D / 64, as every released wav2vec2),
``layer_norm_first`` (else True, as XLS-R) and the conv strides, parsed from the
``conv_feature_layers`` string by a literal-only parser (else wav2vec2's 5,2,2,2,2,2,2).
The result is checked by loading it strictly into ``Wav2Vec2Model``, then written with
``save_pretrained`` (``config.json`` + ``model.safetensors``). Pre-training heads (quantizer,
project_q, final_proj) are dropped: the anti-spoofing model never reads them.
"""

from __future__ import annotations

import argparse
import ast
import collections
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class ConversionError(Exception):
    """The input is not a usable fairseq wav2vec2 checkpoint (one line for the user)."""


class Inert:
    """Stand-in for any object the pickle names: keeps what it is given, runs nothing."""

    global_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state, self.items = args, None, {}

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.items[len(self.items)] = value

    def extend(self, values: Any) -> None:
        for v in values:
            self.append(v)


def _inert_class(module: str, name: str) -> type:
    return type(f"Inert[{module}.{name}]", (Inert,), {"global_name": f"{module}.{name}"})


class _StorageKind:
    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise ConversionError("a tensor without storage in the checkpoint")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Reads a torch zip checkpoint's ``data.pkl``; storages come from the zip's ``data/`` records."""

    SAFE = {
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            if name == "OrderedDict":  # a built-in type: attributes cannot be set on it
                return collections.OrderedDict
            safe = self.SAFE[(module, name)]
            # A fresh function per lookup: a BUILD aimed at it can only touch this copy.
            return lambda *args: safe(*args)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageKind(name)
        return _inert_class(module, name)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageKind)):
            raise ConversionError(f"unexpected persistent id in the checkpoint: {type(pid).__name__}")
        kind, key = pid[1], str(pid[2])
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise ConversionError(f"storage {key} is missing from the checkpoint") from None
            self.storages[key] = torch.frombuffer(bytearray(raw), dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
        return self.storages[key]


def read_fairseq_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, tensors real, every other object an ``Inert``."""
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path}: not a zip-format torch checkpoint (legacy torch files are not supported; "
                              "re-save it with torch >= 1.6)")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise ConversionError(f"{path}: expected one data.pkl in the torch zip, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        with archive.open(pkl[0]) as f:
            try:
                obj = RestrictedUnpickler(f, archive, prefix).load()
            except ConversionError:
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged pickle: one line
                raise ConversionError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise ConversionError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    return obj


def _plain(obj: Any) -> Any:
    """Recorded settings as plain data: Namespace state, omegaconf ``_content`` / ``_val``."""
    if isinstance(obj, Inert):
        state = obj.state
        if isinstance(state, dict) and "_content" in state:
            return _plain(state["_content"])
        if isinstance(state, dict) and "_val" in state:
            return _plain(state["_val"])
        if isinstance(state, dict):
            return {k: _plain(v) for k, v in state.items()}
        if obj.items:
            return {k: _plain(v) for k, v in obj.items.items()}
        return None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def fairseq_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The model section of ``cfg`` (newer fairseq), else the ``args`` Namespace (older)."""
    cfg = _plain(ckpt.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return cfg["model"]
    args = _plain(ckpt.get("args"))
    return args if isinstance(args, dict) else {}


def parse_conv_layers(text: str) -> list[tuple[int, int, int]]:
    """``"[(512, 10, 5)] + [(512, 3, 2)] * 4"`` -> list of (dim, kernel, stride), literals only."""
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = value(node.left), value(node.right)
            if isinstance(right, int) and 0 <= right <= 64:
                return left * right
        raise ValueError("not a literal conv layer list")

    layers = value(ast.parse(text, mode="eval").body)
    if not isinstance(layers, list) or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
        raise ValueError("not a list of (dim, kernel, stride)")
    return layers


def _indices(state: dict[str, Any], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def hf_config(state: dict[str, torch.Tensor], settings: dict[str, Any]) -> Any:
    from transformers import Wav2Vec2Config

    layers = _indices(state, r"encoder\.layers\.(\d+)\..*")
    convs = _indices(state, r"feature_extractor\.conv_layers\.(\d+)\.0\.weight")
    if not layers or not convs:
        raise ConversionError("the checkpoint has no wav2vec2 encoder layers / conv feature extractor")
    hidden = state["encoder.layers.0.fc1.weight"].shape[1]
    kernels = [state[f"feature_extractor.conv_layers.{i}.0.weight"].shape[2] for i in convs]
    dims = [state[f"feature_extractor.conv_layers.{i}.0.weight"].shape[0] for i in convs]
    strides = [{10: 5}.get(k, 2) for k in kernels]  # wav2vec2's own conv stack
    if isinstance(settings.get("conv_feature_layers"), str):
        try:
            parsed = parse_conv_layers(settings["conv_feature_layers"])
            if [(d, k) for d, k, _ in parsed] == list(zip(dims, kernels)):
                strides = [s for _, _, s in parsed]
        except (ValueError, SyntaxError, RecursionError):
            pass
    pos = state["encoder.pos_conv.0.weight_v"]
    layer_norm_mode = "feature_extractor.conv_layers.0.2.1.weight" in state
    return Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=int(settings.get("encoder_attention_heads") or hidden // 64),
        intermediate_size=state["encoder.layers.0.fc1.weight"].shape[0],
        conv_dim=tuple(dims), conv_kernel=tuple(kernels), conv_stride=tuple(strides),
        conv_bias="feature_extractor.conv_layers.0.0.bias" in state,
        feat_extract_norm="layer" if layer_norm_mode else "group",
        do_stable_layer_norm=bool(settings.get("layer_norm_first", True)),
        num_conv_pos_embeddings=pos.shape[2], num_conv_pos_embedding_groups=hidden // pos.shape[1],
        architectures=["Wav2Vec2Model"],
    )


LAYER_NAMES = {
    "self_attn.k_proj": "attention.k_proj", "self_attn.v_proj": "attention.v_proj",
    "self_attn.q_proj": "attention.q_proj", "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm",
}
DROPPED = ("quantizer.", "project_q.", "final_proj.", "project_inp.", "target_glu.")


def hf_name(key: str, pos_weight: dict[str, str]) -> str | None:
    """The ``Wav2Vec2Model`` name of a fairseq weight; None for pre-training heads."""
    if key.startswith(DROPPED):
        return None
    if m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", key):
        return f"feature_extractor.conv_layers.{m[1]}.conv.{m[2]}"
    if m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.2(?:\.1)?\.(weight|bias)", key):
        return f"feature_extractor.conv_layers.{m[1]}.layer_norm.{m[2]}"
    if m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
        if m[2] in LAYER_NAMES:
            return f"encoder.layers.{m[1]}.{LAYER_NAMES[m[2]]}.{m[3]}"
    simple = {
        "layer_norm.weight": "feature_projection.layer_norm.weight",
        "layer_norm.bias": "feature_projection.layer_norm.bias",
        "post_extract_proj.weight": "feature_projection.projection.weight",
        "post_extract_proj.bias": "feature_projection.projection.bias",
        "mask_emb": "masked_spec_embed",
        "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias",
        "encoder.layer_norm.weight": "encoder.layer_norm.weight",
        "encoder.layer_norm.bias": "encoder.layer_norm.bias",
        **pos_weight,
    }
    if key in simple:
        return simple[key]
    raise ConversionError(f"unknown fairseq weight {key!r}: is this a wav2vec2 / XLS-R checkpoint?")


def convert(src: Path, dst: Path) -> Path:
    """Write the Hugging Face folder ``dst`` for the fairseq checkpoint ``src``; returns ``dst``."""
    from transformers import Wav2Vec2Model

    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConversionError(f"{dst}: exists and is not an empty folder (nothing overwritten)")
    ckpt = read_fairseq_checkpoint(src)
    state = {k: v for k, v in ckpt["model"].items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("w2v_encoder.") for k in state):
        raise ConversionError(f"{src}: a fine-tuned (CTC) fairseq checkpoint; convert the pre-trained one")
    try:
        config = hf_config(state, fairseq_settings(ckpt))
    except KeyError as exc:
        raise ConversionError(f"{src}: weight {exc} is missing: not a wav2vec2 / XLS-R checkpoint") from None
    model = Wav2Vec2Model(config)
    parametrized = "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in model.state_dict()
    pos_weight = ({"encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
                   "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1"}
                  if parametrized else
                  {"encoder.pos_conv.0.weight_g": "encoder.pos_conv_embed.conv.weight_g",
                   "encoder.pos_conv.0.weight_v": "encoder.pos_conv_embed.conv.weight_v"})
    mapped = {name: tensor.float() for key, tensor in state.items() if (name := hf_name(key, pos_weight))}
    if "masked_spec_embed" not in mapped:
        mapped["masked_spec_embed"] = model.masked_spec_embed.detach().clone()
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{src}: the weights do not fit the inferred architecture "
                              f"({str(exc).splitlines()[0]})") from None
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dst), safe_serialization=True)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.models.convert_fairseq",
                                     description="fairseq wav2vec2 / XLS-R .pt -> Hugging Face folder for --ssl_path")
    parser.add_argument("src", type=Path, help="fairseq checkpoint, e.g. xlsr2_300m.pt")
    parser.add_argument("dst", type=Path, help="new (or empty) folder to write config.json + model.safetensors into")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {out} (config.json + model.safetensors); train with --ssl_path {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
