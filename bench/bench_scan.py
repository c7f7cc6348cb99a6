"""The dashboard's catalog scan against the obvious alternatives, on a realistic models root.

Writes N trainer-shaped checkpoints (default 1000: a real model's state + Adam state + RNG state +
args + history, as ``Trainer._checkpoint`` builds them) spread over E experiment folders (default
20), each with the trainer's training_log.csv, in a temporary folder under /tmp, then prints:

  1. torch.load(weights_only=True) of every file -- the baseline a naive catalog pays. Loading all
     N would take minutes, so a random sample (default 50) is timed and the mean is extrapolated
     to N (the output says so).
  2. a first scan_checkpoints() with a cold cache (no sidecars: the pickle path) -- ratio (1)/(2),
     goal >= 100x. The scan reads through training.checkpoint.pool's reader processes: the very first
     scan in a process also starts them (shown on its own line); the dashboard starts them when
     it starts, so its first scan finds them booted and idle, which is how each timed scan
     below finds them (restarted, then waited for). Each timed scan sits between two
     torch.load samples (their mean is its baseline), --repeats times, and the median ratio is
     reported: this machine's speed drifts by 2x within minutes, and only same-moment ratios
     mean anything.
  3. a rescan with nothing changed against os.stat() of every file -- ratio, goal "within a few
     times": what a dashboard rerun costs;
  4. (2) and (3) again after writing the trainer's sidecars (the usual case for our own runs).

Files were just written, so they sit in the page cache: the baseline is measured at its fastest.
The folder is deleted at the end.

--model picks the architecture: g3_heatmap, the trainer's default (3.3 MB files, ~450 tensors
with Adam state), or lcnn (0.66 MB, ~165 tensors). Both torch.load and the scan cost about the
same per tensor, but the scan's fixed cost per file (open, zip records, the answer sent back)
weighs more on the small lcnn files, so its ratio is lower.

    python bench/bench_scan.py [--files 1000] [--experiments 20] [--model g3_heatmap|lcnn]
                               [--sample 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from training.dashboard import catalog
from training.checkpoint import pool as ckpt_pool  # noqa: E402
from training.checkpoint.meta import checkpoint_meta  # noqa: E402
from training.checkpoint.sidecar import file_sha256, write_sidecar  # noqa: E402
from training.config import DEFAULTS  # noqa: E402
from training.models import build_model  # noqa: E402
from training.naming import epoch_checkpoint_name, experiment_name  # noqa: E402
from training.checkpoint.store import load_checkpoint  # noqa: E402
from training.trainer import LOG_COLUMNS, LOG_NAME, capture_rng_state  # noqa: E402


def model_and_optimizer(model_type: str) -> tuple[dict, dict]:
    """A real model's state_dict and the Adam state after one step (moments for every weight)."""
    args = dict(DEFAULTS, model_type=model_type)
    model = build_model(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    return model.state_dict(), optimizer.state_dict()


def checkpoint(args: dict, epoch: int, state: dict, optimizer: dict) -> dict:
    """The dict Trainer._checkpoint saves, with plausible metrics."""
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_eer": 30.0 / e, "val_loss": 1.2 / e,
                "val_acc": 100 - 20.0 / e, "val_eer": 20.0 / e, "best_val_eer": 20.0 / e, "lr": args["lr"],
                "epoch_seconds": 60.0, "timestamp": 1.7e9 + e, "experiment": experiment_name(args)}
               for e in range(1, epoch + 1)]
    last = history[-1]
    return {
        "format_version": 1, "epoch": epoch, "step_in_epoch": 0,
        "model_state_dict": state, "optimizer_state_dict": optimizer,
        "scheduler_state_dict": None, "scaler_state_dict": None,
        **{k: last[k] for k in ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer")},
        "best_val_eer": last["best_val_eer"], "best_epoch": epoch, "args": dict(args),
        "experiment": experiment_name(args), "history": history, "lineage": None,
        "rng_state": capture_rng_state(), "partial": None, "saved_at": time.time(),
    }


def write_root(root: Path, n_files: int, n_experiments: int, model_type: str) -> list[tuple[Path, dict]]:
    """N checkpoints over E folders; returns (path, checkpoint dict) pairs."""
    state, optimizer = model_and_optimizer(model_type)
    per_folder = -(-n_files // n_experiments)
    written = []
    for i in range(n_experiments):
        epochs = min(per_folder, n_files - len(written))
        if epochs <= 0:
            break
        args = dict(DEFAULTS, model_type=model_type, num_epochs=per_folder, comment=f"bench{i}")
        folder = root / experiment_name(args)
        folder.mkdir(parents=True)
        for epoch in range(1, epochs + 1):
            ck = checkpoint(args, epoch, state, optimizer)
            path = folder / epoch_checkpoint_name(epoch, args["comment"])
            torch.save(ck, path)
            written.append((path, ck))
        with open(folder / LOG_NAME, "w", newline="") as f:  # the trainer's per-epoch log
            log = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            log.writeheader()
            log.writerows(ck["history"])
    return written


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stat_all(paths: list[Path]) -> None:
    for p in paths:
        os.stat(p)


def cold_scan(root: Path, n_files: int, expect_complete: bool) -> float:
    catalog.clear_cache()
    t0 = time.perf_counter()
    frame = catalog.scan_checkpoints(root)
    elapsed = time.perf_counter() - t0
    assert len(frame) == n_files and (frame["kind"] == "full").all(), frame["reason"].dropna().head()
    assert bool(frame["complete"].all()) == expect_complete
    assert catalog.cache_info()["misses"] == n_files
    return elapsed


def torch_load_seconds(paths: list[Path], sample: int, seed: int) -> float:
    """Mean seconds of torch.load(weights_only=True) over a random sample of the files."""
    chosen = random.Random(seed).sample(paths, min(sample, len(paths)))
    t0 = time.perf_counter()
    for p in chosen:
        load_checkpoint(p)  # torch.load(weights_only=True), the project's safe loader
    return (time.perf_counter() - t0) / len(chosen)


def report_scans(label: str, root: Path, paths: list[Path], sample: int, repeats: int,
                 expect_complete: bool) -> None:
    n = len(paths)
    ckpt_pool.shutdown()  # the first scan below starts the reader processes, as a new process's would
    first = cold_scan(root, n, expect_complete)
    load = torch_load_seconds(paths, sample, seed=0)
    print(f"[{label}] first scan in this process, starting {ckpt_pool.process_count()} reader "
          f"processes: {first:.3f} s  -> torch.load / scan = {load * n / first:.1f}x")
    ratios = []
    for r in range(repeats):  # each scan bracketed by two torch.load samples, averaged
        ckpt_pool.shutdown()
        ckpt_pool.start(wait=True)  # fresh readers, booted: what the dashboard's first scan finds
        before = torch_load_seconds(paths, sample // 2, seed=2 * r + 1)
        cold = cold_scan(root, n, expect_complete)
        load = (before + torch_load_seconds(paths, sample // 2, seed=2 * r + 2)) / 2
        ratios.append(load * n / cold)
        print(f"[{label}]   torch.load {load * 1e3:.2f} ms/file -> {load * n:.1f} s for all {n} "
              f"(extrapolated from {2 * (sample // 2)}); first scan_checkpoints (cold cache, fresh "
              f"readers running): {cold:.3f} s = {cold / n * 1e3:.3f} ms/file -> {ratios[-1]:.1f}x")
    print(f"[{label}] torch.load / cold scan: median {statistics.median(ratios):.1f}x "
          f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x; goal >= 100x)")
    misses = catalog.cache_info()["misses"]
    rescan = median_seconds(lambda: catalog.scan_checkpoints(root), 5)
    assert catalog.cache_info()["misses"] == misses, "a rescan with nothing changed re-read files"
    stats = median_seconds(lambda: stat_all(paths), 5)
    print(f"[{label}] rescan, nothing changed: {rescan * 1e3:.2f} ms; os.stat of every file: "
          f"{stats * 1e3:.2f} ms  -> rescan / stat = {rescan / stats:.1f}x (goal: within a few times)")
    experiments = median_seconds(lambda: catalog.scan_experiments(root), 5)
    print(f"[{label}] scan_experiments, warm cache ({len(catalog.list_experiment_names(root))} folders): "
          f"{experiments * 1e3:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--experiments", type=int, default=20)
    ap.add_argument("--model", default=DEFAULTS["model_type"], choices=("g3_heatmap", "lcnn"))
    ap.add_argument("--sample", type=int, default=50, help="files loaded with torch.load per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="torch.load / cold scan pairs (median)")
    a = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench_scan_", dir="/tmp") as tmp:
        root = Path(tmp) / "models"
        t0 = time.perf_counter()
        written = write_root(root, a.files, a.experiments, a.model)
        paths = [p for p, _ in written]
        total = sum(p.stat().st_size for p in paths)
        ck = written[0][1]
        n_tensors = len(ck["model_state_dict"]) + 3 * len(ck["optimizer_state_dict"]["state"])
        print(f"{len(paths)} {a.model} checkpoints in {a.experiments} folders "
              f"({total / len(paths) / 1e6:.2f} MB each, {total / 1e9:.2f} GB, ~{n_tensors} tensors "
              f"per file incl. Adam state) written in {time.perf_counter() - t0:.1f} s")

        report_scans("no sidecars", root, paths, a.sample, a.repeats, expect_complete=False)

        t0 = time.perf_counter()
        for path, ck in written:
            write_sidecar(path, checkpoint_meta(ck), file_sha256(path))
        print(f"sidecars written (sha256 + meta, as the trainer does) in {time.perf_counter() - t0:.1f} s")
        report_scans("sidecars", root, paths, a.sample, a.repeats, expect_complete=True)
    print(f"removed {tmp}")


if __name__ == "__main__":
    main()
