"""What every data set shares: the sample rate, the clip length, the ``(waveform, label, utt_id)``
item, the RawBoost hook (``Augmentable``), ``DataError`` and the baseline's ``pad``.

Every dataset yields ``(waveform, label, utt_id)``: a 1-D ``torch.float32`` waveform at 16 kHz,
``label`` ``training.labels.BONAFIDE`` (1) or ``SPOOF`` (0) (the ASVspoof 2021 baseline's
convention, so the bona fide log-probability, column 1, is the CM score), and the utterance id.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SAMPLE_RATE = 16000
DEFAULT_CLIP_SAMPLES = 64600  # the ASVspoof 2021 baseline's input length (~4 s)
AUDIO_EXTENSIONS = (".flac", ".wav")

Item = tuple[torch.Tensor, int, str]


class Augmentable:
    """Mixin: an optional RawBoost ``augmenter`` for training sets, and the epoch it draws for.

    ``set_epoch`` must be called before the epoch's ``DataLoader`` starts iterating: workers are
    started per loader and copy the data set (augmenter included) as it is then.
    """

    augmenter: Any = None  # a training.rawboost.ClipAugmenter, or None (no augmentation)

    def set_epoch(self, epoch: int) -> None:
        if self.augmenter is not None:
            self.augmenter.epoch = int(epoch)

    def augmented(self, wave: np.ndarray, index: int) -> np.ndarray:
        return wave if self.augmenter is None else self.augmenter(wave, index)


class DataError(Exception):
    """A data set cannot be used as given: a missing file or flag, a malformed protocol line.

    The message is one line that names the file (and line) so the user can fix it directly.
    """


def pad(x: np.ndarray, max_len: int = DEFAULT_CLIP_SAMPLES) -> np.ndarray:
    """The ASVspoof 2021 baseline's ``pad``: the first ``max_len`` samples, tiled when shorter."""
    x_len = x.shape[0]
    if x_len >= max_len:
        return x[:max_len]
    num_repeats = int(max_len / x_len) + 1
    return np.tile(x, num_repeats)[:max_len]
