"""--eval / --eval_scores: scores, the official metrics, the layouts, the refusals (training/evaluation/).

The references here are independent: the package's table is recomputed with pandas queries the
way its ``main.py`` does (join on the trial, ``subset == "eval"``, a spoof-only condition keeps
every bona fide trial), with ``test_metrics.reference_eer`` (the EER step by step); min t-DCF is
worked out by hand on a tiny case. Audio and keys are generated (soundfile), nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import TINY, child_env, run_cli, run_main
from test_metrics import reference_eer
from training.evaluation.official import (DF_COMPRESSIONS, DF_VOCODERS, LA_ATTACKS, LA_CODECS, TABLES,
                                          min_tdcf)
from training.evaluation.synthetic import write_synthetic_eval_set

LA_NAMES = ["spk", "trial", "codec", "trans", "attack", "label", "trim", "subset"]
DF_NAMES = ["speaker", "trial", "compr", "source", "attack", "label", "trim", "subset", "vocoder", "task", "team",
            "gender-pair", "language"]


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real checkpoint: one epoch of the tiny lcnn on 4000-sample synthetic clips."""
    root = tmp_path_factory.mktemp("trained")
    r = run_cli([*TINY, "--num_epochs", "1", "--algo", "0"], root / "models")
    assert r.code == 0, r.text
    return next((root / "models").glob("*/checkpoint_epoch_1.pth"))


@pytest.fixture(scope="module")
def la_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("la")
    write_synthetic_eval_set(root, "LA", 30, clip_samples=4000)
    return root


def test_training_checkpoints_do_not_record_the_evaluation_options(trained):
    from training.config import EVALUATION_OPTIONS
    from training.checkpoint.store import load_checkpoint

    stored = load_checkpoint(trained)["args"]
    assert "seed" in stored and not EVALUATION_OPTIONS & set(stored)


def _checkpoint_copy(trained: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "exp"
    folder.mkdir()
    for p in trained.parent.glob(trained.name + "*"):
        shutil.copy2(p, folder / p.name)
    return folder / trained.name


def _eval(args: list[str], tmp_path: Path):
    return run_cli(args, tmp_path / "models")


def _one_line_error(r) -> str:
    err = [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("Scoring:")]  # the bar
    assert len(err) == 1 and err[0].startswith("error: "), r.text
    assert "Traceback" not in r.text
    return err[0]


# --- the package's numbers, recomputed independently ---------------------------------------------------

def package_eer_table(key: Path, scores: Path, track: str, subset: str) -> np.ndarray:
    """The package's EER table (fractions): pandas join on the trial, the subset query, one query
    per cell; a condition only spoofs have restricts the spoof query alone."""
    import pandas as pd

    names = LA_NAMES if track == "LA" else DF_NAMES
    protocol = pd.read_csv(key, sep=" ", names=names, index_col="trial", skipinitialspace=True)
    score = pd.read_csv(scores, sep=" ", names=["trial", "score"], index_col="trial", skipinitialspace=True)
    joined = pd.concat([protocol, score[["score"]]], axis=1, join="inner")
    assert len(joined) == len(protocol) == len(score)
    joined = joined.query(f'subset == "{subset}"')
    rows, cols = TABLES[track]
    out = np.full((len(rows.values), len(cols.values)), np.nan)
    for i, r in enumerate(rows.values):
        for j, c in enumerate(cols.values):
            row_q = "" if r == "Pooled" else f' and {rows.column} == "{r}"'
            col_q = "" if c == "Pooled" else f' and {cols.column} == "{c}"'
            bona = joined.query('label == "bonafide"' + col_q)["score"].to_numpy()
            spoof = joined.query('label == "spoof"' + row_q + col_q)["score"].to_numpy()
            if len(bona) and len(spoof):
                out[i, j] = reference_eer(list(bona), list(spoof))[0]
    return out


def _as_array(table: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in table])


