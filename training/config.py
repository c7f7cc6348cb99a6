"""Every training argument in one table, shared by the CLI parser and the dashboard's Launch form.

Keep this module free of heavy imports: the CLI imports it before deciding whether torch is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODEL_TYPES = ("g3_heatmap", "lcnn")
TRACKS = ("LA", "DF", "In-the-Wild")
LOSSES = ("CCE",)
DATASETS = ("synthetic", "asvspoof")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULERS = ("none", "cosine")


@dataclass(frozen=True)
class Option:
    """One command-line option: ``--name``. ``kind`` is int, float, str or bool (a flag)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    group: str = "training"  # training | data | checkpoint | system


# Hyperparameters: these define the experiment and are stored in every checkpoint's ``args``.
OPTIONS: tuple[Option, ...] = (
    Option("model_type", str, "g3_heatmap", "model architecture", MODEL_TYPES),
    Option("track", str, "DF", "ASVspoof track", TRACKS, group="data"),
    Option("loss", str, "CCE", "loss: class-weighted cross entropy (0.1 spoof / 0.9 bonafide)", LOSSES),
    Option("num_epochs", int, 100, "train until this many epochs are completed"),
    Option("batch_size", int, 16, "mini-batch size"),
    Option("lr", float, 1e-06, "Adam learning rate"),
    Option("weight_decay", float, 1e-4, "Adam weight decay"),
    Option("group_size", int, 3, "layers per group in the g3_heatmap grouping"),
    Option("use_contrastive", bool, False, "add the contrastive and supervised-contrastive losses"),
    Option("contrastive_weight", float, 0.1, "weight of the contrastive loss"),
    Option("supcon_weight", float, 0.1, "weight of the supervised-contrastive loss"),
    Option("scheduler", str, "none", "learning-rate schedule over num_epochs", SCHEDULERS),
    Option("seed", int, 1234, "random seed (data order, init, synthetic data)"),
    Option("comment", str, None, "experiment tag appended to the folder and file names"),
    Option("dataset", str, "synthetic", "synthetic (built in) or asvspoof (files on disk)", DATASETS, group="data"),
    Option("database_path", str, None, "ASVspoof audio root", group="data"),
    Option("protocols_path", str, None, "ASVspoof protocol/key files root", group="data"),
    Option("train_size", int, 2000, "synthetic training clips", group="data"),
    Option("val_size", int, 500, "synthetic validation clips", group="data"),
    Option("clip_samples", int, 16000, "synthetic clip length in samples (16 kHz)", group="data"),
    # RawBoost (training clips only; training/rawboost.py): the original recipe's names and defaults.
    Option("algo", int, 3, "RawBoost: 0 none, 1 convolutive, 2 impulsive, 3 coloured additive noise, "
           "4 = 1+2+3, 5 = 1+2, 6 = 1+3, 7 = 2+3 in series, 8 = 1 and 2 in parallel", group="augmentation"),
    Option("nBands", int, 5, "RawBoost: notch filters per filter bank", group="augmentation"),
    Option("minF", float, 20.0, "RawBoost: lowest notch centre frequency, Hz", group="augmentation"),
    Option("maxF", float, 8000.0, "RawBoost: highest notch centre frequency, Hz", group="augmentation"),
    Option("minBW", float, 100.0, "RawBoost: narrowest notch bandwidth, Hz", group="augmentation"),
    Option("maxBW", float, 1000.0, "RawBoost: widest notch bandwidth, Hz", group="augmentation"),
    Option("minCoeff", int, 10, "RawBoost: fewest FIR taps per notch filter", group="augmentation"),
    Option("maxCoeff", int, 100, "RawBoost: most FIR taps per notch filter", group="augmentation"),
    Option("minG", float, 0.0, "RawBoost: lowest filter-bank gain, dB", group="augmentation"),
    Option("maxG", float, 0.0, "RawBoost: highest filter-bank gain, dB", group="augmentation"),
    Option("minBiasLinNonLin", float, 5.0, "RawBoost: gain lowered by at least this for the non-linear "
           "terms, dB (lowers minG)", group="augmentation"),
    Option("maxBiasLinNonLin", float, 20.0, "RawBoost: gain lowered by at most this for the non-linear "
           "terms, dB (lowers maxG)", group="augmentation"),
    Option("N_f", int, 5, "RawBoost: convolutive stages (order of the non-linearity)", group="augmentation"),
    Option("P", float, 10.0, "RawBoost: impulsive noise on up to this percentage of samples", group="augmentation"),
    Option("g_sd", float, 2.0, "RawBoost: impulsive noise gain", group="augmentation"),
    Option("SNRmin", float, 10.0, "RawBoost: lowest SNR of the coloured noise, dB", group="augmentation"),
    Option("SNRmax", float, 40.0, "RawBoost: highest SNR of the coloured noise, dB", group="augmentation"),
    Option("models_root", str, "models", "folder that holds experiment folders", group="checkpoint"),
    Option("model_path", str, None, "checkpoint or weights file to resume from or start from", group="checkpoint"),
    Option("resume", bool, False, "resume from --model_path: weights, optimizer, epoch, best EER", group="checkpoint"),
    Option("fresh_start", bool, False, "start at epoch 1, ignoring existing checkpoints", group="checkpoint"),
    Option("auto_resume", bool, False, "resume from the newest good checkpoint, else start fresh", group="checkpoint"),
    Option("list_checkpoints", bool, False, "list the experiment's checkpoints and exit", group="checkpoint"),
    Option("keep_last", int, None, "keep only the K newest epoch checkpoints (best and resumed-from are kept)", group="checkpoint"),
    Option("device", str, "auto", "auto, cpu or cuda", DEVICES, group="system"),
    Option("num_workers", int, 0, "data-loader worker processes", group="system"),
    Option("amp", bool, False, "mixed precision on CUDA", group="system"),
    Option("ssl_path", str, None, "g3_heatmap front-end: a Hugging Face wav2vec2 / XLS-R folder (config.json + "
           "weights); without it, a tiny front-end trained from scratch"),
    Option("freeze_ssl", bool, False, "do not train the --ssl_path front-end; checkpoints then record its "
           "folder and content hash instead of copying its weights"),
    Option("no_temporal_bias", bool, False, "g3_heatmap: drop the original's centre-weighted bias on the temporal attention"),
    Option("train_clamp", float, 10.0, "g3_heatmap: clamp the utterance embedding to +-this in training only, "
           "as the original (10); 0 turns it off"),
    Option("augment_dev", bool, False, "apply the training augmentation (RawBoost) to the validation set too, "
           "as the original did; it changes which epoch is best", group="data"),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}

# Options that select what to do rather than describe the experiment: never compared on resume.
ACTION_OPTIONS = frozenset(
    {"model_path", "resume", "fresh_start", "auto_resume", "list_checkpoints", "models_root",
     "keep_last", "device", "num_workers"}
)
