"""Data sets: the built-in synthetic set, the ASVspoof files, and RawBoost augmentation.

    datasets   synthetic and ASVspoof data sets, protocol readers, padding
    rawboost   RawBoost augmentation of training clips (numpy and scipy)
"""

from training.data.datasets import (ASVspoofDataset, DataError, ProtocolEntry, SyntheticSpoofDataset,
                                    build_datasets)

__all__ = ["ASVspoofDataset", "DataError", "ProtocolEntry", "SyntheticSpoofDataset", "build_datasets"]
