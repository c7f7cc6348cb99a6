"""The pretrained wav2vec2 / XLS-R front-end, read from a Hugging Face folder (``--ssl_path``).

The folder is what ``save_pretrained`` writes, or what a user downloads as
``facebook/wav2vec2-xls-r-300m`` (``config.json`` plus ``model.safetensors`` or
``pytorch_model.bin``), or what ``python -m training.models.convert_fairseq`` makes of the
original's fairseq ``xlsr2_300m.pt``. Nothing is downloaded: the folder must be complete.

Features, as the original reads fairseq's ``layer_results``: every transformer layer's own
output, BEFORE the encoder's final LayerNorm, from ONE forward pass, on the raw waveform (no
per-utterance normalisation). Why not ``hidden_states``: for ``do_stable_layer_norm`` configs
(XLS-R) transformers 4.x puts the final-LayerNorm'd output in ``hidden_states[-1]``, while its
5.x versions record each layer's raw output there; forward hooks on the encoder layers give the
same tensors in every version (``tests/test_ssl_frontend.py`` pins both facts). LayerDrop is off
(the head needs every layer every step) and so is wav2vec2's time masking (the original calls
fairseq with ``mask=False``).

Weights load safely: ``from_pretrained`` prefers safetensors and reads ``.bin`` files with
``torch.load(weights_only=True)``; a folder that leaves any front-end weight uninitialised is an
error, not a silently random front-end.

``freeze=True`` (``--freeze_ssl``): the front-end is not trained (no gradients, dropout off) and is
left out of the model's ``state_dict``: checkpoints record the SHA-256 of the folder's weight
files instead (buffer ``frontend.weights_sha256``), and loading a checkpoint whose hash differs
from the folder's is an error, so a resume can never pair a head with other front-end weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from training.checkpoint.store import CheckpointError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HASH_KEY = "weights_sha256"


class SSLFolderError(CheckpointError):
    """--ssl_path does not hold a usable front-end (a usage error: one line, exit 2)."""


def check_ssl_folder(path: str | Path) -> Path:
    """The folder, if it holds a config and weights; else one line saying what is missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SSLFolderError(f"--ssl_path {path}: not a folder (expected a Hugging Face wav2vec2 / XLS-R folder)")
    if not (folder / "config.json").is_file():
        raise SSLFolderError(f"--ssl_path {path}: no config.json (expected a Hugging Face wav2vec2 / XLS-R folder)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise SSLFolderError(f"--ssl_path {path}: no weights ({' or '.join(WEIGHT_FILES[::2])})")
    return folder


def weight_files(folder: Path) -> list[Path]:
    """The files ``from_pretrained`` reads weights from, shards included, in a fixed order."""
    files = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    shards = sorted(p for pattern in ("model-*.safetensors", "pytorch_model-*.bin") for p in folder.glob(pattern))
    return files + shards


def folder_sha256(folder: Path) -> str:
    """One SHA-256 over config.json and every weight file (names and contents)."""
    digest = hashlib.sha256()
    for file in [folder / "config.json", *weight_files(folder)]:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _layer_output(output: object) -> Tensor:
    # Encoder layers return a tensor (transformers 5) or a tuple whose first item it is (4.x).
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index]


