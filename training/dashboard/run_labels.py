"""Short labels for runs shown together: what tells them apart, not their whole folder names.

Folder names are long (``lcnn_DF_CCE_100_16_1e-06_group3_contrastiveFalse_my_comment``) and the
part that differs is often at the end, cut off in tables and legends. A run's label is its
comment first, then the name fields whose values differ between the runs shown
(``lr=0.001 · batch=8``); a single run is labelled by its comment (or its name). Names that follow
no known scheme fall back to the name with the prefix and suffix they all share trimmed off.
The full name stays available (tables keep a column for it, charts show it on hover).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from training.naming import format_lr, parse_experiment_name

# Name fields in the order a label lists them, and how a label spells each.
FIELD_LABELS = (("model_type", "model"), ("track", "track"), ("loss", "loss"), ("num_epochs", "epochs"),
                ("batch_size", "batch"), ("lr", "lr"), ("group_size", "group"), ("use_contrastive", "contrastive"))
MIN_TRIMMED = 3  # a trimmed fallback label shorter than this keeps more of the name


def _field_text(key: str, value: object) -> str:
    return format_lr(value) if key == "lr" and isinstance(value, (int, float)) else str(value)


def _trimmed(names: Sequence[str]) -> dict[str, str]:
    """Names with the prefix and suffix all of them share cut at an ``_`` boundary."""
    prefix = os.path.commonprefix(list(names))
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
    head = prefix.rfind("_") + 1 if "_" in prefix else 0
    tail = len(suffix) - suffix.find("_") if "_" in suffix else 0
    out = {}
    for name in names:
        core = name[head:len(name) - tail if tail else None].strip("_")
        out[name] = core if len(core) >= MIN_TRIMMED else name
    return out


def short_labels(names: Sequence[str]) -> dict[str, str]:
    """name -> a short label, unique among ``names`` (the full name where it cannot be shorter)."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    parsed = {name: parse_experiment_name(name) for name in names}
    if not all(parsed.values()):
        labels = _trimmed(names) if len(names) > 1 else {names[0]: names[0]}
    else:
        differing = [(key, word) for key, word in FIELD_LABELS
                     if len({_field_text(key, parsed[n].get(key)) for n in names}) > 1]
        labels = {}
        for name in names:
            parts = [parsed[name]["comment"]] if parsed[name].get("comment") else []
            parts += [f"{word}={_field_text(key, parsed[name].get(key))}" for key, word in differing]
            labels[name] = " · ".join(parts) or name
    if len(set(labels.values())) < len(labels):  # two runs alike in every shown field
        return {name: name for name in names}
    return labels
