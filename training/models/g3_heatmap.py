"""G3 heatmap (``head_version`` 1): the research model's grouped attention over a layer stack.

The original (``model_g3_heatmap.py``, branch feature_contrasive_loss of SLSforASVspoof-2021-DF)
reads every transformer layer of XLS-R 300M, because different layers carry different spoofing
cues, and builds, for a front-end of width D:

1. temporal pooling: ONE attention pool shared by all layers, score
   ``Linear(128, 1, bias=False)(tanh(Linear(D, 128)(h)))`` plus the temporal bias
   ``2 * (1 - ((t - T/2) / (T/2))^2)`` (largest at the centre, 0 at the first frame; the
   original's comment calls it U-shaped, it is not), softmax over time;
2. groups of ``group_size`` consecutive layers (the last group smaller when it does not divide
   L), ONE intra-group pool shared by all groups (same form, no bias), each group vector refined
   by ``group_refine``; then an inter-group pool and ``utt_refine``;
3. in training only, the utterance embedding clamped to +-``train_clamp`` (10 in the original;
   0 turns it off). Evaluation sees unclamped embeddings: a train/eval mismatch kept on purpose
   so that published numbers reproduce;
4. a two-layer classifier (log-softmax out) and, with ``use_contrastive``, the projection head
   the contrastive losses read (``training.losses``); xavier-uniform weights, zero biases.

With D = 1024 the head holds 3,421,954 parameters (2,763,778 without the projection head).

What is not copied from the original: its try/except that returned zeros on any error (errors
surface here), its encoder run twice per batch (one pass here), and the attention maps of a
smaller last group, which it could not stack (padded with exact zeros here).

The attention maps, ``model(x, return_attention=True).attention``: ``temporal`` [B, L, T],
``intra`` [B, G, group_size] (the missing slots of a smaller last group hold 0), ``inter`` [B, G],
and ``layer`` [B, L], the effective weight of each layer in the utterance vector (sums to 1).

The first g3_heatmap (``head_version`` 0) lives on in ``training.models.g3_heatmap_v0`` for its
checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.base import ModelOutput
from training.models.frontends import FRONTENDS

HEAD_VERSION = 1
ATTN_DIM = 128       # the original's attention width
REFINE_HIDDEN = 512  # the original's ResidualRefine width
ORIGINAL_CLAMP = 10.0


def temporal_bias(num_frames: int, device: torch.device | None = None) -> Tensor:
    """The original's bias on the temporal scores: ``2 * (1 - ((t - T/2) / (T/2))^2)``, ``[T]``."""
    t = torch.arange(num_frames, dtype=torch.float32, device=device)
    half = num_frames / 2
    return 2.0 * (1.0 - ((t - half) / half) ** 2)


class AttnPool(nn.Module):
    """Additive attention pooling over the second-to-last axis: ``[N, T, D]`` -> ``[N, D]``, ``[N, T]``."""

    def __init__(self, dim: int, attn_dim: int = ATTN_DIM, use_temporal_bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attn_dim)
        self.score = nn.Linear(attn_dim, 1, bias=False)
        self.use_temporal_bias = use_temporal_bias

    def forward(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = self.score(torch.tanh(self.proj(x))).squeeze(-1)  # [N, T]
        if self.use_temporal_bias:
            s = s + temporal_bias(s.size(-1), s.device).to(s.dtype)
        if valid is not None:  # padded slots get exactly zero weight
            s = s.masked_fill(~valid, float("-inf"))
        a = s.softmax(dim=-1)
        return torch.einsum("...t,...td->...d", a, x), a


class ResidualRefine(nn.Module):
    """``x + Dropout(Linear(512, D)(Dropout(SELU(Linear(D, 512)(LayerNorm(x))))))``."""

    def __init__(self, dim: int, hidden: int = REFINE_HIDDEN, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def classifier(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.SELU(), nn.Dropout(0.15), nn.Linear(dim, 256),
                         nn.LayerNorm(256), nn.SELU(), nn.Dropout(0.15), nn.Linear(256, 2))


def projection_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 256))


