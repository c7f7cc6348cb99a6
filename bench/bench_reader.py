"""Checkpoint metadata: training.checkpoint.meta against torch.load(weights_only=True), same files.

Writes N checkpoints (default 20) that each hold a P-parameter float32 model state (default 25M
parameters = 100 MB per file, 2 GB in all) in a temporary folder, then times
  (a) read_checkpoint_info() over all N files, pickle path (no sidecars): what --list_checkpoints,
      auto-resume and the dashboard pay the first time they see a file
  (b) the same with sidecars written by the trainer (the usual case)
  (c) torch.load(weights_only=True) of each file: the baseline
and prints (c)/(a) and (c)/(b). Files were just written, so they sit in the page cache: the
baseline is measured at its fastest (from a cold disk torch.load only gets slower; the reader
reads a few KB per file either way).

Then the scaling: per-file time against the parameter count, up to 100M (the size the reader is
for), at a fixed number of tensors (the reader should stay flat, torch.load grows with the bytes),
and against the number of tensors in the pickle (which is what the reader's cost follows),
including Adam optimizer state.

    python bench/bench_reader.py [--files 20] [--params 25000000] [--tensors 300]
                                 [--max-params 100000000] [--no-scaling]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from training.checkpoint.meta import checkpoint_meta, read_checkpoint_info  # noqa: E402
from training.checkpoint.sidecar import file_sha256, write_sidecar  # noqa: E402


def model_state(params: int, tensors: int) -> dict[str, torch.Tensor]:
    """About ``params`` float32 parameters in ``tensors`` tensors: (weight, bias, norm) triples."""
    layers = max(tensors // 3, 1)
    width = max(int((params / layers) ** 0.5), 1)
    state: dict[str, torch.Tensor] = {}
    for i in range(layers):
        state[f"encoder.layers.{i}.linear.weight"] = torch.randn(width, width)
        state[f"encoder.layers.{i}.linear.bias"] = torch.zeros(width)
        state[f"encoder.layers.{i}.norm.weight"] = torch.ones(width)
    return state


def adam_state(state: dict[str, torch.Tensor]) -> dict:
    """An Adam state_dict's layout for ``state`` (moments share the weights' storage: the pickle
    structure is what matters here, not the bytes)."""
    return {
        "state": {i: {"step": torch.tensor(100.0), "exp_avg": t, "exp_avg_sq": t}
                  for i, t in enumerate(state.values())},
        "param_groups": [{"lr": 1e-6, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-4,
                          "amsgrad": False, "params": list(range(len(state)))}],
    }


def checkpoint(epoch: int, state: dict, optimizer: dict | None) -> dict:
    ck = {
        "epoch": epoch,
        "model_state_dict": state,
        "train_loss": 0.15, "train_eer": 7.29, "val_loss": 0.0055, "val_acc": 99.84,
        "val_eer": 0.16, "best_val_eer": 0.16, "best_epoch": epoch,
        "args": {"model_type": "g3_heatmap", "track": "DF", "lr": 1e-6, "batch_size": 16},
        "history": [{"epoch": e, "val_eer": 1.0 / e} for e in range(1, epoch + 1)],
        "rng_state": {"python": random.getstate(), "torch": torch.get_rng_state()},
    }
    if optimizer is not None:
        ck["optimizer_state_dict"] = optimizer
    return ck


def write_files(folder: Path, n: int, state: dict, optimizer: dict | None) -> list[Path]:
    paths = []
    for i in range(1, n + 1):
        path = folder / f"checkpoint_epoch_{i}.pth"
        torch.save(checkpoint(i, state, optimizer), path)
        paths.append(path)
    return paths


def time_reader(paths: list[Path], use_sidecar: bool, repeats: int = 5) -> float:
    """Median seconds to read all files."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        infos = [read_checkpoint_info(p, use_sidecar=use_sidecar) for p in paths]
        times.append(time.perf_counter() - t0)
        assert all(i.kind == "full" for i in infos), [i.reason for i in infos]
        assert all(i.source == ("sidecar" if use_sidecar else "pickle") for i in infos)
    return statistics.median(times)


