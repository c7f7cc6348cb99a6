"""How long from clicking Launch to a training process running, against bare Python start-up.

Measured in the same run, each the median of N tries:
  (a) launch() call -> the supervisor is running its own code (its first log line is written)
  (b) launch() call -> the trainer child exists: pid recorded in the registry and alive
  (e) the Launch page's submit -> the trainer child exists: what a click on Launch costs, i.e.
      training.launch_form.plan_launch (validate the form, build the command and the diff
      against the checkpoint's args) + launch_form.launch, exactly as pages/launch.py calls them
  (c) bare Python start-up: ``python -c pass``
  (d) ``python -c "import torch"`` (the trainer pays this after (b), whatever launches it)
plus how long launch() itself blocks its caller. The printed ratio is (b) / (c): how many bare
interpreter start-ups the launch path costs before the trainer process exists.

Each launched run is the real ``python -m training`` command; it is stopped as soon as its pid
is recorded (it is still importing torch), so the benchmark trains nothing.

    python bench/bench_launch.py [--runs 5]
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

from training.dashboard import catalog
from training import jobs
from training.dashboard import launch_form  # noqa: E402
from training.proc import is_alive  # noqa: E402

POLL_S = 0.001


def wait_until(predicate, timeout: float = 30.0, poll_s: float = POLL_S) -> float:
    """perf_counter() at the first poll where ``predicate()`` holds."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(poll_s)
    raise TimeoutError("condition not reached")


def log_has(path: str, text: bytes) -> bool:
    try:
        return text in Path(path).read_bytes()
    except OSError:  # not written yet
        return False


def bench_args(i: int, prefix: str) -> dict:
    return dict(dataset="synthetic", model_type="lcnn", num_epochs=1, train_size=8, val_size=8,
                clip_samples=4000, batch_size=8, comment=f"{prefix}{i}")


def page_submit(root: Path, i: int) -> jobs.Job:
    """What the Launch page runs when Launch is pressed (form values arrive as widget values)."""
    raw = dict(bench_args(i, "page"), lr="1e-06")
    plan = launch_form.plan_launch(root, "fresh", raw, None, checkpoints=catalog.scan_checkpoints(root))
    return launch_form.launch(root, plan)


def one_launch(root: Path, i: int, via_page: bool = False) -> tuple[float, float, float]:
    """(launch returned, supervisor running, trainer running), seconds after the call;
    ``via_page``: through the Launch page's submit path instead of jobs.launch directly."""
    t0 = time.perf_counter()
    job = page_submit(root, i) if via_page else jobs.launch(root, "fresh", bench_args(i, "bench"))
    t_return = time.perf_counter()
    # The supervisor writes "$ python main.py ..." once it has read its job from the registry;
    # "started pid" once it has recorded the trainer's pid.
    t_sup = wait_until(lambda: log_has(job.log_path, b"$ python main.py"))
    t_child = wait_until(lambda: log_has(job.log_path, b"started pid"))
    recorded = jobs.get_job(root, job.id)
    assert recorded.pid and is_alive(recorded.pid, recorded.pid_start_time), recorded
    jobs.stop(root, job.id, grace_s=10)
    wait_until(lambda: not jobs.get_job(root, job.id).is_active)
    return t_return - t0, t_sup - t0, t_child - t0


def time_process(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs

    bare = [time_process([sys.executable, "-c", "pass"]) for _ in range(runs)]
    torch_import = [time_process([sys.executable, "-c", "import torch"]) for _ in range(runs)]
    with tempfile.TemporaryDirectory() as tmp:
        launches, page_launches = [], []
        for i in range(runs):  # interleaved, so both see the same machine load
            launches.append(one_launch(Path(tmp), i))
            page_launches.append(one_launch(Path(tmp), i, via_page=True))
    returned, supervisor, child = (statistics.median(col) for col in zip(*launches))
    page_returned, _, page_child = (statistics.median(col) for col in zip(*page_launches))
    c, d = statistics.median(bare), statistics.median(torch_import)

    ms = lambda s: f"{s * 1000:8.1f} ms"  # noqa: E731
    print(f"median of {runs} runs ({sys.executable})")
    print(f"  launch() returns to the caller          {ms(returned)}")
    print(f"  (a) launch -> supervisor running        {ms(supervisor)}")
    print(f"  (b) launch -> trainer process running   {ms(child)}")
    print(f"  (c) bare Python start-up (-c pass)      {ms(c)}")
    print(f"  (d) python -c 'import torch'            {ms(d)}   (import alone: {ms(d - c).strip()})")
    print(f"  Launch page submit returns (e)          {ms(page_returned)}")
    print(f"  (e) page submit -> trainer running      {ms(page_child)}")
    print(f"  launch overhead / bare start-up  (b)/(c) = {child / c:.2f}x")
    print(f"  page submit / jobs.launch        (e)/(b) = {page_child / child:.2f}x")
    print(f"  trainer ready to train, estimated (b)+(d)-(c) = {ms(child + d - c).strip()}")


if __name__ == "__main__":
    main()
