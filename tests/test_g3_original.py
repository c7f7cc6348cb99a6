"""The current g3_heatmap head against the research model's formulas (issue 19), its losses, and
the architecture version that keeps checkpoints of the first head loadable and resumable."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli_helpers import TINY, load, run_main
from training.losses import build_criterion, original_contrastive_loss, original_supcon_loss
from training.models import (
    FRONTENDS,
    HEAD_VERSION,
    G3Heatmap,
    G3HeatmapV0,
    build_model,
    model_args,
    with_head_version,
)
from training.models.g3_heatmap import G3Head, temporal_bias


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FixedStack(nn.Module):
    """A parameter-free front-end of any depth and width: returns the layer stack it was given
    (or zeros shaped like XLS-R's output), so the head can be measured and checked alone."""

    def __init__(self, num_layers: int, dim: int, frames: int = 5, **_: object) -> None:
        super().__init__()
        self.num_layers, self.out_dim, self.frames = num_layers, dim, frames
        self.stack: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stack is not None:
            return self.stack
        return torch.zeros(x.size(0), self.num_layers, self.frames, self.out_dim)


@pytest.fixture
def xlsr_shaped(monkeypatch):
    monkeypatch.setitem(FRONTENDS, "xlsr_shaped", lambda num_layers, dim, **kw: FixedStack(24, 1024))
    return lambda **kw: build_model({"model_type": "g3_heatmap", "head_version": HEAD_VERSION,
                                     "frontend": "xlsr_shaped", **kw})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- the network


def test_parameter_counts_at_xlsr_width(xlsr_shaped):
    assert n_params(xlsr_shaped(use_contrastive=True)) == 3_421_954
    assert n_params(xlsr_shaped(use_contrastive=False)) == 2_763_778


def test_temporal_bias_values_by_hand():
    # T = 4: t/(T/2) - 1 = -1, -0.5, 0, 0.5 -> 2 * (1 - u^2) = 0, 1.5, 2, 1.5 (largest mid-clip).
    assert temporal_bias(4).tolist() == [0.0, 1.5, 2.0, 1.5]
    assert temporal_bias(5).tolist() == pytest.approx([0.0, 1.28, 1.92, 1.92, 1.28])


def test_with_zero_scores_the_temporal_attention_is_the_softmax_of_the_bias():
    head = G3Head(num_layers=2, dim=3, group_size=1).eval()
    nn.init.zeros_(head.temporal_attn.score.weight)
    with torch.no_grad():
        out = head(torch.randn(1, 2, 4, 3), return_attention=True)
    expected = torch.softmax(torch.tensor([0.0, 1.5, 2.0, 1.5]), dim=0)
    assert torch.allclose(out.attention["temporal"][0, 0], expected, atol=1e-7)
    off = G3Head(num_layers=2, dim=3, group_size=1, use_temporal_bias=False).eval()
    nn.init.zeros_(off.temporal_attn.score.weight)
    with torch.no_grad():
        flat = off(torch.randn(1, 2, 4, 3), return_attention=True).attention["temporal"]
    assert torch.allclose(flat, torch.full_like(flat, 0.25))  # --no_temporal_bias: uniform


def _pool_by_hand(pool: nn.Module, x: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """AttnPool written out frame by frame: e_t = w . tanh(W x_t + b) (+ bias_t), softmax, sum."""
    n, t, _ = x.shape
    W, b, w = pool.proj.weight, pool.proj.bias, pool.score.weight[0]
    scores = torch.empty(n, t)
    for i in range(n):
        for j in range(t):
            scores[i, j] = torch.dot(w, torch.tanh(W @ x[i, j] + b))
            if bias:
                scores[i, j] += 2 * (1 - ((j - t / 2) / (t / 2)) ** 2)
    a = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
    a = a / a.sum(dim=1, keepdim=True)
    return (a.unsqueeze(-1) * x).sum(dim=1), a


def _refine_by_hand(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    ln, lin1, _, _, lin2, _ = block.net
    h = F.layer_norm(x, x.shape[-1:], ln.weight, ln.bias, ln.eps)
    return x + lin2(F.selu(lin1(h)))  # eval: dropout is the identity


def test_forward_matches_a_hand_computation_of_the_formulas():
    """The original's loop structure (torch.split into groups, one pool per group) recomputed
    from the formulas, against the vectorised head; L = 5 layers, groups of 2 (last group 1)."""
    torch.manual_seed(3)
    layers, frames, dim = 5, 6, 8
    head = G3Head(num_layers=layers, dim=dim, group_size=2).eval()
    hidden = torch.randn(2, layers, frames, dim)
    with torch.no_grad():
        out = head(hidden, return_attention=True)
        rows = [_pool_by_hand(head.temporal_attn, hidden[:, l], bias=True) for l in range(layers)]
        layer_emb = torch.stack([r[0] for r in rows], dim=1)
        temporal = torch.stack([r[1] for r in rows], dim=1)
        group_vecs, intra = [], []
        for g in torch.split(layer_emb, 2, dim=1):
            vec, a = _pool_by_hand(head.intra_attn, g, bias=False)
            group_vecs.append(_refine_by_hand(head.group_refine, vec))
            intra.append(a)
        utt, inter = _pool_by_hand(head.inter_attn, torch.stack(group_vecs, dim=1), bias=False)
        utt = _refine_by_hand(head.utt_refine, utt)
        ln1, _, _, lin1, ln2, _, _, lin2 = head.classifier
        h = lin1(F.selu(F.layer_norm(utt, (dim,), ln1.weight, ln1.bias)))
        logits = lin2(F.selu(F.layer_norm(h, (256,), ln2.weight, ln2.bias)))
        expected = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    assert torch.allclose(out.attention["temporal"], temporal, atol=1e-6)
    assert torch.allclose(out.attention["intra"][:, :2], torch.stack(intra[:2], dim=1), atol=1e-6)
    assert torch.allclose(out.attention["intra"][:, 2, :1], intra[2], atol=1e-6)
    assert (out.attention["intra"][:, 2, 1] == 0).all()  # the smaller last group's empty slot
    assert torch.allclose(out.attention["inter"], inter, atol=1e-6)
    assert torch.allclose(out.embedding, utt, atol=1e-5)
    assert torch.allclose(out.log_probs, expected, atol=1e-5)


def test_intra_group_maps_for_24_layers_in_groups_of_5():
    torch.manual_seed(0)
    head = G3Head(num_layers=24, dim=8, group_size=5).eval()
    hidden = torch.randn(3, 24, 7, 8)
    with torch.no_grad():
        att = head(hidden, return_attention=True).attention
    assert att["temporal"].shape == (3, 24, 7)
    assert att["intra"].shape == (3, 5, 5) and att["inter"].shape == (3, 5)
    assert (att["intra"][:, 4, 4] == 0).all() and (att["intra"][:, 4, :4] > 0).all()  # 4 layers in the last
    for name in ("temporal", "intra", "inter", "layer"):
        assert torch.allclose(att[name].sum(-1), torch.ones(att[name].shape[:-1]), atol=1e-6), name
    # The last group alone, pooled as the original did (a 4-layer pool), gives the same weights.
    with torch.no_grad():
        layer_emb, _ = head.temporal_attn(hidden)
        _, alone = head.intra_attn(layer_emb[:, 20:])
    assert torch.allclose(att["intra"][:, 4, :4], alone, atol=1e-6)


def test_the_training_clamp_acts_in_train_mode_only():
    torch.manual_seed(0)
    head = G3Head(num_layers=3, dim=4, group_size=3)
    loud = 1000 * torch.randn(2, 3, 5, 4)  # a residual stream far beyond +-10
    head.train()
    assert head(loud).embedding.abs().max().item() == 10.0
    head.eval()
    with torch.no_grad():
        assert head(loud).embedding.abs().max().item() > 10.0
    unclamped = G3Head(num_layers=3, dim=4, group_size=3, train_clamp=0.0).train()
    assert unclamped(loud).embedding.abs().max().item() > 10.0
    with pytest.raises(ValueError, match="train_clamp"):
        G3Head(num_layers=3, dim=4, group_size=3, train_clamp=float("nan"))


def test_classifier_and_projection_start_xavier_with_zero_biases(xlsr_shaped):
    model = xlsr_shaped(use_contrastive=True)
    for part in (model.head.classifier, model.projector):
        linears = [m for m in part.modules() if isinstance(m, nn.Linear)]
        assert linears and all((m.bias == 0).all() for m in linears)
        for m in linears:  # xavier-uniform: within +-sqrt(6 / (fan_in + fan_out))
            bound = math.sqrt(6 / (m.in_features + m.out_features))
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound


def _conv_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.frontend.features.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_the_tiny_front_end_reads_the_raw_waveform():
    x = 3 * torch.randn(1, 4000) + 1
    new = build_model({"model_type": "g3_heatmap", "head_version": HEAD_VERSION}).eval()
    assert torch.equal(_conv_input(new, x), x)  # no per-utterance normalisation
    old = build_model({"model_type": "g3_heatmap"}).eval()
    assert torch.allclose(_conv_input(old, x), F.layer_norm(x, x.shape[-1:]))  # the first head's


# ---------------------------------------------------------------- losses


def _original_contrastive(z: torch.Tensor, labels: torch.Tensor, t: float = 0.1) -> torch.Tensor:
    """The research model's ContrastiveLoss formula (with its 1e-8), for batches where it is right."""
    z = F.normalize(z, dim=1)
    sim = (z @ z.T / t).clamp(-10, 10)
    pos = (labels[:, None] == labels[None, :]).float().fill_diagonal_(0)
    neg = (labels[:, None] != labels[None, :]).float()
    pos_loss = -(sim * pos).sum() / (pos.sum() + 1e-8)
    return pos_loss + torch.log((sim.exp() * neg).sum(1) + 1e-8).mean()


def test_original_contrastive_equals_the_original_formula_when_every_row_has_a_negative():
    torch.manual_seed(0)
    z, labels = torch.randn(6, 5), torch.tensor([0, 1, 0, 1, 1, 0])
    assert original_contrastive_loss(z, labels).item() == pytest.approx(_original_contrastive(z, labels).item(), rel=1e-6)


def test_a_row_without_negatives_adds_no_log_1e8():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # two bona fide, same direction
    one_class = torch.tensor([1, 1, 1])
    loss = original_contrastive_loss(z, one_class)
    # Only the positive term: -mean(cos / 0.1) over the 6 ordered pairs = -(10 + 10 + 0 * 4) / 6.
    assert loss.item() == pytest.approx(-20 / 6)
    assert _original_contrastive(z, one_class).item() == pytest.approx(-20 / 6 + math.log(1e-8), rel=1e-5)


def test_original_supcon_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([1, 1, 0])
    # cos / 0.1: s01 = 6, s02 = 0, s12 = 8. Row 0: 6 - log(e^6 + e^0); row 1: 6 - log(e^6 + e^8);
    # row 2 has no positive and counts as 0 in the mean over all three rows.
    r0, r1 = 6 - math.log(math.exp(6) + 1), 6 - math.log(math.exp(6) + math.exp(8))
    assert original_supcon_loss(z, labels).item() == pytest.approx(-(r0 + r1) / 3, rel=1e-5)
    assert original_supcon_loss(z[:1], labels[:1]).item() == 0.0


def test_the_current_head_trains_with_the_original_losses_and_the_old_one_keeps_its_own():
    new = build_criterion({"model_type": "g3_heatmap", "head_version": 1, "use_contrastive": True})
    old = build_criterion({"model_type": "g3_heatmap", "use_contrastive": True})
    assert (new.form, new.temperature) == ("original", 0.1)
    assert (old.form, old.temperature) == ("pairwise", 0.07)
    assert build_criterion({"model_type": "lcnn", "head_version": 1}).form == "pairwise"


# ---------------------------------------------------------------- versions


def test_head_version_decides_the_network():
    assert isinstance(build_model({"model_type": "g3_heatmap", "head_version": 1}), G3Heatmap)
    assert isinstance(build_model({"model_type": "g3_heatmap", "head_version": 0}), G3HeatmapV0)
    assert isinstance(build_model({"model_type": "g3_heatmap"}), G3HeatmapV0)  # predates the record
    assert model_args({"model_type": "g3_heatmap", "head_version": 1})["head_version"] == 1
    with pytest.raises(ValueError, match="head_version 7 is not known"):
        build_model({"model_type": "g3_heatmap", "head_version": 7})


def test_with_head_version_follows_the_source():
    fresh = with_head_version({"model_type": "g3_heatmap"}, None)
    assert fresh["head_version"] == HEAD_VERSION
    assert with_head_version({}, {"lr": 1e-6})["head_version"] == 0  # an old checkpoint's args
    assert with_head_version({}, {"head_version": 1}, {"head.weight": 0})["head_version"] == 1
    v0_state = G3HeatmapV0().state_dict()
    v1_state = build_model(fresh).state_dict()
    assert with_head_version({}, None, v0_state)["head_version"] == 0  # weights-only files
    assert with_head_version({}, None, v1_state)["head_version"] == 1


def test_a_checkpoint_of_the_first_head_still_resumes_with_its_own_head(tmp_path: Path):
    """A real run of the first head (started from its weights), its checkpoint rewritten as the
    old trainer wrote it (no head_version in the args), then resumed by the CLI."""
    from training.checkpoint.store import save_checkpoint

    torch.manual_seed(0)
    weights = tmp_path / "v0_weights.pth"
    torch.save(G3HeatmapV0().state_dict(), weights)
    base = [*TINY, "--model_type", "g3_heatmap", "--train_size", "16", "--val_size", "8"]
    first = run_main([*base, "--num_epochs", "1", "--model_path", str(weights)], tmp_path)
    assert first.code == 0, first.text
    [folder] = (tmp_path / "models").iterdir()
    ckpt_path = folder / "checkpoint_epoch_1.pth"
    ckpt = load(ckpt_path)
    assert ckpt["args"]["head_version"] == 0
    del ckpt["args"]["head_version"]  # what checkpoints of the first head carry
    save_checkpoint(ckpt, ckpt_path)

    listed = run_main([*base, "--num_epochs", "1", "--list_checkpoints"], tmp_path)
    assert listed.code == 0 and "checkpoint_epoch_1" in listed.text, listed.text
    resumed = run_main([*base, "--num_epochs", "2", "--resume", "--model_path", str(ckpt_path)], tmp_path)
    assert resumed.code == 0, resumed.text
    [second_path] = (tmp_path / "models").glob("*/checkpoint_epoch_2.pth")
    second = load(second_path)
    assert second["args"]["head_version"] == 0
    assert second["model_state_dict"].keys() == ckpt["model_state_dict"].keys()
    assert "temporal_pool.query" in second["model_state_dict"]  # the first head's own weights
