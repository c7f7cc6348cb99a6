"""The dashboard's fast readers of score files and key labels (training/dashboard/score_files.py,
key_labels.py) against the evaluator's own rules (training/evaluation/keys.py).

The references are independent of the code under test: ``float()`` of the written text for
scores, ``keys.read_key`` (the reader ``--eval`` computes metrics with) for labels and subsets,
on keys in the official layouts (the synthetic set's, the random LA / DF keys of
test_evaluation.py, a 2019 protocol, In-the-Wild meta.csv files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_evaluation import _random_key
from training.dashboard.key_labels import _read_fast, read_key_labels
from training.dashboard.score_files import ScoreFileError, _parse_fast, parse_score_file
from training.evaluation.keys import EvalInputError, read_key
from training.evaluation.synthetic import layout_paths, write_synthetic_eval_set

# --- score files ---------------------------------------------------------------------------------------


def _written_scores(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Trials in shuffled order and scores as --eval writes them (float32 shortest text) and
    as other tools do (repr of float64, exponents, integers)."""
    rng = np.random.default_rng(seed)
    ids = [f"DF_E_{i:07d}" for i in rng.permutation(n)]
    values = rng.normal(size=n) * 10.0 ** rng.integers(-6, 6, n)
    texts = [(f"{v:.7g}", repr(float(v)), f"{v:e}", str(int(v)))[i % 4] for i, v in enumerate(values)]
    return ids, texts


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_scores_are_what_float_reads_in_file_order(tmp_path: Path, line_end: str) -> None:
    ids, texts = _written_scores(5000, seed=3)
    data = "".join(f"{i} {t}{line_end}" for i, t in zip(ids, texts)).encode()
    parsed = parse_score_file(data, tmp_path / "s.txt")
    assert _parse_fast(data) is not None  # the C parser's path, not the line-by-line one
    assert list(parsed.ids) == ids
    assert np.array_equal(parsed.scores, np.array([float(t) for t in texts]))


@pytest.mark.parametrize("text", [
    "a 1\tb 2\n",  # a tab: one line of 3 fields
    "a  1\nb 2\n",  # doubled space
    "a 1 \nb 2\n",  # trailing space
    " a 1\nb 2\n",  # leading space
    "a\t1\nb\t2\n\n  \n",  # tabs, a blank and a whitespace-only line
    "a 1_0\nb 2\n",  # float() reads underscores
    "007 1\n7 2\n",  # numbers as trial names stay as written
])
def test_what_the_evaluator_accepts_the_dashboard_reads_alike(tmp_path: Path, text: str) -> None:
    expected = [line.split() for line in text.splitlines() if line.split()]
    if len(expected) == 1:  # the tab line: the evaluator refuses it too
        with pytest.raises(ScoreFileError, match="line 1: expected 'trial score' \\(2 fields\\), got 4"):
            parse_score_file(text.encode(), tmp_path / "s.txt")
        return
    parsed = parse_score_file(text.encode(), tmp_path / "s.txt")
    assert list(parsed.ids) == [t for t, _ in expected]
    assert parsed.scores.tolist() == [float(s) for _, s in expected]


@pytest.mark.parametrize("text, where, what", [
    ("a 1 2\nb\n", "line 1", "expected 'trial score' (2 fields), got 3"),  # 3 + 1 fields: 4 tokens, 2 lines
    ("a 1\nb 2 3\nc\n", "line 2", "expected 'trial score' (2 fields), got 3"),
    ("a 1\nb\nc 2 3\n", "line 2", "expected 'trial score' (2 fields), got 1"),
    ("a 1\nb x\n", "line 2", "the score 'x' is not a number"),
    ("a 1\nb TRUE\n", "line 2", "the score 'TRUE' is not a number"),
    ("a TRUE\n", "line 1", "the score 'TRUE' is not a number"),
    ("a 1\n\nb inf\n", "line 3", "the score 'inf' is not a finite number"),
    ("a nan\n", "line 1", "the score 'nan' is not a finite number"),
    ("b 1\na 2\nb 3\n", "line 3", "trial 'b' has a second score (first on line 1)"),
    ("", None, "the score file is empty"),
    ("a 1\n\xff 2\n", None, "not a text file"),
])
def test_bad_score_files_are_one_line_naming_file_and_line(tmp_path: Path, text: str, where: str | None,
                                                             what: str) -> None:
    path = tmp_path / "scores.txt"
    data = text.encode("latin-1")
    with pytest.raises(ScoreFileError) as caught:
        parse_score_file(data, path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}{' ' + where if where else ''}:") and what in message


