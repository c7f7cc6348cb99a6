"""A run touches only its own files (issue 10, item 1).

Two runs share a models root; one is resumed, auto-resumed, restarted or fine-tuned next to or
into the other. Whatever the start mode, archive, ``--keep_last`` pruning, stale-interrupt
removal and the best file touch only the run's own files (its tag, its lineage); a resume into
a folder holding another run under the same names is refused with one line, exit 2, and
nothing on disk changes. Runs are real (``training.cli.main`` in-process, tiny lcnn).

The property test runs random sequences of start modes (fresh, resume of any file on disk,
auto-resume, pretrained), comments and ``--keep_last`` over two runs sharing a models root and
checks after every run that no checkpoint anywhere (archives included) was lost, changed or
moved except by that run's own archiving and retention, and that no folder mixes two runs.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from cli_helpers import TINY, run_cli, tree_digest
from training.checkpoint.fsutil import sidecar_path
from training.checkpoint.meta import read_checkpoint_info
from training.config import DEFAULTS
from training.naming import best_checkpoint_name, epoch_checkpoint_name, experiment_name, parse_checkpoint_name
from training.checkpoint.store import save_checkpoint
from training.run_folder import lineage_key
from training.trainer import StartPlan, Trainer

EPOCHS = 3
RUN = [*TINY, "--num_epochs", str(EPOCHS)]


def folder_of(root: Path, comment: str, epochs: int = EPOCHS) -> Path:
    return root / experiment_name({"model_type": "lcnn", "num_epochs": epochs, "batch_size": 8, "lr": 0.001,
                                   "comment": comment})


def train(root: Path, comment: str, *extra: str) -> Path:
    result = run_cli([*RUN, "--comment", comment, *extra], root)
    assert result.code == 0, result.text
    return folder_of(root, comment)


def epoch_file(folder: Path, epoch: int, comment: str) -> Path:
    return folder / epoch_checkpoint_name(epoch, comment)


def assert_refused_and_nothing_changed(result, before: dict[str, str], root: Path, folder: Path) -> None:
    assert result.code == 2, result.text
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder} holds another run ("), result.err
    assert "would mix the two runs" in lines[0] and "Traceback" not in result.text
    assert tree_digest(root) == before  # nothing created, moved, pruned or relinked


# --- the case: another experiment's checkpoint resumed into a folder holding a run ----------

def test_resume_of_another_experiments_file_into_a_folder_holding_another_run_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    base, other = train(root, "base"), train(root, "other")
    before = tree_digest(root)
    for keep in ([], ["--keep_last", "1"]):
        result = run_cli([*RUN, "--resume", "--model_path", str(epoch_file(base, 1, "base")), "--comment", "other",
                          *keep], root)
        assert_refused_and_nothing_changed(result, before, root, other)
        assert "checkpoint_epoch_1_other.pth" in result.err and "started fresh there" in result.err


def test_resume_of_another_experiments_file_into_a_new_folder_still_branches_and_can_be_rerun(tmp_path: Path) -> None:
    """The guide's scenario 3 (resume into a new --comment) is not refused, nor is running the same
    command again (the same run restarted from the same parent: its later epochs are archived)."""
    root = tmp_path / "models"
    base = train(root, "base")
    command = [*RUN, "--resume", "--model_path", str(epoch_file(base, 1, "base")), "--comment", "branch",
               "--keep_last", "1"]
    base_before = tree_digest(base)
    first = run_cli(command, root)
    assert first.code == 0, first.text
    branch = folder_of(root, "branch")
    first_files = {p.name: p.read_bytes() for p in branch.glob("*.pth")}
    again = run_cli(command, root)
    assert again.code == 0, again.text
    assert "would be overwritten" in again.out  # epochs 2-3 of the first attempt moved aside
    for name, data in first_files.items():
        assert any(p.read_bytes() == data for p in branch.glob(f"archive/*/{name}")), name
    assert tree_digest(base) == base_before  # the parent run: untouched
    resumed = run_cli([*RUN, "--auto_resume", "--comment", "branch"], root)
    assert resumed.code == 0 and "nothing left to train" in resumed.out, resumed.text


def test_resume_of_an_archived_run_into_its_folder_now_holding_a_newer_run_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    folder = train(root, "x")
    train(root, "x")  # a second fresh start: the first run goes to archive/<time>/
    (archived,) = folder.glob("archive/*/checkpoint_epoch_1_x.pth")
    before = tree_digest(root)
    result = run_cli([*RUN, "--resume", "--model_path", str(archived), "--comment", "x", "--keep_last", "1"], root)
    assert_refused_and_nothing_changed(result, before, root, folder)


def test_a_folder_mixed_by_an_older_version_is_never_resumed_into(tmp_path: Path) -> None:
    """What the old bug left: a run resumed from another experiment's file next to the folder's
    own fresh run, under the same names. Auto-resume and resume refuse rather than prune or relink."""
    root = tmp_path / "models"
    base, other = train(root, "base"), train(root, "other")
    ckpt = torch.load(epoch_file(other, 3, "other"), weights_only=True)
    ckpt["lineage"] = {"mode": "resume", "parent_experiment": base.name,
                       "parent_checkpoint": str(epoch_file(base, 1, "base")), "parent_epoch": 1}
    intruder = epoch_file(other, 4, "other")
    ckpt["epoch"] = 4
    save_checkpoint(ckpt, intruder)
    before = tree_digest(root)
    auto = run_cli([*RUN, "--auto_resume", "--comment", "other", "--keep_last", "1"], root)
    assert_refused_and_nothing_changed(auto, before, root, other)
    resume = run_cli([*RUN, "--resume", "--model_path", str(epoch_file(other, 2, "other")), "--comment", "other",
                      "--keep_last", "1"], root)
    assert_refused_and_nothing_changed(resume, before, root, other)
    assert f"{intruder.name}: resumed from {base.name}/checkpoint_epoch_1_base.pth" in resume.err


# --- files with another tag in the folder -------------------------------------------------------------

def plant_foreign_files(root: Path, into: Path) -> dict[str, bytes]:
    """Run ``b``'s epoch files and best file copied into ``into`` (sidecars too), newer than all."""
    b = train(root, "b")
    planted = {}
    for path in [*b.glob("checkpoint_epoch_*_b.pth"), b / best_checkpoint_name("b")]:
        for src in (path, sidecar_path(path)):
            shutil.copy2(src, into / src.name)
        planted[path.name] = path.read_bytes()
    return planted