def _random_key(path: Path, track: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines, trials = [], []
    for i in range(n):
        bona = rng.random() < 0.3
        subset = ("eval", "progress", "hidden")[int(rng.integers(0, 3))]
        trial = f"{track}_E_{i:07d}"
        trials.append(trial)
        if track == "LA":
            attack = "bonafide" if bona else LA_ATTACKS[int(rng.integers(0, 5))]
            codec = LA_CODECS[int(rng.integers(0, 3))]
            lines.append(f"LA_0001 {trial} {codec} tx {attack} {'bonafide' if bona else 'spoof'} notrim {subset}")
        else:
            k = int(rng.integers(0, len(DF_VOCODERS)))
            voc = "bonafide" if bona else DF_VOCODERS[k]
            compr = DF_COMPRESSIONS[int(rng.integers(0, 4))]
            lines.append(f"DF_0001 {trial} {compr} vcc2020 A0{k} {'bonafide' if bona else 'spoof'} notrim "
                         f"{subset} {voc} - - - -")
    path.write_text("\n".join(lines) + "\n")
    return trials


@pytest.mark.parametrize("track", ["LA", "DF"])
@pytest.mark.parametrize("subset", ["eval", "progress"])
def test_pooled_and_per_condition_eer_equal_the_package_on_heavy_ties(tmp_path, track, subset):
    key = tmp_path / "trial_metadata.txt"
    trials = _random_key(key, track, 400, seed=7)
    rng = np.random.default_rng(3)
    values = rng.integers(-2, 3, len(trials)) * 0.5  # five distinct scores: ties everywhere
    order = rng.permutation(len(trials))  # the package joins on the trial: line order is free
    scores = tmp_path / "scores.txt"
    scores.write_text("".join(f"{trials[i]} {values[i]}\n" for i in order))
    r = _eval(["--eval_scores", str(scores), "--track", track, "--protocols_path", str(key),
               "--eval_subset", subset], tmp_path)
    assert r.code == 0, r.text
    name = scores.name + (".metrics.json" if subset == "eval" else f".{subset}.metrics.json")
    doc = json.loads((tmp_path / name).read_text())
    expected = package_eer_table(key, scores, track, subset) * 100
    got = _as_array(doc["breakdown"]["eer"])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.array_equal(got[~np.isnan(got)], expected[~np.isnan(expected)])  # to the last bit
    assert doc["eer"] == expected[-1, -1] and doc["subset"] == subset
    # the subset column is honoured: --eval_subset all covers more trials
    with_all = _eval(["--eval_scores", str(scores), "--track", track, "--protocols_path", str(key),
                      "--eval_subset", "all"], tmp_path)
    assert with_all.code == 0
    pooled_all = json.loads((tmp_path / (scores.name + ".all.metrics.json")).read_text())
    assert pooled_all["counts"]["trials"] == len(trials) > doc["counts"]["trials"]
    counts = doc["breakdown"]
    assert counts["bonafide"][-1][-1] + counts["spoof"][-1][-1] == doc["counts"]["trials"]


def test_spoof_only_conditions_keep_every_bona_fide_trial(tmp_path):
    """An attack's cell compares that attack's spoofs with *all* bona fide trials (of the codec)."""
    key = tmp_path / "key.txt"
    key.write_text("s T1 none tx bonafide bonafide notrim eval\n"
                   "s T2 none tx bonafide bonafide notrim eval\n"
                   "s T3 none tx A07 spoof notrim eval\n"
                   "s T4 none tx A08 spoof notrim eval\n")
    scores = tmp_path / "s.txt"
    scores.write_text("T1 1.0\nT2 3.0\nT3 2.0\nT4 0.0\n")
    assert _eval(["--eval_scores", str(scores), "--track", "LA", "--protocols_path", str(key)], tmp_path).code == 0
    doc = json.loads((tmp_path / "s.txt.metrics.json").read_text())
    eer = _as_array(doc["breakdown"]["eer"])
    rows = doc["breakdown"]["rows"]["values"]
    assert eer[rows.index("A07"), 0] == 100 * reference_eer([1.0, 3.0], [2.0])[0] == 75.0  # not 100: T2 counts
    assert eer[rows.index("A08"), 0] == 0.0
    assert doc["breakdown"]["bonafide"][rows.index("A08")][0] == 2


# --- min t-DCF -------------------------------------------------------------------------------------------

def test_min_tdcf_equals_a_hand_computation():
    """ASV: targets 2 3 4, nontargets -1 0 1, spoofs 0.5 1.5. Sorted, the ASV EER point is after
    the three nontargets (FRR = FAR = 0), threshold 1: Pfa = 1/3 (the nontarget at 1 is accepted,
    score >= threshold), Pmiss = 0, Pfa_spoof = 1/2. With Ptar 0.9405, Pnon 0.0095, Cfa 10:
    C0 = 0.095/3, C1 = 0.9405 - C0, C2 = 0.05 * 10 * 1/2 = 0.25.
    CM: bona fide 0.9 0.8 0.3, spoof 0.1 0.5; rejecting the lowest k: Pmiss 0 0 1/3 1/3 2/3 1,
    Pfa 1 1/2 1/2 0 0 0. The cost C0 + C1 Pmiss + C2 Pfa is lowest at k = 1 (C0 + 0.125), the
    default C0 + min(C1, C2) = C0 + 0.25: min t-DCF = (0.095 + 0.375) / (0.095 + 0.75) = 0.47 / 0.845."""
    from training.evaluation.official import asv_error_rates, c012

    pfa, pmiss, pfa_spoof = asv_error_rates(np.array([2.0, 3, 4]), np.array([-1.0, 0, 1]), np.array([0.5, 1.5]))
    assert (pfa, pmiss, pfa_spoof) == (1 / 3, 0.0, 0.5)
    c0, c1, c2 = c012(pfa, pmiss, pfa_spoof)
    assert c0 == pytest.approx(0.095 / 3, abs=1e-15) and c1 == pytest.approx(0.9405 - 0.095 / 3, abs=1e-15)
    assert c2 == pytest.approx(0.25, abs=1e-15)
    got = min_tdcf(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.5]), c0, c1, c2)
    assert got == pytest.approx(0.47 / 0.845, abs=1e-12)