# --- key labels ----------------------------------------------------------------------------------------

def _assert_same_labels(path: Path, track: str) -> None:
    key, labels = read_key(path, track), read_key_labels(path, track)
    assert list(labels.ids) == [t.decode() for t in key.ids]
    assert np.array_equal(labels.labels, key.labels) and labels.labels.dtype == np.int8
    for subset in ("all", *key.subsets, "hidden-nowhere"):
        if "subset" in key.columns or subset == "all":
            assert np.array_equal(labels.subset_mask(subset), key.subset_mask(subset)), subset
        else:
            assert labels.subset_mask(subset) is None


@pytest.mark.parametrize("track", ["LA", "DF", "In-the-Wild"])
def test_key_labels_equal_read_key_on_the_synthetic_sets(tmp_path: Path, track: str) -> None:
    write_synthetic_eval_set(tmp_path, track, 40, clip_samples=400, asv=False)
    _assert_same_labels(layout_paths(tmp_path, track)[1], track)


@pytest.mark.parametrize("track", ["LA", "DF"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_key_labels_equal_read_key_on_official_layout_keys(tmp_path: Path, track: str, shuffle: bool) -> None:
    key = tmp_path / "trial_metadata.txt"
    _random_key(key, track, 3000, seed=11)
    if shuffle:  # not in trial order, and CRLF line ends
        lines = key.read_text().splitlines()
        key.write_bytes("\r\n".join(lines[i] for i in np.random.default_rng(0).permutation(len(lines))).encode())
    assert _read_fast(key, key.read_bytes(), track) is not None  # pandas' path, not read_key's
    _assert_same_labels(key, track)


@pytest.mark.parametrize("content, track", [
    ("LA_0001 LA_T_1 - A01 spoof\nLA_0001 LA_T_2 - - bonafide\n", "LA"),  # 2019 protocol
    ("s T1 none tx A07 spoof notrim eval\n\ns\tT2 none tx bonafide bonafide  notrim progress \n", "LA"),  # odd spacing
    ("\ufefffile,speaker,label\r\n0.wav,A,bona-fide\r\n007.wav,B,spoof\r\n", "In-the-Wild"),  # byte-order mark
    ("s 007 none tx A07 spoof notrim eval\ns 7 none tx bonafide bonafide notrim eval\n", "LA"),  # number-like trials
])
def test_key_labels_equal_read_key_on_other_layouts(tmp_path: Path, content: str, track: str) -> None:
    key = tmp_path / "key.txt"
    key.write_text(content, encoding="utf-8")
    _assert_same_labels(key, track)


@pytest.mark.parametrize("content, track", [
    ("LA_E_1\nLA_E_2\n", "LA"),
    ("s T1 none tx A07 spoof notrim eval\n", "DF"),
    ("s T1 none tx A07 spoof notrim eval\ns T2 none tx A07 fake notrim eval\n", "LA"),
    ("s T1 none tx A07 spoof notrim eval\ns T1 none tx A07 spoof notrim eval\n", "LA"),
    ("s T1 none tx A07 spoof notrim eval\ns T2 none tx A07 spoof notrim\n", "LA"),  # a field short
    ("s T1 none tx A07 spoof notrim eval\ns T2 none  A07 spoof notrim eval\n", "LA"),  # a field short, doubled space
    ("s T1 none tx A07 spoof notrim eval\ns T2 none tx A07 spoof notrim eval x\n", "LA"),
    ("", "LA"),
])
def test_unusable_keys_give_read_keys_one_line(tmp_path: Path, content: str, track: str) -> None:
    key = tmp_path / "key.txt"
    key.write_text(content)
    with pytest.raises(EvalInputError) as expected:
        read_key(key, track)
    with pytest.raises(EvalInputError) as got:
        read_key_labels(key, track)
    assert str(got.value) == str(expected.value)