def assert_in_place(folder: Path, planted: dict[str, bytes]) -> None:
    for name, data in planted.items():
        assert (folder / name).read_bytes() == data, name
        assert sidecar_path(folder / name).exists(), name
        assert not list(folder.glob(f"archive/*/{name}")), name


def test_auto_resume_picks_only_the_folders_own_files(tmp_path: Path) -> None:
    root = tmp_path / "models"
    a = train(root, "a", "--num_epochs", "2")
    a = folder_of(root, "a", 2)
    planted = plant_foreign_files(root, a)  # b's epoch 3 is newer than anything of a's
    result = run_cli([*RUN, "--auto_resume", "--comment", "a", "--num_epochs", "2", "--keep_last", "1"], root)
    assert result.code == 0, result.text
    assert f"resuming from {epoch_file(a, 2, 'a')}" in result.out and "_b.pth" not in result.out
    assert_in_place(a, planted)


def test_fresh_start_and_pruning_leave_files_of_another_tag_alone(tmp_path: Path) -> None:
    root = tmp_path / "models"
    a = train(root, "a")
    planted = plant_foreign_files(root, a)
    fresh = run_cli([*RUN, "--comment", "a"], root)
    assert fresh.code == 0, fresh.text
    assert_in_place(a, planted)
    assert len(list(a.glob("archive/*/checkpoint_epoch_1_a.pth"))) == 1  # a's earlier run: moved, not lost
    resumed = run_cli([*RUN, "--resume", "--model_path", str(epoch_file(a, 1, "a")), "--comment", "a",
                       "--keep_last", "1"], root)
    assert resumed.code == 0, resumed.text
    assert_in_place(a, planted)
    assert epoch_file(a, 1, "a").exists() and epoch_file(a, 3, "a").exists()  # resumed-from and newest
    pretrained = run_cli([*RUN, "--model_path", str(epoch_file(a, 3, "a")), "--comment", "a", "--keep_last", "1"], root)
    assert pretrained.code == 0, pretrained.text
    assert_in_place(a, planted)


