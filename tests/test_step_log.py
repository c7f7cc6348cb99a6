"""The step-level log (``--log_every_steps``, training/step_log.py): what a run writes, that a
resume leaves one story (rows past the checkpoint dropped, a torn line cut off), that a fresh
start archives it with the epoch log, and that readers ignore a torn last line."""

from __future__ import annotations

import csv
from pathlib import Path

from cli_helpers import TINY, run_cli
from training.naming import ARCHIVE_DIRNAME, LOG_NAME, STEPS_LOG_NAME, experiment_name
from training.step_log import STEP_COLUMNS, prepare_step_log, read_step_log

TWO_EPOCHS = [*TINY, "--num_epochs", "2"]  # 32 clips / batch 8: 4 steps an epoch
NAME = experiment_name(dict(model_type="lcnn", num_epochs=2, batch_size=8, lr=0.001))


def rows_of(folder: Path) -> list[dict[str, str]]:
    with open(folder / STEPS_LOG_NAME, newline="") as f:
        return list(csv.DictReader(f))


def positions(folder: Path) -> list[tuple[int, int]]:
    return [(r.epoch, r.step) for r in read_step_log(folder)]


def test_every_step_is_logged_with_the_contract_columns(tmp_path: Path) -> None:
    result = run_cli([*TWO_EPOCHS, "--fresh_start", "--log_every_steps", "1"], tmp_path)
    assert result.code == 0, result.text
    folder = tmp_path / NAME
    assert (folder / STEPS_LOG_NAME).read_text().splitlines()[0] == ",".join(STEP_COLUMNS)
    rows = rows_of(folder)
    assert [(int(r["epoch"]), int(r["step"]), int(r["global_step"])) for r in rows] == \
        [(e, s, (e - 1) * 4 + s) for e in (1, 2) for s in (1, 2, 3, 4)]
    assert {r["steps_in_epoch"] for r in rows} == {"4"} and {r["experiment"] for r in rows} == {NAME}
    assert all(float(r["lr"]) == 0.001 and float(r["samples_per_s"]) > 0 and float(r["loss"]) > 0 for r in rows)
    stamps = [float(r["timestamp"]) for r in rows]
    assert stamps == sorted(stamps)


def test_default_logs_every_tenth_step_and_each_epochs_last_and_zero_turns_it_off(tmp_path: Path) -> None:
    assert run_cli([*TWO_EPOCHS, "--fresh_start"], tmp_path / "default").code == 0
    assert positions(tmp_path / "default" / NAME) == [(1, 4), (2, 4)]  # 4 steps < 10: the last of each
    assert run_cli([*TWO_EPOCHS, "--fresh_start", "--log_every_steps", "0"], tmp_path / "off").code == 0
    assert not (tmp_path / "off" / NAME / STEPS_LOG_NAME).exists()
    assert (tmp_path / "off" / NAME / LOG_NAME).exists()


def test_a_negative_interval_is_a_usage_error_and_creates_nothing(tmp_path: Path) -> None:
    result = run_cli([*TWO_EPOCHS, "--fresh_start", "--log_every_steps", "-1"], tmp_path)
    assert result.code == 2
    assert "--log_every_steps must be at least 0" in result.err and "Traceback" not in result.text
    assert not (tmp_path / NAME).exists()


def test_resume_drops_rows_past_the_checkpoint_and_a_torn_line_so_the_log_tells_one_story(tmp_path: Path) -> None:
    assert run_cli([*TWO_EPOCHS, "--fresh_start", "--log_every_steps", "1"], tmp_path).code == 0
    folder = tmp_path / NAME
    first_story = (folder / STEPS_LOG_NAME).read_bytes()
    with open(folder / STEPS_LOG_NAME, "ab") as f:
        f.write(b"2,3,4,7,0.5,0.0")  # a kill mid-write
    # Back to epoch 1: epoch 2's rows are past the checkpoint and are trained and logged again.
    result = run_cli([*TWO_EPOCHS, "--resume", "--model_path", str(folder / "checkpoint_epoch_1.pth"),
                      "--log_every_steps", "1"], tmp_path)
    assert result.code == 0, result.text
    assert positions(folder) == [(e, s) for e in (1, 2) for s in (1, 2, 3, 4)]
    text = (folder / STEPS_LOG_NAME).read_bytes()
    assert text.endswith(b"\n") and b"0.5,0.0" not in text
    kept = first_story.splitlines(keepends=True)[:5]  # header + epoch 1, byte for byte
    assert text.startswith(b"".join(kept))
    assert [r["loss"] for r in rows_of(folder)] == [r.split(b",")[4].decode() for r in first_story.splitlines()[1:]]


def test_prepare_cuts_a_torn_line_and_keeps_rows_up_to_the_position(tmp_path: Path) -> None:
    path = tmp_path / STEPS_LOG_NAME
    lines = [",".join(STEP_COLUMNS)] + [f"{e},{s},3,{(e - 1) * 3 + s},0.1,0.001,10.0,1.0,1700000000.0,x"
                                       for e in (1, 2) for s in (1, 2, 3)]
    path.write_text("\n".join(lines) + "\n2,")
    assert [(r.epoch, r.step) for r in read_step_log(tmp_path)][-1] == (2, 3)  # the torn line is ignored
    assert prepare_step_log(tmp_path, (1, 1)) == 2  # epoch 2 steps 2 and 3 are past epoch 1 + 1 step
    assert path.read_text() == "\n".join(lines[:5]) + "\n"
    assert prepare_step_log(tmp_path, (1, 1)) == 0


def test_fresh_start_archives_the_step_log_with_the_epoch_log(tmp_path: Path) -> None:
    assert run_cli([*TWO_EPOCHS, "--fresh_start", "--log_every_steps", "2"], tmp_path).code == 0
    folder = tmp_path / NAME
    before = (folder / STEPS_LOG_NAME).read_bytes()
    assert run_cli([*TWO_EPOCHS, "--fresh_start", "--log_every_steps", "4"], tmp_path).code == 0
    archived = list((folder / ARCHIVE_DIRNAME).glob(f"*/{STEPS_LOG_NAME}"))
    assert len(archived) == 1 and archived[0].read_bytes() == before
    assert (archived[0].parent / LOG_NAME).is_file()
    assert positions(folder) == [(1, 4), (2, 4)]
