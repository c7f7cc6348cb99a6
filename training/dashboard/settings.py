"""Dashboard settings that are not Streamlit code: where the models root comes from."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

DEFAULT_MODELS_ROOT = "models"


def resolve_models_root(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Path:
    """``--models_root X`` from the script's arguments (``streamlit run dashboard.py -- ...``),
    else the ``MODELS_ROOT`` environment variable, else ``models/`` under the current directory."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--models_root")
    known, _ = parser.parse_known_args(list(argv))
    environ = os.environ if environ is None else environ
    return Path(known.models_root or environ.get("MODELS_ROOT") or DEFAULT_MODELS_ROOT)
