"""Training throughput of the package against a minimal hand-written PyTorch loop.

Both train the same model on the same synthetic data with the same batch size, optimizer and
loss, validate every epoch and save a checkpoint every epoch (the hand-written loop with a plain
``torch.save``). The package's loop adds exact-resume bookkeeping, atomic background saves,
sidecars, the CSV log and tqdm; the printed ratio says what that costs.

    python bench/bench_train_throughput.py [--model_type lcnn] [--epochs 3] [--train_size 512]

Goal: ratio (package / hand-written samples per second) >= 0.9.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from training.config import DEFAULTS  # noqa: E402
from training.data.datasets import build_datasets  # noqa: E402
from training.losses import build_criterion  # noqa: E402
from training.metrics import compute_eer  # noqa: E402
from training.models import build_model  # noqa: E402
from training.trainer import StartPlan, Trainer, collate  # noqa: E402


def hand_written(args: dict, out: Path) -> float:
    """The loop a researcher would write: seconds for the whole run."""
    torch.manual_seed(args["seed"])
    train_set, val_set = build_datasets(args)
    model = build_model(args)
    criterion = build_criterion(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args["lr"], weight_decay=args["weight_decay"])
    train_loader = DataLoader(train_set, batch_size=args["batch_size"], shuffle=True, collate_fn=collate)
    val_loader = DataLoader(val_set, batch_size=args["batch_size"], collate_fn=collate)
    start = time.perf_counter()
    for epoch in range(1, args["num_epochs"] + 1):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss, _ = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        scores, labels = [], []
        with torch.no_grad():
            for x, y in val_loader:
                scores.append(model(x).log_probs[:, 1])
                labels.append(y)
        s, lab = torch.cat(scores).numpy(), torch.cat(labels).numpy()
        eer = compute_eer(s[lab == 1], s[lab == 0])[0]
        torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict(), "val_eer": eer}, out / f"epoch_{epoch}.pth")
    return time.perf_counter() - start


def package(args: dict, root: Path) -> float:
    """``Trainer`` from the start of its loop to the last checkpoint on disk."""
    trainer = Trainer(dict(args, models_root=str(root)), StartPlan("fresh"), echo=lambda _: None)
    trainer._setup_device()
    trainer._setup_determinism()
    trainer._setup_data()
    trainer._setup_model()
    trainer._setup_optimizer()
    trainer.exp_dir.mkdir(parents=True)
    start = time.perf_counter()
    trainer._train(int(args["num_epochs"]))
    trainer.writer.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_type", default="lcnn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train_size", type=int, default=384)
    parser.add_argument("--val_size", type=int, default=128)
    parser.add_argument("--clip_samples", type=int, default=16000)
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()
    args = dict(DEFAULTS, model_type=opts.model_type, num_epochs=opts.epochs, train_size=opts.train_size,
                val_size=opts.val_size, clip_samples=opts.clip_samples, lr=1e-3,
                algo=0)  # the loop's own cost; RawBoost's is bench_rawboost.py's
    # Warm the synthetic data cache and torch's kernels once so neither side pays for them.
    with tempfile.TemporaryDirectory() as tmp:
        hand_written(dict(args, num_epochs=1), Path(tmp))
    best_hand, best_pkg = float("inf"), float("inf")
    for _ in range(opts.repeats):  # alternate, keep the best of each: the machine is noisy
        with tempfile.TemporaryDirectory() as tmp:
            best_hand = min(best_hand, hand_written(args, Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            best_pkg = min(best_pkg, package(args, Path(tmp)))
    samples = opts.train_size * opts.epochs
    print(f"model {opts.model_type}, {opts.epochs} epochs x {opts.train_size} clips of {opts.clip_samples} samples, "
          f"batch {args['batch_size']}, {torch.get_num_threads()} threads")
    print(f"hand-written loop : {samples / best_hand:8.1f} samples/s  ({best_hand:.2f} s)")
    print(f"training package  : {samples / best_pkg:8.1f} samples/s  ({best_pkg:.2f} s)")
    print(f"ratio package/hand-written: {best_hand / best_pkg:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
