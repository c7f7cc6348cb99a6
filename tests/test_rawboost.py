"""RawBoost augmentation (issue 18): the three algorithms' defining properties, every combination,
option validation in every entry point, per-clip determinism (in-process, with workers, across
runs, across a SIGKILL and auto-resume), and old checkpoints resuming without augmentation."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal as dsp
from torch.utils.data import DataLoader

from cli_helpers import REPO, child_env, load, logged_history, run_main, same_weights
from cli_helpers import TINY_ANY_ALGO as TINY  # --algo left to each test
from kill_harness import run_kill_experiment
from training import cli
from training.dashboard import launch_form
from training.config import DEFAULTS, OPTIONS_BY_NAME
from training.data import ASVspoofDataset, ProtocolEntry, SyntheticSpoofDataset, build_datasets
from training.lock import ExperimentLock
from training.naming import epoch_checkpoint_name
from training.runs import merge_checkpoint_args
from training.data.rawboost import (
    OPTION_NAMES,
    ClipAugmenter,
    RawBoostConfig,
    _apply_filter,
    _limit_peak,
    augment,
    clip_generator,
    coloured_noise,
    convolutive_noise,
    impulsive_noise,
)
from training.resume_state import collate, epoch_batches

N = 16000


def speech_like(seed: int = 0, n: int = N, peak: float = 0.3) -> np.ndarray:
    """A few harmonics plus a little noise, no exact zeros, peak ``peak`` (float64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = sum(np.sin(2 * np.pi * f * t + rng.random() * 6) / k for k, f in enumerate((140, 280, 420, 1100), 1))
    x = x + 0.05 * rng.standard_normal(n)
    return peak * x / np.max(np.abs(x))


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 20 * np.log10(np.linalg.norm(clean) / np.linalg.norm(noisy - clean))


# --- the options --------------------------------------------------------------------------------

def test_the_options_carry_the_original_names_and_defaults() -> None:
    original = {"algo": 3, "nBands": 5, "minF": 20, "maxF": 8000, "minBW": 100, "maxBW": 1000, "minCoeff": 10,
                "maxCoeff": 100, "minG": 0, "maxG": 0, "minBiasLinNonLin": 5, "maxBiasLinNonLin": 20, "N_f": 5,
                "P": 10, "g_sd": 2, "SNRmin": 10, "SNRmax": 40}
    assert set(OPTION_NAMES) == set(original)
    assert {name: DEFAULTS[name] for name in original} == original
    assert {name: getattr(RawBoostConfig(), name) for name in original} == original
    assert all(type(DEFAULTS[n]) is OPTIONS_BY_NAME[n].kind for n in original)  # the form and CLI agree on types
    args, _ = cli.parse_args(["--algo", "5", "--minG=-3", "--P", "2.5", "--SNRmax", "30"])
    assert (args["algo"], args["minG"], args["P"], args["SNRmax"], args["N_f"]) == (5, -3.0, 2.5, 30.0, 5)


# --- algorithm 3: coloured additive noise ------------------------------------------------------------

def test_coloured_noise_is_added_at_an_snr_inside_the_drawn_range() -> None:
    x = speech_like()
    cfg = RawBoostConfig(algo=3, SNRmin=10, SNRmax=40)
    measured = [snr_db(x, coloured_noise(x, cfg, clip_generator(1, 1, i))) for i in range(40)]
    assert all(10 - 1e-9 <= s <= 40 + 1e-9 for s in measured), measured
    assert min(measured) < 17 and max(measured) > 33  # drawn across the range, not fixed
    fixed = RawBoostConfig(algo=3, SNRmin=25, SNRmax=25)
    assert snr_db(x, coloured_noise(x, fixed, clip_generator(1, 1, 0))) == pytest.approx(25, abs=1e-9)


def test_coloured_noise_is_shaped_by_the_notch_filters() -> None:
    """Wide, deep notches in a narrow range: the added noise has little energy there, unlike white noise."""
    x = speech_like()
    cfg = RawBoostConfig(algo=3, nBands=3, minF=3900, maxF=4100, minBW=1500, maxBW=1500, minCoeff=201,
                         maxCoeff=201, SNRmin=20, SNRmax=20)
    noise = coloured_noise(x, cfg, clip_generator(0, 1, 0)) - x
    freqs, power = dsp.welch(noise, fs=16000, nperseg=1024)
    notch = power[(freqs > 3700) & (freqs < 4300)].mean()
    outside = power[(freqs > 500) & (freqs < 2500)].mean()
    assert notch < outside / 100


# --- algorithm 2: impulsive signal-dependent noise ---------------------------------------------------

def test_impulsive_noise_changes_at_most_P_percent_of_samples_and_about_P_over_2_on_average() -> None:
    x = speech_like(peak=0.1)  # g_sd 2 keeps the peak under 1: no normalisation touches the rest
    cfg = RawBoostConfig(algo=2, P=10, g_sd=2)
    shares = []
    for i in range(200):
        y = impulsive_noise(x, cfg, clip_generator(3, 1, i))
        changed = y != x
        shares.append(100 * changed.mean())
        assert np.all(np.abs(y - x) <= 2 * np.abs(x) + 1e-12)  # |g_sd * x * f| with |f| <= 1
    assert max(shares) <= 10
    assert 4 <= np.mean(shares) <= 6  # beta ~ U(0, P): the original changes P/2 % on average
    none = RawBoostConfig(algo=2, P=0)
    assert np.array_equal(impulsive_noise(x, none, clip_generator(3, 1, 0)), x)


# --- algorithm 1: linear and non-linear convolutive noise --------------------------------------------

def test_convolutive_noise_with_one_stage_is_a_linear_filter_of_the_input() -> None:
    a, b = speech_like(1, peak=0.2), speech_like(2, peak=0.2)
    cfg = RawBoostConfig(algo=1, N_f=1)

    def run(x: np.ndarray) -> np.ndarray:
        return convolutive_noise(x, cfg, clip_generator(5, 2, 7))

    assert run(a).shape == a.shape and not np.allclose(run(a), a)
    assert np.allclose(run(0.5 * a + 0.25 * b), 0.5 * run(a) + 0.25 * run(b), atol=1e-12)
    # an impulse comes out as a finite (FIR) response: constant (the removed mean) outside it
    impulse = np.zeros(N)
    impulse[N // 2] = 0.5
    response = run(impulse)
    longest = cfg.nBands * (cfg.maxCoeff + 1)
    outside = np.r_[response[:N // 2 - longest], response[N // 2 + longest:]]
    assert np.ptp(outside) < 1e-15 and np.ptp(response) > 1e-3


def test_convolutive_noise_with_several_stages_is_non_linear() -> None:
    x = speech_like(peak=0.2)
    cfg = RawBoostConfig(algo=1, N_f=5, minBiasLinNonLin=0, maxBiasLinNonLin=0)
    once = convolutive_noise(x, cfg, clip_generator(5, 2, 7))
    doubled = convolutive_noise(2 * x, cfg, clip_generator(5, 2, 7))
    assert once.shape == x.shape and not np.allclose(doubled, 2 * once, atol=1e-3)


def test_filtering_equals_the_original_lfilter_of_the_zero_padded_signal() -> None:
    x = speech_like()
    for taps in (np.array([1.0]), dsp.firwin(11, [500, 900], fs=16000),
                 np.convolve(dsp.firwin(101, [3000, 3400], fs=16000), dsp.firwin(31, [200, 600], fs=16000))):
        pad = len(taps) + 1
        original = dsp.lfilter(taps, 1, np.pad(x, (0, pad)))[pad // 2:pad // 2 + len(x)]
        assert np.allclose(_apply_filter(x, taps), original, atol=1e-12)


# --- combinations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", range(9))
def test_every_combination_runs_keeps_the_length_and_is_repeatable(algo: int) -> None:
    x = speech_like().astype(np.float32)
    cfg = RawBoostConfig(algo=algo)
    y = augment(x, cfg, clip_generator(9, 1, 4))
    assert y.dtype == np.float32 and y.shape == x.shape and np.all(np.isfinite(y))
    assert np.array_equal(y, augment(x, cfg, clip_generator(9, 1, 4)))
    assert np.array_equal(y, x) == (algo == 0)
    assert y is not x


def test_combinations_apply_the_algorithms_in_the_original_order() -> None:
    x = speech_like()
    cfg = RawBoostConfig()
    steps = {4: (convolutive_noise, impulsive_noise, coloured_noise), 5: (convolutive_noise, impulsive_noise),
             6: (convolutive_noise, coloured_noise), 7: (impulsive_noise, coloured_noise)}
    for algo, chain in steps.items():
        rng, expected = clip_generator(2, 3, algo), x
        for step in chain:
            expected = step(expected, cfg, rng)
        got = augment(x, RawBoostConfig(algo=algo), clip_generator(2, 3, algo))
        assert np.array_equal(got, expected.astype(np.float32)), algo
    rng = clip_generator(2, 3, 8)
    parallel = _limit_peak(convolutive_noise(x, cfg, rng) + impulsive_noise(x, cfg, rng))
    assert np.array_equal(augment(x, RawBoostConfig(algo=8), clip_generator(2, 3, 8)), parallel.astype(np.float32))


# --- randomness ---------------------------------------------------------------------------------------

def test_clip_generator_depends_on_seed_epoch_and_index_only() -> None:
    draw = [clip_generator(*key).random() for key in ((1, 1, 1), (1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2), (-1, 1, 1))]
    assert draw[0] == draw[1] and len(set(draw[1:])) == 5
    with pytest.raises(ValueError):
        clip_generator(1, -1, 0)


def test_augmenting_never_touches_global_random_state() -> None:
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    before = (np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state())
    for algo in range(9):
        augment(speech_like(), RawBoostConfig(algo=algo), clip_generator(0, 1, algo))
    after = (np.random.get_state()[1], random.getstate(), torch.get_rng_state())
    assert np.array_equal(before[0], after[0]) and before[1] == after[1] and torch.equal(before[2], after[2])


# --- bad values -------------------------------------------------------------------------------------

BAD_VALUES = [
    ({"minF": 5000, "maxF": 100}, "--minF 5000 is above --maxF 100"),
    ({"SNRmin": 50}, "--SNRmin 50 is above --SNRmax 40"),
    ({"P": 101}, "--P is a percentage"),
    ({"P": -1}, "--P is a percentage"),
    ({"P": float("nan")}, "--P must be a finite number"),
    ({"SNRmax": float("inf")}, "--SNRmax must be a finite number"),
    ({"nBands": -1}, "--nBands must be between 0 and 64"),
    ({"N_f": 0}, "--N_f must be between 1 and 64"),
    ({"maxCoeff": 10**8}, "--maxCoeff must be between 1 and 4096"),
    ({"minCoeff": 200}, "--minCoeff 200 is above --maxCoeff 100"),
    ({"maxF": 9000}, "--maxF must be between 0 and 8000 Hz"),
    ({"minBW": 0}, "--minBW must be at least 1 Hz"),
    ({"g_sd": -2}, "--g_sd must not be negative"),
    ({"algo": 9}, "--algo must be one of 0-8"),
    ({"nBands": 2.5}, "--nBands must be a whole number"),
    ({"minG": "loud"}, "--minG must be a number"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_bad_values_are_one_line_errors_naming_the_option(values: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        RawBoostConfig.from_args(values)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(("argv", "message"), [
    (["--minF", "5000", "--maxF", "100"], "error: --minF 5000 is above --maxF 100"),
    (["--SNRmin", "50", "--SNRmax", "10"], "error: --SNRmin 50 is above --SNRmax 10"),
    (["--P", "150"], "error: --P is a percentage"),
    (["--P", "nan"], "error: --P must be a finite number"),
    (["--algo", "9"], "error: --algo must be one of 0-8"),
])
def test_the_cli_refuses_bad_values_with_one_line_and_exit_2_creating_nothing(argv, message, tmp_path, capsys) -> None:
    code = cli.main([*TINY, "--models_root", str(tmp_path / "models"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "models").exists()


def test_the_cli_subprocess_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_main([*TINY, "--SNRmin", "50", "--SNRmax", "10"], tmp_path)
    assert result.code == 2 and result.err == "error: --SNRmin 50 is above --SNRmax 10: SNRmin must not exceed SNRmax\n"
    assert not (tmp_path / "models").exists()


def test_the_launch_form_reports_the_same_error(tmp_path: Path) -> None:
    plan = launch_form.plan_launch(tmp_path, "fresh", {"P": "150"}, None)
    assert not plan.ok and any(e.startswith("--P is a percentage") for e in plan.errors)


# --- the data sets ------------------------------------------------------------------------------------

SYNTH = {"dataset": "synthetic", "train_size": 12, "val_size": 4, "clip_samples": 2000, "seed": 7}


def test_algo_0_leaves_the_data_sets_exactly_as_before() -> None:
    train, val = build_datasets({**SYNTH, "algo": 0})
    plain = SyntheticSpoofDataset(12, 2000, 7, "train")
    assert train.augmenter is None and val.augmenter is None
    train.set_epoch(3)
    assert all(torch.equal(train[i][0], plain[i][0]) for i in range(12))


def test_training_clips_are_augmented_per_seed_epoch_and_index_validation_clips_never() -> None:
    train, val = build_datasets({**SYNTH, "algo": 3})
    plain_train, plain_val = build_datasets({**SYNTH, "algo": 0})
    assert val.augmenter is None and all(torch.equal(val[i][0], plain_val[i][0]) for i in range(4))
    train.set_epoch(1)
    epoch1 = [train[i][0] for i in range(12)]
    assert all(not torch.equal(a, plain_train[i][0]) for i, a in enumerate(epoch1))
    assert all(torch.equal(a, train[i][0]) for i, a in enumerate(epoch1))  # the cache is not modified
    expected = augment(plain_train[5][0].numpy(), RawBoostConfig(), clip_generator(7, 1, 5))
    assert np.array_equal(epoch1[5].numpy(), expected)
    train.set_epoch(2)
    assert not torch.equal(train[5][0], epoch1[5])
    train.set_epoch(1)
    assert torch.equal(train[5][0], epoch1[5])


def test_augment_dev_augments_validation_clips_with_their_own_stream_each_epoch() -> None:
    train, val = build_datasets({**SYNTH, "algo": 3, "augment_dev": True})
    _, plain_val = build_datasets({**SYNTH, "algo": 0})
    assert train.augmenter.split == "train" and val.augmenter.split == "val"
    val.set_epoch(1)
    clip = val[3][0].numpy()
    expected = augment(plain_val[3][0].numpy(), RawBoostConfig(), clip_generator(7, 1, 3, "val"))
    assert np.array_equal(clip, expected)
    # Not the noise of training clip 3 of the same epoch, and a new draw next epoch.
    assert not np.array_equal(clip, augment(plain_val[3][0].numpy(), RawBoostConfig(), clip_generator(7, 1, 3)))
    val.set_epoch(2)
    assert not np.array_equal(val[3][0].numpy(), clip)


def test_two_workers_load_the_same_augmented_clips_as_the_main_process() -> None:
    train, _ = build_datasets({**SYNTH, "algo": 5})
    train.set_epoch(4)
    batches = epoch_batches(len(train), 4, 7, 4)

    def loaded(workers: int) -> torch.Tensor:
        loader = DataLoader(train, batch_sampler=batches, collate_fn=collate, num_workers=workers)
        return torch.cat([x for x, _ in loader])

    assert torch.equal(loaded(0), loaded(2))


def test_files_are_augmented_before_they_are_cut_or_tiled(tmp_path: Path) -> None:
    """As the original recipe: a short file is augmented once, then tiled to the clip length."""
    sf.write(tmp_path / "u1.flac", speech_like(n=1000).astype(np.float32), 16000)
    dataset = ASVspoofDataset([ProtocolEntry("u1", 1, "S", "-")], tmp_path, clip_samples=4000)
    dataset.augmenter = ClipAugmenter(RawBoostConfig(algo=3), seed=1, epoch=1)
    clip = dataset[0][0].numpy()
    assert np.array_equal(clip[:1000], clip[1000:2000])
    assert np.array_equal(clip[:1000], augment(dataset.load(0), RawBoostConfig(algo=3), clip_generator(1, 1, 0)))


# --- whole runs ---------------------------------------------------------------------------------------

def train_run(root: Path, *extra: str) -> dict:
    """A tiny in-process run of 2 epochs; returns its epoch-2 checkpoint and (``logged``) its log rows."""
    code = cli.main([*TINY, "--num_epochs", "2", "--models_root", str(root), *extra])
    assert code == 0
    folder = next(root.iterdir())
    return {**load(folder / epoch_checkpoint_name(2, None)), "logged": logged_history(folder)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("runs")
    return {"algo3_a": train_run(base / "a", "--algo", "3", "--num_workers", "2"),
            "algo3_b": train_run(base / "b", "--algo", "3", "--num_workers", "2"),
            "algo0": train_run(base / "c", "--algo", "0")}


def metrics(checkpoint: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "timestamp")} for row in checkpoint["logged"]]


def test_two_runs_with_the_same_seed_give_identical_weights(runs) -> None:
    assert same_weights(runs["algo3_a"]["model_state_dict"], runs["algo3_b"]["model_state_dict"])
    assert metrics(runs["algo3_a"]) == metrics(runs["algo3_b"])
    # and the augmentation did something
    assert not same_weights(runs["algo3_a"]["model_state_dict"], runs["algo0"]["model_state_dict"])
    assert runs["algo3_a"]["args"]["algo"] == 3 and runs["algo0"]["args"]["algo"] == 0


def predating(checkpoint: dict, path: Path) -> Path:
    """``checkpoint`` as a file written before RawBoost existed: no RawBoost keys in its args."""
    old = dict(checkpoint, args={k: v for k, v in checkpoint["args"].items() if k not in OPTION_NAMES})
    torch.save(old, path)
    return path


def test_a_checkpoint_that_predates_rawboost_resumes_without_augmentation(runs, tmp_path: Path, capsys) -> None:
    path = predating(runs["algo0"], tmp_path / "old.pth")  # at epoch 2 of an --algo 0 run
    args, explicit = cli.parse_args([*TINY, "--resume", "--model_path", str(path), "--num_epochs", "3"])
    effective, plan = cli.plan_run(args, explicit)
    assert plan.mode == "resume" and effective["algo"] == 0
    assert "algo" not in capsys.readouterr().out  # no warning: the run keeps what it trained with
    args, explicit = cli.parse_args([*TINY, "--resume", "--model_path", str(path), "--algo", "5"])
    assert cli.plan_run(args, explicit)[0]["algo"] == 5  # typed on the command line: used
    # a checkpoint that stores its algo resumes with it
    stored = merge_checkpoint_args({"algo": 3, "lr": 0.1}, dict(DEFAULTS, algo=0), set(), DEFAULTS)
    assert stored["algo"] == 3
    # a pretrained start is a new run: today's default
    args, explicit = cli.parse_args([*TINY, "--model_path", str(path)])
    assert cli.plan_run(args, explicit)[0]["algo"] == 3


def test_the_launch_form_resumes_a_predating_checkpoint_without_augmentation(runs) -> None:
    stored = {k: v for k, v in runs["algo0"]["args"].items() if k not in OPTION_NAMES}
    values, _ = launch_form.form_defaults("resume", stored)
    assert values["algo"] == 0 and launch_form.form_defaults("resume", {**stored, "algo": 7})[0]["algo"] == 7
    assert launch_form.cli_baseline("resume", stored)["algo"] == 0
    assert launch_form.form_defaults("fresh", stored)[0]["algo"] == 3


def test_resuming_a_predating_checkpoint_trains_like_a_run_without_augmentation(runs, tmp_path: Path) -> None:
    """End to end: epoch 1 of an --algo 0 run, stripped of its RawBoost args, resumed to epoch 2 with
    no flags, equals the uninterrupted --algo 0 run."""
    first = tmp_path / "first"
    code = cli.main([*TINY, "--num_epochs", "1", "--models_root", str(first), "--algo", "0"])
    assert code == 0
    epoch1 = load(next(first.iterdir()) / epoch_checkpoint_name(1, None))
    path = predating(epoch1, tmp_path / "old_epoch1.pth")
    resumed = tmp_path / "resumed"
    assert cli.main([*TINY, "--num_epochs", "2", "--models_root", str(resumed), "--resume", "--model_path", str(path)]) == 0
    final = load(next(resumed.iterdir()) / epoch_checkpoint_name(2, None))
    assert same_weights(final["model_state_dict"], runs["algo0"]["model_state_dict"])
    assert final["args"]["algo"] == 0


HOLD_AND_FORK = """
import os, sys, time
from training.lock import ExperimentLock
lock = ExperimentLock(sys.argv[1])
lock.acquire()
if os.fork() == 0:  # a data-loader worker: lives on for a while after its parent dies
    print(os.getpid(), flush=True)  # from the child: its at-fork handlers have run
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def test_a_sigkilled_runs_surviving_workers_do_not_keep_its_folder_locked(tmp_path: Path) -> None:
    """Found by the kill test below: forked workers inherited the lock's descriptor, so the
    resume after a SIGKILL was refused (exit 3) until the orphaned workers noticed and exited."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(tmp_path)], cwd=REPO,
                              env=child_env(), stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        os.kill(child, 0)  # the orphan is still alive
        with ExperimentLock(tmp_path):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        holder.stdout.close()


@pytest.mark.slow
def test_sigkill_and_auto_resume_with_algo_3_and_two_workers_is_bit_identical(tmp_path: Path) -> None:
    args = [*TINY, "--algo", "3", "--num_workers", "2", "--num_epochs", "4", "--comment", "rawboost", "--auto_resume"]
    report = run_kill_experiment(args, tmp_path, kills=3, seed=18)
    assert report.problems() == [], "\n".join(report.problems())
    assert report.summary() == "kills survived 3/3, unreadable files 0, mismatched tensors 0"
