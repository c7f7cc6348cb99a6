"""Training throughput with RawBoost (``--algo 3``, ``--algo 5``) against none (``--algo 0``).

The same package loop (``Trainer``), model, synthetic data, batch size and data-loader workers
for each setting; only ``--algo`` changes. Augmentation runs in the workers, so with enough of
them it should hide behind the model's forward and backward passes.

    python bench/bench_rawboost.py [--model_type g3_heatmap] [--num_workers 2] [--epochs 2]
                                   [--train_size 256] [--clip_samples 64600] [--repeats 2]

Goal: ratio (augmented / plain samples per second) >= 0.9 for g3_heatmap with workers.
The numbers mean little on a shared or small machine: the workers compete with the model for
the same cores there, which a training host with a GPU does not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.config import DEFAULTS  # noqa: E402
from bench_train_throughput import package  # noqa: E402  (bench/ is on sys.path: the script's folder)

ALGOS = (0, 3, 5)
# The package loop from its start to the last checkpoint on disk (setup excluded), as the
# throughput bench measures it.
train_seconds = package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_type", default="g3_heatmap")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train_size", type=int, default=256)
    parser.add_argument("--val_size", type=int, default=32)
    parser.add_argument("--clip_samples", type=int, default=64600)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()
    args = dict(DEFAULTS, model_type=opts.model_type, num_epochs=opts.epochs, train_size=opts.train_size,
                val_size=opts.val_size, clip_samples=opts.clip_samples, batch_size=opts.batch_size,
                num_workers=opts.num_workers, device=opts.device, lr=1e-4)
    # Warm torch's kernels (and the synthetic clip cache is per data set: each run builds its own).
    with tempfile.TemporaryDirectory() as tmp:
        train_seconds(dict(args, algo=0, num_epochs=1, train_size=2 * opts.batch_size), Path(tmp))
    best = {algo: float("inf") for algo in ALGOS}
    for _ in range(opts.repeats):  # interleaved, best of each: the machine is noisy
        for algo in ALGOS:
            with tempfile.TemporaryDirectory() as tmp:
                best[algo] = min(best[algo], train_seconds(dict(args, algo=algo), Path(tmp)))
    samples = opts.train_size * opts.epochs
    print(f"model {opts.model_type}, {opts.epochs} epochs x {opts.train_size} clips of {opts.clip_samples} samples "
          f"(+{opts.val_size} val), batch {opts.batch_size}, {opts.num_workers} workers, "
          f"{torch.get_num_threads()} threads, device {opts.device}")
    for algo in ALGOS:
        print(f"--algo {algo}: {samples / best[algo]:8.1f} samples/s  ({best[algo]:.2f} s)")
    for algo in ALGOS[1:]:
        print(f"ratio --algo {algo} / --algo 0: {best[0] / best[algo]:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