# --- retention and the best file, directly ---------------------------------------------------------------

def tiny_checkpoint(path: Path, epoch: int, lineage: dict | None) -> Path:
    save_checkpoint({"epoch": epoch, "model_state_dict": {"w": torch.zeros(2)}, "optimizer_state_dict": {},
                     "lineage": lineage, "best_epoch": epoch, "best_val_eer": 1.0}, path)
    return path


def test_prune_and_republish_touch_only_this_runs_files(tmp_path: Path) -> None:
    args = {**DEFAULTS, "model_type": "lcnn", "comment": "keep", "keep_last": 1, "models_root": str(tmp_path / "models")}
    trainer = Trainer(args, StartPlan("fresh"), echo=lambda line: None)
    trainer.exp_dir.mkdir(parents=True)
    mine = [tiny_checkpoint(trainer._epoch_path(e), e, None) for e in (1, 2, 3)]
    another_lineage = tiny_checkpoint(trainer._epoch_path(5), 5, {"mode": "resume", "parent_experiment": "p",
                                                                  "parent_checkpoint": "p/checkpoint_epoch_4.pth"})
    another_tag = tiny_checkpoint(trainer.exp_dir / epoch_checkpoint_name(1, "other"), 1, None)
    trainer._prune()
    assert [p.exists() for p in mine] == [False, False, True]
    assert another_lineage.exists() and another_tag.exists()
    # The best file is published from this run's own epoch file only.
    trainer.plan, trainer.best_epoch = StartPlan("resume"), 5
    trainer._republish_best()
    assert not (trainer.exp_dir / best_checkpoint_name("keep")).exists()
    trainer.best_epoch = 3
    trainer._republish_best()
    assert read_checkpoint_info(trainer.exp_dir / best_checkpoint_name("keep")).epoch == 3


def test_archiving_twice_in_one_second_never_moves_a_file_onto_another(tmp_path: Path) -> None:
    args = {**DEFAULTS, "model_type": "lcnn", "comment": "x", "models_root": str(tmp_path / "models")}
    trainer = Trainer(args, StartPlan("fresh"), echo=lambda line: None)
    trainer.exp_dir.mkdir(parents=True)
    name = epoch_checkpoint_name(1, "x")
    now = time.time()
    earlier = {}
    for ahead in range(-1, 30):  # archive/<time>/ of this second and the next ones, already used
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now + ahead))
        (trainer.exp_dir / "archive" / stamp).mkdir(parents=True, exist_ok=True)
        (trainer.exp_dir / "archive" / stamp / name).write_bytes(stamp.encode())
        earlier[stamp] = stamp.encode()
    (trainer.exp_dir / name).write_bytes(b"the current run")
    trainer._archive([trainer.exp_dir / name], "test")
    for stamp, data in earlier.items():
        assert (trainer.exp_dir / "archive" / stamp / name).read_bytes() == data
    assert [p.read_bytes() for p in trainer.exp_dir.glob(f"archive/*/{name}")].count(b"the current run") == 1


# --- the property: random sequences of runs sharing a models root ------------------------------------

COMMENTS = ("a", "b")
MODES = ("fresh", "auto_resume", "resume", "pretrained")
STEP = st.fixed_dictionaries({
    "mode": st.sampled_from(MODES), "comment": st.sampled_from(COMMENTS), "epochs": st.sampled_from((2, 3)),
    "keep_last": st.sampled_from((None, 1, 2)), "source": st.integers(0, 10**6),
})


