"""What an exact resume needs besides the model and the optimizer: every RNG's state, the data
order of an epoch, and the running sums of a half-done epoch.

Training N epochs straight, or k epochs, being killed, and resuming to N, gives bit-identical
weights and metrics on the CPU. The order of epoch ``e`` is a permutation drawn from a generator
seeded with (seed, e) (:func:`epoch_batches`), so it needs no state beyond the position inside
the epoch, which a mid-epoch checkpoint stores together with the epoch's :class:`EpochSums`.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from training.labels import BONAFIDE, SPOOF
from training.metrics import compute_eer

# --- RNG state ---------------------------------------------------------------------------------

def capture_rng_state() -> dict[str, Any]:
    """Every RNG the loop can touch, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The shuffled batches of ``epoch``: a pure function of (seed, epoch), so resume needs no sampler state."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers share the trainer's process group, so a Stop's SIGTERM reaches them
    too; only the trainer acts on it (it saves, then shuts the workers down itself)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # Slurm's time-limit warning (see trainer.EXIT_SIGNAL)


def collate(batch: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    waves, labels, _ = zip(*batch)
    return torch.stack(waves), torch.tensor(labels, dtype=torch.long)


# --- per-epoch sums ------------------------------------------------------------------------------

@dataclass
class EpochSums:
    """Running sums of one pass; kept as tensors on the device (no per-step host sync)."""

    loss_sum: torch.Tensor | None = None
    count: int = 0
    scores: list[torch.Tensor] = field(default_factory=list)  # bonafide log-probabilities
    labels: list[torch.Tensor] = field(default_factory=list)
    correct: int = 0

    def add(self, loss: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.add_scores(loss.detach().float(), log_probs[:, BONAFIDE].detach().float(), labels.detach())

    def add_scores(self, loss: torch.Tensor, bonafide_scores: torch.Tensor, labels: torch.Tensor) -> None:
        """One batch's mean loss, bona-fide scores and labels (``training.shards`` replays
        other ranks' batches through this, in the order one process adds them)."""
        n = labels.shape[0]
        weighted = loss * n
        self.loss_sum = weighted if self.loss_sum is None else self.loss_sum + weighted
        self.count += n
        self.scores.append(bonafide_scores)
        self.labels.append(labels)

    def state(self) -> dict[str, Any]:
        """What a mid-epoch checkpoint stores to continue these sums exactly."""
        return {"loss_sum": None if self.loss_sum is None else self.loss_sum.cpu(), "count": self.count,
                "scores": torch.cat(self.scores).cpu() if self.scores else torch.zeros(0),
                "labels": torch.cat(self.labels).cpu() if self.labels else torch.zeros(0, dtype=torch.long)}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> "EpochSums":
        sums = cls(count=int(state["count"]))
        if state["loss_sum"] is not None:
            sums.loss_sum = state["loss_sum"].to(device)
        if state["scores"].numel():
            sums.scores = [state["scores"].to(device)]
            sums.labels = [state["labels"].to(device)]
        return sums

    def summary(self) -> dict[str, float]:
        scores = torch.cat(self.scores).cpu().numpy()
        labels = torch.cat(self.labels).cpu().numpy()
        out = {"loss": float(self.loss_sum.item()) / max(self.count, 1)}
        bona, spoof = scores[labels == BONAFIDE], scores[labels == SPOOF]
        out["eer"] = 100.0 * compute_eer(bona, spoof)[0] if len(bona) and len(spoof) else float("nan")
        # Accuracy: argmax of the two log-probabilities is "bonafide score > spoof score";
        # with log-softmax that is log p(bonafide) > log(0.5).
        out["acc"] = 100.0 * float(((scores > np.log(0.5)) == (labels == BONAFIDE)).mean())
        return out
