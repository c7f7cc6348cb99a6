"""Real checkpoint files for the reader's tests, written with torch.save like the trainer and the
original research script wrote them (tiny models: the point is the format, not the size)."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 3), torch.nn.BatchNorm1d(4), torch.nn.Flatten(), torch.nn.Linear(8, 2)
    )


def _optimizer_state(model: torch.nn.Module) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 4)).sum().backward()
    opt.step()
    return opt.state_dict()


ARGS = {
    "model_type": "g3_heatmap", "track": "DF", "loss": "CCE", "num_epochs": 100, "batch_size": 16,
    "lr": 1e-06, "group_size": 3, "use_contrastive": False, "comment": "my_experiment",
    "nested": {"betas": [0.9, 0.999], "layers": {"enc": 4}},
}


def full_checkpoint(epoch: int = 10, *, val_eer: float = 0.16, val_acc: float = 99.84,
                    best_val_eer: float | None = None, numpy_metrics: bool = True,
                    **extra: Any) -> dict:
    """A guide-shaped full checkpoint with everything a real one carries."""
    model = tiny_model()
    num = np.float64 if numpy_metrics else float
    ck = {
        "epoch": epoch,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": _optimizer_state(model),
        "train_loss": 0.154158,
        "train_eer": num(7.29),  # numpy scalars: what sklearn/numpy EER code returns
        "val_loss": 0.005543,
        "val_acc": num(val_acc),
        "val_eer": num(val_eer),
        "best_val_eer": best_val_eer if best_val_eer is not None else val_eer,
        "best_epoch": epoch,
        "args": dict(ARGS),
        "history": [{"epoch": e, "train_loss": 1.0 / e, "val_eer": num(10.0 / e)}
                    for e in range(1, epoch + 1)],
        "lineage": {"run_id": "r1", "resumed_from": None},
        "rng_state": {
            "python": random.getstate(),  # (3, tuple of 625 ints, None)
            "torch": torch.get_rng_state(),  # a ByteTensor
        },
    }
    ck.update(extra)
    return ck


def save(obj: Any, path: Path, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


class Evil:
    """Whoever unpickles this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class EvalEvil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def hostile_torch_file(path: Path, marker: Path, evil_cls: type = Evil) -> Path:
    """A checkpoint-shaped zip written by torch.save whose pickle calls os.system."""
    torch.save({"epoch": 1, "model_state_dict": tiny_model().state_dict(),
                "args": evil_cls(marker)}, path)
    return path


def hostile_plain_pickle(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"epoch": 1, "payload": Evil(marker)}, f)
    return path


def rezip_with_pickle(src: Path, dst: Path, new_pickle: bytes) -> Path:
    """Copy a torch zip, replacing data.pkl (with a valid CRC): feeds arbitrary pickles through
    the real file path of the reader."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = new_pickle if info.filename.endswith("/data.pkl") else zin.read(info)
            zout.writestr(info.filename, data)
    return dst


def data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def namespace_args() -> argparse.Namespace:
    return argparse.Namespace(**ARGS)


def pickle_bytes(obj: Any, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=protocol)
    return buf.getvalue()


def mutated(pkl: bytes, rng: random.Random, i: int) -> bytes:
    """The i-th fuzzed copy of a pickle: cut short every fifth time, else 1 to 8 bytes changed."""
    data = bytearray(pkl)
    if i % 5 == 4:
        return bytes(data[: rng.randrange(len(data))])
    for _ in range(rng.choice([1, 1, 2, 8])):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)