def test_min_tdcf_from_the_official_asv_files_next_to_the_key(tmp_path):
    keys = tmp_path / "keys" / "LA"
    (keys / "CM").mkdir(parents=True)
    (keys / "ASV" / "ASVTorch_Kaldi").mkdir(parents=True)
    cm = [("B1", "bonafide", 0.9), ("B2", "bonafide", 0.8), ("B3", "bonafide", 0.3), ("S1", "spoof", 0.1),
          ("S2", "spoof", 0.5)]
    (keys / "CM" / "trial_metadata.txt").write_text("".join(
        f"LA_1 {t} none tx {'bonafide' if lab == 'bonafide' else 'A07'} {lab} notrim eval\n" for t, lab, _ in cm))
    asv = [("B1", "target", 2), ("B1", "nontarget", -1), ("B2", "target", 3), ("B2", "nontarget", 0),
           ("B3", "target", 4), ("B3", "nontarget", 1), ("S1", "spoof", 0.5), ("S2", "spoof", 1.5)]
    (keys / "ASV" / "trial_metadata.txt").write_text("".join(
        f"LA_1 {t} none tx {'A07' if lab == 'spoof' else 'bonafide'} {lab} notrim eval\n" for t, lab, _ in asv))
    (keys / "ASV" / "ASVTorch_Kaldi" / "score.txt").write_text("".join(f"LA_1 {t} {s}\n" for t, _, s in asv))
    scores = tmp_path / "cm.txt"
    scores.write_text("".join(f"{t} {s}\n" for t, _, s in cm))
    r = _eval(["--eval_scores", str(scores), "--track", "LA", "--protocols_path", str(tmp_path)], tmp_path)
    assert r.code == 0, r.text
    doc = json.loads((tmp_path / "cm.txt.metrics.json").read_text())
    assert doc["min_tdcf"] == pytest.approx(0.47 / 0.845, abs=1e-12)
    table = doc["breakdown"]
    assert table["min_tdcf"][0][0] == doc["min_tdcf"]  # A07 x C1 (none): the same trials
    assert table["min_tdcf"][1][0] is None  # A08: no trials
    assert "min t-DCF" in r.out and doc["asv"]["scores"].endswith("score.txt")
    # an ASV score file out of step with its key is one line, not a silently wrong number
    lines = (keys / "ASV" / "ASVTorch_Kaldi" / "score.txt").read_text().splitlines()
    (keys / "ASV" / "ASVTorch_Kaldi" / "score.txt").write_text("\n".join([lines[2], lines[1], lines[0], *lines[3:]]) + "\n")
    bad = _eval(["--eval_scores", str(scores), "--track", "LA", "--protocols_path", str(tmp_path)], tmp_path)
    assert bad.code == 2 and "joined line by line" in _one_line_error(bad)


