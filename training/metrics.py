"""Evaluation metrics: equal error rate (EER) exactly as the ASVspoof challenge computes it, and accuracy.

Why not ``sklearn.metrics.roc_curve``: the ASVspoof evaluation package (``eval_metrics.py``,
``compute_det_curve`` / ``compute_eer``) sorts all scores with a *stable* sort and gives every
trial its own operating point, so tied scores are stepped through one at a time in input order
(bona fide trials first). ROC shortcuts merge tied scores into a single operating point and can
therefore report a different EER on the same scores. Published ASVspoof numbers use the former,
so this module reproduces it operation for operation, including the float arithmetic, and the
tests compare it against an independent transcription of the official algorithm.

Conventions (the challenge's): higher score = more bona fide; bona fide = target = positive class.
``compute_eer`` returns the EER as a fraction; checkpoints and logs store percent
(``eer_percent``).

Only numpy is imported here: the catalog and dashboard import this module without torch. Torch
tensors are still accepted, converted through ``.detach().cpu().numpy()`` by duck typing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compute_det_curve", "compute_eer", "eer_percent", "accuracy", "scores_from_log_probs"]


def _as_1d_float_array(scores: Any, name: str) -> np.ndarray:
    """Lists, tuples, numpy arrays or torch tensors (any device, with or without grad) -> 1-D float64."""
    if hasattr(scores, "detach"):  # torch.Tensor, without importing torch
        scores = scores.detach().cpu().numpy()
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"compute_eer: no {name} scores; the EER needs at least one bona fide and one spoof trial")
    # NaN has no place in a ranking (a diverged model); +-inf is a legitimate extreme score.
    if np.isnan(arr).any():
        raise ValueError(f"compute_eer: {name} scores contain NaN")
    return arr


def compute_det_curve(bonafide_scores: Any, spoof_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False rejection rates, false acceptance rates and thresholds, as the ASVspoof package computes them.

    Operating point ``k`` (0..n) rejects the ``k`` lowest-scoring trials in stable-sort order:
    ``frr[k]`` = share of bona fide trials among them, ``far[k]`` = share of spoof trials *not*
    among them. ``thresholds[0]`` is the lowest score minus 0.001, ``thresholds[k]`` the k-th
    sorted score.
    """
    target = _as_1d_float_array(bonafide_scores, "bona fide")
    nontarget = _as_1d_float_array(spoof_scores, "spoof")
    n_scores = target.size + nontarget.size
    all_scores = np.concatenate((target, nontarget))
    labels = np.concatenate((np.ones(target.size), np.zeros(nontarget.size)))

    # Stable sort: tied trials keep input order (bona fide before spoof), one step each.
    indices = np.argsort(all_scores, kind="mergesort")
    labels = labels[indices]

    tar_trial_sums = np.cumsum(labels)
    nontarget_trial_sums = nontarget.size - (np.arange(1, n_scores + 1) - tar_trial_sums)

    frr = np.concatenate((np.atleast_1d(0), tar_trial_sums / target.size))
    far = np.concatenate((np.atleast_1d(1), nontarget_trial_sums / nontarget.size))
    thresholds = np.concatenate((np.atleast_1d(all_scores[indices[0]] - 0.001), all_scores[indices]))
    return frr, far, thresholds


def compute_eer(bonafide_scores: Any, spoof_scores: Any) -> tuple[float, float]:
    """``(eer, threshold)``: the EER as a fraction in [0, 1] and the score threshold where it occurs.

    The operating point is the *first* one minimising ``|frr - far|``; the EER is the mean of
    the two rates there. Raises ``ValueError`` when either class has no scores.
    """
    frr, far, thresholds = compute_det_curve(bonafide_scores, spoof_scores)
    min_index = int(np.argmin(np.abs(frr - far)))  # argmin returns the first minimum
    eer = np.mean((frr[min_index], far[min_index]))
    return float(eer), float(thresholds[min_index])


def eer_percent(bonafide_scores: Any, spoof_scores: Any) -> float:
    """The EER in percent, the unit checkpoints and logs use (``val_eer: 0.16`` means 0.16 %)."""
    return 100.0 * compute_eer(bonafide_scores, spoof_scores)[0]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def scores_from_log_probs(log_probs: Any, bonafide_index: int = 1) -> np.ndarray:
    """The CM score of each trial from ``(N, 2)`` class log-probabilities (or logits).

    Like the ASVspoof 2021 baseline, the score is the bona fide column (index 1, label 1 =
    bona fide), so higher means more bona fide.
    """
    lp = _to_numpy(log_probs).astype(np.float64)
    if lp.ndim != 2:
        raise ValueError(f"expected (N, classes) log-probabilities, got shape {lp.shape}")
    return lp[:, bonafide_index]


def accuracy(log_probs_or_predictions: Any, labels: Any) -> float:
    """Accuracy in percent.

    Accepts ``(N, C)`` log-probabilities/logits (argmax is the prediction, as in the trainer)
    or ``(N,)`` predicted class indices. Returns 0.0 for an empty batch rather than dividing by zero.
    """
    pred = _to_numpy(log_probs_or_predictions)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    true = _to_numpy(labels).reshape(-1)
    pred = pred.reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"accuracy: {pred.size} predictions but {true.size} labels")
    if true.size == 0:
        return 0.0
    return float(100.0 * np.mean(pred == true))
