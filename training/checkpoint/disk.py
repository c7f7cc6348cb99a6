"""The disk a run will need, known before it starts, and the refusal when it cannot fit.

A checkpoint holds the stored weights plus Adam's two moments of every trained parameter, all
float32: about ``parameters x 4 bytes x 3`` (a 300M XLS-R model: about 3.6 GB). A frozen front-end
(``--freeze_ssl``) is neither stored (only its hash) nor trained, so it adds nothing. The size is
computed from the model built on the meta device: no weights are read or allocated, a few
milliseconds even for XLS-R. Per tensor the zip archive adds a header and alignment, and every
checkpoint carries the RNG states, the args and the history: ``TENSOR_OVERHEAD`` and
``FIXED_OVERHEAD`` (measured on real checkpoints; a test holds the estimate within a few %).

How many checkpoints a run keeps at once (``checkpoints_kept``): every epoch it trains, or with
``--keep_last K`` the K newest plus the best (kept although older) plus one more, the one being
written before pruning (or the interrupt checkpoint a stop writes), never more than the epochs
it trains. The best file is a hard link: no space of its own. A run that needs more than the free
space of the models root's file system is refused before anything is created (a ``UsageError``:
exit 2; the choice of root, epochs and ``--keep_last`` is the user's). Each save still checks the
free space again (``training.checkpoint.store.ensure_free_space``): other processes share the disk.

Shared by the CLI and the Launch form (``training.launch_form.plan_launch``); torch is imported
only when an estimate is made.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import UsageError
from training.naming import experiment_dir

BYTES_PER_VALUE = 4        # float32 weights and moments
ADAM_MOMENTS = 2           # exp_avg, exp_avg_sq (plus a scalar step per parameter)
TENSOR_OVERHEAD = 300      # zip entry headers (~190 B with the 64-byte alignment) + pickle (~110 B) per tensor
FIXED_OVERHEAD = 16 * 1024  # RNG states (~10 KB), args, history, lineage


@dataclass(frozen=True)
class CheckpointSize:
    """One checkpoint's estimated size, and the frozen front-end it leaves out (0: none)."""

    checkpoint_bytes: int
    frozen_frontend_bytes: int = 0


@dataclass(frozen=True)
class DiskPlan:
    """The disk a run needs: ``checkpoints`` files of ``size`` each, against ``free_bytes`` in ``where``."""

    size: CheckpointSize
    checkpoints: int
    free_bytes: int
    where: Path

    @property
    def needed_bytes(self) -> int:
        return self.size.checkpoint_bytes * self.checkpoints

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.free_bytes

    def statement(self) -> str:
        frozen = (f" (the frozen front-end, {human_bytes(self.size.frozen_frontend_bytes)}, is stored once in "
                  "--ssl_path, not per checkpoint)" if self.size.frozen_frontend_bytes else "")
        return (f"Disk: this run keeps up to {self.checkpoints} checkpoint(s) of about "
                f"{human_bytes(self.size.checkpoint_bytes)}: {human_bytes(self.needed_bytes)} needed, "
                f"{human_bytes(self.free_bytes)} free in {self.where}{frozen}")

    def refusal(self) -> str:
        return (f"not enough disk space for this run in {self.where}: {self.checkpoints} checkpoint(s) of about "
                f"{human_bytes(self.size.checkpoint_bytes)} need {human_bytes(self.needed_bytes)}, "
                f"{human_bytes(self.free_bytes)} free; free space there, choose another --models_root, "
                "or keep fewer checkpoints with --keep_last")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def checkpoints_kept(epochs_to_train: int, keep_last: int | None) -> int:
    """The most checkpoint files of this run on disk at once (see the module docstring)."""
    epochs = max(int(epochs_to_train), 0)
    if not keep_last:
        return epochs
    return min(epochs, int(keep_last) + 2)


def _bytes_and_count(tensors: Any) -> tuple[int, int]:
    values = list(tensors)
    return sum(t.numel() * t.element_size() for t in values), len(values)


def estimate_checkpoint_size(args: Mapping[str, Any]) -> CheckpointSize:
    """One full checkpoint of the model these args build (weights + Adam), without training."""
    import torch

    from training.models import build_model, with_head_version

    args = dict(args) if "head_version" in args else with_head_version(args, None)
    ssl_path = args.get("ssl_path") if args.get("model_type", "g3_heatmap") == "g3_heatmap" else None
    frontend, frozen = None, bool(args.get("freeze_ssl"))
    if ssl_path:
        from training.models.ssl_frontend import weightless_wav2vec2

        frontend = weightless_wav2vec2(ssl_path)
        # The head as it sits on that front-end: the built-in one of the same depth and width
        # stands in for it and is left out below.
        args = {**args, "ssl_path": None, "freeze_ssl": False,
                "num_layers": int(frontend.config.num_hidden_layers), "dim": int(frontend.config.hidden_size)}
    with torch.device("meta"):
        model = build_model(args)
    skip = "frontend." if frontend is not None else None
    stored = [t for k, t in model.state_dict().items() if skip is None or not k.startswith(skip)]
    trained = [p for k, p in model.named_parameters() if p.requires_grad and (skip is None or not k.startswith(skip))]
    frozen_bytes = 0
    if frontend is not None:
        ssl_bytes, ssl_count = _bytes_and_count(frontend.state_dict().values())
        if frozen:
            frozen_bytes = ssl_bytes + ssl_count * TENSOR_OVERHEAD
            stored.append(torch.empty(32, dtype=torch.uint8, device="meta"))  # the content hash
        else:
            stored += list(frontend.state_dict().values())
            trained += [p for p in frontend.parameters() if p.requires_grad]
    stored_bytes, stored_count = _bytes_and_count(stored)
    trained_bytes, trained_count = _bytes_and_count(trained)
    total = (stored_bytes + ADAM_MOMENTS * trained_bytes + FIXED_OVERHEAD
             + TENSOR_OVERHEAD * (stored_count + (ADAM_MOMENTS + 1) * trained_count))
    return CheckpointSize(int(total), int(frozen_bytes))


def _free_space(folder: Path) -> tuple[Path, int]:
    """The nearest existing folder at or above ``folder`` and its file system's free bytes."""
    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path, shutil.disk_usage(path).free


def plan_disk(args: Mapping[str, Any], start_epoch: int = 0) -> DiskPlan:
    """The disk a run of these (effective) args needs from ``start_epoch`` (completed) on."""
    kept = checkpoints_kept(int(args["num_epochs"]) - int(start_epoch), args.get("keep_last"))
    where, free = _free_space(experiment_dir(args))
    return DiskPlan(estimate_checkpoint_size(args), kept, free, where)


def check_disk_space(args: Mapping[str, Any], start_epoch: int = 0, echo: Any = print) -> DiskPlan:
    """State the disk the run needs (``echo``); ``UsageError`` (one line) when it cannot fit."""
    plan = plan_disk(args, start_epoch)
    if not plan.fits:
        raise UsageError(plan.refusal())
    echo(plan.statement())
    return plan
