"""How the costs that grow with the work grow: a table per case of N against time and peak
memory, with the growth factor per 10x, each beside a baseline measured in the same process.

Cases (each size timed in a fresh Python process, so peak memory is that size's own):

  list         ``python main.py --list_checkpoints`` on one run that kept N epochs (trainer-shaped
               checkpoints of a tiny model, with sidecars); baseline: os.stat of every file.
               Goals: 1,000 < 1 s and < 200 MB, ~10x from 100; 10,000 < 10 s.
  list_pickle  the same without sidecars (every file's pickle is read).
  experiments  the Experiments page's data on a rerun (catalog.scan_experiments, warm caches) with
               N experiment folders (a checkpoint + sidecar + log each); baseline: os.stat of
               every file under the root. Goal: 3,000 and 10,000 < 1 s.
  checkpoints  the Checkpoints page's data on a rerun (scan_checkpoints, one experiment's table,
               its protected files, the diff targets and the bounded pickers). Goal as above.
  curves       the Curves page's data for one run with an N-row log (experiment_history, every
               figure and its JSON), first (cold) and rerun (warm); baseline: pandas.read_csv of
               the log. Goal: 100,000 rows < 1 s.
  jobs         one Jobs page refresh with N jobs in the registry (list_jobs, the visible page,
               its table rows); baseline: a bare loop over the N jobs. Goal: 10,000 < 0.3 s.

Pages are measured through the training/ functions they call (what a rerun computes), not
through Streamlit's rendering. Default sizes are reduced; ``--full`` adds the goal sizes
(10,000 checkpoints, 10,000 experiments). Data goes to a temporary folder, deleted at the end.

    python bench/bench_scaling.py [--full] [--cases list,experiments,...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

COMMENT = "bench"
SIZES = {"list": [100, 1_000], "list_pickle": [100, 1_000], "experiments": [300, 3_000],
         "checkpoints": [300, 3_000], "curves": [10_000, 100_000], "jobs": [1_000, 10_000]}
FULL_EXTRA = {"list": [10_000], "list_pickle": [10_000], "experiments": [10_000], "checkpoints": [10_000]}


# --- data (in the parent) -----------------------------------------------------------------------

def _bench_args() -> dict:
    from training.config import DEFAULTS
    return dict(DEFAULTS, model_type="lcnn", comment=COMMENT)


def _tiny_checkpoint(epoch: int, experiment: str) -> dict:
    """What Trainer._checkpoint holds, for a model of two small tensors."""
    import torch

    from training.resume_state import capture_rng_state
    from training.run_history import history_fields

    state = {"fc.weight": torch.zeros(4, 4), "fc.bias": torch.zeros(4)}
    row = {"epoch": epoch, "train_loss": 0.5, "train_eer": 10.0, "val_loss": 0.4, "val_acc": 90.0,
           "val_eer": 8.0 + 1.0 / epoch, "best_val_eer": 8.0 + 1.0 / epoch, "lr": 1e-3, "epoch_seconds": 1.0,
           "timestamp": time.time(), "experiment": experiment}
    return {"format_version": 1, "epoch": epoch, "step_in_epoch": 0, "model_state_dict": state,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
            "scheduler_state_dict": None, "scaler_state_dict": None,
            **{k: row[k] for k in ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer")},
            "best_val_eer": row["best_val_eer"], "best_epoch": epoch, "args": _bench_args(),
            "experiment": experiment, **history_fields(row, experiment), "lineage": None,
            "rng_state": capture_rng_state(), "partial": None, "saved_at": time.time()}, row


def _write_checkpoint(path: Path, epoch: int, experiment: str, sidecar: bool, log_rows: list) -> None:
    import torch

    from training.checkpoint.meta import checkpoint_meta
    from training.checkpoint.sidecar import file_sha256, write_sidecar

    ck, row = _tiny_checkpoint(epoch, experiment)
    torch.save(ck, path)
    if sidecar:
        write_sidecar(path, checkpoint_meta(ck), file_sha256(path))
    log_rows.append(row)


def _write_log(folder: Path, rows: list[dict]) -> None:
    from training.run_folder import LOG_COLUMNS
    from training.naming import LOG_NAME

    with open(folder / LOG_NAME, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        out.writeheader()
        out.writerows(rows)


def make_run(root: Path, n: int, sidecar: bool) -> None:
    """One experiment folder that kept N epochs."""
    from training.naming import epoch_checkpoint_name, experiment_name

    name = experiment_name(_bench_args())
    folder = root / name
    folder.mkdir(parents=True)
    rows: list[dict] = []
    for epoch in range(1, n + 1):
        _write_checkpoint(folder / epoch_checkpoint_name(epoch, COMMENT), epoch, name, sidecar, rows)
    _write_log(folder, rows)


def make_experiments(root: Path, n: int) -> None:
    """N experiment folders, each with one checkpoint (+ sidecar, copied: mtimes kept) and a log."""
    from training.naming import epoch_checkpoint_name

    template = root / "_template"
    template.mkdir(parents=True)
    rows: list[dict] = []
    _write_checkpoint(template / epoch_checkpoint_name(5, None), 5, "template", True, rows)
    _write_log(template, [dict(rows[0], epoch=e) for e in range(1, 6)])
    for i in range(n):
        shutil.copytree(template, root / f"lcnn_DF_CCE_5_16_0.001_group3_contrastiveFalse_e{i:05d}",
                        copy_function=shutil.copy2)
    shutil.rmtree(template)


def make_log(root: Path, n: int) -> None:
    folder = root / "lcnn_DF_CCE_100_16_0.001_group3_contrastiveFalse_long"
    folder.mkdir(parents=True)
    _write_log(folder, [{"epoch": e, "train_loss": 1.0 / e, "train_eer": 20.0 / e ** 0.5, "val_loss": 0.5 + (e % 7) / 10,
                         "val_acc": 90.0, "val_eer": 5.0 + (e * 7919 % 1000) / 100, "best_val_eer": 5.0, "lr": 1e-3,
                         "epoch_seconds": 1.0, "timestamp": 1.7e9 + e, "experiment": folder.name}
                        for e in range(1, n + 1)])


def make_jobs(root: Path, n: int) -> None:
    from contextlib import closing

    from training.jobs.registry import connect, db_path

    with closing(connect(db_path(root))) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO jobs (experiment, exp_dir, mode, argv, log_path, state, created_at, started_at,"
            " ended_at, exit_code, num_epochs) VALUES (?, ?, 'fresh', '[]', '', ?, ?, ?, ?, 0, 10)",
            [(f"exp{i % 500}", str(root / f"exp{i % 500}"), "succeeded" if i % 10 else "failed",
              1.7e9 + i, 1.7e9 + i, 1.7e9 + i + 60) for i in range(n)])
        conn.execute("COMMIT")


MAKERS = {"list": lambda root, n: make_run(root, n, True), "list_pickle": lambda root, n: make_run(root, n, False),
          "experiments": make_experiments, "checkpoints": make_experiments, "curves": make_log, "jobs": make_jobs}


# --- what is timed (in a fresh child process) -------------------------------------------------------

def _stat_all(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(folder, name))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def child(case: str, root: Path) -> dict:
    if case in ("list", "list_pickle"):
        import contextlib
        import io

        from training import cli
        from training.checkpoint import pool
        with contextlib.redirect_stdout(io.StringIO()):
            seconds = _timed(lambda: cli.main(["--list_checkpoints", "--models_root", str(root),
                                               "--model_type", "lcnn", "--comment", COMMENT]))
        readers = len(pool._READERS)
        pool.shutdown()  # waited for: their peak is in RUSAGE_CHILDREN (the largest one's)
        reader_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if readers else 0.0
        return {"s": seconds, "base": _timed(lambda: _stat_all(root)), "readers_mb": readers * reader_mb}
    if case == "experiments":
        from training.dashboard import catalog, folder_memo
        time.sleep(folder_memo.RACY_WINDOW_NS / 1e9)  # folders older than the memo's racy window, as finished runs are
        first = _timed(lambda: catalog.scan_experiments(root))
        return {"s": _timed(lambda: catalog.scan_experiments(root)), "cold": first,
                "base": _timed(lambda: _stat_all(root))}
    if case == "checkpoints":
        from training.dashboard import catalog, views

        def page() -> None:
            names = catalog.list_experiment_names(root)
            options = views.bounded_options(names, "", [names[0]])
            frame = catalog.scan_checkpoints(root)
            views.checkpoint_table(frame, options[0], catalog.protected_checkpoints(root, options[0]))
            views.bounded_options(list(views.diff_targets(frame)), "e0", [options[0]])
        first = _timed(page)
        return {"s": _timed(page), "cold": first, "base": _timed(lambda: _stat_all(root))}
    if case == "curves":
        import pandas as pd

        from training.dashboard import catalog, plots
        name = next(p.name for p in root.iterdir())

        def page() -> None:
            history = catalog.experiment_history(root, name)
            for chart in plots.curve_figures({name: history}, smoothing=0.6):
                chart.figure.to_json()
        first = _timed(page)
        return {"s": _timed(page), "cold": first,
                "base": _timed(lambda: pd.read_csv(root / name / "training_log.csv"))}
    if case == "jobs":
        from training import jobs
        from training.dashboard.job_status import jobs_frame, visible_jobs

        def refresh() -> None:
            listed = jobs.list_jobs(root)
            jobs_frame(root, visible_jobs(listed, 0)[0])
        first = _timed(refresh)
        listed = jobs.list_jobs(root)
        return {"s": _timed(refresh), "cold": first,
                "base": _timed(lambda: [job.is_active and job.id for job in listed])}
    raise SystemExit(f"unknown case {case}")


def _peak_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: Linux carries it over from the parent
    through fork and exec, so every child would report the (torch-loaded) parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(case: str, root: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, str(root)], capture_output=True, text=True,
                         check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the tables ------------------------------------------------------------------------------------

def table(case: str, sizes: list[int], workdir: Path) -> None:
    print(f"\n{case}")
    print(f"{'N':>8} {'time s':>9} {'cold s':>9} {'baseline s':>11} {'x baseline':>11} {'peak MB':>8} {'growth/10x':>11}"
          f" {'+readers MB':>12}")
    previous: tuple[int, float] | None = None
    for n in sizes:
        root = workdir / f"{case}_{n}"
        MAKERS[case](root, n)
        got = run_child(case, root)
        growth = ""
        if previous is not None:
            factor = (got["s"] / previous[1]) ** (1 / __import__("math").log10(n / previous[0]))
            growth = f"{factor:.1f}x"
        cold = f"{got['cold']:.3f}" if "cold" in got else "-"
        print(f"{n:>8,} {got['s']:>9.3f} {cold:>9} {got['base']:>11.4f} {got['s'] / max(got['base'], 1e-9):>11.1f} "
              f"{got['peak_mb']:>8.0f} {growth:>11} {got.get('readers_mb', 0):>12.0f}", flush=True)
        previous = (n, got["s"])
        shutil.rmtree(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="add the goal sizes (10,000 checkpoints / experiments)")
    ap.add_argument("--cases", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        got = child(args.child[0], Path(args.child[1]))
        got["peak_mb"] = _peak_mb()
        print(json.dumps(got))
        return
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for case in args.cases.split(","):
            table(case, SIZES[case] + (FULL_EXTRA.get(case, []) if args.full else []), Path(tmp))
    print("\ntime: the timed call (a rerun: warm caches, where 'cold' is the first call); growth/10x: "
          "time ratio per 10x of N (10 = linear, 1 = flat); peak MB: the child process's max RSS; "
          "+readers MB: its reader processes (training.checkpoint.pool), count x the largest one's peak.")


if __name__ == "__main__":
    main()
