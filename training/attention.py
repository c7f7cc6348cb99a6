"""Attention heatmaps of g3_heatmap (``--visualize_attention``): which epochs, which utterances,
and the files: ``attention/<name>/attention.npz`` plus one PNG per utterance.

``<name>`` is ``epoch_N`` for a training run (after every ``--viz_frequency``-th epoch and the
last; 0: only the last) and the checkpoint's stem for ``--visualize_attention --model_path CKPT``.
The npz holds, for S utterances, L layers, T frames, G groups:

    temporal [S, L, T]   each layer's attention over time (rows sum to 1)
    intra    [S, G, group_size]  attention over the layers of each group (the missing slots of a
                         smaller last group hold 0; the real ones sum to 1)
    inter    [S, G]      attention over the groups (sums to 1)
    label    [S]         1 = bona fide, 0 = spoof
    score    [S]         log p(bona fide); the prediction is bona fide when score > log 0.5
    utt_id   [S]         the utterances' ids (strings)

Each PNG (``{i:03d}_{utt_id}_true-{bonafide|spoof}_pred-{bonafide|spoof}.png``) shows the layer x
time heatmap, each layer's weight in the utterance vector (intra x inter) and the group weights.

The utterances are fixed for a run: chosen from the validation set by a generator of its own
seeded with ``--seed`` (half bona fide, half spoof where the set allows), so every rendered epoch
shows the same ones. Rendering never touches the training RNG streams (no global generator is
drawn from: the model runs in eval mode under ``torch.no_grad``, and its train mode is restored),
so a run with ``--visualize_attention`` trains bit-identically to one without.

Writing is atomic per folder: everything goes into a hidden temporary folder that is renamed into
place last, so a reader sees a complete ``epoch_N`` or none. The trainer renders an epoch before
saving its checkpoint: a run killed in between retrains that epoch on resume and renders it again,
so a resumed run ends with the same folders as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.checkpoint.fsutil import atomic_write, fsync_dir
from training.labels import LABEL_NAMES
from training.naming import ATTENTION_DIRNAME, ATTENTION_NPZ_NAME

ATTENTION_DIR = ATTENTION_DIRNAME
NPZ_NAME = ATTENTION_NPZ_NAME
ARRAY_KEYS = ("temporal", "intra", "inter", "label", "score", "utt_id")
BONAFIDE_THRESHOLD = math.log(0.5)
_SAMPLE_STREAM = 0xA77E  # a stream of its own: choosing the utterances draws from no global RNG
_MAX_UTT_CHARS = 80


# --- which epochs, which utterances ----------------------------------------------------------------

def is_render_epoch(epoch: int, last_epoch: int, frequency: int) -> bool:
    """Epoch ``epoch`` (1-based, completed) is rendered: every ``frequency``-th and the last."""
    return epoch == last_epoch or (frequency > 0 and epoch % frequency == 0)


def render_epochs(first: int, last_epoch: int, frequency: int) -> list[int]:
    """The epochs from ``first`` to ``last_epoch`` a run renders (what the README promises)."""
    return [e for e in range(first, last_epoch + 1) if is_render_epoch(e, last_epoch, frequency)]


def choose_utterances(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """``count`` indices into a data set with these labels: half bona fide, half spoof (an odd
    count or a short class gives the rest to the other class), drawn by a generator seeded with
    ``seed`` alone, in data-set order."""
    labels = np.asarray(labels)
    bona, spoof = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    count = min(int(count), len(labels))
    n_spoof = min(len(spoof), count // 2)
    n_bona = min(len(bona), count - n_spoof)
    n_spoof = min(len(spoof), count - n_bona)
    rng = np.random.default_rng([int(seed), _SAMPLE_STREAM])
    chosen = np.concatenate([rng.choice(bona, n_bona, replace=False), rng.choice(spoof, n_spoof, replace=False)])
    return sorted(int(i) for i in chosen)


# --- running the model -------------------------------------------------------------------------------

def collect_attention(model: nn.Module, dataset: Any, indices: Sequence[int], device: torch.device,
                      batch_size: int) -> dict[str, np.ndarray]:
    """The arrays of the npz for these utterances. Eval mode, no gradients, no RNG drawn; the
    model's train mode is put back."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ARRAY_KEYS}
    try:
        with torch.no_grad():
            for start in range(0, len(indices), max(1, batch_size)):
                items = [dataset[i] for i in indices[start:start + batch_size]]
                x = torch.stack([wave for wave, _, _ in items]).to(device)
                out = model(x, return_attention=True)
                if not out.attention:
                    raise ValueError(f"{type(model).__name__} returns no attention maps")
                for key in ("temporal", "intra", "inter"):
                    parts[key].append(out.attention[key].float().cpu().numpy())
                parts["score"].append(out.score.float().cpu().numpy())
                parts["label"].append(np.array([label for _, label, _ in items], dtype=np.int64))
                parts["utt_id"].append(np.array([utt for _, _, utt in items], dtype=str))
    finally:
        model.train(was_training)
    return {key: np.concatenate(chunks) for key, chunks in parts.items()}


