"""Models, registry and losses: shapes, attention maps, loss values, edge batches, determinism,
and that gradients flow (a few Adam steps fit a tiny separable batch).

Small inputs (4000 samples = 0.25 s) keep the whole file to a few seconds on one core.
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from training.config import DEFAULTS, MODEL_TYPES
from training.losses import (
    CLASS_WEIGHTS,
    Criterion,
    build_criterion,
    pairwise_contrastive_loss,
    supcon_loss,
)
from training.models import (
    MODEL_REGISTRY,
    LCNN,
    HEAD_VERSION,
    G3Heatmap,
    G3HeatmapV0,
    ModelOutput,
    build_model,
    model_args,
)
from training.models.lcnn import LFCC, dct_matrix

T = 4000  # samples per test clip

# Every network the registry builds: both g3_heatmap heads (args without head_version are an old
# checkpoint's, so they rebuild head 0) and lcnn.
KIND_ARGS = {
    "g3_heatmap": {"model_type": "g3_heatmap", "head_version": HEAD_VERSION},
    "g3_heatmap_v0": {"model_type": "g3_heatmap"},
    "lcnn": {"model_type": "lcnn"},
}
KINDS = tuple(KIND_ARGS)
G3_KINDS = ("g3_heatmap", "g3_heatmap_v0")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine is shared: stay on one core, and leave the setting as we found it.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def separable_batch(n: int = 8, samples: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    """Bonafide = a noisy 440 Hz tone, spoof = louder white noise; alternating labels."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / 16000
    labels = torch.tensor([1, 0] * (n // 2))
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    noise = 0.1 * torch.randn(n, samples, generator=g)
    tone = 0.5 * torch.sin(2 * math.pi * 440 * t + phase)
    return torch.where(labels[:, None] == 1, tone + noise, 5 * noise), labels


# ---------------------------------------------------------------- registry


def test_registry_covers_the_cli_choices():
    assert set(MODEL_REGISTRY) == set(MODEL_TYPES)


def test_unknown_model_type_lists_the_known_ones():
    with pytest.raises(ValueError, match="g3_heatmap.*lcnn"):
        build_model({"model_type": "rawnet9"})
    with pytest.raises(ValueError, match="known"):
        model_args({"model_type": "rawnet9"})


def test_missing_keys_take_the_cli_defaults():
    model = build_model({})  # an old checkpoint's args may lack every model key: the old head
    assert isinstance(model, G3HeatmapV0)
    assert model.group_attention.group_size == DEFAULTS["group_size"]
    assert model.projector is None
    assert isinstance(build_model(argparse.Namespace(model_type="lcnn")), LCNN)


def test_model_args_are_plain_scalars_and_rebuild_the_same_architecture():
    full = dict(DEFAULTS, group_size=2, use_contrastive=True, lr=0.5)
    stored = model_args(full)
    assert stored["model_type"] == "g3_heatmap" and stored["group_size"] == 2
    assert "lr" not in stored  # training-only options stay out
    assert all(isinstance(v, (int, float, bool, str)) for v in stored.values())
    a, b = build_model(full), build_model(stored)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()}
    assert "group_size" not in model_args({"model_type": "lcnn"})


def test_args_from_text_are_coerced():
    assert model_args({"group_size": "2", "use_contrastive": "true"})["group_size"] == 2
    assert model_args({"use_contrastive": "false"})["use_contrastive"] is False
    with pytest.raises(ValueError, match="group_size"):
        model_args({"group_size": 2.5})


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("model_type", KINDS)
def test_output_contract(model_type):
    torch.manual_seed(0)
    model = build_model({**KIND_ARGS[model_type]}).eval()
    x = torch.randn(3, T)
    with torch.no_grad():
        out = model(x)
        same = model(x.unsqueeze(1))  # [B, 1, T] is accepted too
    assert isinstance(out, ModelOutput)
    assert out.log_probs.shape == (3, 2)
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert (out.log_probs <= 0).all()
    assert out.embedding.dim() == 2 and out.embedding.size(0) == 3
    assert out.attention is None and out.projection is None
    assert torch.equal(out.score, out.log_probs[:, 1])
    assert torch.equal(same.log_probs, out.log_probs)


@pytest.mark.parametrize("model_type", KINDS)
def test_projection_head_only_with_use_contrastive(model_type):
    torch.manual_seed(0)
    plain = build_model({**KIND_ARGS[model_type]})
    con = build_model({**KIND_ARGS[model_type], "use_contrastive": True}).eval()
    extra = {n for n, _ in con.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert extra and all(n.startswith("projector.") for n in extra)
    with torch.no_grad():
        out = con(torch.randn(2, T))
    assert out.projection is not None and out.projection.dim() == 2 and out.projection.size(0) == 2


@pytest.mark.parametrize("kind", G3_KINDS)
@pytest.mark.parametrize("group_size", [1, 2, 3, 4, 6])
def test_g3_attention_maps(group_size, kind):
    torch.manual_seed(0)
    model = build_model({**KIND_ARGS[kind], "group_size": group_size}).eval()
    with torch.no_grad():
        out = model(torch.randn(2, T), return_attention=True)
    att = out.attention
    groups = math.ceil(6 / group_size)
    frames = att["temporal"].size(-1)
    assert att["temporal"].shape == (2, 6, frames) and frames > 1
    assert att["intra"].shape == (2, groups, group_size)
    assert att["inter"].shape == (2, groups)
    assert att["layer"].shape == (2, 6)
    for name in ("temporal", "intra", "inter", "layer"):
        sums = att[name].sum(-1)
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5), name
    if 6 % group_size:  # the last, smaller group: its missing slots get exactly zero weight
        missing = groups * group_size - 6
        assert (att["intra"][:, -1, -missing:] == 0).all()


@pytest.mark.parametrize("kind", G3_KINDS)
@pytest.mark.parametrize("group_size", [0, -1, 7])
def test_g3_invalid_group_size_is_a_clear_error(group_size, kind):
    with pytest.raises(ValueError, match=r"group_size must be an integer from 1 to .*\(6\)"):
        build_model({**KIND_ARGS[kind], "group_size": group_size})


@pytest.mark.parametrize("model_type", KINDS)
def test_batch_of_one_trains(model_type):
    torch.manual_seed(0)
    args = {**KIND_ARGS[model_type], "use_contrastive": True}
    model = build_model(args).train()
    loss, _ = build_criterion(args)(model(torch.randn(1, T)), torch.tensor([1]))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_g3_too_short_input_is_a_clear_error():
    with pytest.raises(ValueError, match="input too short"):
        build_model({})(torch.randn(1, 800))


def test_lcnn_has_no_attention_maps():
    model = build_model({"model_type": "lcnn"}).eval()
    with torch.no_grad():
        assert model(torch.randn(2, T), return_attention=True).attention is None


def test_lfcc_front_end():
    lfcc = LFCC()
    feats = lfcc(torch.randn(2, T))
    assert feats.shape == (2, 60, T // 160 + 1)
    assert torch.isfinite(feats).all()
    dct = dct_matrix(20)
    assert torch.allclose(dct @ dct.T, torch.eye(20), atol=1e-5)  # orthonormal DCT-II


# ---------------------------------------------------------------- losses


def _output(log_probs, features):
    return ModelOutput(log_probs, features)


def test_cce_is_the_class_weighted_nll():
    log_probs = F.log_softmax(torch.tensor([[0.2, 1.0], [2.0, -1.0], [0.5, 0.5]]), dim=-1)
    labels = torch.tensor([1, 0, 0])
    loss, parts = build_criterion({})(_output(log_probs, torch.randn(3, 4)), labels)
    w_spoof, w_bona = CLASS_WEIGHTS
    by_hand = -(w_bona * log_probs[0, 1] + w_spoof * log_probs[1, 0] + w_spoof * log_probs[2, 0])
    by_hand = by_hand / (w_bona + 2 * w_spoof)
    assert CLASS_WEIGHTS == (0.1, 0.9)
    assert torch.allclose(loss, by_hand)
    assert torch.equal(loss, F.nll_loss(log_probs, labels, weight=torch.tensor([0.1, 0.9])))
    assert set(parts) == {"cce", "loss"} and parts["loss"].item() == pytest.approx(by_hand.item())


def test_unknown_loss_is_an_error():
    with pytest.raises(ValueError, match="CCE"):
        build_criterion({"loss": "focal"})


def test_contrastive_losses_by_hand():
    e = torch.eye(3)  # three orthogonal unit vectors: cosine distance 1 between any two
    # pairwise: same-class pairs pay d^2 = 1, different-class pairs pay relu(1 - 1)^2 = 0
    assert pairwise_contrastive_loss(e, torch.tensor([0, 0, 1])).item() == pytest.approx(1 / 3)
    # supcon: label 1 has no positive and is left out; anchors 0 and 1 each see one positive
    # and one negative, all at cosine 0, so each loss is log(2).
    assert supcon_loss(e, torch.tensor([0, 0, 1])).item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("labels", [[1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
def test_contrastive_terms_are_finite_on_edge_batches(labels):
    labels = torch.tensor(labels)
    n = len(labels)
    feats = torch.randn(n, 8, requires_grad=True)
    log_probs = F.log_softmax(torch.randn(n, 2, requires_grad=True), dim=-1)
    crit = build_criterion({"use_contrastive": True, "contrastive_weight": 0.3, "supcon_weight": 0.2})
    loss, tensor_parts = crit(_output(log_probs, feats), labels)
    parts = {k: v.item() for k, v in tensor_parts.items()}
    loss.backward()
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in parts.values())
    assert torch.isfinite(feats.grad).all()
    total = parts["cce"] + 0.3 * parts["contrastive"] + 0.2 * parts["supcon"]
    assert parts["loss"] == pytest.approx(total, rel=1e-5)
    if n == 1:
        assert parts["contrastive"] == 0 and parts["supcon"] == 0
        assert str(parts["contrastive"]) == "0.0"  # not -0.0 in the training log
    again, _ = crit(_output(log_probs, feats), labels)
    assert torch.equal(loss, again)


def test_contrastive_uses_the_projection_when_present():
    labels = torch.tensor([0, 1])
    emb, proj = torch.eye(2), torch.ones(2, 2)  # orthogonal embeddings, identical projections
    crit = Criterion(use_contrastive=True)
    log_probs = torch.log(torch.full((2, 2), 0.5))
    _, with_proj = crit(ModelOutput(log_probs, emb, None, proj), labels)
    _, without = crit(ModelOutput(log_probs, emb), labels)
    assert with_proj["contrastive"] == pytest.approx(1.0)  # different classes at distance 0
    assert without["contrastive"] == pytest.approx(0.0)  # different classes at distance 1


# ---------------------------------------------------------------- training


def _one_step(model_type: str, use_contrastive: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    args = {**KIND_ARGS[model_type], "use_contrastive": use_contrastive}
    model, crit = build_model(args), build_criterion(args)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = separable_batch(4)
    loss, _ = crit(model(x), y)
    loss.backward()
    opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_type", KINDS)
def test_one_step_is_bit_identical_under_deterministic_algorithms(model_type):
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        a = _one_step(model_type, use_contrastive=True)
        b = _one_step(model_type, use_contrastive=True)
    finally:
        torch.use_deterministic_algorithms(before)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model_type", KINDS)
def test_thirty_adam_steps_fit_a_separable_batch(model_type):
    torch.manual_seed(0)
    model, crit = build_model({**KIND_ARGS[model_type]}), build_criterion({})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = separable_batch(8)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss, _ = crit(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
