"""Data sets: the built-in synthetic set, the ASVspoof files, and RawBoost augmentation.

    common     what every data set shares: sample rate, clip length, DataError, pad, the RawBoost hook
    synthetic  the built-in synthetic anti-spoofing set (no files needed)
    asvspoof   ASVspoof 2019 / 2021 and In-the-Wild protocols and audio files
    datasets   build_datasets: the (train, val) data sets of a run's arguments
    rawboost   RawBoost augmentation of training clips (numpy and scipy)
"""

from training.data.asvspoof import ASVspoofDataset, ProtocolEntry, read_protocol
from training.data.common import DEFAULT_CLIP_SAMPLES, SAMPLE_RATE, DataError, pad
from training.data.datasets import build_datasets
from training.data.synthetic import SyntheticSpoofDataset, synthesize_clip

__all__ = ["ASVspoofDataset", "DEFAULT_CLIP_SAMPLES", "DataError", "ProtocolEntry", "SAMPLE_RATE",
           "SyntheticSpoofDataset", "build_datasets", "pad", "read_protocol", "synthesize_clip"]
