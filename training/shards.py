"""What each rank of a torchrun run reads, and how the ranks' results become one run's (issue 15).

**Training data.** The global batches of an epoch are ``resume_state.epoch_batches`` (seed,
epoch), whatever the world size; rank ``r`` of ``W`` trains on ``batch[r::W]`` of every global
batch. So a step consumes the same ``--batch_size`` clips in 1 or N processes, a checkpoint's
``step_in_epoch`` means the same position in either, and DDP's gradient average equals the
1-process gradient when the shares are equal (``--batch_size`` a multiple of the world size).
What does change with the world size: batch-norm statistics and in-batch pairs (contrastive loss)
see a rank's share, not the global batch; shares that differ by one clip weigh their clips
slightly differently in the average; a global batch with fewer clips than ranks (an epoch's last)
is padded by repeating its clips, as torch's DistributedSampler pads.

**Validation** runs on the plain model, global batch ``i`` on rank ``i % W``; the per-batch
losses and scores are gathered and replayed in batch order, so the EER (and the loss, to the
last bit) are those a single process computes with the same weights.

**Exact resume** needs each rank's own running sums and RNG states: a checkpoint written by W
ranks keeps them per rank (``per_rank`` in ``partial``, ``rng_states_by_rank``) beside the merged
sums and rank 0's RNG state, which a resume with another world size uses.
"""

from __future__ import annotations

from typing import Any

import torch

from training import distributed
from training.resume_state import EpochSums, capture_rng_state, restore_rng_state


# --- who reads what ---------------------------------------------------------------------------------

def rank_share(batch: list[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s clips of one global batch (never empty: a short batch is padded)."""
    share = batch[rank::world]
    return share if share else [batch[rank % len(batch)]]


def train_batches(batches: list[list[int]]) -> list[list[int]]:
    """This rank's share of every global batch (the batches themselves in a world of one)."""
    world = distributed.world_size()
    if world == 1:
        return batches
    rank = distributed.rank()
    return [rank_share(batch, rank, world) for batch in batches]


def validation_batches(batches: list[list[int]]) -> list[list[int]]:
    """The global validation batches this rank scores: ``i % W == rank``."""
    return batches[distributed.rank()::distributed.world_size()]


# --- results of all ranks ---------------------------------------------------------------------------

def merged_validation(records: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], count: int) -> EpochSums:
    """One EpochSums from every rank's per-batch (loss, bona-fide scores, labels), added in global
    batch order exactly as one process adds them. ``count``: the number of global batches."""
    world = distributed.world_size()
    local = [(loss.cpu(), scores.cpu(), labels.cpu()) for loss, scores, labels in records]
    by_rank = distributed.all_gather_object(local)
    sums = EpochSums()
    for i in range(count):
        loss, scores, labels = by_rank[i % world][i // world]
        sums.add_scores(loss, scores, labels)
    return sums


def merged_sums(local: EpochSums) -> EpochSums:
    """The epoch's training sums over every rank (rank order); ``local`` itself in a world of one."""
    if distributed.world_size() == 1:
        return local
    return _merge_states(distributed.all_gather_object(local.state()))


def _merge_states(states: list[dict[str, Any]]) -> EpochSums:
    losses = [s["loss_sum"] for s in states if s["loss_sum"] is not None]
    merged = {"loss_sum": torch.stack(losses).sum() if losses else None,
              "count": sum(int(s["count"]) for s in states),
              "scores": torch.cat([s["scores"] for s in states]),
              "labels": torch.cat([s["labels"] for s in states])}
    return EpochSums.from_state(merged, torch.device("cpu"))


def partial_state(local: EpochSums) -> dict[str, Any]:
    """What a mid-epoch checkpoint stores: the merged sums (any world size resumes from them)
    and, from W > 1 ranks, each rank's own (a resume with W ranks continues them exactly)."""
    if distributed.world_size() == 1:
        return local.state()
    states = distributed.all_gather_object(local.state())
    return {**_merge_states(states).state(), "per_rank": states}


def resume_sums(partial: dict[str, Any] | None, written_by: int) -> dict[str, Any] | None:
    """This rank's share of a checkpoint's ``partial`` sums: its own when the world size is the
    one that wrote it, else the merged sums on rank 0 and none on the others."""
    if partial is None:
        return None
    world = distributed.world_size()
    if written_by == world and world > 1 and partial.get("per_rank"):
        return partial["per_rank"][distributed.rank()]
    if distributed.rank() == 0:
        return {k: v for k, v in partial.items() if k != "per_rank"}
    return {"loss_sum": None, "count": 0, "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}


# --- RNG states ---------------------------------------------------------------------------------------

def rng_states() -> dict[str, Any]:
    """Checkpoint keys: rank 0's RNG state (``rng_state``, what any world size restores) and,
    from W > 1 ranks, every rank's (``rng_states_by_rank``)."""
    if distributed.world_size() == 1:
        return {"rng_state": capture_rng_state()}
    states = distributed.all_gather_object(capture_rng_state())
    return {"rng_state": states[0], "rng_states_by_rank": states}


def restore_rng(ckpt: dict[str, Any]) -> None:
    by_rank = ckpt.get("rng_states_by_rank")
    if by_rank and len(by_rank) == distributed.world_size():
        restore_rng_state(by_rank[distributed.rank()])
    elif ckpt.get("rng_state") is not None:
        restore_rng_state(ckpt["rng_state"])


def world_size_note(written_by: int, batch_size: int) -> str | None:
    """The warning a resume prints when the checkpoint was written by another number of processes."""
    world = distributed.world_size()
    if written_by == world:
        return None
    return (f"Warning: the checkpoint was written by {written_by} process(es), this run has {world}: each "
            f"step still takes --batch_size {batch_size} clips in all, but each process now computes "
            f"{_per_process(batch_size, world)} clips instead of {_per_process(batch_size, written_by)}, so "
            "the effective batch of batch-norm statistics and in-batch pairs changed: the result will not "
            f"equal an uninterrupted {written_by}-process run")


def _per_process(batch_size: int, world: int) -> str:
    low, high = batch_size // world, -(-batch_size // world)
    return str(high) if low == high else f"{low}-{high}"
