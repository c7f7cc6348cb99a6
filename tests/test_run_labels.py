"""Short run labels (training.dashboard.run_labels): what tells runs apart, comment first."""

from __future__ import annotations

from training.dashboard.run_labels import short_labels

BASE = "lcnn_DF_CCE_{epochs}_8_{lr}_group3_contrastiveFalse"


def test_comment_first_then_only_the_fields_that_differ() -> None:
    a, b = BASE.format(epochs=3, lr=0.001) + "_a", BASE.format(epochs=4, lr=0.001) + "_b"
    assert short_labels([a, b]) == {a: "a · epochs=3", b: "b · epochs=4"}


def test_a_run_alone_keeps_its_comment_or_its_name() -> None:
    with_comment = BASE.format(epochs=3, lr=0.001) + "_long_comment"
    plain = BASE.format(epochs=3, lr=0.001)
    assert short_labels([with_comment]) == {with_comment: "long_comment"}
    assert short_labels([plain]) == {plain: plain}


def test_names_of_no_scheme_lose_only_what_they_share() -> None:
    assert short_labels(["run_alpha_v1", "run_beta_v1"]) == {"run_alpha_v1": "alpha", "run_beta_v1": "beta"}


def test_labels_are_unique_or_the_full_names() -> None:
    # equal in every name field but the comment is absent from one: the labels still differ
    a, b = BASE.format(epochs=3, lr=0.001), BASE.format(epochs=3, lr=0.001) + "_x"
    labels = short_labels([a, b])
    assert len(set(labels.values())) == 2
    assert short_labels([]) == {}
