"""Render time of the read pages on a large models root, against a trivial page in the same run.

Synthesises a models root of E experiments (default 200) x N epochs (default 100): each gets a
``training_log.csv`` with N rows and K (default 3) small but real checkpoints (``torch.save`` of
the trainer's dict layout with a tiny model, the full per-epoch history inside, and the sidecar
the trainer writes), without training. A tenth of the runs stop early (status "interrupted") and
a few are resumed into another folder (lineage). Then times, with Streamlit's AppTest:

  - the Experiments page (table of all experiments, sparklines), cold (first scan) and warm
  - the Curves page with S (default 5) experiments selected, cold and warm
  - the baseline: a one-line page (``st.write``) in the same process

and prints the warm medians, the goal (under 1 s each) and the ratio against the baseline.

    python bench/bench_render.py [--experiments 200] [--epochs 100] [--checkpoints 3] [--selected 5]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from training.checkpoint.meta import checkpoint_meta  # noqa: E402
from training.checkpoint.sidecar import file_sha256, write_sidecar  # noqa: E402
from training.naming import best_checkpoint_name, epoch_checkpoint_name, experiment_name  # noqa: E402
from training.naming import LOG_NAME  # noqa: E402
from training.run_folder import LOG_COLUMNS  # noqa: E402

GOAL_S = 1.0
WARM_REPEATS = 5
MODEL_TYPES = ("lcnn", "g3_heatmap")
TRACKS = ("DF", "LA")


def fake_history(name: str, epochs: int, seed: int) -> list[dict]:
    """A plausible curve: EER falling from ~40% with noise; losses falling."""
    g = torch.Generator().manual_seed(seed)
    rows, best = [], float("inf")
    for epoch in range(1, epochs + 1):
        noise = float(torch.rand(1, generator=g)) - 0.5
        val_eer = max(0.05, 40.0 / (1 + 0.1 * epoch) + 2 * noise)
        best = min(best, val_eer)
        rows.append({"epoch": epoch, "train_loss": 1.0 / epoch + 0.01, "train_eer": val_eer * 0.8,
                     "val_loss": 1.2 / epoch + 0.02, "val_acc": 100 - val_eer, "val_eer": val_eer,
                     "best_val_eer": best, "lr": 1e-3, "epoch_seconds": 1.0, "timestamp": 1.7e9 + epoch,
                     "experiment": name})
    return rows


def write_checkpoint(path: Path, args: dict, history: list[dict], lineage: dict | None) -> None:
    """A small real checkpoint in the trainer's layout, and its sidecar (what the trainer writes)."""
    last = history[-1]
    best = min(history, key=lambda r: r["val_eer"])
    obj = {"format_version": 2, "epoch": last["epoch"], "step_in_epoch": 0,
           "model_state_dict": {"fc.weight": torch.zeros(8, 8), "fc.bias": torch.zeros(8)},
           "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
           **{k: last[k] for k in ("train_loss", "train_eer", "val_loss", "val_acc", "val_eer")},
           "best_val_eer": best["val_eer"], "best_epoch": best["epoch"], "args": args,
           "experiment": experiment_name(args), "history": history, "lineage": lineage}
    torch.save(obj, path)
    write_sidecar(path, checkpoint_meta(obj), file_sha256(path))


def synthesise(root: Path, experiments: int, epochs: int, checkpoints: int) -> list[str]:
    names = []
    for i in range(experiments):
        interrupted = i % 10 == 9
        args = {"model_type": MODEL_TYPES[i % 2], "track": TRACKS[(i // 2) % 2], "loss": "CCE",
                "num_epochs": epochs + (50 if interrupted else 0), "batch_size": 16, "lr": 1e-3,
                "group_size": 3, "use_contrastive": False, "comment": f"run{i:03d}", "seed": i}
        name = experiment_name(args)
        folder = root / name
        folder.mkdir(parents=True)
        parent = names[i - 1] if i % 25 == 24 else None  # a few resumed into a new folder
        lineage = ({"mode": "resume", "parent_experiment": parent, "parent_checkpoint": str(root / parent / "x.pth"),
                    "parent_epoch": epochs} if parent else None)
        history = fake_history(name, epochs, seed=i)
        with open(folder / LOG_NAME, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            out.writeheader()
            out.writerows(history)
        for epoch in range(epochs - checkpoints + 2, epochs + 1):
            write_checkpoint(folder / epoch_checkpoint_name(epoch, args["comment"]), args, history[:epoch], lineage)
        write_checkpoint(folder / best_checkpoint_name(args["comment"]), args, history, lineage)
        names.append(name)
    return names


def timed_runs(at, repeats: int) -> tuple[float, float]:
    """(first run, median of the next ``repeats``) in seconds; fails on a page exception."""
    start = time.perf_counter()
    at.run()
    first = time.perf_counter() - start
    assert not at.exception, at.exception
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    return first, statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--checkpoints", type=int, default=3, help="checkpoint files per experiment")
    parser.add_argument("--selected", type=int, default=5, help="experiments on the Curves page")
    opts = parser.parse_args()

    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        start = time.perf_counter()
        names = synthesise(root, opts.experiments, opts.epochs, opts.checkpoints)
        files = sum(1 for _ in root.rglob("*.pth"))
        print(f"models root: {opts.experiments} experiments x {opts.epochs} epochs, {files} checkpoints "
              f"with sidecars (written in {time.perf_counter() - start:.1f} s)")
        os.environ["MODELS_ROOT"] = str(root)

        trivial = Path(tmp) / "trivial.py"
        trivial.write_text('import streamlit as st\nst.write("hello")\n')
        _, baseline = timed_runs(AppTest.from_file(str(trivial), default_timeout=120), WARM_REPEATS)

        experiments = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=120)
        exp_cold, exp_warm = timed_runs(experiments, WARM_REPEATS)
        shown = len(experiments.dataframe[0].value)
        assert shown == opts.experiments, f"the table shows {shown} rows, expected {opts.experiments}"

        curves = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=120)
        curves.run()
        curves.switch_page("pages/curves.py")
        curves.query_params["exp"] = names[-opts.selected:]  # includes a resumed run (its parent too)
        cur_cold, cur_warm = timed_runs(curves, WARM_REPEATS)
        charts = len(curves.get("plotly_chart"))
        # four metric charts, learning rate and epoch time (these runs have no step log)
        assert charts == 6, f"the Curves page drew {charts} charts, expected 6"

    print(f"baseline: one-line page (st.write)          warm {baseline * 1000:8.1f} ms")
    for label, cold, warm in (("Experiments page (all rows, sparklines)", exp_cold, exp_warm),
                              (f"Curves page ({opts.selected} selected, 6 charts)", cur_cold, cur_warm)):
        verdict = "ok" if warm < GOAL_S else "OVER GOAL"
        print(f"{label:44s} cold {cold * 1000:8.1f} ms  warm {warm * 1000:8.1f} ms  "
              f"= {warm / baseline:5.1f}x baseline  (goal < {GOAL_S:.0f} s warm: {verdict})")


if __name__ == "__main__":
    main()