# --- --eval: the scores ---------------------------------------------------------------------------------

def test_eval_scores_are_the_models_bona_fide_log_probabilities(trained, la_set, tmp_path):
    from training.models import build_model
    from training.checkpoint.store import load_checkpoint

    out = tmp_path / "out" / "scores.txt"
    r = _eval(["--eval", "--model_path", str(trained), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set / "keys"), "--eval_output", str(out), "--batch_size", "7"], tmp_path)
    assert r.code == 0, r.text
    key_lines = (la_set / "keys/LA/CM/trial_metadata.txt").read_text().splitlines()
    lines = [ln.split(" ") for ln in out.read_text().splitlines()]
    assert [t for t, _ in lines] == [ln.split()[1] for ln in key_lines]  # one line per trial, key order
    ckpt = load_checkpoint(trained)
    model = build_model(ckpt["args"])
    model.load_state_dict(ckpt["model_state_dict"])
    model.eval()
    for trial, text in lines:
        audio, rate = sf.read(la_set / "ASVspoof2021_LA_eval/flac" / f"{trial}.flac", dtype="float32")
        assert rate == 16000 and audio.shape == (4000,)  # the model's training clip length
        with torch.no_grad():
            by_hand = model(torch.from_numpy(audio)[None]).log_probs[0, 1].item()
        assert float(text) == pytest.approx(by_hand, abs=1e-5)
        assert np.format_float_positional(np.float32(text), unique=True, trim="0") == text  # float32, shortest
    doc = json.loads(out.with_name("scores.txt.metrics.json").read_text())
    eval_rows = [i for i, ln in enumerate(key_lines) if ln.split()[7] == "eval"]
    bona = [float(lines[i][1]) for i in eval_rows if key_lines[i].split()[5] == "bonafide"]
    spoof = [float(lines[i][1]) for i in eval_rows if key_lines[i].split()[5] == "spoof"]
    assert doc["eer"] == reference_eer(bona, spoof)[0] * 100
    assert doc["counts"] == {"key_trials": 30, "trials": len(eval_rows), "bonafide": len(bona), "spoof": len(spoof)}
    assert doc["checkpoint"]["sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()
    assert doc["checkpoint"]["epoch"] == 1 and doc["checkpoint"]["model_type"] == "lcnn"
    assert doc["min_tdcf"] is not None  # the synthetic LA set ships ASV scores
    assert "Pooled EER" in r.out and "A07" in r.out


def test_default_score_file_lies_in_the_experiment_folder_next_to_the_checkpoint(trained, la_set, tmp_path):
    ckpt = _checkpoint_copy(trained, tmp_path)
    r = _eval(["--eval", "--model_path", str(ckpt), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set)], tmp_path)
    assert r.code == 0, r.text
    score_file = ckpt.parent / "eval" / "checkpoint_epoch_1_LA.txt"
    assert score_file.is_file() and (ckpt.parent / "eval" / "checkpoint_epoch_1_LA.txt.metrics.json").is_file()
    assert sorted(p.name for p in (ckpt.parent / "eval").iterdir()) == [
        "checkpoint_epoch_1_LA.txt", "checkpoint_epoch_1_LA.txt.metrics.json"]  # no temporary files left


def _old_head_checkpoint(path: Path, weights_only: bool) -> torch.nn.Module:
    from training.config import DEFAULTS
    from training.models import G3HeatmapV0, build_model

    torch.manual_seed(5)
    args = {**DEFAULTS, "clip_samples": 4000}  # no head_version: written before it was recorded
    model = build_model(args)
    assert isinstance(model, G3HeatmapV0)
    state = model.state_dict()
    obj = state if weights_only else {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {},
                                      "args": args}
    torch.save(obj, path)
    return model.eval()


@pytest.mark.parametrize("weights_only", [False, True])
def test_old_head_checkpoints_rebuild_their_own_model(la_set, tmp_path, weights_only):
    ckpt = tmp_path / "old.pth"
    model = _old_head_checkpoint(ckpt, weights_only)
    out = tmp_path / "s.txt"
    r = _eval(["--eval", "--model_path", str(ckpt), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set), "--eval_output", str(out), "--clip_samples", "4000"], tmp_path)
    assert r.code == 0, r.text
    trial, text = out.read_text().splitlines()[3].split()
    audio, _ = sf.read(la_set / "ASVspoof2021_LA_eval/flac" / f"{trial}.flac", dtype="float32")
    with torch.no_grad():
        assert float(text) == pytest.approx(model(torch.from_numpy(audio)[None]).log_probs[0, 1].item(), abs=1e-5)
    doc = json.loads((tmp_path / "s.txt.metrics.json").read_text())
    assert doc["checkpoint"]["head_version"] == 0
    assert doc["checkpoint"]["epoch"] == (None if weights_only else 3)


