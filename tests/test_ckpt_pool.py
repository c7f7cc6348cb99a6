"""The reader processes (training.checkpoint.pool) and the C-unpickler path they run: same verdicts as
the interpreter, on real and crafted files, and a crash, hang or memory bomb costs one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ckpt_factories as cf  # noqa: E402

from training.dashboard import catalog
from training.checkpoint import pool as ckpt_pool  # noqa: E402
from training.checkpoint import pickle_vm as vm  # noqa: E402
from training.checkpoint.pool import ReadRequest, read_checkpoint_infos  # noqa: E402
from training.checkpoint.meta import read_checkpoint_info  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GIB = 1 << 30


@pytest.fixture
def pool(monkeypatch):
    """Two reader processes for every batch, however small; stopped after the test."""
    monkeypatch.setenv("TRAINING_READER_PROCESSES", "2")
    monkeypatch.setattr(ckpt_pool, "MIN_BATCH", 1)
    ckpt_pool.shutdown()
    yield ckpt_pool
    ckpt_pool.shutdown()


def as_json(info) -> str:
    return json.dumps(info.to_dict(), sort_keys=True)


def zipped(path: Path, pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
    return path


def trainer_checkpoint(epoch: int) -> dict:
    """The shape of Trainer._checkpoint: plain floats, tensors everywhere, no numpy."""
    return cf.full_checkpoint(epoch, numpy_metrics=False, step_in_epoch=0, format_version=1)


def ckpt_prefix() -> bytes:  # {'epoch': 1, 'model_state_dict': {}, 'args': ... (to be closed)
    return (b"\x80\x02}(X\x05\x00\x00\x00epochK\x01X\x10\x00\x00\x00model_state_dict}"
            b"X\x04\x00\x00\x00args")


# Crafted pickles: each one breaks a naive unpickler, or tries to change the reader's shared
# stand-ins (BUILD) so that the *next* file in the same process reads differently.
CRAFTED = {
    "deep_key": b"\x80\x02})" + b"\x85" * 1_000_000 + b"Ns.",  # hash() overflows the C stack
    "memo_index": b"\x80\x02Nr\xff\xff\xff\x3f.",  # the C unpickler would clear 8 GiB
    "build_on_storage_type": ckpt_prefix() + b"ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtype"
                             b"X\x03\x00\x00\x00badsbu.",
    "slots_on_storage_type": ckpt_prefix() + b"ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtype"
                             b"X\x03\x00\x00\x00bads\x86bu.",
    "build_on_function": ckpt_prefix() + b"ctorch._utils\n_rebuild_tensor_v2\nN}"
                         b"X\x0c\x00\x00\x00__defaults__)s\x86bu.",
    "unsafe_global": ckpt_prefix() + b"cposix\nsystem\nX\x04\x00\x00\x00true\x85Ru.",
    "cycle": ckpt_prefix() + b"]q\x00h\x00au.",  # args = a list holding itself
}


def corpus(folder: Path) -> list[Path]:
    """Every kind of file a models root holds, crafted ones first (so that a reader that was
    changed by one would misread the real ones after it)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [zipped(folder / f"{name}.pth", pkl) for name, pkl in CRAFTED.items()]
    model = cf.tiny_model()
    paths += [
        cf.save(trainer_checkpoint(3), folder / "checkpoint_epoch_3.pth"),
        cf.save(cf.full_checkpoint(4), folder / "numpy_metrics.pth"),  # interpreter: numpy
        cf.save(cf.full_checkpoint(2, numpy_metrics=False), folder / "legacy.pth", legacy=True),
        cf.save(cf.full_checkpoint(2, numpy_metrics=False, args=cf.namespace_args()), folder / "ns.pth"),
        cf.save(model.state_dict(), folder / "best_model_eer.pth"),
        cf.save({f"module.{k}": v for k, v in model.state_dict().items()}, folder / "dp.pth"),
        cf.save({"model_state_dict": model.state_dict(keep_vars=True), "epoch": 1}, folder / "params.pth"),
        cf.save({"model_state_dict": {"a": torch.zeros(3, dtype=torch.bfloat16),
                                      "b": torch.arange(6).view(2, 3).t(), "c": torch.ones(2, dtype=torch.bool)},
                 "epoch": 5, "args": {"t": torch.ones(2)}}, folder / "dtypes_views.pth"),
        cf.save({"state_dict": model.state_dict(), "epoch": 3}, folder / "lightning.pth"),
        cf.save(torch.zeros(3), folder / "tensor.pth"),
        cf.hostile_torch_file(folder / "hostile.pth", folder / "marker"),
        cf.hostile_plain_pickle(folder / "hostile_plain.pth", folder / "marker"),
    ]
    whole = paths[len(CRAFTED)].read_bytes()
    (folder / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    (folder / "garbage.pth").write_bytes(b"not a checkpoint\n")
    (folder / "empty.pth").write_bytes(b"")
    paths += [folder / "truncated.pth", folder / "garbage.pth", folder / "empty.pth"]
    return paths


def test_reader_processes_give_the_interpreters_verdict_on_every_file(pool, tmp_path):
    paths = corpus(tmp_path / "models" / "exp")
    expected = [as_json(read_checkpoint_info(p, with_history=True)) for p in paths]
    for with_history in (True, False):
        got = read_checkpoint_infos([ReadRequest(str(p), with_history) for p in paths])
        want = expected if with_history else [as_json(read_checkpoint_info(p, with_history=False)) for p in paths]
        assert [as_json(i) for i in got] == want
    by_name = {p.stem: json.loads(e) for p, e in zip(paths, expected)}
    assert by_name["checkpoint_epoch_3"]["kind"] == "full" and by_name["params"]["num_params"] > 0
    assert by_name["unsafe_global"]["kind"] == by_name["hostile"]["kind"] == "unsafe"
    assert "unusable dict key" in by_name["deep_key"]["reason"]
    assert not (tmp_path / "models" / "exp" / "marker").exists()  # nothing was run
    assert len(ckpt_pool._READERS) == 2  # the reader that crashed on deep_key was replaced


C_PATH_CHECK = r"""
import json, sys
from training.checkpoint import pickle_vm as vm, torchfile
from training.checkpoint.meta import read_checkpoint_info
import resource
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
paths = sys.argv[1:]
pure = [json.dumps(read_checkpoint_info(p).to_dict(), sort_keys=True) for p in paths]
vm.enable_c_unpickler()
interpreted = []
original = vm.unpickle
def counting(data, pos, *args, **kwargs):
    interpreted.append(1)
    return original(data, pos, *args, **kwargs)
vm.unpickle = torchfile.unpickle = counting  # zip (C path fallback) and legacy files
out = {}
for p, want in zip(paths, pure):
    interpreted.clear()
    got = json.dumps(read_checkpoint_info(p).to_dict(), sort_keys=True)
    out[p] = {"same": got == want, "c_path": not interpreted}
print(json.dumps(out))
"""


def test_c_path_reads_torch_files_itself_and_hands_the_rest_to_the_interpreter(tmp_path):
    """In a memory-capped child: which files the C unpickler read on its own, and that the
    result is the interpreter's in every case."""
    paths = [p for p in corpus(tmp_path / "exp") if p.stem != "deep_key"]  # would kill the child
    proc = subprocess.run([sys.executable, "-c", C_PATH_CHECK, *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = {Path(p).stem: r for p, r in json.loads(proc.stdout).items()}
    assert all(r["same"] for r in result.values()), result
    c_path = {name for name, r in result.items() if r["c_path"]}
    assert {"checkpoint_epoch_3", "ns", "best_model_eer", "dp", "params", "dtypes_views",
            "lightning", "tensor"} <= c_path
    # numpy scalars, legacy files, unsafe and crafted pickles: the interpreter's
    assert not c_path & {"numpy_metrics", "legacy", "hostile", "unsafe_global", "memo_index",
                         "build_on_storage_type", "slots_on_storage_type", "build_on_function"}


def test_c_unpickler_is_off_outside_reader_processes():
    assert vm._C_UNPICKLER_ENABLED is False
    with pytest.raises(RuntimeError, match="sandboxed"):
        vm._c_unpickle(cf.pickle_bytes({"epoch": 1}), set())


def test_readers_are_capped_isolated_and_torch_free(pool):
    pool.start(wait=True)  # each has answered once: its limits are in place
    assert len(ckpt_pool._READERS) == 2
    for reader in ckpt_pool._READERS:
        limits = Path(f"/proc/{reader.proc.pid}/limits").read_text()
        address = next(line for line in limits.splitlines() if line.startswith("Max address space"))
        assert address.split()[3] == str(ckpt_pool.ADDRESS_SPACE_BYTES)
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4] == "0"
        cmdline = Path(f"/proc/{reader.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-I", b"-S"]
        maps = Path(f"/proc/{reader.proc.pid}/maps").read_text()
        assert "torch" not in maps and "numpy" not in maps


def test_a_hung_reader_is_replaced_and_its_files_read_elsewhere(pool, tmp_path, monkeypatch):
    paths = [cf.save(trainer_checkpoint(e), tmp_path / f"checkpoint_epoch_{e}.pth") for e in range(1, 7)]
    paths = paths * 10  # 60 requests, several chunks per reader
    pool.start()
    stuck = ckpt_pool._READERS[0]
    os.kill(stuck.proc.pid, signal.SIGSTOP)  # alive, never answers
    monkeypatch.setattr(ckpt_pool, "TIMEOUT_S", 1.0)
    got = read_checkpoint_infos(paths)
    assert [as_json(i) for i in got] == [as_json(read_checkpoint_info(p)) for p in paths]
    assert stuck not in ckpt_pool._READERS and stuck.proc.poll() is not None  # killed
    assert len(ckpt_pool._READERS) == 2


def test_pool_off_reads_in_this_process(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINING_READER_PROCESSES", "0")
    ckpt_pool.shutdown()
    paths = [cf.save(trainer_checkpoint(e), tmp_path / f"checkpoint_epoch_{e}.pth") for e in range(1, 4)]
    assert [i.epoch for i in read_checkpoint_infos(paths * 10)] == [1, 2, 3] * 10
    assert ckpt_pool._READERS == []


def test_catalog_scan_through_readers_equals_the_scan_in_process(pool, tmp_path, monkeypatch):
    root = tmp_path / "models"
    corpus(root / "mixed")
    (root / "run_a").mkdir()
    for e in range(1, 21):  # no training_log.csv: the curve comes from the newest file's history
        cf.save(trainer_checkpoint(e), root / "run_a" / f"checkpoint_epoch_{e}.pth")
    catalog.clear_cache()
    via_readers = (catalog.scan_checkpoints(root), catalog.scan_experiments(root),
                   catalog.experiment_history(root, "run_a"))
    assert catalog.cache_info()["misses"] == len(via_readers[0])
    monkeypatch.setenv("TRAINING_READER_PROCESSES", "0")
    catalog.clear_cache()
    here = (catalog.scan_checkpoints(root), catalog.scan_experiments(root),
            catalog.experiment_history(root, "run_a"))
    for a, b in zip(via_readers, here):
        pd.testing.assert_frame_equal(a, b)
    assert list(here[2]["epoch"]) == list(range(1, 21))  # history of the newest file (no log)


FUZZ = r"""
import json, random, resource, sys
from pathlib import Path
sys.path.insert(0, "tests")
import ckpt_factories as cf
from training.checkpoint import pickle_vm as vm
from training.checkpoint.meta import read_checkpoint_info
tmp = Path(sys.argv[1])
src = cf.save(cf.full_checkpoint(4, numpy_metrics=False), tmp / "src.pth")
pkl = cf.data_pkl(src)
rng = random.Random(20261129)
paths = []
for i in range(200):
    paths.append(cf.rezip_with_pickle(src, tmp / f"f{i}.pth", cf.mutated(pkl, rng, i)))
pure = [read_checkpoint_info(p).to_dict() for p in paths]
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
vm.enable_c_unpickler()
print(json.dumps([[want, read_checkpoint_info(p).to_dict()] for p, want in zip(paths, pure)]))
"""


def test_fuzzed_pickles_read_the_same_except_unread_persistent_ids(tmp_path):
    """Mutated trainer pickles, read by the interpreter and by the C path (memory-capped child).
    The only difference allowed is the documented one: a broken persistent id of a tensor the
    metadata does not read (optimizer state) is not noticed by the C path."""
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = json.loads(proc.stdout)
    differ = [(want, got) for want, got in pairs if want != got]
    for want, got in differ:
        assert want["kind"] == "unreadable" and "persistent id" in want["reason"], (want, got)
        assert got["kind"] == "full"
    assert len(differ) < len(pairs) // 20
    assert {want["kind"] for want, _ in pairs} >= {"full", "unreadable"}


def test_a_listing_reads_sidecars_here_and_sends_the_other_pickles_to_the_readers(pool, tmp_path, monkeypatch, capsys):
    from training import cli
    from training.checkpoint.meta import checkpoint_meta, format_checkpoint_listing
    from training.checkpoint.sidecar import file_sha256, write_sidecar
    from training.config import DEFAULTS
    from training.naming import experiment_name

    folder = tmp_path / "models" / experiment_name(dict(DEFAULTS, model_type="lcnn", comment="many"))
    folder.mkdir(parents=True)
    paths = []
    for epoch in range(1, 7):
        ckpt = trainer_checkpoint(epoch)
        paths.append(cf.save(ckpt, folder / f"checkpoint_epoch_{epoch}_many.pth"))
        if epoch <= 2:
            write_sidecar(paths[-1], checkpoint_meta(ckpt), file_sha256(paths[-1]))
    expected = [read_checkpoint_info(p) for p in paths]
    here: list[str] = []
    monkeypatch.setattr(ckpt_pool, "read_checkpoint_info",
                        lambda p, **kw: here.append(os.fspath(p)) or read_checkpoint_info(p, **kw))
    assert [as_json(i) for i in ckpt_pool.read_listed_infos(paths)] == [as_json(i) for i in expected]
    assert here == [str(p) for p in paths[:2]]  # the pickles were read by the reader processes

    here.clear()
    assert cli.main(["--list_checkpoints", "--models_root", str(tmp_path / "models"), "--model_type", "lcnn",
                     "--comment", "many"]) == 0
    assert capsys.readouterr().out.strip() == format_checkpoint_listing(folder, expected)
    assert len(here) == 2
