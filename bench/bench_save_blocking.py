"""How long a checkpoint blocks the training loop, against a plain ``torch.save``.

The trainer's path (``Trainer.save_checkpoint``): copy the state into CPU buffers kept from the
previous save (``CheckpointWriter.snapshot``; the first save allocates them, so the first repeat
is a warm-up and not timed) and hand it to the background ``CheckpointWriter``, which serialises,
hashes, fsyncs, renames and writes the sidecar while the next epoch trains. The loop is blocked
only for the copy and the hand-over. The baseline, measured in the same run on the same disk, is
what a hand-written loop does: ``torch.save(state, path)``, blocking until it returns.

For reference it also prints what crash safety costs when it is *not* hidden in the background:
``atomic_save`` (temporary file, fsync, rename, fsync of the folder) against plain ``torch.save``.

The state is a real model's ``state_dict`` plus its real Adam state (two moments per weight),
about ``--size_mb`` in all. Repeats alternate the methods, so drift in disk or page-cache
state hits all of them alike; medians and bests are printed.

    python bench/bench_save_blocking.py [--size_mb 150] [--repeats 5] [--dir .]

Goal: blocked time / plain torch.save time <= 0.3.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.checkpoint.store import CheckpointWriter, atomic_save, save_checkpoint, state_nbytes  # noqa: E402

WIDTH = 1024  # square Linear layers: 1M weights (4 MB) each


def build_state(size_mb: float) -> dict:
    """A checkpoint-shaped dict: model weights + Adam state after one step, ~``size_mb`` MB."""
    layers = max(1, round(size_mb * 2**20 / (3 * 4 * (WIDTH * WIDTH + WIDTH))))  # weights + 2 moments
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, WIDTH)).square().mean().backward()
    optimizer.step()
    return {"epoch": 1, "step_in_epoch": 0, "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(), "val_eer": 1.0, "best_val_eer": 1.0,
            "best_epoch": 1, "args": {"model_type": "bench"}, "history": [{"epoch": 1, "val_eer": 1.0}]}


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def drop(folder: Path) -> None:
    """Remove what a method wrote, so every repeat writes new files of the same size."""
    for path in folder.iterdir():
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size_mb", type=float, default=150.0, help="checkpoint size to aim for")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=".", help="write on this folder's disk (default: here)")
    opts = parser.parse_args()
    state = build_state(opts.size_mb)
    size = state_nbytes(state)
    writer = CheckpointWriter(background=True)
    times: dict[str, list[float]] = {"plain": [], "blocked": [], "background": [], "atomic": []}
    with tempfile.TemporaryDirectory(prefix="bench_save_", dir=opts.dir) as tmp:
        folder = Path(tmp)
        first_s = timed(lambda: writer.snapshot(state))  # the first save of a run allocates the buffers
        for _ in range(opts.repeats):
            times["plain"].append(timed(lambda: torch.save(state, folder / "plain.pth")))
            drop(folder)

            def trainer_path() -> None:
                snapshot = writer.snapshot(state)  # what Trainer.save_checkpoint does, in order
                writer.submit(lambda: save_checkpoint(snapshot, folder / "checkpoint_epoch_1.pth", expected_size=size))

            written = time.perf_counter()
            times["blocked"].append(timed(trainer_path))
            writer.wait()  # the next epoch would train meanwhile
            times["background"].append(time.perf_counter() - written)
            drop(folder)
            times["atomic"].append(timed(lambda: atomic_save(state, folder / "atomic.pth")))
            drop(folder)
        where = os.path.realpath(folder)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"state {size / 2**20:.0f} MB (model + Adam moments), {opts.repeats} alternating repeats, on the disk of {where}")
    print(f"plain torch.save (baseline):          median {med['plain']:.3f} s  best {best['plain']:.3f} s")
    print(f"trainer blocked (snapshot + submit):  median {med['blocked']:.3f} s  best {best['blocked']:.3f} s")
    print(f"  first save of a run (allocates the buffers): {first_s:.3f} s")
    print(f"  written in the background in:       median {med['background']:.3f} s  best {best['background']:.3f} s")
    print(f"atomic_save (fsync + replace):        median {med['atomic']:.3f} s  best {best['atomic']:.3f} s")
    print(f"blocked / plain torch.save: {med['blocked'] / med['plain']:.2f}x median, "
          f"{best['blocked'] / best['plain']:.2f}x best (goal <= 0.3x)")
    print(f"atomic_save / plain torch.save: {med['atomic'] / med['plain']:.2f}x median, "
          f"{best['atomic'] / best['plain']:.2f}x best (crash safety when not in the background)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
