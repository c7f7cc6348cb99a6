"""Every import is declared: a fresh machine installs only what the requirements files name."""

from __future__ import annotations

from pathlib import Path

from tools.check_requirements import REPO, declared_distributions, undeclared_imports


def test_every_import_of_the_repository_is_declared() -> None:
    assert undeclared_imports() == {}


def test_an_undeclared_import_is_reported_with_its_file(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "requirements-dev.txt").write_text("-r requirements.txt\npytest  # runner\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "import os, numpy\nimport pytest\ndef f():\n    try:\n        import hypothesis.strategies\n"
        "    except ImportError:\n        pass\nfrom helper import thing\nimport not_installed_anywhere\n")
    (tmp_path / "tests" / "helper.py").write_text("thing = 1\n")
    providers = {"numpy": ["numpy"], "pytest": ["pytest"], "hypothesis": ["hypothesis"]}
    problems = undeclared_imports(tmp_path, providers)
    assert set(problems) == {"hypothesis", "not_installed_anywhere"}
    assert problems["hypothesis"].startswith("tests/test_x.py: provided by hypothesis")


def test_requirements_files_follow_includes_and_normalise_names() -> None:
    dev = declared_distributions(REPO / "requirements-dev.txt")
    assert {"torch", "streamlit", "pytest", "hypothesis"} <= dev
