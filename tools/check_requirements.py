"""List the third-party modules that the repository imports but no requirements file provides.

    python tools/check_requirements.py      # one line per undeclared module; exit 1 if any

Every ``import`` in every ``.py`` file of the repository counts (inside functions and ``try``
blocks too: a guarded import is still a dependency). A module is provided when the installed
distribution that ships it is named in ``requirements*.txt`` (following ``-r``); a module that
no installed distribution ships is reported too. Run it inside the environment the requirements
built (``./run_tests.sh`` does, through ``tests/test_requirements.py``): there, a package that
only a hand install brought in cannot hide.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIPPED_FOLDERS = {"node_modules", "venv", "__pycache__", "test-artifacts", "models"}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions(requirements: Path, seen: set[Path] | None = None) -> set[str]:
    """Distribution names a requirements file declares, following ``-r other.txt``."""
    seen = set() if seen is None else seen
    if requirements in seen or not requirements.is_file():
        return set()
    seen.add(requirements)
    names = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith(("-r", "--requirement")):
            names |= declared_distributions(requirements.parent / line.split(maxsplit=1)[1], seen)
        elif line and not line.startswith("-"):
            names.add(normalise(re.split(r"[<>=~!\[; @]", line, maxsplit=1)[0]))
    return names


def python_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if not any(p.startswith(".") or p in SKIPPED_FOLDERS for p in parts[:-1]):
            yield path


def local_modules(root: Path) -> set[str]:
    """Names the repository itself provides: top-level packages and modules, and the helper
    modules of tests/, bench/ and tools/ (importable there through pytest's pythonpath)."""
    names = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if p.is_dir()}
    for folder in ("tests", "bench", "tools"):
        names |= {p.stem for p in (root / folder).glob("*.py")}
    return names


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in one file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def undeclared_imports(root: Path = REPO, providers: Mapping[str, list[str]] | None = None) -> dict[str, str]:
    """{module: 'first file importing it: why'} for every third-party import not provided by the
    declared requirements. ``providers`` maps module -> distributions (default: installed ones)."""
    providers = metadata.packages_distributions() if providers is None else providers
    declared = set()
    for requirements in root.glob("requirements*.txt"):
        declared |= declared_distributions(requirements)
    local = local_modules(root)
    problems: dict[str, str] = {}
    for path in python_files(root):
        for module in sorted(imported_modules(path)):
            if module in sys.stdlib_module_names or module in local or module in problems:
                continue
            distributions = {normalise(d) for d in providers.get(module, [])}
            where = str(path.relative_to(root))
            if not distributions:
                problems[module] = f"{where}: no installed package provides it"
            elif not distributions & declared:
                problems[module] = f"{where}: provided by {', '.join(sorted(distributions))}, which no requirements file declares"
    return problems


def main() -> int:
    problems = undeclared_imports()
    for module, why in sorted(problems.items()):
        print(f"undeclared import {module!r} ({why})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