def test_a_damaged_checkpoint_is_refused_before_anything_is_written(trained, la_set, tmp_path):
    ckpt = _checkpoint_copy(trained, tmp_path)
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(data)
    r = _eval(["--eval", "--model_path", str(ckpt), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set)], tmp_path)
    assert r.code == 2 and "damaged" in _one_line_error(r)
    assert not (ckpt.parent / "eval").exists()


# --- In-the-Wild --------------------------------------------------------------------------------------

def test_in_the_wild_meta_csv(trained, tmp_path):
    root = tmp_path / "itw"
    write_synthetic_eval_set(root, "In-the-Wild", 16, clip_samples=4000)
    meta = (root / "release_in_the_wild" / "meta.csv").read_text().splitlines()
    assert meta[0] == "file,speaker,label" and meta[1].endswith(",bona-fide")
    out = tmp_path / "itw.txt"
    r = _eval(["--eval", "--model_path", str(trained), "--track", "In-the-Wild", "--database_path", str(root),
               "--eval_output", str(out)], tmp_path)
    assert r.code == 0, r.text
    lines = [ln.split() for ln in out.read_text().splitlines()]
    assert [t for t, _ in lines] == [row.split(",")[0].removesuffix(".wav") for row in meta[1:]]
    labels = [row.split(",")[2] for row in meta[1:]]
    doc = json.loads((tmp_path / "itw.txt.metrics.json").read_text())
    bona = [float(s) for (_, s), lab in zip(lines, labels) if lab == "bona-fide"]
    spoof = [float(s) for (_, s), lab in zip(lines, labels) if lab == "spoof"]
    assert doc["eer"] == reference_eer(bona, spoof)[0] * 100
    assert doc["subset"] == "all" and doc["breakdown"] is None and doc["counts"]["trials"] == 16


# --- refusals, one line each ------------------------------------------------------------------------------

def test_missing_audio_is_reported_up_front(trained, tmp_path):
    root = tmp_path / "la"
    write_synthetic_eval_set(root, "LA", 12, clip_samples=4000)
    flac = root / "ASVspoof2021_LA_eval" / "flac"
    for trial in ("LA_E_0000002", "LA_E_0000005", "LA_E_0000009"):
        (flac / f"{trial}.flac").unlink()
    ckpt = _checkpoint_copy(trained, tmp_path)
    r = _eval(["--eval", "--model_path", str(ckpt), "--track", "LA", "--database_path", str(root),
               "--protocols_path", str(root)], tmp_path)
    assert r.code == 2
    line = _one_line_error(r)
    assert "3 of 12 audio files" in line and "LA_E_0000002.flac, LA_E_0000005.flac, LA_E_0000009.flac" in line
    assert "Scoring" not in r.text and not (ckpt.parent / "eval").exists()


SCORE_DAMAGE = {
    "a trial missing": (lambda lines: lines[1:], "1 trial(s) of the key have no score"),
    "a trial not in the key": (lambda lines: [*lines, "XX_E_9 0.5"], "name trials not in the key (first: XX_E_9)"),
    "a trial twice": (lambda lines: [*lines, lines[0]], "has a second score"),
    "three fields": (lambda lines: [lines[0] + " 1", *lines[1:]], "expected 'trial score'"),
    "not a number": (lambda lines: [lines[0].split()[0] + " abc", *lines[1:]], "is not a number"),
    "empty": (lambda lines: [], "empty"),
}


