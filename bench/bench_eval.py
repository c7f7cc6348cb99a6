"""Evaluation: throughput of ``--eval``'s scorer against a bare loop, and memory against the key's size.

    python bench/bench_eval.py [--trials 256] [--clip_samples 16000] [--batch_size 32] [--num_workers 0]
                               [--memory_sizes 10000 100000]

1. Throughput (utterances/s). The same synthetic LA set on disk (flac, written first), the same
   model (lcnn, random weights), the same batch size and loader workers. The bare loop is what a
   researcher writes: a Dataset reading and padding each flac, a DataLoader, ``model.eval()``,
   ``torch.no_grad()``, the bona fide column collected in a list. The package's path is what
   ``--eval`` runs after loading the checkpoint: locate the audio, score with the progress bar,
   write the score file, compute the pooled EER and the condition tables. Best of 3 runs each,
   alternating. Goal: ratio >= 0.9.
2. Memory. A key of N lines (LA format, conditions and subsets) scored by a tiny model through a
   fake loader that returns a short clip from memory (no disk), then the score file and metrics,
   each N in a fresh process; peak RSS (VmHWM) per N. Goal: flat, i.e. the growth from the
   smallest to the largest N stays a few bytes a trial (the key's own columns and the score
   array), not the audio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _lcnn():
    from training.config import DEFAULTS
    from training.models import build_model

    torch.manual_seed(0)
    return build_model({**DEFAULTS, "model_type": "lcnn"}).eval()


class BareFiles(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], clip: int):
        self.paths, self.clip = paths, clip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import soundfile as sf

        from training.data.common import pad

        audio, _ = sf.read(self.paths[i], dtype="float32")
        return torch.from_numpy(pad(audio, self.clip))


def bare_loop(model, paths: list[Path], clip: int, batch_size: int, workers: int) -> float:
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(BareFiles(paths, clip), batch_size=batch_size, num_workers=workers)
    scores = []
    model.eval()
    with torch.no_grad():
        for x in loader:
            scores.append(model(x).log_probs[:, 1])
    torch.cat(scores).numpy()
    return time.perf_counter() - start


def package_path(model, root: Path, out: Path, clip: int, batch_size: int, workers: int) -> float:
    from training.evaluation.keys import find_audio_dir, find_key, read_key
    from training.evaluation.official import breakdown_table
    from training.evaluation.scoring import EvalAudio, locate_audio, score_audio, write_score_file

    start = time.perf_counter()
    key = read_key(find_key(str(root), None, "LA"), "LA")
    audio_dir = find_audio_dir(str(root), "LA")
    audio = EvalAudio(key, locate_audio(key, audio_dir), audio_dir, clip)
    raw = score_audio(model, audio, batch_size=batch_size, num_workers=workers, device=torch.device("cpu"),
                      progress=True)
    scores = write_score_file(out, key, raw)
    breakdown_table(scores, key, "eval")
    return time.perf_counter() - start


def throughput(a: argparse.Namespace) -> None:
    from training.evaluation.synthetic import layout_paths, write_synthetic_eval_set

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_eval_set(root, "LA", a.trials, clip_samples=a.clip_samples, asv=False)
        audio_dir, key_path = layout_paths(root, "LA")
        paths = [audio_dir / f"{ln.split()[1]}.flac" for ln in key_path.read_text().splitlines()]
        model = _lcnn()
        bare, ours = [], []
        for _ in range(3):
            bare.append(bare_loop(model, paths, a.clip_samples, a.batch_size, a.num_workers))
            ours.append(package_path(model, root, root / "scores.txt", a.clip_samples, a.batch_size, a.num_workers))
        b, o = a.trials / min(bare), a.trials / min(ours)
        print(f"throughput: bare loop {b:.1f} utt/s, --eval path {o:.1f} utt/s, ratio {o / b:.3f} (goal >= 0.9)")


# --- memory ------------------------------------------------------------------------------------------

class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(16, 2)

    def forward(self, x):
        return torch.log_softmax(self.net(x.view(x.shape[0], -1, 16).mean(1)), dim=-1)


class FakeAudio:
    """A fast loader: the same short clip for every trial, from memory."""

    def __init__(self, n: int, clip: int = 256):
        self.n, self.clip = n, torch.randn(clip)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.clip, i, None


def write_key(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    codecs = ("none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus")
    with open(path, "w") as f:
        for i in range(n):
            bona = rng.random() < 0.1
            attack = "bonafide" if bona else f"A{7 + int(rng.integers(0, 13)):02d}"
            subset = ("eval", "progress", "hidden")[i % 3]
            f.write(f"LA_{i % 97:04d} LA_E_{i:07d} {codecs[i % 7]} tx {attack} {'bonafide' if bona else 'spoof'} "
                    f"notrim {subset}\n")


def memory_child(n: int) -> None:
    from training.evaluation.keys import read_key
    from training.evaluation.official import breakdown_table
    from training.evaluation.scoring import score_audio, write_score_file

    with tempfile.TemporaryDirectory() as tmp:
        key_path = Path(tmp) / "trial_metadata.txt"
        write_key(key_path, n)
        torch.manual_seed(0)
        key = read_key(key_path, "LA")
        raw = score_audio(TinyModel(), FakeAudio(len(key)), batch_size=256, num_workers=0,
                          device=torch.device("cpu"), progress=False)
        scores = write_score_file(Path(tmp) / "scores.txt", key, raw)
        breakdown_table(scores, key, "eval")
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM")).split()[1])
    print(json.dumps({"n": n, "peak_mb": peak_kb / 1024}))


def memory(a: argparse.Namespace) -> None:
    results = []
    for n in a.memory_sizes:
        out = subprocess.run([sys.executable, __file__, "--memory_child", str(n)], capture_output=True, text=True,
                             check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(f"memory: key of {r['n']:>7} lines: peak RSS {r['peak_mb']:.1f} MB")
    first, last = results[0], results[-1]
    growth = last["peak_mb"] - first["peak_mb"]
    per_trial = growth * 2**20 / (last["n"] - first["n"])
    print(f"memory: growth {growth:.1f} MB from {first['n']} to {last['n']} lines ({per_trial:.0f} bytes a trial; "
          f"a held 64,600-sample clip would be {64600 * 4} bytes)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=256)
    p.add_argument("--clip_samples", type=int, default=16000)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--memory_sizes", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--memory_child", type=int, default=None)
    p.add_argument("--skip_throughput", action="store_true")
    a = p.parse_args()
    if a.memory_child is not None:
        memory_child(a.memory_child)
        return
    if not a.skip_throughput:
        throughput(a)
    memory(a)


if __name__ == "__main__":
    main()
