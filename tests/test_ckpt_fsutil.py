"""The one atomic writer (training.checkpoint.fsutil): its temporary names, what it leaves after
a failure, the clean-up of what a killed save leaves, and deletion (sidecar first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cli_helpers import REPO, child_env
from training.checkpoint import fsutil
from training.checkpoint.fsutil import atomic_write, remove_checkpoint, remove_stale_temp_files, sidecar_path
from training.checkpoint.store import link_or_copy, save_checkpoint


def tiny_checkpoint() -> dict:
    return {"model_state_dict": {"w": torch.zeros(3)}, "optimizer_state_dict": {}, "epoch": 1}


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_epoch_1.pth"
    target.write_bytes(b"old")
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_epoch_1.pth"
    target.write_bytes(b"old")

    def half_then_fail(f) -> None:
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_every_save_uses_the_temporary_name_that_cleanup_recognises(tmp_path: Path, monkeypatch) -> None:
    """The checkpoint, its hard-linked copy and both sidecars go through one naming scheme, so the
    leftovers of a save killed at any of those steps are all removed by one rule."""
    renamed: list[str] = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        renamed.append(os.path.basename(src))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "checkpoint_epoch_1_c.pth"
    size, digest = save_checkpoint(tiny_checkpoint(), path)
    link_or_copy(path, tmp_path / "best_checkpoint_eer_c.pth", digest, {"kind": "full", "epoch": 1})
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(renamed) == 4  # .pth, its sidecar, the link, its sidecar
    kept = sorted(p.name for p in tmp_path.iterdir())
    for name in renamed:  # what a kill just before each rename would have left
        (tmp_path / name).write_bytes(b"partial")
    unrelated = [".training_log.csv.tmp.12.abcdef12", "notes.tmp", ".checkpoint_epoch_1_c.pth.swp"]
    for name in unrelated:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(renamed)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + unrelated)


def test_temporary_names_differ_between_writers_of_one_file(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_epoch_1.pth"
    assert fsutil.temp_path(target) != fsutil.temp_path(target)
    assert fsutil.temp_path(target).name.startswith(f".{target.name}.tmp.{os.getpid()}.")


def test_remove_checkpoint_takes_the_sidecar_first(tmp_path: Path, monkeypatch) -> None:
    """A .pth without its sidecar is still a valid checkpoint; a sidecar left without its .pth
    (a kill between the two unlinks) would vouch for nothing."""
    path = tmp_path / "checkpoint_epoch_1.pth"
    path.write_bytes(b"x")
    sidecar_path(path).write_text("{}")
    order: list[str] = []
    real_unlink = os.unlink

    def spy(p, *args, **kwargs):
        order.append(os.path.basename(p))
        return real_unlink(p, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", spy)
    remove_checkpoint(path)
    assert order == [sidecar_path(path).name, path.name]
    assert list(tmp_path.iterdir()) == []


def test_fsutil_imports_no_torch() -> None:
    code = ("import sys, training.checkpoint.fsutil, training.checkpoint.sidecar; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