class SSLFrontend(nn.Module):
    """``[B, T]`` raw waveform -> ``[B, L, T', D]``: each transformer layer's output."""

    def __init__(self, path: str | Path, freeze: bool = False) -> None:
        super().__init__()
        folder = check_ssl_folder(path)
        self.model = load_wav2vec2(folder)
        config = self.model.config
        self.num_layers, self.out_dim = int(config.num_hidden_layers), int(config.hidden_size)
        self.frozen = bool(freeze)
        self._captured: list[Tensor] = []
        for layer in self.model.encoder.layers:
            layer.register_forward_hook(self._capture)
        if self.frozen:
            self.model.requires_grad_(False)
            digest = bytes.fromhex(folder_sha256(folder))
            self.register_buffer(HASH_KEY, torch.tensor(list(digest), dtype=torch.uint8))
            self._register_state_dict_hook(_drop_frozen_weights)
            self._register_load_state_dict_pre_hook(self._check_hash, with_module=False)
            self.register_load_state_dict_post_hook(_forgive_missing_frozen_weights)
            self.model.eval()

    def _capture(self, module: nn.Module, args: object, output: object) -> None:
        self._captured.append(_layer_output(output))

    def train(self, mode: bool = True) -> "SSLFrontend":
        super().train(mode)
        if self.frozen:  # a frozen front-end computes the same features in training and evaluation
            self.model.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        self._captured = []
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                self.model(x, output_hidden_states=False, return_dict=True)
            if len(self._captured) != self.num_layers:
                raise RuntimeError(f"front-end ran {len(self._captured)} of its {self.num_layers} layers")
            return torch.stack(self._captured, dim=1)
        finally:
            self._captured = []

    def _check_hash(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
        stored = state_dict.get(prefix + HASH_KEY)
        if stored is None:
            return  # reported as a missing key by load_state_dict
        mine = getattr(self, HASH_KEY)
        if stored.shape != mine.shape or not torch.equal(stored.cpu(), mine.cpu()):
            raise CheckpointError(
                "the frozen front-end's weights differ from the ones this checkpoint was trained with "
                f"(--ssl_path content sha256 {bytes(mine.tolist()).hex()[:16]}..., checkpoint "
                f"{bytes(stored.tolist()).hex()[:16]}...)")


def _drop_frozen_weights(module: SSLFrontend, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "model.")]:
        del state_dict[key]


def _forgive_missing_frozen_weights(module: SSLFrontend, incompatible_keys) -> None:
    # Checkpoints of a frozen front-end carry its hash, not its weights (those come from the folder).
    own = {"model." + k for k in module.model.state_dict()}
    incompatible_keys.missing_keys[:] = [
        k for k in incompatible_keys.missing_keys
        if not any(k == name or k.endswith("." + name) for name in own)]


def load_wav2vec2(folder: Path) -> nn.Module:
    """``Wav2Vec2Model`` from a local folder, float32, LayerDrop and time masking off, every
    weight present (a base-model or a pre-training checkpoint; extra heads are ignored)."""
    from transformers import Wav2Vec2Model

    config = load_config(folder)
    try:
        model, info = Wav2Vec2Model.from_pretrained(str(folder), config=config, local_files_only=True,
                                                     output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or refused file: one line, no traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SSLFolderError(f"--ssl_path {folder}: cannot load the weights ({first})") from None
    missing = [k for k in info.get("missing_keys", []) if k != "masked_spec_embed"]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        example = (missing or [str(m[0]) if isinstance(m, tuple) else str(m) for m in mismatched])[0]
        raise SSLFolderError(f"--ssl_path {folder}: {len(missing) + len(mismatched)} front-end weights missing "
                             f"or of the wrong shape (e.g. {example})")
    return model.float()


def load_config(folder: Path) -> object:
    """The folder's ``Wav2Vec2Config`` as this front-end runs it: LayerDrop and time masking off."""
    try:
        from transformers import Wav2Vec2Config
    except ImportError as exc:  # pragma: no cover - declared in requirements.txt
        raise SSLFolderError(f"--ssl_path needs the transformers package ({exc})") from None
    try:
        config = Wav2Vec2Config.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise SSLFolderError(f"--ssl_path {folder}: config.json is not a wav2vec2 config ({exc})") from None
    config.layerdrop = 0.0
    config.apply_spec_augment = False
    return config


def weightless_wav2vec2(path: str | Path) -> nn.Module:
    """The folder's ``Wav2Vec2Model`` on the meta device: its parameter shapes from config.json
    alone, nothing read or allocated (what the disk estimate of ``--ssl_path`` runs counts)."""
    from transformers import Wav2Vec2Model

    config = load_config(check_ssl_folder(path))
    with torch.device("meta"):
        return Wav2Vec2Model(config)
