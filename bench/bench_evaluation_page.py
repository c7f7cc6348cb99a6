"""Evaluation page and score-file loading on a large set of results, against pandas.read_csv.

Synthesises, in a temporary models root, C evaluated checkpoints (default 30) x 3 evaluation
sets (LA, DF, In-the-Wild), each score file L lines (default 611,829: the 2021 DF key), with a
``metrics.json`` as ``--eval`` writes it and one key per set, without training or scoring (one
score file written per set, the others hard links to it).
Then times:

  - first load of one score file: training.dashboard.evaluation.read_scores (cold cache) against
    ``pandas.read_csv`` of the same file (goal: under 0.5 s), in key order and with its lines
    shuffled; reading the DF key's labels for the page against ``keys.read_key``;
  - the Evaluation page under Streamlit's AppTest with S (default 3) checkpoints picked for the
    DET curves and histograms: first render (cold caches: every metrics file, the key and the S
    score files read) and warm render (median of 5; goal: under 1 s);
  - the baseline: pandas.read_csv of the S score files the page draws,

and prints the figures and the ratios against the baseline.

    python bench/bench_evaluation_page.py [--checkpoints 30] [--lines 611829] [--selected 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from training.dashboard import evaluation as ev  # noqa: E402
from training.naming import EVAL_DIRNAME  # noqa: E402

FIRST_LOAD_GOAL_S = 0.5
WARM_GOAL_S = 1.0
WARM_REPEATS = 5
SETS = ("LA", "DF", "In-the-Wild")
EXPERIMENT = "g3_heatmap_{track}_CCE_100_16_1e-06_group3_contrastiveFalse_bench{n}"


def trial_ids(track: str, lines: int) -> list[str]:
    prefix = {"LA": "LA_E_", "DF": "DF_E_", "In-the-Wild": ""}[track]
    return [f"{prefix}{i:07d}" for i in range(lines)]


def write_key(folder: Path, track: str, ids: list[str], labels: np.ndarray) -> Path:
    """A key of the track's own layout (what training.evaluation.keys reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    if track == "In-the-Wild":
        path = folder / "meta.csv"
        text = "file,speaker,label\n" + "".join(f"{t}.wav,spk,{'bona-fide' if b else 'spoof'}\n"
                                                 for t, b in zip(ids, labels))
    elif track == "LA":
        path = folder / "trial_metadata.txt"
        text = "".join(f"LA_0001 {t} {'LA-C1' if i % 2 else 'LA-C2'} alaw {'bonafide' if b else 'A07'} "
                       f"{'bonafide' if b else 'spoof'} notrim {'eval' if i % 3 else 'progress'}\n"
                       for i, (t, b) in enumerate(zip(ids, labels)))
    else:
        path = folder / "trial_metadata.txt"
        text = "".join(f"LA_0001 {t} mp3m4a asvspoof {'bonafide' if b else 'A07'} {'bonafide' if b else 'spoof'} "
                       f"notrim {'eval' if i % 3 else 'progress'} {'bonafide' if b else 'traditional_vocoder'} - - - -\n"
                       for i, (t, b) in enumerate(zip(ids, labels)))
    path.write_text(text)
    return path


def write_scores(path: Path, id_bytes: list[bytes], labels: np.ndarray, rng: np.random.Generator) -> Path:
    """A score file as --eval writes it: key order, float32 scores as shortest text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scores = (rng.normal(size=len(labels)) + 1.5 * labels).astype(np.float32)
    texts = np.char.mod("%.7g", scores).astype(bytes).tolist()
    path.write_bytes(b"".join(i + b" " + s + b"\n" for i, s in zip(id_bytes, texts)))
    return path


def place_copy(source: Path, path: Path) -> None:
    """The same bytes under another name: a hard link (no disk, no write time), else a copy. The
    caches key on the path, so every name is still parsed on its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)


def write_metrics(root: Path, path: Path, experiment: str, checkpoint: int, track: str, key: Path, lines: int,
                  rng: np.random.Generator) -> None:
    doc = {"track": track, "subset": "all" if track == "In-the-Wild" else "eval", "eer": float(rng.uniform(1, 20)),
           "min_tdcf": None, "counts": {"key_trials": lines}, "breakdown": None, "score_file": str(path),
           "key": str(key), "asv": None,
           "checkpoint": {"path": str(root / experiment / f"checkpoint_epoch_{checkpoint}.pth"), "epoch": checkpoint},
           "written_at": "2025-01-01T00:00:00Z"}
    path.with_name(path.name + ".metrics.json").write_text(json.dumps(doc))