def xavier_init(module: nn.Module) -> None:
    """The original's init for its classifier and projection head: xavier-uniform, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class G3Head(nn.Module):
    """Pooling, refinement and classifier: ``[B, L, T, D]`` layer stack -> ``ModelOutput`` (no projection)."""

    def __init__(self, num_layers: int, dim: int, group_size: int, use_temporal_bias: bool = True,
                 train_clamp: float = ORIGINAL_CLAMP) -> None:
        super().__init__()
        if not isinstance(group_size, int) or not 1 <= group_size <= num_layers:
            raise ValueError(
                f"group_size must be an integer from 1 to the number of encoder layers ({num_layers}), "
                f"got {group_size!r}; when it does not divide {num_layers} the last group is smaller"
            )
        if not math.isfinite(train_clamp) or train_clamp < 0:
            raise ValueError(f"train_clamp must be a finite number >= 0 (0 = off), got {train_clamp!r}")
        self.num_layers, self.group_size, self.train_clamp = num_layers, group_size, float(train_clamp)
        self.num_groups = math.ceil(num_layers / group_size)
        slots = torch.arange(self.num_groups * group_size).view(self.num_groups, group_size)
        self.register_buffer("valid", slots < num_layers, persistent=False)  # [G, S]
        self.temporal_attn = AttnPool(dim, use_temporal_bias=use_temporal_bias)
        self.intra_attn = AttnPool(dim)
        self.group_refine = ResidualRefine(dim)
        self.inter_attn = AttnPool(dim)
        self.utt_refine = ResidualRefine(dim)
        self.classifier = classifier(dim)
        xavier_init(self.classifier)

    def forward(self, hidden: Tensor, return_attention: bool = False) -> ModelOutput:
        b, layers, frames, d = hidden.shape
        g, s = self.num_groups, self.group_size
        layer_emb, temporal = self.temporal_attn(hidden)  # [B, L, D], [B, L, T]
        grouped = F.pad(layer_emb, (0, 0, 0, g * s - layers)).view(b, g, s, d)
        group_vecs, intra = self.intra_attn(grouped, self.valid)  # [B, G, D], [B, G, S]
        group_vecs = self.group_refine(group_vecs)
        utterance, inter = self.inter_attn(group_vecs)  # [B, D], [B, G]
        utterance = self.utt_refine(utterance)
        if self.training and self.train_clamp > 0:
            utterance = utterance.clamp(-self.train_clamp, self.train_clamp)
        log_probs = F.log_softmax(self.classifier(utterance), dim=-1)
        attention = None
        if return_attention:
            layer = (intra * inter.unsqueeze(-1)).reshape(b, g * s)[:, :layers]
            attention = {"temporal": temporal, "intra": intra, "inter": inter, "layer": layer}
        return ModelOutput(log_probs, utterance, attention)


class G3Heatmap(nn.Module):
    """Front-end (layer stack) -> ``G3Head``. Constructor arguments are the hyperparameters stored
    in checkpoints (plain scalars; ``training.models.model_args`` records them).

    ``ssl_path``: a Hugging Face wav2vec2 / XLS-R folder; its depth and width then replace
    ``num_layers`` / ``dim``, which only shape the built-in tiny front-end. ``freeze_ssl``: that
    front-end is not trained and not stored in checkpoints (see ``ssl_frontend``).
    """

    def __init__(self, group_size: int = 3, use_contrastive: bool = False, num_layers: int = 6,
                 dim: int = 64, dropout: float = 0.1, frontend: str = "tiny_conv",
                 ssl_path: str | None = None, freeze_ssl: bool = False, no_temporal_bias: bool = False,
                 train_clamp: float = ORIGINAL_CLAMP) -> None:
        super().__init__()
        if ssl_path:
            from training.models.ssl_frontend import SSLFrontend

            self.frontend = SSLFrontend(ssl_path, freeze=freeze_ssl)
        else:
            if freeze_ssl:
                raise ValueError("--freeze_ssl needs --ssl_path (the built-in front-end is trained from scratch)")
            if frontend not in FRONTENDS:
                raise ValueError(f"unknown frontend {frontend!r}; known: {', '.join(sorted(FRONTENDS))}")
            self.frontend = FRONTENDS[frontend](num_layers=num_layers, dim=dim, dropout=dropout,
                                                normalize_waveform=False)
        dim = self.frontend.out_dim
        self.head = G3Head(self.frontend.num_layers, dim, group_size,
                           use_temporal_bias=not no_temporal_bias, train_clamp=train_clamp)
        # Named "projector" as in every model here: a pretrained start may add it (trainer).
        self.projector = projection_head(dim) if use_contrastive else None
        if self.projector is not None:
            xavier_init(self.projector)

    def forward(self, x: Tensor, return_attention: bool = False) -> ModelOutput:
        if x.dim() == 3:  # accept [B, 1, T] as well as [B, T]
            x = x.squeeze(1)
        out = self.head(self.frontend(x), return_attention)
        if self.projector is not None:  # reads the (training-clamped) embedding, as the original
            out = out._replace(projection=self.projector(out.embedding))
        return out
