"""The first g3_heatmap head (``head_version`` 0), kept so its checkpoints still load and resume.

It differs from the research model (see ``training.models.g3_heatmap``): a learned query per
layer for temporal pooling, per-group queries, GELU refine blocks of width 2D, a one-layer
classifier, an extra LayerNorm on every hidden state and a per-utterance waveform normalisation.
Do not change what it computes: checkpoints written with it rebuild exactly this network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.base import ModelOutput
from training.models.frontends import FRONTENDS


class TemporalAttentionPool(nn.Module):
    """Attentive pooling over time with one query per layer: ``[B, L, T', D]`` -> ``[B, L, D]``."""

    def __init__(self, num_layers: int, dim: int, attn_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attn_dim)
        self.query = nn.Parameter(torch.randn(num_layers, attn_dim) * 0.1)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.einsum("blta,la->blt", torch.tanh(self.proj(h)), self.query)
        weights = scores.softmax(dim=-1)  # [B, L, T']
        return torch.einsum("blt,bltd->bld", weights, h), weights


class GroupedLayerAttention(nn.Module):
    """Intra-group attention over the layers of each group, then inter-group attention.

    ``[B, L, D]`` -> utterance vector ``[B, D]``. When ``group_size`` does not divide L the last
    group is smaller: its missing slots are masked out, so they get exactly zero weight.
    """

    def __init__(self, num_layers: int, group_size: int, dim: int, attn_dim: int) -> None:
        super().__init__()
        self.num_layers, self.group_size = num_layers, group_size
        self.num_groups = math.ceil(num_layers / group_size)
        slots = torch.arange(self.num_groups * group_size).view(self.num_groups, group_size)
        self.register_buffer("valid", slots < num_layers, persistent=False)  # [G, S]
        self.intra_proj = nn.Linear(dim, attn_dim)
        self.intra_query = nn.Parameter(torch.randn(self.num_groups, attn_dim) * 0.1)
        self.inter_proj = nn.Linear(dim, attn_dim)
        self.inter_query = nn.Parameter(torch.randn(attn_dim) * 0.1)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b, g, s = pooled.size(0), self.num_groups, self.group_size
        pad = g * s - self.num_layers
        grouped = F.pad(pooled, (0, 0, 0, pad)).view(b, g, s, -1)
        scores = torch.einsum("bgsa,ga->bgs", torch.tanh(self.intra_proj(grouped)), self.intra_query)
        # Every group holds at least one real layer, so no row is all -inf (no NaN).
        intra = scores.masked_fill(~self.valid, float("-inf")).softmax(dim=-1)  # [B, G, S]
        groups = torch.einsum("bgs,bgsd->bgd", intra, grouped)
        inter = torch.einsum("bga,a->bg", torch.tanh(self.inter_proj(groups)), self.inter_query)
        inter = inter.softmax(dim=-1)  # [B, G]
        utterance = torch.einsum("bg,bgd->bd", inter, groups)
        # Effective weight of each layer in the utterance vector (sums to 1): the layer heatmap.
        layer = (intra * inter.unsqueeze(-1)).reshape(b, g * s)[:, : self.num_layers]
        return utterance, intra, inter, layer


class RefineBlock(nn.Module):
    """Pre-norm residual MLP: ``x + Dropout(Linear(GELU(Linear(LayerNorm(x)))))``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(),
                                 nn.Linear(2 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class G3HeatmapV0(nn.Module):
    """Layer-stack front-end -> temporal pooling -> grouped layer attention -> refine -> head.

    Constructor arguments are the model hyperparameters stored in checkpoints (all plain
    scalars, so ``training.models.model_args`` can record them and rebuild the same model).
    """

    def __init__(self, group_size: int = 3, use_contrastive: bool = False, num_layers: int = 6,
                 dim: int = 64, attn_dim: int = 32, num_refine_blocks: int = 2, proj_dim: int = 64,
                 dropout: float = 0.1, frontend: str = "tiny_conv") -> None:
        super().__init__()
        if frontend not in FRONTENDS:
            raise ValueError(f"unknown frontend {frontend!r}; known: {', '.join(sorted(FRONTENDS))}")
        self.frontend = FRONTENDS[frontend](num_layers=num_layers, dim=dim, dropout=dropout)
        layers = self.frontend.num_layers  # a pretrained front-end fixes its own depth
        if not isinstance(group_size, int) or not 1 <= group_size <= layers:
            raise ValueError(
                f"group_size must be an integer from 1 to the number of encoder layers ({layers}), "
                f"got {group_size!r}; when it does not divide {layers} the last group is smaller"
            )
        out_dim = self.frontend.out_dim
        self.in_proj = nn.Identity() if out_dim == dim else nn.Linear(out_dim, dim)
        self.layer_norm = nn.LayerNorm(dim)  # hidden states of a pre-norm stack grow with depth
        self.temporal_pool = TemporalAttentionPool(layers, dim, attn_dim)
        self.group_attention = GroupedLayerAttention(layers, group_size, dim, attn_dim)
        self.refine = nn.Sequential(*(RefineBlock(dim, dropout) for _ in range(num_refine_blocks)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)
        self.projector = (
            nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, proj_dim))
            if use_contrastive else None
        )

    def forward(self, x: Tensor, return_attention: bool = False) -> ModelOutput:
        if x.dim() == 3:  # accept [B, 1, T] as well as [B, T]
            x = x.squeeze(1)
        hidden = self.layer_norm(self.in_proj(self.frontend(x)))  # [B, L, T', D]
        pooled, temporal = self.temporal_pool(hidden)
        utterance, intra, inter, layer = self.group_attention(pooled)
        embedding = self.norm(self.refine(utterance))
        log_probs = F.log_softmax(self.head(embedding), dim=-1)
        projection = self.projector(embedding) if self.projector is not None else None
        attention = None
        if return_attention:
            # "intra" / "inter": the names the current head uses, so consumers read both heads.
            attention = {"temporal": temporal, "intra_group": intra, "inter_group": inter,
                         "intra": intra, "inter": inter, "layer": layer}
        return ModelOutput(log_probs, embedding, attention, projection)