# --- files ----------------------------------------------------------------------------------------

def predicted_label(score: float) -> int:
    """1 (bona fide) when log p(bona fide) > log 0.5, the argmax of the two classes."""
    return 1 if float(score) > BONAFIDE_THRESHOLD else 0


def png_name(index: int, utt_id: str, label: int, score: float) -> str:
    """``007_LA_E_1234_true-bonafide_pred-spoof.png``: the true label and the prediction."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(utt_id))[:_MAX_UTT_CHARS] or "utt"
    return f"{index:03d}_{safe}_true-{LABEL_NAMES[int(label)]}_pred-{LABEL_NAMES[predicted_label(score)]}.png"


def render_png(path: Path, arrays: dict[str, np.ndarray], i: int) -> None:
    """One utterance: layer x time heatmap, layer importance (intra x inter), group bars."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, Agg canvas

    temporal, intra, inter = arrays["temporal"][i], arrays["intra"][i], arrays["inter"][i]
    layers = temporal.shape[0]
    layer_weight = (intra * inter[:, None]).reshape(-1)[:layers]
    fig = Figure(figsize=(10, 6), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(3, 1))
    heat = fig.add_subplot(grid[0, 0])
    image = heat.imshow(temporal, aspect="auto", origin="lower", interpolation="nearest",
                        extent=(-0.5, temporal.shape[1] - 0.5, 0.5, layers + 0.5))
    heat.set(xlabel="frame", ylabel="layer", title="temporal attention per layer")
    fig.colorbar(image, ax=heat)
    side = fig.add_subplot(grid[0, 1], sharey=heat)
    side.barh(np.arange(1, layers + 1), layer_weight)
    side.set(xlabel="weight", title="layer importance")
    groups = fig.add_subplot(grid[1, :])
    groups.bar(np.arange(1, len(inter) + 1), inter)
    groups.set_xticks(np.arange(1, len(inter) + 1))
    groups.set(xlabel="group", ylabel="weight", title="inter-group attention")
    label, score = int(arrays["label"][i]), float(arrays["score"][i])
    fig.suptitle(f"{arrays['utt_id'][i]}: true {LABEL_NAMES[label]}, predicted "
                 f"{LABEL_NAMES[predicted_label(score)]} (log p(bona fide) {score:.3f})")
    fig.savefig(path, format="png", dpi=80)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **{key: arrays[key] for key in ARRAY_KEYS}))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(root: Path, name: str) -> None:
    """Temporary folders of an earlier render of ``name`` killed half-way (not a live one's)."""
    for path in root.glob(f".{name}.*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


def write_attention(root: Path, name: str, arrays: dict[str, np.ndarray]) -> Path:
    """``root/name/`` with the npz and the PNGs, replacing an earlier one in one rename."""
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root, name)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    tmp.mkdir()
    for i in range(len(arrays["label"])):
        render_png(tmp / png_name(i, arrays["utt_id"][i], arrays["label"][i], arrays["score"][i]), arrays, i)
    _save_npz(tmp / NPZ_NAME, arrays)
    fsync_dir(tmp)
    final, old = root / name, root / f".{name}.old-{os.getpid()}"
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load_attention(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of ``folder/attention.npz`` (no pickles)."""
    with np.load(folder / NPZ_NAME, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# --- one checkpoint (--visualize_attention --model_path) ---------------------------------------------

def render_checkpoint(args: dict[str, Any], loaded: Any) -> Path:
    """``attention/<stem>/`` next to the checkpoint ``loaded`` (a ``training.checkpoint.store``
    LoadedCheckpoint) for the model and data ``args`` describe. Raises CheckpointError when the
    weights do not fit that model, DataError for an unusable data set."""
    from training.data import build_datasets
    from training.models import build_model, check_model_args, with_head_version
    from training.checkpoint.store import CheckpointError

    check_model_args(args)
    stored = (loaded.full or {}).get("args")
    args = with_head_version(args, stored if isinstance(stored, dict) else None, loaded.model_state)
    wanted = args.get("device", "auto")
    device = torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")
    model = build_model(args).to(device)
    result = model.load_state_dict(loaded.model_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys or result.unexpected_keys)[0]
        raise CheckpointError(f"{loaded.path}: does not fit model {args['model_type']} with these arguments "
                              f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected "
                              f"weights, e.g. {example})")
    _, val_set = build_datasets(args)
    if loaded.full is not None:
        val_set.set_epoch(int(loaded.full.get("epoch") or 0))  # --augment_dev: that epoch's draw
    indices = choose_utterances(val_set.labels, int(args["viz_samples"]), int(args["seed"]))
    arrays = collect_attention(model, val_set, indices, device, int(args["batch_size"]))
    return write_attention(loaded.path.parent / ATTENTION_DIR, loaded.path.stem, arrays)
