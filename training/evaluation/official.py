"""The ASVspoof 2021 eval package's numbers: pooled EER, the per-condition tables, min t-DCF.

What the package (asvspoof-challenge/2021, ``eval-package/``: ``main.py``, ``eval_wrapper.py``,
``config.py``) does, and this module reproduces operation for operation:

* the score file is joined with the key; trials outside ``--subset`` (eval by default) are dropped;
* one table per track, rows x columns of conditions, each ending in ``Pooled``:
  LA attack (A07-A19) x codec (C1-C7 = none alaw pstn g722 ulaw gsm opus);
  DF vocoder type x compression (C1-C9 = nocodec low_mp3 high_mp3 low_m4a high_m4a low_ogg
  high_ogg mp3m4a oggm4a). A condition that only spoofed trials have (attack, vocoder) selects
  the spoofed trials and keeps every bona fide one; one both classes have (codec) selects both;
* each cell's EER is ``compute_eer`` on its bona fide and spoof scores (``training.metrics``, the
  package's own stable-sort algorithm); an empty class gives NaN; the Pooled x Pooled cell is the
  pooled EER;
* LA min t-DCF: per cell, C0, C1, C2 from the ASV scores of the same subset and conditions (the ASV
  threshold at the ASV EER of target vs nontarget; ``Pfa = P(score >= t)``, ``Pmiss = P(score < t)``),
  with the 2021 cost model; then ``min over CM thresholds of (C0 + C1 Pmiss_cm + C2 Pfa_cm) /
  (C0 + min(C1, C2))``. The package can also read pre-computed C012 ``.npy`` files: those are
  pickles, which this package never loads; recomputing from the ASV scores (its ``--recompute-c012``)
  gives the same coefficients.

Where the package stops the whole run (a cell whose scores are not finite or take fewer than 3
distinct values), the cell's min t-DCF is NaN here and the other cells are still computed.
2019 protocols get an attack x Pooled table; In-the-Wild only the pooled EER.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.evaluation.keys import AsvTrials, TrialKey
from training.labels import BONAFIDE, SPOOF
from training.metrics import compute_det_curve, compute_eer

POOLED = "Pooled"
SPOOF_ONLY = "spoof"
BOTH = "both"

# The package's config.py: Pspoof 0.05, target / nontarget split 99 / 1, Cmiss 1, Cfa 10, Cfa_spoof 10.
_PSPOOF = 0.05
COST_MODEL = {
    "Pspoof": _PSPOOF,
    "Ptar": (1 - _PSPOOF) * 0.99,
    "Pnon": (1 - _PSPOOF) * 0.01,
    "Cmiss": 1,
    "Cfa": 10,
    "Cfa_spoof": 10,
}


@dataclass(frozen=True)
class Factor:
    """One axis of a table: a key column, its values (Pooled last) and their printed tags."""

    column: str | None  # None: Pooled only
    values: tuple[str, ...]
    tags: tuple[str, ...]
    kind: str  # SPOOF_ONLY | BOTH


LA_ATTACKS = tuple(f"A{i:02d}" for i in range(7, 20))
LA_CODECS = ("none", "alaw", "pstn", "g722", "ulaw", "gsm", "opus")
DF_VOCODERS = ("traditional_vocoder", "waveform_concatenation", "neural_vocoder_autoregressive",
               "neural_vocoder_nonautoregressive", "unknown")
DF_VOCODER_TAGS = ("Traditional", "Wav.Concat.", "Neural AR", "Neural non-AR", "Unknown")
DF_COMPRESSIONS = ("nocodec", "low_mp3", "high_mp3", "low_m4a", "high_m4a", "low_ogg", "high_ogg",
                   "mp3m4a", "oggm4a")

ONLY_POOLED = Factor(None, (POOLED,), (POOLED,), BOTH)
TABLES: dict[str, tuple[Factor, Factor]] = {
    "LA": (Factor("attack", (*LA_ATTACKS, POOLED), (*LA_ATTACKS, POOLED), SPOOF_ONLY),
           Factor("codec", (*LA_CODECS, POOLED), (*(f"C{i}" for i in range(1, 8)), POOLED), BOTH)),
    "DF": (Factor("vocoder", (*DF_VOCODERS, POOLED), (*DF_VOCODER_TAGS, POOLED), SPOOF_ONLY),
           Factor("compr", (*DF_COMPRESSIONS, POOLED), (*(f"C{i}" for i in range(1, 10)), POOLED), BOTH)),
}


def table_factors(key: TrialKey) -> tuple[Factor, Factor]:
    """The package's table for a 2021 key; attack x Pooled for a 2019 protocol; Pooled only else."""
    if key.kind in TABLES:
        return TABLES[key.kind]
    if "attack" in key.columns:
        attacks = tuple(sorted(v for v in key.columns["attack"].values if v not in ("-", "bonafide")))
        return Factor("attack", (*attacks, POOLED), (*attacks, POOLED), SPOOF_ONLY), ONLY_POOLED
    return ONLY_POOLED, ONLY_POOLED