def checkpoints_under(root: Path) -> dict[Path, str]:
    """Every checkpoint under the root, archives included: path -> sha256 of its bytes."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.pth"))
            if not p.name.startswith(".")}


def command_for(step: dict, root: Path) -> list[str]:
    args = [*TINY, "--num_epochs", str(step["epochs"]), "--comment", step["comment"]]
    if step["keep_last"]:
        args += ["--keep_last", str(step["keep_last"])]
    files = sorted(checkpoints_under(root))
    mode = step["mode"] if files or step["mode"] in ("fresh", "auto_resume") else "fresh"
    if mode in ("resume", "pretrained"):
        source = files[step["source"] % len(files)]  # any file: another run's, an archived one, a best file
        args += (["--resume"] if mode == "resume" else []) + ["--model_path", str(source)]
    elif mode == "auto_resume":
        args.append("--auto_resume")
    return args


def lineage_of(path: Path):
    info = read_checkpoint_info(path)
    return lineage_key(info.lineage) if info.kind == "full" else ("not a full checkpoint", info.kind)


def step_problems(step: dict, folder: Path, before: dict[Path, str], after: dict[Path, str],
                  lineage_before: dict[Path, object]) -> list[str]:
    """Every checkpoint that existed before the step is, after it: unchanged in place; or moved
    into ``archive/`` of the step's own folder, bytes intact; or one of the step's own run's files
    (its folder, its lineage) whose bytes live on elsewhere (the best file relinked) or that its
    ``--keep_last`` dropped. Nothing else may be lost, changed or moved."""
    where = {}
    for path, digest in after.items():
        where.setdefault(digest, []).append(path)
    written = [p for p, d in after.items() if p.parent == folder and before.get(p) != d]
    run_lineages = {lineage_of(p) for p in written}
    problems = [f"one run wrote files of several lineages: {sorted(map(str, run_lineages))}"] if len(run_lineages) > 1 else []
    run_lineage = next(iter(run_lineages)) if run_lineages else "this run wrote nothing"
    for path, digest in before.items():
        if after.get(path) == digest:
            continue
        archived = [p for p in where.get(digest, []) if p not in before and p.name == path.name
                    and p.parent.parent == folder / "archive"]
        own = path.parent == folder and lineage_before[path] == run_lineage
        if path.parent == folder and archived:
            continue
        if own and (where.get(digest) or (step["keep_last"] and parse_checkpoint_name(path.name).role in ("epoch", "best"))):
            continue
        state = "changed" if path in after else "gone"
        problems.append(f"{path} {state} ({'own' if own else 'not this run'}'s file; kept elsewhere: {where.get(digest, [])})")
    return problems


def mixing_problems(root: Path) -> list[str]:
    """Each folder's top level holds one run: one lineage, and a best file of that run."""
    out = []
    for folder in (p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        lineages = {lineage_of(p) for p in folder.glob("*.pth")}
        if len(lineages) > 1:
            out.append(f"{folder.name} mixes runs: {sorted(map(str, lineages))}")
    return out


def run_steps(root: Path, steps: list[dict]) -> None:
    for i, step in enumerate(steps):
        args = command_for(step, root)
        folder = folder_of(root, step["comment"], step["epochs"])
        before, tree = checkpoints_under(root), tree_digest(root)
        lineage_before = {p: lineage_of(p) for p in before if p.parent == folder}
        result = run_cli(args, root)
        context = f"step {i}: main.py {' '.join(args)}\n{result.text[-1500:]}"
        assert result.code in (0, 2), context
        if result.code == 2:
            assert "holds another run" in result.err and tree_digest(root) == tree, context
            continue
        problems = step_problems(step, folder, before, checkpoints_under(root), lineage_before) + mixing_problems(root)
        assert problems == [], context + "\n" + "\n".join(problems)


@pytest.mark.slow
# Bounded: a fixed set of examples (derandomized) and no shrinking (each example is several runs).
@settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@example(steps=[  # the sequence: base, other, then base's epoch 1 resumed into other with --keep_last 1
    {"mode": "fresh", "comment": "a", "epochs": 2, "keep_last": None, "source": 0},
    {"mode": "fresh", "comment": "b", "epochs": 2, "keep_last": None, "source": 0},
    {"mode": "resume", "comment": "b", "epochs": 2, "keep_last": 1, "source": 0},
])
@given(steps=st.lists(STEP, min_size=3, max_size=6))
def test_no_checkpoint_is_lost_or_changed_except_by_its_own_runs_retention(tmp_path_factory, steps) -> None:
    run_steps(tmp_path_factory.mktemp("runs") / "models", steps)
