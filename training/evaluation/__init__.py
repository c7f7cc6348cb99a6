"""Scoring evaluation sets (ASVspoof 2021 LA / DF, In-the-Wild) and computing the challenge's metrics.

    keys.py       reading keys (trial_metadata.txt, meta.csv, 2019 protocols), score files, ASV files;
                  finding them in the official folder layouts
    scoring.py    the streaming scorer: checkpoint -> model -> one bona fide log-probability per trial
    official.py   pooled and per-condition EER and min t-DCF, as the ASVspoof 2021 eval package computes them
    report.py     ``<score file>.metrics.json`` and the printed table
    runner.py     ``--eval`` / ``--eval_scores`` from the command line's options
    synthetic.py  a synthetic evaluation set in the official layouts (tests, demos, benchmarks)

This package imports no torch at import time; only scoring does.
"""

from training.evaluation.keys import EvalInputError, TrialKey, read_key, read_score_file
from training.evaluation.official import breakdown_table, min_tdcf, pooled_eer

__all__ = ["EvalInputError", "TrialKey", "breakdown_table", "min_tdcf", "pooled_eer", "read_key", "read_score_file"]