@pytest.mark.parametrize("damage", SCORE_DAMAGE)
def test_a_score_file_that_does_not_match_the_key_is_one_line(tmp_path, damage):
    key = tmp_path / "key.txt"
    trials = _random_key(key, "LA", 20, seed=1)
    edit, expected = SCORE_DAMAGE[damage]
    scores = tmp_path / "s.txt"
    scores.write_text("\n".join(edit([f"{t} {i / 10}" for i, t in enumerate(trials)])) + "\n")
    r = _eval(["--eval_scores", str(scores), "--track", "LA", "--protocols_path", str(key)], tmp_path)
    assert r.code == 2
    assert expected in _one_line_error(r) and str(scores) in r.err
    assert not (tmp_path / "s.txt.metrics.json").exists()


@pytest.mark.parametrize("args, expected", [
    (["--eval", "--track", "LA"], "--eval needs --model_path"),
    (["--eval", "--model_path", "x.pth"], "needs --track"),
    (["--eval_output", "s.txt"], "--eval_output goes with --eval"),
    (["--eval_subset", "progress"], "--eval_subset goes with --eval"),
    (["--eval", "--model_path", "x.pth", "--track", "LA", "--resume"], "cannot be combined with --resume"),
    (["--eval", "--eval_scores", "s.txt", "--track", "LA"], "use one of them"),
    (["--eval_scores", "s.txt", "--track", "LA", "--model_path", "x.pth"], "drop --model_path"),
    (["--eval", "--model_path", "x.pth", "--track", "LA", "--eval_subset", "dev"], "invalid choice"),
])
def test_option_combinations_are_one_line(tmp_path, args, expected):
    r = run_main(args, tmp_path)
    assert r.code == 2 and expected in r.err and len(r.err.strip().splitlines()) == 1, r.text


@pytest.mark.parametrize("content, track, expected", [
    ("LA_E_1\nLA_E_2\n", "LA", "without labels"),
    ("s T1 none tx A07 spoof notrim eval\n", "DF", "ASVspoof 2021 LA key, not a key for --track DF"),
    ("s T1 none tx A07 spoof notrim eval\ns T2 none tx A07 fake notrim eval\n", "LA", "line 2: expected 'bonafide' or 'spoof'"),
    ("s T1 none tx A07 spoof notrim eval\ns T1 none tx A07 spoof notrim eval\n", "LA", "'T1' is listed more than once"),
    ("file,speaker,label\n0.wav,a,real\n", "In-the-Wild", "expected 'bona-fide' or 'spoof'"),
    ("", "LA", "is empty"),
    (None, "LA", "no key there (looked for trial_metadata.txt"),
])
def test_unusable_keys_are_one_line(tmp_path, content, track, expected):
    key = tmp_path / "key.txt"
    if content is None:
        key.mkdir()
    else:
        key.write_text(content)
    scores = tmp_path / "s.txt"
    scores.write_text("T1 0.5\n")
    r = _eval(["--eval_scores", str(scores), "--track", track, "--protocols_path", str(key)], tmp_path)
    assert r.code == 2 and expected in _one_line_error(r)


def test_a_subset_the_key_lacks_is_refused(tmp_path):
    key = tmp_path / "key.txt"
    key.write_text("s T1 none tx bonafide bonafide notrim eval\ns T2 none tx A07 spoof notrim eval\n")
    scores = tmp_path / "s.txt"
    scores.write_text("T1 1\nT2 0\n")
    r = _eval(["--eval_scores", str(scores), "--track", "LA", "--protocols_path", str(key), "--eval_subset",
               "hidden"], tmp_path)
    assert r.code == 2 and "no trial of subset 'hidden'" in _one_line_error(r)


# --- end to end ------------------------------------------------------------------------------------------

