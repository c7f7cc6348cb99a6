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


def models_root_problem(root: Path | str) -> str | None:
    """Why ``root`` cannot be a models root to read, in one line; None when it is a readable folder.

    A mistyped root (or a file) must not look like an empty one: the pages say this instead of
    "no experiments yet". A missing root is named as such (a first run creates it)."""
    path = Path(root)
    if not os.path.lexists(path):
        return (f"The models root {path} does not exist: check the path in the sidebar "
                "(a first run creates it).")
    if not path.is_dir():
        what = "a broken symbolic link" if path.is_symlink() and not path.exists() else "a file"
        return f"The models root {path} is {what}, not a folder: set the folder that holds the experiment folders."
    if not os.access(path, os.R_OK | os.X_OK):
        return f"The models root {path} cannot be read by this user: check its permissions."
    return None


def models_root_notice(root: Path | str) -> tuple[str, str] | None:
    """(kind, text) a page shows about its models root: ("warning", ...) for one that does not
    exist yet (a first run creates it: the page still says how to start one), ("error", ...) for
    a file or an unreadable folder (nothing can be shown or started there); None when readable."""
    problem = models_root_problem(root)
    if problem is None:
        return None
    return ("warning" if not os.path.lexists(root) else "error"), problem