def time_torch(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        obj = torch.load(p, weights_only=True, map_location="cpu")
        del obj
    return time.perf_counter() - t0


def add_sidecars(paths: list[Path], state: dict) -> None:
    """What the trainer does after each save: checkpoint_meta of the live dict + sha256."""
    for epoch, p in enumerate(paths, start=1):
        write_sidecar(p, checkpoint_meta(checkpoint(epoch, state, None)), file_sha256(p))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--params", type=int, default=25_000_000)
    ap.add_argument("--tensors", type=int, default=300)
    ap.add_argument("--max-params", type=int, default=100_000_000,
                    help="largest model in the parameter scaling table (400 MB files)")
    ap.add_argument("--no-scaling", action="store_true")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_reader_") as tmp:
        folder = Path(tmp)
        state = model_state(a.params, a.tensors)
        n_params = sum(t.numel() for t in state.values())
        t0 = time.perf_counter()
        paths = write_files(folder, a.files, state, None)
        mb = paths[0].stat().st_size / 1e6
        print(f"{a.files} checkpoints x {n_params / 1e6:.1f}M params ({len(state)} tensors, "
              f"{mb:.0f} MB each) written in {time.perf_counter() - t0:.1f} s")
        assert read_checkpoint_info(paths[0]).num_params == n_params

        reader = time_reader(paths, use_sidecar=False)
        baseline = time_torch(paths)
        add_sidecars(paths, state)
        sidecar = time_reader(paths, use_sidecar=True)
        print(f"  (a) read_checkpoint_info, pickle path : {reader * 1e3:8.1f} ms "
              f"({reader / a.files * 1e3:.2f} ms/file)")
        print(f"  (b) read_checkpoint_info, sidecars    : {sidecar * 1e3:8.1f} ms "
              f"({sidecar / a.files * 1e3:.2f} ms/file)")
        print(f"  (c) torch.load(weights_only=True)     : {baseline * 1e3:8.1f} ms "
              f"({baseline / a.files * 1e3:.1f} ms/file, page cache warm)")
        print(f"  speedup (c)/(a): {baseline / reader:,.0f}x    (c)/(b): {baseline / sidecar:,.0f}x")
        for p in paths:
            p.unlink()

        if a.no_scaling:
            return
        print(f"\nscaling with parameter count ({a.tensors} tensors, 2 files each; per file):")
        print(f"  {'params':>8} {'MB':>6} {'reader ms':>10} {'torch.load ms':>14} {'ratio':>8}")
        for params in sorted({1_000_000, 5_000_000, a.params, a.max_params}):
            state = model_state(params, a.tensors)
            paths = write_files(folder, 2, state, None)
            r, b = time_reader(paths, False) / 2, time_torch(paths) / 2
            print(f"  {sum(t.numel() for t in state.values()) / 1e6:7.1f}M "
                  f"{paths[0].stat().st_size / 1e6:6.0f} {r * 1e3:10.2f} {b * 1e3:14.1f} {b / r:7.0f}x")
            for p in paths:
                p.unlink()
        print("\nscaling with tensors in the pickle (1M params, 3 files each; per file):")
        print(f"  {'tensors':>8} {'+Adam':>6} {'pickle KB':>10} {'reader ms':>10}")
        for tensors in (30, 300, 1500):
            state = model_state(1_000_000, tensors)
            for with_adam in (False, True):
                paths = write_files(folder, 3, state, adam_state(state) if with_adam else None)
                with zipfile.ZipFile(paths[0]) as z:
                    pkl = next(i for i in z.infolist() if i.filename.endswith("/data.pkl"))
                r = time_reader(paths, False) / 3
                print(f"  {len(state):8d} {'yes' if with_adam else 'no':>6} "
                      f"{pkl.file_size / 1e3:10.1f} {r * 1e3:10.2f}")
                for p in paths:
                    p.unlink()


if __name__ == "__main__":
    main()