def test_cli_end_to_end_on_the_synthetic_df_split(trained, tmp_path):
    gen = subprocess.run([sys.executable, "-m", "training.evaluation.synthetic", str(tmp_path / "df"), "--track",
                          "DF", "--size", "40", "--clip_samples", "4000"], cwd=tmp_path, env=child_env(),
                         capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    ckpt = _checkpoint_copy(trained, tmp_path)
    r = run_main(["--eval", "--model_path", str(ckpt), "--track", "DF", "--database_path", str(tmp_path / "df"),
                  "--protocols_path", str(tmp_path / "df" / "keys"), "--num_workers", "1", "--batch_size", "8"],
                 tmp_path)
    assert r.code == 0, r.text
    score_file = ckpt.parent / "eval" / "checkpoint_epoch_1_DF.txt"
    doc = json.loads(score_file.with_name(score_file.name + ".metrics.json").read_text())
    assert doc["track"] == "DF" and doc["subset"] == "eval" and doc["min_tdcf"] is None
    assert doc["breakdown"]["rows"]["tags"] == ["Traditional", "Wav.Concat.", "Neural AR", "Neural non-AR",
                                                "Unknown", "Pooled"]
    expected = package_eer_table(tmp_path / "df/keys/DF/CM/trial_metadata.txt", score_file, "DF", "eval") * 100
    got = _as_array(doc["breakdown"]["eer"])
    assert np.array_equal(np.nan_to_num(got, nan=-1), np.nan_to_num(expected, nan=-1))
    assert "Scoring" in r.err and "Traditional" in r.out  # the progress bar on stderr, the table on stdout
    # the same metrics from the score file alone, as the official package would compute them
    again = run_main(["--eval_scores", str(score_file), "--track", "DF", "--protocols_path",
                      str(tmp_path / "df")], tmp_path)
    assert again.code == 0
    assert json.loads(score_file.with_name(score_file.name + ".metrics.json").read_text())["eer"] == doc["eer"]


# --- failures while scoring --------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_unreadable_audio_file_is_one_line_naming_it(trained, tmp_path, workers):
    root = tmp_path / "la"
    write_synthetic_eval_set(root, "LA", 10, clip_samples=4000, asv=False)
    broken = root / "ASVspoof2021_LA_eval" / "flac" / "LA_E_0000004.flac"
    broken.write_bytes(b"not a flac file at all")
    out = tmp_path / "s.txt"
    r = _eval(["--eval", "--model_path", str(trained), "--track", "LA", "--database_path", str(root),
               "--protocols_path", str(root), "--eval_output", str(out), "--num_workers", workers], tmp_path)
    assert r.code == 1
    line = _one_line_error(r)
    assert line.endswith(f"{broken}: cannot read audio (Format not recognised.)")
    assert not out.exists()


def test_scores_that_are_not_numbers_are_written_but_give_no_metrics(trained, la_set, tmp_path):
    from training.checkpoint.store import load_checkpoint

    ckpt = load_checkpoint(trained)
    ckpt["model_state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                                for k, v in ckpt["model_state_dict"].items()}
    nan_file = tmp_path / "nan.pth"
    torch.save(ckpt, nan_file)
    out = tmp_path / "s.txt"
    r = _eval(["--eval", "--model_path", str(nan_file), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set), "--eval_output", str(out)], tmp_path)
    assert r.code == 1 and "not numbers (NaN" in _one_line_error(r)
    assert out.is_file() and not (tmp_path / "s.txt.metrics.json").exists()


@pytest.mark.parametrize("what", ["missing", "folder", "not a checkpoint"])
def test_an_unusable_model_path_is_one_line(la_set, tmp_path, what):
    path = tmp_path / "m.pth"
    if what == "folder":
        path.mkdir()
    elif what == "not a checkpoint":
        path.write_bytes(b"hello")
    r = _eval(["--eval", "--model_path", str(path), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set)], tmp_path)
    assert r.code == 2 and str(path) in _one_line_error(r)
    assert not (tmp_path / "eval").exists()


def test_eval_output_may_not_overwrite_an_input(trained, la_set, tmp_path):
    key = la_set / "keys" / "LA" / "CM" / "trial_metadata.txt"
    before = key.read_bytes()
    r = _eval(["--eval", "--model_path", str(trained), "--track", "LA", "--database_path", str(la_set),
               "--protocols_path", str(la_set), "--eval_output", str(key)], tmp_path)
    assert r.code == 2 and "is an input of this evaluation" in _one_line_error(r)
    assert key.read_bytes() == before


def test_a_meta_csv_with_a_byte_order_mark_reads(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text("\ufefffile,speaker,label\r\n0.wav,A,bona-fide\r\n1.wav,B,spoof\r\n2.wav,B,spoof\r\n")
    scores = tmp_path / "s.txt"
    scores.write_text("0 -0.1\n1 -2\n2 -0.05\n")
    r = _eval(["--eval_scores", str(scores), "--track", "In-the-Wild", "--protocols_path", str(meta)], tmp_path)
    assert r.code == 0, r.text
    assert json.loads((tmp_path / "s.txt.metrics.json").read_text())["eer"] == 100 * reference_eer([-0.1], [-2, -0.05])[0]
