"""What every model returns, so the trainer, the losses and the dashboard never branch on model type.

Kept apart from the registry (``training.models``) so model modules can import it without a
circular import.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from training.labels import BONAFIDE  # column of ``log_probs`` per class (label 1: bona fide)


class ModelOutput(NamedTuple):
    """One forward pass.

    ``log_probs``: ``[B, 2]`` log-softmax; column 1 is bonafide.
    ``embedding``: ``[B, D]`` utterance embedding, the input of the classification head.
    ``attention``: attention maps by name, only when the model is called with
    ``return_attention=True`` and has any; otherwise ``None``.
    ``projection``: ``[B, P]`` contrastive projection of the embedding, only for models built with
    ``use_contrastive``; the contrastive losses use it when present, else the embedding.

    A NamedTuple (not a dataclass) so it unpacks, survives ``torch.compile`` and the
    ``DataParallel`` gather, and costs nothing.
    """

    log_probs: Tensor
    embedding: Tensor
    attention: dict[str, Tensor] | None = None
    projection: Tensor | None = None

    @property
    def score(self) -> Tensor:
        """``[B]`` bonafide score for EER: higher means more likely bonafide."""
        return self.log_probs[:, BONAFIDE]
