"""DDP step time of the package against a bare DistributedDataParallel loop, 2 processes, gloo.

Both train the same model on the same synthetic data, each rank on its share of the same global
batches (``training.shards``), with the same optimizer and loss. The package's epoch adds what a
torchrun run needs besides: the per-step stop-flag all_reduce (a signal on any rank stops all),
the running sums for metrics and exact resume, and the end-of-epoch gather of those sums. The
printed ratio (bare / package time per step) says what that costs.

    python bench/bench_ddp.py [--model_type lcnn] [--train_size 256] [--epochs 2] [--nproc 2]

It starts itself under ``torchrun`` (``python -m torch.distributed.run --standalone``).
Goal: ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_type", default="lcnn")
    parser.add_argument("--train_size", type=int, default=256)
    parser.add_argument("--clip_samples", type=int, default=16000)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def launch(opts: argparse.Namespace) -> int:
    """Run this file's workers under torchrun, one thread each (as torchrun sets by default)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(opts.nproc),
            __file__, "--worker", *sys.argv[1:]]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.run(argv, env=env).returncode


# --- the two loops (inside a worker) ----------------------------------------------------------------

def bare_epoch(model, optimizer, criterion, train_set, epoch: int, args: dict) -> int:
    """The loop a researcher writes over DDP: this rank's share of each global batch. Returns steps."""
    from torch.utils.data import DataLoader

    from training.resume_state import collate, epoch_batches
    from training.shards import train_batches

    batches = train_batches(epoch_batches(len(train_set), args["batch_size"], args["seed"], epoch))
    model.train()
    for x, y in DataLoader(train_set, batch_sampler=batches, collate_fn=collate):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    return len(batches)


def timed(run) -> float:
    from training import distributed

    distributed.barrier()
    start = time.perf_counter()
    run()
    distributed.barrier()
    return time.perf_counter() - start


def worker(opts: argparse.Namespace) -> None:
    import torch

    from training import distributed
    from training.config import DEFAULTS
    from training.losses import build_criterion
    from training.models import build_model
    from training.trainer import StartPlan, Trainer

    distributed.init()
    args = dict(DEFAULTS, model_type=opts.model_type, train_size=opts.train_size, val_size=32,
                clip_samples=opts.clip_samples, batch_size=opts.batch_size, lr=1e-3, algo=0,
                num_epochs=opts.epochs, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(dict(args, models_root=tmp), StartPlan("fresh"), echo=lambda _: None)
        trainer._setup_device()
        trainer._setup_determinism()
        trainer._setup_data()
        trainer._setup_model()
        trainer._setup_optimizer()
        if distributed.is_main_process():  # the folder the run's logs go to (the step log, rank 0's)
            trainer.exp_dir.mkdir(parents=True)

        # The bare loop runs under the same torch switches (determinism is one global flag).
        torch.manual_seed(args["seed"])
        model = distributed.wrap_model(build_model(args), torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), lr=args["lr"], weight_decay=args["weight_decay"])
        criterion = build_criterion(args)

        steps = 0
        def bare() -> None:
            nonlocal steps
            steps = sum(bare_epoch(model, optimizer, criterion, trainer.train_set, e, args)
                        for e in range(1, opts.epochs + 1))

        def package() -> None:
            for e in range(1, opts.epochs + 1):
                trainer._train_epoch(e)

        timed(bare), timed(package)  # warm the synthetic data cache and the kernels
        best_bare, best_pkg = float("inf"), float("inf")
        for _ in range(opts.repeats):  # alternate, keep the best of each: the machine is noisy
            best_bare = min(best_bare, timed(bare))
            best_pkg = min(best_pkg, timed(package))
    if distributed.is_main_process():
        print(f"model {opts.model_type}, {distributed.world_size()} processes (gloo), {opts.epochs} epochs x "
              f"{opts.train_size} clips of {opts.clip_samples} samples, global batch {opts.batch_size}, "
              f"{torch.get_num_threads()} thread(s) each")
        print(f"bare DDP loop     : {1000 * best_bare / steps:8.2f} ms/step  ({best_bare:.2f} s)")
        print(f"training package  : {1000 * best_pkg / steps:8.2f} ms/step  ({best_pkg:.2f} s)")
        print(f"ratio bare/package step time: {best_bare / best_pkg:.3f}  (goal >= 0.9)")
    distributed.finish(0)


if __name__ == "__main__":
    parsed = options()
    if parsed.worker:
        worker(parsed)
    else:
        sys.exit(launch(parsed))
