"""Running under ``torchrun``: the process group, which rank this is, and the few collectives the
CLI and the trainer need (issue 15).

Launched by ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment), ``init``
joins the process group before the command line is even read, so that every verdict (a usage
error included) is agreed: gloo, plus nccl for CUDA tensors where CUDA is available; small
host-side agreements (the per-step stop flag, exit codes, gathered RNG states) always go through
a gloo group, so they cost no device synchronisation. Launched any other way nothing here creates a group and every helper
answers for a world of one: the single-process path is unchanged.

The rules every rank follows:

* rank 0 alone writes (checkpoints, sidecars, logs, attention files) and holds the experiment
  lock; the other ranks never open the folder for writing and wait at barriers;
* decisions are taken on rank 0 and shared at *agreement points* (``agree``), which every rank
  passes exactly once and in order (``AGREEMENT_POINTS``), each with its own exit code (0 = fine).
  A rank that failed before a point makes the remaining ones up in ``finish``, so a usage error on
  rank 0 ends every rank with the same exit code instead of leaving the others in a collective;
* a stop signal on any rank is agreed at every step (``agreed_signal``): all ranks stop at the
  same step and rank 0 writes one interrupt checkpoint.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any

AGREEMENT_POINTS = ("plan", "setup")  # rank 0 chose how to start; rank 0 prepared the folder
TIMEOUT = timedelta(minutes=30)        # torch's default: rank 0 may verify a large checkpoint meanwhile

# shared_exit: every rank knows this exit (it was agreed), so all of them reach ``finish``.
_state: dict[str, Any] = {"active": False, "host_group": None, "points_passed": 0, "shared_exit": False}


class PeerFailed(Exception):
    """Another rank failed before an agreement point: this rank ends with the same exit code."""

    def __init__(self, code: int):
        super().__init__(f"another rank ended with exit code {code}")
        self.code = code


# --- where we are -----------------------------------------------------------------------------------

def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def active() -> bool:
    """A process group is up (``init`` ran)."""
    return _state["active"]


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if active() else 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1)) if active() else 1


def is_main_process() -> bool:
    return rank() == 0


# --- the group ----------------------------------------------------------------------------------

def init() -> None:
    """Join torchrun's process group (the rendezvous is torchrun's ``MASTER_ADDR``/``MASTER_PORT``).
    NCCL only connects on the first CUDA collective, so a ``--device cpu`` run never uses it."""
    import torch
    import torch.distributed as dist

    cuda = gpu_per_process()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=TIMEOUT)
    _state.update(active=True, points_passed=0, shared_exit=False, host_group=dist.new_group(backend="gloo") if cuda else None)


def gpu_per_process() -> bool:
    """This node has a CUDA device for each of its torchrun processes (``LOCAL_WORLD_SIZE``)."""
    import torch

    return torch.cuda.is_available() and int(os.environ.get("LOCAL_WORLD_SIZE", 1)) <= torch.cuda.device_count()


def finish(code: int) -> None:
    """Leave the group: make up the agreement points this rank skipped (it failed before them),
    wait for every rank when all of them know how the run ends (it finished, stopped together
    or failed at an agreement point), and ignore late stop signals while exiting. A failure of
    one rank in mid-training (a disk error on rank 0) waits for nobody: torchrun stops the rest."""
    import torch.distributed as dist

    if not active():
        return
    # torchrun stops the remaining ranks with SIGTERM as soon as one exits non-zero; this rank's
    # verdict is reached (every file is written), so it ends with its own exit code instead.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while _state["points_passed"] < len(AGREEMENT_POINTS):
        try:
            agree(code)
        except PeerFailed:
            pass
    if code == 0 or _state["shared_exit"]:
        barrier()  # nobody leaves (and makes torchrun signal the others) while a peer still works
    dist.destroy_process_group()
    _state.update(active=False, host_group=None)


# --- collectives (each is a no-op in a world of one) --------------------------------------------

def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier(group=_state["host_group"])


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (small objects: states, sums, RNG states)."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=_state["host_group"])
    return out


def agree(code: int = 0, payload: Any = None) -> Any:
    """An agreement point: every rank reports its exit code so far (0 = fine) and rank 0 its
    ``payload``. Returns rank 0's payload; raises PeerFailed when another rank failed."""
    if not active():
        return payload
    _state["points_passed"] += 1
    reports = all_gather_object((code, payload if is_main_process() else None))
    failed = [c for c, _ in reports if c != 0]
    _state["shared_exit"] = _state["shared_exit"] or bool(failed)
    if failed and code == 0:
        raise PeerFailed(failed[0])  # rank 0's code first: its message is the one printed
    return reports[0][1]


def stop_together() -> None:
    """Every rank stopped at the same step (``agreed_signal``) and rank 0's checkpoint is on
    disk once all pass here; their exits are agreed."""
    barrier()
    _state["shared_exit"] = True


def agreed_signal(local: int | None) -> int | None:
    """The stop signal any rank received (None: none did). Every rank calls it at the same step."""
    if not active():
        return local
    import torch
    import torch.distributed as dist

    flag = torch.tensor([local or 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_state["host_group"])
    return int(flag.item()) or None


def share_buffers(model: Any) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics). DDP broadcasts them at the
    start of each training forward, so after an epoch each rank still holds the statistics of its
    own last share; validation must score with rank 0's, the ones its checkpoint saves."""
    if not active():
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def wrap_model(model: Any, device: Any) -> Any:
    """The model the training steps call: ``DistributedDataParallel`` over ``model`` under
    torchrun, else ``model`` itself. Checkpoints, validation and attention use ``model``."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    import warnings

    # Convolutions with one input channel get gradients whose size-1 dimension has another
    # stride than DDP's bucket view: the copy is correct, the warning is noise on every rank.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def device_index() -> int:
    """The CUDA device of this rank (torchrun's LOCAL_RANK)."""
    return local_rank()