def _condition(columns, factor: Factor, value: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mask applied to bona fide trials, mask applied to spoofed ones); None = no restriction."""
    if value == POOLED or factor.column is None:
        return None, None
    mask = columns[factor.column].mask(value)
    return (None if factor.kind == SPOOF_ONLY else mask), mask


def _and(base: np.ndarray, *masks: np.ndarray | None) -> np.ndarray:
    out = base
    for m in masks:
        if m is not None:
            out = out & m
    return out


@dataclass
class Breakdown:
    """A table of cells (rows x cols), each with its EER (fraction), min t-DCF and class counts."""

    rows: Factor
    cols: Factor
    eer: np.ndarray
    min_tdcf: np.ndarray | None
    bonafide: np.ndarray
    spoof: np.ndarray

    @property
    def pooled_eer(self) -> float:
        return float(self.eer[-1, -1])

    @property
    def pooled_min_tdcf(self) -> float | None:
        return None if self.min_tdcf is None else float(self.min_tdcf[-1, -1])


def breakdown_table(scores: np.ndarray, key: TrialKey, subset: str, asv: AsvTrials | None = None) -> Breakdown:
    """Every cell of the track's table over the trials of ``subset``, as the package computes it."""
    rows, cols = table_factors(key)
    in_subset = key.subset_mask(subset)
    bona_base = in_subset & (key.labels == BONAFIDE)
    spoof_base = in_subset & (key.labels == SPOOF)
    shape = (len(rows.values), len(cols.values))
    eer = np.full(shape, np.nan)
    tdcf = np.full(shape, np.nan) if asv is not None else None
    n_bona, n_spoof = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    asv_subset = asv.subset_mask(subset) if asv is not None else None
    for i, row_value in enumerate(rows.values):
        row_bona, row_spoof = _condition(key.columns, rows, row_value)
        for j, col_value in enumerate(cols.values):
            col_bona, col_spoof = _condition(key.columns, cols, col_value)
            bona = scores[_and(bona_base, row_bona, col_bona)]
            spoof = scores[_and(spoof_base, row_spoof, col_spoof)]
            n_bona[i, j], n_spoof[i, j] = bona.size, spoof.size
            if bona.size and spoof.size:
                eer[i, j] = compute_eer(bona, spoof)[0]
                if tdcf is not None:
                    c012 = cell_c012(asv, asv_subset, rows, row_value, cols, col_value)
                    tdcf[i, j] = min_tdcf(bona, spoof, *c012)
    return Breakdown(rows, cols, eer, tdcf, n_bona, n_spoof)


def pooled_eer(scores: np.ndarray, key: TrialKey, subset: str) -> float:
    """The pooled EER (fraction) over ``subset``: the Pooled x Pooled cell alone."""
    mask = key.subset_mask(subset)
    return compute_eer(scores[mask & (key.labels == BONAFIDE)], scores[mask & (key.labels == SPOOF)])[0]


# --- min t-DCF -------------------------------------------------------------------------------------

def asv_error_rates(target: np.ndarray, nontarget: np.ndarray, spoof: np.ndarray) -> tuple[float, float, float]:
    """(Pfa_asv, Pmiss_asv, Pfa_spoof_asv) at the ASV's EER threshold (the package's
    ``obtain_asv_error_rates``: accept when score >= threshold)."""
    threshold = compute_eer(target, nontarget)[1]
    pfa = np.sum(nontarget >= threshold) / nontarget.size
    pmiss = np.sum(target < threshold) / target.size
    pfa_spoof = np.sum(spoof >= threshold) / spoof.size
    return pfa, pmiss, pfa_spoof


def c012(pfa_asv: float, pmiss_asv: float, pfa_spoof_asv: float, cost: dict = COST_MODEL) -> tuple[float, float, float]:
    """The t-DCF coefficients (ASVspoof 2021 evaluation plan, appendix eqs. 1-2), in the package's
    operation order so the floats agree to the last bit."""
    c0 = cost["Ptar"] * cost["Cmiss"] * pmiss_asv + cost["Pnon"] * cost["Cfa"] * pfa_asv
    c1 = cost["Ptar"] * cost["Cmiss"] - (cost["Ptar"] * cost["Cmiss"] * pmiss_asv + cost["Pnon"] * cost["Cfa"] * pfa_asv)
    c2 = cost["Pspoof"] * cost["Cfa_spoof"] * pfa_spoof_asv
    return c0, c1, c2


def cell_c012(asv: AsvTrials, in_subset: np.ndarray, rows: Factor, row_value: str, cols: Factor,
              col_value: str) -> tuple[float, float, float]:
    """C0, C1, C2 of one cell from the ASV trials of the same subset and conditions (the target
    and nontarget trials follow only conditions both classes have); NaN when a class is empty."""
    row_bona, row_spoof = _condition(asv.columns, rows, row_value)
    col_bona, col_spoof = _condition(asv.columns, cols, col_value)
    target = asv.scores[_and(in_subset & (asv.labels == 0), row_bona, col_bona)]
    nontarget = asv.scores[_and(in_subset & (asv.labels == 1), row_bona, col_bona)]
    spoof = asv.scores[_and(in_subset & (asv.labels == 2), row_spoof, col_spoof)]
    if not (target.size and nontarget.size and spoof.size):
        return np.nan, np.nan, np.nan
    return c012(*asv_error_rates(target, nontarget, spoof))


def min_tdcf(bonafide: np.ndarray, spoof: np.ndarray, c0: float, c1: float, c2: float) -> float:
    """The normalised minimum t-DCF of CM scores for given C0, C1, C2 (``get_mintDCF_eer``).
    NaN where the package would stop: NaN coefficients, non-finite scores, fewer than 3 distinct
    scores."""
    if np.isnan(c0) or np.isnan(c1) or np.isnan(c2):
        return float("nan")
    combined = np.concatenate((bonafide, spoof))
    if not np.isfinite(combined).all() or np.unique(combined).size < 3:
        return float("nan")
    pmiss_cm, pfa_cm, _ = compute_det_curve(bonafide, spoof)
    with np.errstate(divide="ignore", invalid="ignore"):
        tdcf = c0 + c1 * pmiss_cm + c2 * pfa_cm
        tdcf_norm = tdcf / (c0 + np.minimum(c1, c2))
    return float(tdcf_norm[tdcf_norm.argmin()])
