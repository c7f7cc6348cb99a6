"""Training losses: class-weighted cross entropy, plus optional contrastive terms.

``build_criterion(args)(output, labels) -> (loss, parts)``; ``parts`` holds plain floats for the
training log. Labels: 1 = bonafide, 0 = spoof.

- CCE: ``F.nll_loss(log_probs, labels, weight=[0.1, 0.9])``. ASVspoof training sets hold about
  nine spoofed clips per bonafide one; the weights (spoof 0.1, bonafide 0.9) rebalance them, as in
  the original research code and the AASIST / RawNet2 recipes.
- With ``use_contrastive``: ``+ contrastive_weight * contrastive + supcon_weight * supcon``, both on
  L2-normalised features: the model's contrastive projection when it has one, else its embedding.
  * contrastive: the pairwise margin loss of Hadsell et al. (2006) with cosine distance
    ``d = 1 - cos``: same-class pairs pay ``d^2``, different-class pairs pay
    ``max(0, margin - d)^2`` (margin 1: pushed until at least orthogonal), averaged over all pairs.
    Chosen over InfoNCE because InfoNCE needs two augmented views of each clip.
  * supcon: supervised contrastive loss of Khosla et al. (2020), the L_out form, temperature 0.07.
    Anchors without a positive (a class with a single sample in the batch) are left out.

The current g3_heatmap (``head_version`` 1) uses the research model's own pair of losses instead
(``form="original"``, temperature 0.1, on its projection head), as its model file defines them:
  * ``original_contrastive_loss``: ``-mean(sim over positive pairs) + mean_i log sum_{j negative}
    exp(sim_ij)``, ``sim = cos / temperature``. The original adds ``log(1e-8)`` (about -18.4) for
    each row without a negative (every row of a single-class batch); such rows are left out here.
  * ``original_supcon_loss``: SupCon with the original's averaging: the mean over ALL rows, rows
    without a positive counting as 0.
  The original also clamps ``cos / temperature`` to +-10, a no-op at temperature 0.1 (left out),
  and returned 0 whenever a loss was NaN (left out: a NaN loss is reported, not hidden).

Both contrastive terms are exactly 0 (still attached to the graph) when the batch has no pair or
no anchor with a positive, so batch size 1 and single-class batches are NaN-free. Everything here
is deterministic: matrix products and masked reductions only, no scatter or indexing backward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from training.config import DEFAULTS, LOSSES
from training.models.base import ModelOutput

CLASS_WEIGHTS = (0.1, 0.9)  # index 0 = spoof, index 1 = bonafide


def weighted_cce(log_probs: Tensor, labels: Tensor) -> Tensor:
    """Class-weighted NLL on log-probabilities (mean weighted by the targets' class weights)."""
    weight = torch.tensor(CLASS_WEIGHTS, dtype=log_probs.dtype, device=log_probs.device)
    return F.nll_loss(log_probs, labels, weight=weight)


def _zero(features: Tensor) -> Tensor:
    # A zero that keeps the graph, so backward() works whatever the batch looks like
    # (the trailing + 0.0 turns a -0.0 into 0.0 for the log).
    return features.sum() * 0.0 + 0.0


def pairwise_contrastive_loss(features: Tensor, labels: Tensor, margin: float = 1.0) -> Tensor:
    """Hadsell-style margin loss over all pairs, cosine distance on L2-normalised ``features``."""
    n = features.size(0)
    if n < 2:
        return _zero(features)
    z = F.normalize(features.float(), dim=1)
    dist = 1.0 - z @ z.T
    same = labels[:, None] == labels[None, :]
    per_pair = torch.where(same, dist.square(), F.relu(margin - dist).square())
    upper = torch.ones(n, n, dtype=torch.bool, device=z.device).triu(diagonal=1)  # each pair once
    return (per_pair * upper).sum() / upper.sum()


def supcon_loss(features: Tensor, labels: Tensor, temperature: float = 0.07) -> Tensor:
    """Khosla et al. SupCon (L_out) on L2-normalised ``features``; anchors without positives skipped."""
    n = features.size(0)
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    anchors = n_pos > 0
    if not bool(anchors.any()):
        return _zero(features)
    z = F.normalize(features.float(), dim=1)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    # Anchors with a positive have at least one finite logit, so their logsumexp is finite.
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # where(), not multiplication: the -inf diagonal times 0 would be NaN.
    mean_pos = torch.where(positives, log_prob, 0.0).sum(dim=1) / n_pos.clamp(min=1)
    return -(mean_pos * anchors).sum() / anchors.sum()


def original_contrastive_loss(features: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """The research model's ContrastiveLoss, without its ``log(1e-8)`` for rows with no negative."""
    n = features.size(0)
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    same = labels[:, None] == labels[None, :]
    positives, negatives = same & ~self_mask, ~same
    if n < 2 or not bool(positives.any()):
        return _zero(features)
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T / temperature
    pos_loss = -torch.where(positives, sim, 0.0).sum() / positives.sum()
    rows = negatives.any(dim=1)
    if not bool(rows.any()):
        return pos_loss
    neg_lse = torch.logsumexp(sim.masked_fill(~negatives, float("-inf"))[rows], dim=1)
    return pos_loss + neg_lse.mean()


def original_supcon_loss(features: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """The research model's SupConLoss: mean over all rows, rows without a positive count as 0."""
    n = features.size(0)
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    if n < 2 or not bool(positives.any()):
        return _zero(features)
    z = F.normalize(features.float(), dim=1)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_row = torch.where(positives, log_prob, 0.0).sum(dim=1) / positives.sum(dim=1).clamp(min=1)
    return -per_row.mean()


@dataclass(frozen=True)
class Criterion:
    """``criterion(output, labels) -> (loss, {"cce": .., ["contrastive": .., "supcon": ..,] "loss": ..})``."""

    loss: str = "CCE"
    use_contrastive: bool = False
    contrastive_weight: float = 0.1
    supcon_weight: float = 0.1
    temperature: float = 0.07
    margin: float = 1.0
    form: str = "pairwise"  # "original": the research model's losses (current g3_heatmap)

    def __call__(self, output: ModelOutput, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        labels = labels.long()
        names, terms = ["cce"], [weighted_cce(output.log_probs, labels)]
        total = terms[0]
        if self.use_contrastive:
            feats = output.projection if output.projection is not None else output.embedding
            if self.form == "original":
                con = original_contrastive_loss(feats, labels, self.temperature)
                sup = original_supcon_loss(feats, labels, self.temperature)
            else:
                con = pairwise_contrastive_loss(feats, labels, self.margin)
                sup = supcon_loss(feats, labels, self.temperature)
            total = total + self.contrastive_weight * con + self.supcon_weight * sup
            names += ["contrastive", "supcon"]
            terms += [con, sup]
        # Detached tensors, not floats: converting here would sync the device on every step.
        return total, {name: t.detach() for name, t in zip([*names, "loss"], [*terms, total])}


def build_criterion(args: Mapping[str, Any] | Any) -> Criterion:
    """The criterion that the training ``args`` describe (missing keys take the CLI defaults)."""
    a = dict(DEFAULTS)
    a.update(args if isinstance(args, Mapping) else vars(args))
    if a["loss"] not in LOSSES:
        raise ValueError(f"unknown loss {a['loss']!r}; known: {', '.join(LOSSES)}")
    original = a.get("model_type") == "g3_heatmap" and int(a.get("head_version", 0)) >= 1
    return Criterion(loss=a["loss"], use_contrastive=bool(a["use_contrastive"]),
                     contrastive_weight=float(a["contrastive_weight"]),
                     supcon_weight=float(a["supcon_weight"]),
                     **({"form": "original", "temperature": 0.1} if original else {}))