def synthesise(root: Path, checkpoints: int, lines: int) -> dict[str, list[Path]]:
    """Per set one key and one score file written; the other checkpoints' score files are links
    to it (same content, so their DET curves coincide; each is still read and parsed)."""
    rng = np.random.default_rng(0)
    files: dict[str, list[Path]] = {}
    for track in SETS:
        ids = trial_ids(track, lines)
        labels = (rng.random(lines) < 0.1).astype(np.int8)
        key = write_key(root.parent / "keys" / track, track, ids, labels)
        source = write_scores(root.parent / "scores" / f"{track}.txt", [i.encode() for i in ids], labels, rng)
        files[track] = []
        for c in range(checkpoints):
            experiment = EXPERIMENT.format(track="DF", n=c % 10)
            path = root / experiment / EVAL_DIRNAME / f"checkpoint_epoch_{c + 1}_{track}.txt"
            place_copy(source, path)
            write_metrics(root, path, experiment, c + 1, track, key, lines, rng)
            files[track].append(path)
    return files


def shuffled_copy(source: Path, target: Path) -> Path:
    """The score file with its lines in random order (a file not in key order)."""
    lines = source.read_bytes().splitlines(keepends=True)
    order = np.random.default_rng(1).permutation(len(lines))
    target.write_bytes(b"".join(lines[i] for i in order))
    return target


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def page_app(root: Path, rows: list[str]):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard.py"), default_timeout=600)
    at.session_state["models_root"] = str(root)
    at.query_params["ev_set"] = "DF"
    at.query_params["ev_rows"] = rows
    at.switch_page("pages/evaluation.py")
    return at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", type=int, default=30)
    parser.add_argument("--lines", type=int, default=611_829)
    parser.add_argument("--selected", type=int, default=3)
    a = parser.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="bench_eval_page_") as tmp:
        root = Path(tmp) / "models"
        t0 = time.perf_counter()
        files = synthesise(root, a.checkpoints, a.lines)
        size = sum(p.stat().st_size for group in files.values() for p in group)
        print(f"{a.checkpoints} checkpoints x {len(SETS)} sets, {a.lines} lines per score file "
              f"({size / 2**30:.2f} GiB), written in {time.perf_counter() - t0:.0f} s")

        for label, one in (("one score file", files["DF"][0]),
                           ("one score file, lines shuffled", shuffled_copy(files["DF"][0], Path(tmp) / "shuffled.txt"))):
            ours = statistics.median(timed(lambda: (ev.clear_cache(), ev.read_scores(one))) for _ in range(5))
            theirs = statistics.median(timed(lambda: pd.read_csv(one, sep=" ", header=None, names=["trial", "score"]))
                                       for _ in range(5))
            print(f"first load of {label}: {ours:.3f} s (goal < {FIRST_LOAD_GOAL_S} s: "
                  f"{'met' if ours < FIRST_LOAD_GOAL_S else 'MISSED'}); pandas.read_csv {theirs:.3f} s; "
                  f"ratio {ours / theirs:.2f}")
        df_key = next(r.key_path for r in ev.find_results(root, [files["DF"][0].parents[1].name]) if r.track == "DF")
        labels_s = statistics.median(timed(lambda: (ev.clear_cache(), ev.read_labels_cached(df_key, "DF")))
                                     for _ in range(3))
        from training.evaluation.keys import read_key
        full_s = timed(lambda: read_key(df_key, "DF"))
        print(f"DF key ({a.lines} lines): labels for the page {labels_s:.3f} s; keys.read_key {full_s:.2f} s")

        picked = files["DF"][: a.selected]
        rows = [f"{p.parents[1].name}/{p.stem.rsplit('_', 1)[0]}.pth" for p in picked]
        baseline = timed(lambda: [pd.read_csv(p, sep=" ", header=None, names=["trial", "score"]) for p in picked])
        ev.clear_cache()
        at = page_app(root, rows)
        first = timed(at.run)
        assert not at.exception, [e.value for e in at.exception]
        dets = sum(1 for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]
                   if (t.get("meta") or {}).get("role") == "det")
        assert dets == len(rows), f"{dets} DET curves drawn, {len(rows)} picked"
        warm = statistics.median(timed(at.run) for _ in range(WARM_REPEATS))
        print(f"Evaluation page, {len(rows)} checkpoints drawn: first render {first:.2f} s, warm render "
              f"{warm:.3f} s (goal < {WARM_GOAL_S} s: {'met' if warm < WARM_GOAL_S else 'MISSED'})")
        print(f"baseline pandas.read_csv of the {len(rows)} drawn score files: {baseline:.2f} s; "
              f"first render / baseline {first / baseline:.2f}, warm render / baseline {warm / baseline:.3f}")
        print(f"score files parsed: {ev.score_loads()} (the warm renders parsed none)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
