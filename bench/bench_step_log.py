"""What following a run costs: step logging on training throughput, and a page refresh while a job
runs on a large models root.

1. Throughput: the package's training loop (bench_train_throughput's ``package``) with
   ``--log_every_steps 0`` (off, the baseline) and N (default 10), interleaved, several repeats
   each in the same process; prints the median samples/s of each and the overhead in %.
   On a shared 2-core machine run-to-run noise is several %, more than the goal, so the logging
   runs also time every call of the step logger from inside (``StepLog.step_done``, the one call
   the loop makes per step): its share of those runs' wall time is the cost, free of that noise.
   Goal: under 1 %.
2. Refresh: a models root of E experiments (bench_render's ``synthesise``, default 200) in which
   one experiment is "running": between refreshes the benchmark appends step rows (and, every
   so often, an epoch row) as the trainer would. Times the data part each live page re-runs in
   its fragment (what changed is re-read; the rest comes from the caches): Experiments
   (``scan_experiments`` + the running check), Curves (S selected experiments' histories, step
   logs, the metric and story figures with markers) and Checkpoints (the scan and the table).
   Prints the median per refresh. Goal: under 100 ms each.

    python bench/bench_step_log.py [--repeats 3] [--train_size 512] [--every 10] [--experiments 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

THROUGHPUT_GOAL = 0.01
REFRESH_GOAL_S = 0.100
REFRESHES = 15


def throughput(opts: argparse.Namespace) -> None:
    import torch

    from bench_train_throughput import package
    from training.config import DEFAULTS

    torch.set_num_threads(1)
    args = dict(DEFAULTS, model_type="lcnn", num_epochs=1, train_size=opts.train_size, val_size=32,
                clip_samples=4000, batch_size=8, lr=1e-3, algo=0)
    rates: dict[int, list[float]] = {0: [], opts.every: []}
    inside, logged_seconds = timed_step_logger(), 0.0
    with tempfile.TemporaryDirectory() as tmp:
        package(dict(args, log_every_steps=0), Path(tmp) / "warmup")
        for repeat in range(opts.repeats):
            for every in (0, opts.every) if repeat % 2 == 0 else (opts.every, 0):  # interleaved, alternating order
                seconds = package(dict(args, log_every_steps=every), Path(tmp) / f"{repeat}_{every}")
                rates[every].append(opts.train_size / seconds)
                logged_seconds += seconds if every else 0.0
    off, on = statistics.median(rates[0]), statistics.median(rates[opts.every])
    overhead = 1 - on / off
    print(f"throughput: {off:.1f} samples/s without step logging, {on:.1f} with --log_every_steps {opts.every} "
          f"(medians of {opts.repeats}); overhead {overhead * 100:+.2f}% (noise included)")
    share = inside[0] / logged_seconds
    print(f"  timed inside the logging runs: {inside[1]} step_done calls took {inside[0] * 1000:.1f} ms of "
          f"{logged_seconds:.1f} s = {share * 100:.3f}% (goal < {THROUGHPUT_GOAL * 100:.0f}%)"
          f"{'' if share < THROUGHPUT_GOAL else '  OVER GOAL'}")


def timed_step_logger() -> list:
    """Wraps StepLog.step_done to add up its wall time: [seconds, calls] (logging runs only: with
    --log_every_steps 0 the loop calls it too, and it returns at once)."""
    from training.step_log import StepLog

    totals = [0.0, 0]
    original = StepLog.step_done

    def step_done(self, *args, **kwargs):
        if not self.every:
            return original(self, *args, **kwargs)
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            totals[0] += time.perf_counter() - start
            totals[1] += 1

    StepLog.step_done = step_done
    return totals


def append_steps(path: Path, name: str, epoch: int, start: int, count: int, per_epoch: int) -> None:
    with open(path, "a") as f:
        for step in range(start, start + count):
            f.write(f"{epoch},{step},{per_epoch},{(epoch - 1) * per_epoch + step},0.5,0.001,100.0,{step * 0.1:.3f},"
                    f"{time.time():.3f},{name}\n")


def refresh(opts: argparse.Namespace) -> None:
    import csv

    from bench_render import synthesise
    from training.dashboard import catalog, live, story
    from training.dashboard.plots import experiment_colors
    from training.dashboard.steps import step_history
    from training.dashboard.views import checkpoint_table
    from training.naming import LOG_NAME, STEPS_LOG_NAME
    from training.run_folder import LOG_COLUMNS
    from training.step_log import HEADER

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        names = synthesise(root, opts.experiments, opts.epochs, 3)
        running = names[0]
        selected = names[:opts.selected]
        per_epoch = 1000
        steps_path = root / running / STEPS_LOG_NAME
        steps_path.write_text(HEADER)
        append_steps(steps_path, running, opts.epochs + 1, 1, 500, per_epoch)  # half an epoch already logged

        def experiments_page() -> None:
            live.refresh_interval(root)
            catalog.scan_experiments(root)

        def curves_page() -> None:
            histories = {n: catalog.experiment_history(root, n) for n in selected}
            steps = {n: step_history(root, n) for n in selected}
            steps = {n: f for n, f in steps.items() if len(f)}
            story.curves_figures(histories, steps, 0.0, False, "epoch", experiment_colors(selected))

        def checkpoints_page() -> None:
            checkpoint_table(catalog.scan_checkpoints(root), running, catalog.protected_checkpoints(root, running))

        pages = {"Experiments": experiments_page, "Curves": curves_page, "Checkpoints": checkpoints_page}
        for render in pages.values():
            render()  # cold: the first visit reads everything
        timings: dict[str, list[float]] = {name: [] for name in pages}
        step = 501
        for i in range(REFRESHES):
            append_steps(steps_path, running, opts.epochs + 1, step, 20, per_epoch)  # the job moves on
            step += 20
            if i % 5 == 4:  # and finishes an epoch now and then (a new epoch-log row)
                with open(root / running / LOG_NAME, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore").writerow(
                        {"epoch": opts.epochs + 1 + i, "val_eer": 5.0, "lr": 1e-3, "timestamp": time.time(),
                         "experiment": running})
            for name, render in pages.items():
                start = time.perf_counter()
                render()
                timings[name].append(time.perf_counter() - start)
        print(f"refresh while a job runs: {opts.experiments} experiments x {opts.epochs} epochs, "
              f"{opts.selected} on Curves, the running one with a growing step log")
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"  {name:12s} {median * 1000:7.1f} ms per refresh (median of {REFRESHES}; goal < "
                  f"{REFRESH_GOAL_S * 1000:.0f} ms){'' if median < REFRESH_GOAL_S else '  OVER GOAL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train_size", type=int, default=512)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--selected", type=int, default=5)
    parser.add_argument("--skip", choices=("throughput", "refresh"), default=None)
    opts = parser.parse_args()
    if opts.skip != "throughput":
        throughput(opts)
    if opts.skip != "refresh":
        refresh(opts)


if __name__ == "__main__":
    main()
