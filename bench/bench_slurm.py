"""How long from Launch to the run executing on Slurm, against a bare ``sbatch --wrap``.

Measured in the same run on the cluster this machine submits to (tools/slurm_local.sh starts a
single-node one), each the median of N tries:
  (a) how long ``training.jobs.slurm.submit()`` (what the Launch page and ``--launcher slurm``
      call) blocks its caller: the checks, submitit's pickle and script, sbatch;
  (b) submit() call -> the scheduler reports the job RUNNING;
  (c) submit() call -> the job's own code runs (its ``[slurm] start:`` line is in the log);
  (d) the baseline: ``sbatch --wrap 'echo started'`` -> that line is in its output file.
The printed ratio is (c) / (d): what our submission costs over the scheduler's own latency.
Each job is cancelled as soon as it has started (it is importing torch), so nothing trains.

    python bench/bench_slurm.py [--runs 3] [--partition local]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_launch import log_has, wait_until as launch_wait_until  # noqa: E402
from training.jobs import slurm  # noqa: E402

POLL_S = 0.02


def wait_until(predicate) -> float:
    return launch_wait_until(predicate, timeout=120.0, poll_s=POLL_S)  # the scheduler polls in seconds


def state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def one_launch(root: Path, i: int, partition: str | None) -> tuple[float, float, float]:
    args = dict(dataset="synthetic", model_type="lcnn", num_epochs=1, train_size=8, val_size=8, clip_samples=4000,
                batch_size=8, comment=f"bench{i}")
    t0 = time.perf_counter()
    job = slurm.submit(root, "fresh", args, {"slurm_partition": partition, "timeout_min": 5})
    t_returned = time.perf_counter()
    try:
        t_running = wait_until(lambda: state(job.job_id) == "RUNNING")
        t_started = wait_until(lambda: log_has(str(job.log_path), b"[slurm] start:"))
    finally:
        subprocess.run(["scancel", job.job_id], capture_output=True)
    return t_returned - t0, t_running - t0, t_started - t0


def one_bare(folder: Path, i: int, partition: str | None) -> float:
    out = folder / f"bare{i}.out"
    command = ["sbatch", "--parsable", f"--output={out}", "--time=5", "--wrap", "echo started"]
    if partition:
        command.insert(1, f"--partition={partition}")
    t0 = time.perf_counter()
    job_id = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        return wait_until(lambda: log_has(str(out), b"started")) - t0
    finally:
        subprocess.run(["scancel", job_id], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--partition", default=None)
    opts = parser.parse_args()
    problem = slurm.scheduler_available()
    if problem:
        raise SystemExit(f"bench_slurm: {problem} (tools/slurm_local.sh starts a local cluster)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        launches = [one_launch(root, i, opts.partition) for i in range(opts.runs)]
        bare = [one_bare(Path(tmp), i, opts.partition) for i in range(opts.runs)]
    blocks, running, started = (statistics.median(x) for x in zip(*launches))
    base = statistics.median(bare)
    print(f"submit() blocks its caller          {blocks * 1000:8.0f} ms")
    print(f"Launch -> job RUNNING (scheduler)   {running * 1000:8.0f} ms")
    print(f"Launch -> the job's code runs       {started * 1000:8.0f} ms")
    print(f"bare sbatch --wrap -> output line   {base * 1000:8.0f} ms")
    print(f"ratio launch-to-running / bare sbatch: {started / base:.2f}x  (median of {opts.runs})")


if __name__ == "__main__":
    main()
