"""From training arguments to the ``(train, val)`` data sets a run uses (``build_datasets``), and
the RawBoost augmenter attached to them.

Training clips can be augmented with RawBoost (``--algo``, ``training/rawboost.py``): the train
set of ``build_datasets`` carries a ``ClipAugmenter`` unless ``--algo 0``; the validation set only
with ``--augment_dev`` (the original's behaviour, off by default: it changes which epoch is "best").
Clip ``i`` of epoch ``e`` is augmented with a generator seeded by ``(seed, e, i)``, inside
``__getitem__`` (so in the data-loader workers); the trainer calls ``set_epoch(e)`` before each
epoch's loader starts. ASVspoof files are augmented before cutting, as the original recipe does.

Folder layouts: ``training.data.asvspoof``; the synthetic set: ``training.data.synthetic``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from training.data.asvspoof import ASVspoofDataset, read_protocol
from training.data.common import DataError
from training.data.synthetic import SyntheticSpoofDataset

_CACHE_BUDGET_BYTES = 256 * 2**20  # synthetic clips are cached in memory when they fit in this
_LA_PROTOCOL_DIR = "ASVspoof2019_LA_cm_protocols"
_LA_TRAIN_PROTOCOL = "ASVspoof2019.LA.cm.train.trn.txt"
_LA_DEV_PROTOCOL = "ASVspoof2019.LA.cm.dev.trl.txt"
ITW_VAL_FRACTION = 0.1


def build_datasets(args: Mapping[str, Any] | Any) -> tuple[Dataset, Dataset]:
    """``(train, val)`` datasets for the training arguments (a dict of ``training.config`` options).

    Missing keys take their ``training.config`` defaults. See the module docstring for the
    folder layout expected with ``dataset='asvspoof'``.
    """
    from training.config import DEFAULTS

    given = args if isinstance(args, Mapping) else vars(args)  # a dict or an argparse namespace
    a = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    train, val = _datasets(a)
    _attach_augmenter(train, a, "train")
    if a.get("augment_dev"):
        _attach_augmenter(val, a, "val")
    return train, val


def _attach_augmenter(dataset: Dataset, a: Mapping[str, Any], split: str) -> None:
    """RawBoost (``--algo``) for a data set, seeded by ``seed``; ``--algo 0`` attaches nothing.
    The validation set gets one only with ``--augment_dev`` (what the original script did)."""
    from training.data.rawboost import ClipAugmenter, RawBoostConfig

    try:
        cfg = RawBoostConfig.from_args(a)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if cfg.algo != 0:
        dataset.augmenter = ClipAugmenter(cfg, int(a["seed"]), split=split)


def _datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    if a["dataset"] == "synthetic":
        return _synthetic_datasets(a)
    if a["dataset"] == "asvspoof":
        if not a.get("database_path"):
            raise DataError(
                "--dataset asvspoof needs --database_path (the folder that holds the ASVspoof audio folders)"
            )
        if a["track"] == "In-the-Wild":
            return _in_the_wild_datasets(a)
        if not a.get("protocols_path"):
            raise DataError(f"--dataset asvspoof needs --protocols_path (the folder that holds {_LA_TRAIN_PROTOCOL})")
        return _asvspoof2019_la_datasets(a)
    raise DataError(f"unknown dataset '{a['dataset']}': expected 'synthetic' or 'asvspoof'")


def _synthetic_datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    train_size, val_size, clip = int(a["train_size"]), int(a["val_size"]), int(a["clip_samples"])
    cache = (train_size + val_size) * clip * 4 <= _CACHE_BUDGET_BYTES
    return (
        SyntheticSpoofDataset(train_size, clip, int(a["seed"]), "train", cache=cache),
        SyntheticSpoofDataset(val_size, clip, int(a["seed"]), "val", cache=cache),
    )


def _first_existing(candidates: Sequence[Path], what: str, flag: str) -> Path:
    for c in candidates:
        if c.exists():
            return c
    tried = " or ".join(str(c) for c in candidates)
    raise DataError(f"{what} not found: expected {tried} (check {flag})")


def _asvspoof2019_la_datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    """LA and DF tracks: train on ASVspoof 2019 LA train, validate on 2019 LA dev (the 2021 baselines' recipe)."""
    db, proto = Path(a["database_path"]), Path(a["protocols_path"])
    out = []
    for part, protocol in (("train", _LA_TRAIN_PROTOCOL), ("dev", _LA_DEV_PROTOCOL)):
        folder = db / f"ASVspoof2019_LA_{part}"
        audio_dir = _first_existing([folder / "flac", folder], f"ASVspoof 2019 LA {part} audio", "--database_path")
        protocol_file = _first_existing(
            [proto / protocol, proto / _LA_PROTOCOL_DIR / protocol],
            f"ASVspoof 2019 LA {part} protocol",
            "--protocols_path",
        )
        out.append(ASVspoofDataset(read_protocol(protocol_file), audio_dir))
    return out[0], out[1]


def _in_the_wild_datasets(a: Mapping[str, Any]) -> tuple[Dataset, Dataset]:
    """In-the-Wild: one ``meta.csv``, split 90 / 10 into train / val by a permutation seeded with ``seed``."""
    db = Path(a["database_path"])
    audio_dir = db / "release_in_the_wild" if (db / "release_in_the_wild").is_dir() else db
    proto = Path(a["protocols_path"]) if a.get("protocols_path") else audio_dir
    meta = proto / "meta.csv" if proto.is_dir() else proto
    entries = read_protocol(meta)
    if len(entries) < 2:
        raise DataError(f"{meta}: In-the-Wild needs at least 2 entries to split into train and val, got {len(entries)}")
    order = np.random.default_rng(int(a["seed"])).permutation(len(entries))
    n_val = max(1, int(round(ITW_VAL_FRACTION * len(entries))))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])  # keep file order inside each part
    return (
        ASVspoofDataset([entries[i] for i in train_idx], audio_dir),
        ASVspoofDataset([entries[i] for i in val_idx], audio_dir),
    )
