"""SIGKILL a real training run 50 times at random moments (about a third aimed at a save),
auto-resuming after each, and compare the end result with a run never interrupted.

The baseline is that uninterrupted run, trained with the same arguments in the same process
tree just before; the harness is ``tests/kill_harness.py``, the one the test suite runs with
10 kills. Prints, e.g.::

    kills survived 50/50, unreadable files 0, mismatched tensors 0

    python bench/bench_kill_resume.py [--kills 50] [--epochs 30] [--train_size 128] [--seed 0]

Goal: every kill survived (the next run resumed from at least the newest complete checkpoint),
no unreadable file, no tensor or metric differing from the uninterrupted run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

from cli_helpers import TINY  # noqa: E402
from kill_harness import run_kill_experiment  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    # Enough epochs that the kills spread over the whole run (a kill advances ~0.6 epoch on
    # average); once only the last epoch is left, kills aimed at a save become training kills.
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    args = [*TINY, "--train_size", str(opts.train_size), "--num_epochs", str(opts.epochs),
            "--comment", "bench_kill", "--auto_resume"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_kill_") as workdir:
        report = run_kill_experiment(args, Path(workdir), kills=opts.kills, seed=opts.seed)
    modes = {mode: sum(1 for k in report.kills if k.mode == mode) for mode in ("launch", "train", "save")}
    print(f"lcnn, {opts.epochs} epochs of {opts.train_size} clips, seed {opts.seed}: {len(report.kills)} kills "
          f"({modes['launch']} during start-up, {modes['train']} while training, {modes['save']} aimed at a save; "
          f"{report.inside_save} left a save's temporary file behind) in {time.perf_counter() - started:.0f} s")
    print(f"lost complete checkpoints {len(report.lost_progress)}, mismatched metrics {len(report.mismatched_metrics)}, "
          f"temporary files left {len(report.temp_files_left)}, skipped files {len(report.skip_lines)}")
    print(report.summary())
    for problem in report.problems()[:20]:
        print(f"  {problem}")
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
