"""EER must equal the ASVspoof evaluation package's, tie handling included.

Three kinds of evidence:
- small cases worked out by hand (the arithmetic is in the comments);
- a randomized comparison (hypothesis + a seeded loop, integer scores so ties are everywhere)
  against ``reference_eer`` below: an independent, deliberately naive transcription of the
  official ``compute_det_curve`` / ``compute_eer`` (one operating point per trial in stable-sort
  order, bona fide trials listed first). It is written as a plain loop rather than copied, so a
  vectorisation slip in ``training.metrics`` cannot be mirrored in the reference;
- a "merged ties" EER (what ``sklearn.metrics.roc_curve`` based shortcuts compute) that the same
  checks reject, proving they can fail.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import accuracy, compute_det_curve, compute_eer, eer_percent, scores_from_log_probs


# --- references --------------------------------------------------------------------------------

def reference_eer(bonafide: list[float], spoof: list[float]) -> tuple[float, float]:
    """The ASVspoof definition, step by step.

    Trials are listed bona fide first, then sorted by score with a stable sort (Python's
    ``sorted`` is stable, like numpy's mergesort). Operating point k rejects the first k sorted
    trials: FRR = rejected bona fide / all bona fide, FAR = accepted spoof / all spoof. Point 0's
    threshold is the lowest score minus 0.001, point k's is the k-th sorted score. The EER is the
    mean of FRR and FAR at the first point with the smallest |FRR - FAR|.
    """
    trials = [(float(s), 1) for s in bonafide] + [(float(s), 0) for s in spoof]
    order = sorted(range(len(trials)), key=lambda i: trials[i][0])
    n_bona, n_spoof = len(bonafide), len(spoof)
    best = None
    rejected_bona = rejected_spoof = 0
    for k in range(len(trials) + 1):
        if k > 0:
            if trials[order[k - 1]][1] == 1:
                rejected_bona += 1
            else:
                rejected_spoof += 1
        frr = rejected_bona / n_bona
        far = (n_spoof - rejected_spoof) / n_spoof
        threshold = trials[order[0]][0] - 0.001 if k == 0 else trials[order[k - 1]][0]
        gap = abs(frr - far)
        if best is None or gap < best[0]:  # strict: the first minimum wins, as np.argmin
            best = (gap, (frr + far) / 2, threshold)
    assert best is not None
    return best[1], best[2]


def merged_ties_eer(bonafide: list[float], spoof: list[float]) -> float:
    """What ROC-curve shortcuts compute: one operating point per *distinct* score.

    Accept a trial when score >= t, for t over the distinct scores (plus +inf = reject all),
    walked from "reject nothing" upwards like the official curve so that only the merging of
    ties differs. Used only to show that the tests distinguish it from the official definition.
    """
    b, s = np.asarray(bonafide, float), np.asarray(spoof, float)
    best = None
    for t in [*sorted(set(b) | set(s)), math.inf]:
        frr = float(np.mean(b < t))
        far = float(np.mean(s >= t))
        if best is None or abs(frr - far) < best[0]:
            best = (abs(frr - far), (frr + far) / 2)
    assert best is not None
    return best[1]


# --- hand-computed cases -----------------------------------------------------------------------

def test_perfect_separation_is_zero():
    # sorted: 0s 1s 2b 3b -> frr = [0, 0, 0, .5, 1], far = [1, .5, 0, 0, 0]
    # |frr - far| is 0 first at k=2 -> EER 0, threshold = 2nd sorted score = 1
    assert compute_eer([2, 3], [0, 1]) == (0.0, 1.0)


def test_perfectly_inverted_is_one():
    # sorted: 0b 1b 2s 3s -> frr = [0, .5, 1, 1, 1], far = [1, 1, 1, .5, 0]
    # |frr - far| = [1, .5, 0, .5, 1] -> k=2: frr = far = 1 -> EER 1.0 (not 0.5), threshold 1
    assert compute_eer([0, 1], [2, 3]) == (1.0, 1.0)


def test_interleaved_scores():
    # bona fide .9 .8 .3, spoof .1 .4 .2 .7
    # sorted: .1s .2s .3b .4s .7s .8b .9b
    # frr = [0, 0, 0, 1/3, 1/3, 1/3, 2/3, 1]
    # far = [1, 3/4, 2/4, 2/4, 1/4, 0, 0, 0]
    # |diff| = [1, .75, .5, 1/6, 1/12, 1/3, 2/3, 1] -> k=4: EER = (1/3 + 1/4) / 2 = 7/24,
    # threshold = 4th sorted score = .4
    eer, thr = compute_eer([0.9, 0.8, 0.3], [0.1, 0.4, 0.2, 0.7])
    assert eer == pytest.approx(7 / 24, abs=1e-15)
    assert thr == 0.4


def test_all_scores_tied_is_one_not_half():
    # A constant-score system: the stable sort keeps the input order, bona fide first, so the
    # official curve rejects every bona fide trial before any spoof: at k = n_bona frr = far = 1.
    # The official EER is therefore 1.0 (100 %), whereas merging the tie into one operating point
    # gives 0.5. This is the sharpest difference between the two definitions.
    for n_bona, n_spoof in [(1, 1), (2, 2), (3, 5), (7, 2)]:
        eer, thr = compute_eer([0.5] * n_bona, [0.5] * n_spoof)
        assert eer == 1.0
        assert thr == 0.5
        assert merged_ties_eer([0.5] * n_bona, [0.5] * n_spoof) == 0.5


def test_partial_tie():
    # bona fide 1 2 2 3, spoof 0 2; sorted (stable): 0s 1b 2b 2b 2s 3b
    # frr = [0, 0, 1/4, 2/4, 3/4, 3/4, 1], far = [1, 1/2, 1/2, 1/2, 1/2, 0, 0]
    # |diff| = [1, .5, .25, 0, .25, .75, 1] -> k=3: EER .5, threshold = 3rd sorted score = 2
    assert compute_eer([1, 2, 2, 3], [0, 2]) == (0.5, 2.0)
    # Merged ties: points reject <=0, <=1, <=2, <=3 -> (0,.5) (.25,.5) (.75,0) (1,0): best gap .25
    # at (.25, .5) -> .375. The official value differs.
    assert merged_ties_eer([1, 2, 2, 3], [0, 2]) == 0.375


def test_det_curve_shape_and_endpoints():
    frr, far, thr = compute_det_curve([3.0, 1.0], [2.0])
    assert frr.tolist() == [0.0, 0.5, 0.5, 1.0]
    assert far.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert thr.tolist() == pytest.approx([0.999, 1.0, 2.0, 3.0])


def test_first_minimum_wins():
    # bona fide 1 3, spoof 0 2: sorted 0s 1b 2s 3b
    # frr = [0, 0, .5, .5, 1], far = [1, .5, .5, 0, 0], |diff| = [1, .5, 0, .5, 1] -> k=2 unique
    # Now with a flat minimum: bona fide 2, spoof 1 3 -> sorted 1s 2b 3s
    # frr = [0, 0, 1, 1], far = [1, .5, .5, 0], |diff| = [1, .5, .5, 1] -> first one: k=1
    # EER = (0 + .5) / 2 = .25, threshold = 1
    assert compute_eer([1, 3], [0, 2]) == (0.5, 1.0)
    assert compute_eer([2], [1, 3]) == (0.25, 1.0)


# --- inputs ----------------------------------------------------------------------------------------

def test_accepts_numpy_torch_and_lists():
    torch = pytest.importorskip("torch")
    bona, spoof = [0.9, 0.8, 0.3], [0.1, 0.4, 0.2, 0.7]
    expected = compute_eer(bona, spoof)
    assert compute_eer(np.array(bona), np.array(spoof)) == expected
    assert compute_eer(tuple(bona), tuple(spoof)) == expected
    t_bona = torch.tensor(bona, dtype=torch.float64, requires_grad=True)
    assert compute_eer(t_bona, torch.tensor(spoof, dtype=torch.float64)) == expected
    # float32 tensors are compared at float32 precision, as the trainer produces them
    eer32, _ = compute_eer(torch.tensor(bona), torch.tensor(spoof))
    assert eer32 == expected[0]
    assert eer_percent(bona, spoof) == pytest.approx(100 * 7 / 24)


@pytest.mark.parametrize("bona, spoof, which", [([], [1.0], "bona fide"), ([1.0], [], "spoof")])
def test_empty_class_raises(bona, spoof, which):
    with pytest.raises(ValueError, match=f"no {which} scores"):
        compute_eer(bona, spoof)


def test_nan_raises_but_inf_is_a_score():
    with pytest.raises(ValueError, match="NaN"):
        compute_eer([float("nan"), 1.0], [0.0])
    # log-softmax can give -inf; the official code ranks it like any score
    assert compute_eer([0.0, 1.0], [-math.inf, -5.0]) == (0.0, -5.0)


def test_metrics_module_does_not_import_torch():
    import subprocess
    import sys

    from pathlib import Path

    code = "import sys, training.metrics; sys.exit('torch' in sys.modules)"
    repo = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo, check=False).returncode == 0


def test_accuracy_and_scores():
    log_probs = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    labels = [0, 1, 1, 1]
    assert accuracy(log_probs, labels) == 75.0
    assert accuracy(np.array([0, 1, 0, 1]), labels) == 75.0
    assert accuracy(np.zeros((0, 2)), []) == 0.0
    assert scores_from_log_probs(log_probs).tolist() == pytest.approx(np.log([0.1, 0.8, 0.4, 0.7]).tolist())
    with pytest.raises(ValueError):
        accuracy(log_probs, [0, 1])


# --- randomized agreement with the official definition ------------------------------------------

def _assert_matches_reference(bona: list[float], spoof: list[float]) -> None:
    eer, thr = compute_eer(bona, spoof)
    ref_eer, ref_thr = reference_eer(bona, spoof)
    assert eer == ref_eer, (bona, spoof)
    assert thr == ref_thr, (bona, spoof)


_tied_scores = st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(bona=_tied_scores, spoof=_tied_scores)
def test_matches_reference_heavy_ties(bona, spoof):
    _assert_matches_reference(bona, spoof)


_real_scores = st.lists(
    st.floats(min_value=-50, max_value=50, allow_nan=False, allow_infinity=False), min_size=1, max_size=25
)


@settings(max_examples=200, deadline=None)
@given(bona=_real_scores, spoof=_real_scores)
def test_matches_reference_real_scores(bona, spoof):
    _assert_matches_reference(bona, spoof)


def test_matches_reference_seeded_loop_and_is_not_merged_ties():
    rng = random.Random(20240607)
    disagreements_with_merged = 0
    for _ in range(400):
        levels = rng.randint(1, 6)  # few distinct values -> many ties
        bona = [rng.randint(0, levels) + 1 for _ in range(rng.randint(1, 30))]
        spoof = [rng.randint(0, levels) for _ in range(rng.randint(1, 30))]
        _assert_matches_reference(bona, spoof)
        if merged_ties_eer(bona, spoof) != compute_eer(bona, spoof)[0]:
            disagreements_with_merged += 1
    # The comparison has teeth: a merged-ties EER would have failed it many times over.
    assert disagreements_with_merged > 50


def test_without_ties_merged_and_official_agree_often():
    # Sanity check of the references themselves: with distinct scores both walk the same
    # operating points, so they agree whenever the EER point is unique.
    rng = np.random.default_rng(0)
    agree = 0
    for _ in range(100):
        bona = rng.normal(1, 1, 20).tolist()
        spoof = rng.normal(0, 1, 20).tolist()
        agree += merged_ties_eer(bona, spoof) == reference_eer(bona, spoof)[0]
    assert agree == 100
