"""The torch-free checkpoint reader, checked against torch.load(weights_only=True) on real files."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ckpt_factories as cf  # noqa: E402

from training.checkpoint import pickle_vm as vm  # noqa: E402
from training.checkpoint.fsutil import sidecar_path  # noqa: E402
from training.checkpoint.meta import (  # noqa: E402
    KINDS,
    METRIC_KEYS,
    CheckpointInfo,
    checkpoint_meta,
    format_checkpoint_listing,
    list_checkpoint_files,
    read_checkpoint_info,
)
from training.checkpoint.pickle_vm import safe_globals_for  # noqa: E402
from training.checkpoint.sidecar import file_sha256, read_sidecar, write_sidecar  # noqa: E402
from training.checkpoint.torchfile import read_checkpoint_object  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def plain(x):
    """JSON round trip: tuples become lists, numpy floats become floats (as the reader reports)."""
    return json.loads(json.dumps(x, default=float))


def torch_load(path: Path, info: CheckpointInfo):
    """torch's own safe load, allowing exactly the extra globals the reader says the file uses."""
    with torch.serialization.safe_globals(safe_globals_for(info.extra_globals)):
        return torch.load(path, weights_only=True)


def assert_agrees_with_torch(path: Path, info: CheckpointInfo) -> dict:
    obj = torch_load(path, info)
    assert info.keys == [str(k) for k in obj]
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    assert info.epoch == epoch
    for key in METRIC_KEYS:
        if key in obj:
            assert info.metrics[key] == float(obj[key])
        else:
            assert key not in info.metrics
    args = obj.get("args")
    if args is not None:
        assert info.args == plain(vars(args) if not isinstance(args, dict) else args)
    assert info.history == (plain(obj.get("history", [])) if info.history else [])
    if isinstance(obj, dict) and isinstance(obj.get("history"), list):  # an earlier version's list, on request
        assert read_checkpoint_info(path, with_history=True).history == plain(obj["history"])
    assert info.lineage == obj.get("lineage")
    assert info.has_optimizer == ("optimizer_state_dict" in obj)
    state = obj.get("model_state_dict", obj)
    assert info.num_params == sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
    if info.extra_globals:  # and torch really needs them: without, it refuses the file
        with pytest.raises(Exception, match="Weights only load failed"):
            torch.load(path, weights_only=True)
    return obj


# --- real files, compared with torch.load ---------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_full_checkpoint_matches_torch(tmp_path, legacy):
    path = cf.save(cf.full_checkpoint(10), tmp_path / "checkpoint_epoch_10.pth", legacy=legacy)
    info = read_checkpoint_info(path)
    assert info.kind == "full" and info.source == "pickle" and not info.complete
    assert info.epoch == 10 and info.step_in_epoch == 0 and info.best_epoch == 10
    assert info.metrics == pytest.approx({"train_loss": 0.154158, "train_eer": 7.29,
                                          "val_loss": 0.005543, "val_acc": 99.84, "val_eer": 0.16,
                                          "best_val_eer": 0.16})
    assert info.args["nested"] == {"betas": [0.9, 0.999], "layers": {"enc": 4}}
    assert info.history == []  # nobody asked for it: not converted
    history = read_checkpoint_info(path, with_history=True).history
    assert len(history) == 10 and history[-1]["val_eer"] == 1.0
    assert info.size_bytes == path.stat().st_size and info.reason is None
    assert "numpy.dtypes.Float64DType" in info.extra_globals
    assert_agrees_with_torch(path, info)


def test_reader_meta_equals_trainer_meta(tmp_path):
    """checkpoint_meta on the live dict (what the trainer writes to the sidecar) == the pickle read."""
    ck = cf.full_checkpoint(7, step_in_epoch=37)
    live = checkpoint_meta(ck)
    path = cf.save(ck, tmp_path / "checkpoint_interrupt.pth")
    info = read_checkpoint_info(path)
    assert live == checkpoint_meta(read_checkpoint_object(path))
    assert json.loads(json.dumps(live)) == live  # JSON-able as it stands
    assert (info.epoch, info.step_in_epoch, info.metrics, info.args, info.history, info.lineage,
            info.keys, info.num_params) == (live["epoch"], 37, live["metrics"], live["args"],
                                             live["history"], live["lineage"], live["keys"],
                                             live["num_params"])
    assert "rng_state" in live["keys"] and "rng_state" not in json.dumps(live["args"])


@pytest.mark.parametrize("variant", ["bare", "module_prefixed", "only_model_state_dict"])
def test_weights_only_files(tmp_path, variant):
    state = cf.tiny_model().state_dict()
    if variant == "module_prefixed":  # saved from a DataParallel wrapper
        state = {f"module.{k}": v for k, v in state.items()}
    obj = {"model_state_dict": state} if variant == "only_model_state_dict" else state
    path = cf.save(obj, tmp_path / "best_model_eer.pth")
    info = read_checkpoint_info(path)
    assert info.kind == "weights_only" and info.epoch is None and not info.has_optimizer
    assert info.extra_globals == []
    assert_agrees_with_torch(path, info)
    if variant == "module_prefixed":
        assert all(k.startswith("module.") for k in info.keys)


def test_renamed_file_keeps_its_archive_name(tmp_path):
    saved = cf.save(cf.full_checkpoint(3), tmp_path / "tmp_save_name.pth")
    path = saved.rename(tmp_path / "checkpoint_epoch_3.pth")
    assert zipfile.ZipFile(path).namelist()[0] == "tmp_save_name/data.pkl"
    info = read_checkpoint_info(path)
    assert info.kind == "full" and info.epoch == 3
    assert_agrees_with_torch(path, info)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_args_as_namespace(tmp_path, legacy):
    ck = cf.full_checkpoint(2, numpy_metrics=False, args=cf.namespace_args())
    path = cf.save(ck, tmp_path / "epoch_2.pth", legacy=legacy)
    info = read_checkpoint_info(path)
    assert info.kind == "full" and info.args == plain(cf.ARGS)
    assert info.extra_globals == ["argparse.Namespace"]
    assert_agrees_with_torch(path, info)
    assert checkpoint_meta(ck)["args"] == info.args


def test_numpy1_era_names(tmp_path):
    """numpy < 2 pickled scalars as numpy.core.multiarray.scalar; torch matches allowlisted
    globals by exact name, so safe_globals_for passes (object, name) pairs."""
    src = cf.save(cf.full_checkpoint(3), tmp_path / "src.pth")
    pkl = cf.data_pkl(src).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = cf.rezip_with_pickle(src, tmp_path / "checkpoint_epoch_3.pth", pkl)
    info = read_checkpoint_info(path)
    assert info.kind == "full" and info.metrics["val_eer"] == 0.16
    assert "numpy.core.multiarray.scalar" in info.extra_globals
    assert_agrees_with_torch(path, info)


def test_mid_epoch_and_plain_metrics(tmp_path):
    path = cf.save(cf.full_checkpoint(10, numpy_metrics=False, step_in_epoch=37),
                   tmp_path / "checkpoint_interrupt.pth")
    info = read_checkpoint_info(path)
    assert (info.kind, info.epoch, info.step_in_epoch) == ("full", 10, 37)
    assert info.extra_globals == []  # torch loads it with no extra allowlisting
    assert_agrees_with_torch(path, info)


# --- broken and hostile files -------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_files_are_unreadable(tmp_path, legacy):
    full = cf.save(cf.full_checkpoint(5), tmp_path / "full.pth", legacy=legacy).read_bytes()
    for k in range(1, 20):
        cut = tmp_path / f"checkpoint_epoch_{k}.pth"
        cut.write_bytes(full[: len(full) * k // 20])
        info = read_checkpoint_info(cut)
        assert info.kind == "unreadable", (k, info)
        assert "truncated" in info.reason or "not a torch checkpoint" in info.reason, info.reason
        assert "\n" not in info.reason
        with pytest.raises(Exception):
            torch.load(cut, weights_only=True)
    cut.write_bytes(full[:-1])
    assert read_checkpoint_info(cut).kind == "unreadable"


def test_zip_truncation_reason(tmp_path):
    full = cf.save(cf.full_checkpoint(5), tmp_path / "full.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full[: len(full) // 2])
    assert read_checkpoint_info(cut).reason == (
        "truncated or not a torch checkpoint (BadZipFile: File is not a zip file)")


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not a checkpoint\n", "not a torch checkpoint"),
    (bytes(random.Random(1).randrange(256) for _ in range(5000)), ""),
    (b"PK\x03\x04" + bytes(random.Random(2).randrange(256) for _ in range(5000)), "BadZipFile"),
    (cf.pickle_bytes({"epoch": 1}), "not a torch checkpoint"),
])
def test_garbage_files_are_unreadable(tmp_path, content, reason):
    path = tmp_path / "checkpoint_epoch_1.pth"
    path.write_bytes(content)
    info = read_checkpoint_info(path)
    assert info.kind == "unreadable" and reason in info.reason


def test_zip_without_data_pkl_and_missing_file(tmp_path):
    path = tmp_path / "x.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x/version", "3")
    assert read_checkpoint_info(path).reason == "zip archive without data.pkl (not a torch checkpoint)"
    missing = read_checkpoint_info(tmp_path / "missing.pth")
    assert missing.kind == "unreadable" and "No such file" in missing.reason
    (tmp_path / "dir.pth").mkdir()
    assert read_checkpoint_info(tmp_path / "dir.pth").reason == "not a regular file"


def test_not_a_checkpoint_layouts(tmp_path):
    lightning = cf.save({"state_dict": cf.tiny_model().state_dict(), "epoch": 3}, tmp_path / "a.pth")
    info = read_checkpoint_info(lightning)
    assert info.kind == "unreadable" and info.reason.startswith("not a checkpoint: no model_state_dict")
    tensor = cf.save(torch.zeros(3), tmp_path / "b.pth")
    assert read_checkpoint_info(tensor).reason == "not a checkpoint: the pickle holds a tensor"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("make, evil, global_name", [
    (cf.hostile_torch_file, cf.Evil, "posix.system"),
    (cf.hostile_torch_file, cf.EvalEvil, "builtins.eval"),
    (cf.hostile_plain_pickle, None, "posix.system"),
])
def test_hostile_pickles_are_unsafe_and_never_run(tmp_path, make, evil, global_name):
    marker = tmp_path / "marker"
    path = tmp_path / "checkpoint_epoch_1.pth"
    make(path, marker, evil) if evil else make(path, marker)
    info = read_checkpoint_info(path)
    assert info.kind == "unsafe"
    assert info.reason == f"pickle would call {global_name}"
    assert not marker.exists()
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    assert f"   Unsafe: pickle would call {global_name}" in format_checkpoint_listing(tmp_path, [info])


def test_fuzz_mutated_pickles_never_raise(tmp_path):
    """Flipped bytes inside data.pkl (re-zipped with a valid CRC, so the pickle interpreter itself
    sees them), flips anywhere in the file, and truncated pickles."""
    src = cf.save(cf.full_checkpoint(4), tmp_path / "src.pth")
    pkl = cf.data_pkl(src)
    rng = random.Random(1234)
    kinds = set()
    dst = tmp_path / "fuzz.pth"
    for i in range(250):
        cf.rezip_with_pickle(src, dst, cf.mutated(pkl, rng, i))
        info = read_checkpoint_info(dst)
        assert info.kind in KINDS and (info.reason is None) == (info.kind in ("full", "weights_only"))
        kinds.add(info.kind)
    assert {"full", "unreadable"} <= kinds
    whole = src.read_bytes()
    for _ in range(100):
        data = bytearray(whole)
        for _ in range(rng.choice([1, 4, 32])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        dst.write_bytes(bytes(data))
        assert read_checkpoint_info(dst).kind in KINDS
    # flipped bytes in the stored data.pkl are caught by its CRC
    at = whole.index(b"model_state_dict")
    dst.write_bytes(whole[:at] + b"X" + whole[at + 1:])
    assert read_checkpoint_info(dst).reason == "corrupt data.pkl (CRC or size mismatch)"


BOMBS = r'''
import resource, sys, time, zipfile
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: a blow-up fails loudly
from training.checkpoint.meta import read_checkpoint_info

def zipped(name, pkl):
    path = f"{sys.argv[1]}/{name}.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
    return path

def ckpt(args_ops):  # {'epoch': 1, 'model_state_dict': {}, 'args': {'x': <args_ops>}}
    return (b"\x80\x02}(X\x05\x00\x00\x00epochK\x01X\x10\x00\x00\x00model_state_dict}"
            b"X\x04\x00\x00\x00args}X\x01\x00\x00\x00x" + args_ops + b"su.")

laughs = b"](" + b"N" * 10 + b"eq\x000"
for i in range(40):
    laughs += b"](" + b"h" + bytes([i]) + b"h" + bytes([i]) + b"eq" + bytes([i + 1]) + b"0"
laughs += b"h" + bytes([40])
bombs = {
    # hash() of a million-deep tuple overflows the C stack: must be refused before hashing
    "deep_key": b"\x80\x02})" + b"\x85" * 1_000_000 + b"Ns.",
    # CPython's unpickler would resize its memo array to 2**33 entries here
    "memo_index": b"\x80\x02Nr\xff\xff\xff\xff.",
    "memo_index2": b"\x80\x02Nr\xff\xff\xff\x0f.",
    # and preallocate these lengths
    "binbytes8": b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"xx.",
    "binbytes": b"\x80\x03B\xff\xff\xff\xffxx.",
    "bytearray": b"\x80\x02c__builtin__\nbytearray\nJ\x00\x00\x00\x7f\x85R.",
    "long4": b"\x80\x02\x8b\xff\xff\xff\x7f.",
    "laughs": ckpt(laughs),  # 2**40 leaves through shared references
    "cycle": ckpt(b"]q\x00h\x00a"),
    "deep_list": ckpt(b"]" * 300_000 + b"a" * 299_999),
    "op_flood": b"\x80\x02" + b"N0" * 1_500_000 + b"N.",
    "mark_flood": b"\x80\x02" + b"(" * 1_000_000 + b"N.",
    "huge_shape": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
                  b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00"
                  b"(\x8b\x00\x00\x10\x00" + b"\xff" * 0x100000 + b"\x8b\x00\x00\x10\x00"
                  + b"\xff" * 0x100000 + b"t)\x89)tR.",
}
for name, pkl in bombs.items():
    t = time.perf_counter()
    info = read_checkpoint_info(zipped(name, pkl))
    print(name, info.kind, round(time.perf_counter() - t, 2), (info.reason or "")[:60])
'''


def test_bombs_are_bounded(tmp_path):
    """Crafted pickles that crash, hang or exhaust memory in naive unpicklers: run in a child with
    a 1 GiB address-space limit, so a failure cannot take the test session down."""
    proc = subprocess.run([sys.executable, "-c", BOMBS, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {line.split()[0]: line.split(maxsplit=3)[1:] for line in proc.stdout.splitlines()}
    assert len(results) == 13, proc.stdout
    for name, (kind, seconds, *reason) in results.items():
        assert float(seconds) < 5, name
        if name in ("laughs", "cycle", "deep_list"):
            assert kind == "full", name  # read fine; the args copy is cut off, not the process
        else:
            assert kind == "unreadable", (name, reason)
    assert "unusable dict key" in " ".join(results["deep_key"])
    assert "too complex" in " ".join(results["op_flood"])


def test_reader_imports_neither_torch_nor_numpy(tmp_path):
    path = cf.save(cf.full_checkpoint(3, args=cf.namespace_args()), tmp_path / "c.pth")
    code = textwrap.dedent(f"""
        import sys
        from training.checkpoint.meta import read_checkpoint_info
        info = read_checkpoint_info({str(path)!r})
        assert info.kind == "full" and info.metrics["val_eer"] == 0.16, info
        bad = [m for m in ("torch", "numpy") if m in sys.modules]
        assert not bad, bad
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_allowlist_mirrors_torch_weights_only():
    from torch._weights_only_unpickler import _get_allowed_globals

    assert vm.TORCH_WEIGHTS_ONLY_GLOBALS == set(_get_allowed_globals())
    extras = set(vm._GLOBALS) - vm.TORCH_WEIGHTS_ONLY_GLOBALS
    assert all(n.split(".")[0] in ("numpy", "argparse", "builtins") for n in extras), extras
    assert not any(n.split(".")[0] in ("os", "posix", "nt", "sys", "subprocess") for n in vm._GLOBALS)


# --- sidecars -------------------------------------------------------------------------------------

def _with_sidecar(tmp_path: Path) -> tuple[Path, dict]:
    ck = cf.full_checkpoint(10)
    path = cf.save(ck, tmp_path / "checkpoint_epoch_10.pth")
    meta = checkpoint_meta(ck)
    write_sidecar(path, meta, file_sha256(path))
    return path, meta


def test_valid_sidecar_is_used(tmp_path):
    path, meta = _with_sidecar(tmp_path)
    doc = json.loads(sidecar_path(path).read_text())
    st = path.stat()
    assert doc["format"] == 1 and doc["file"] == path.name
    assert (doc["size"], doc["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert sorted(os.listdir(tmp_path)) == [path.name, path.name + ".meta.json"]  # no temp left
    assert read_sidecar(path) == meta
    info = read_checkpoint_info(path)
    assert info.source == "sidecar" and info.complete
    assert info.sha256 == file_sha256(path)
    from_pickle = read_checkpoint_info(path, use_sidecar=False)
    assert from_pickle.source == "pickle" and not from_pickle.complete
    same = ("kind", "epoch", "step_in_epoch", "metrics", "best_epoch", "args", "history",
            "lineage", "keys", "has_optimizer", "num_params", "size_bytes", "mtime")
    assert {k: getattr(info, k) for k in same} == {k: getattr(from_pickle, k) for k in same}


def test_stale_sidecar_is_ignored(tmp_path):
    path, _ = _with_sidecar(tmp_path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched
    assert read_sidecar(path) is None
    assert read_checkpoint_info(path).source == "pickle"
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_checkpoint_info(path).source == "sidecar"
    # replaced by another file of a different size
    cf.save(cf.full_checkpoint(11), path)
    info = read_checkpoint_info(path)
    assert (info.source, info.epoch, info.complete) == ("pickle", 11, False)


@pytest.mark.parametrize("body", [
    "{not json", "[]", '{"format": 2}', "", '{"format": 1, "size": "x"}',
])
def test_corrupt_sidecar_is_ignored(tmp_path, body):
    path, _ = _with_sidecar(tmp_path)
    sidecar_path(path).write_text(body)
    assert read_sidecar(path) is None
    info = read_checkpoint_info(path)
    assert info.source == "pickle" and info.kind == "full"


def test_sidecar_with_malformed_checkpoint_body_falls_back(tmp_path):
    path, _ = _with_sidecar(tmp_path)
    doc = json.loads(sidecar_path(path).read_text())
    doc["checkpoint"]["kind"] = "bogus"
    sidecar_path(path).write_text(json.dumps(doc))
    os.utime(path, ns=(path.stat().st_atime_ns, doc["mtime_ns"]))
    assert read_checkpoint_info(path).source == "pickle"


# --- listing ------------------------------------------------------------------------------------

# The guide's --list_checkpoints example, with its mojibake'd emoji restored.
GUIDE_LISTING = """\
======================================================================
📋 Available Checkpoints in models/g3_heatmap_DF_CCE_100_16_1e-06_group3_contrastiveFalse_my_experiment
======================================================================

📦 checkpoint_epoch_10_my_experiment.pth
   Epoch: 10
   Val EER: 0.16%
   Val Acc: 99.84%
   Best EER: 0.16%

📦 checkpoint_epoch_20_my_experiment.pth
   Epoch: 20
   Val EER: 0.12%
   Val Acc: 99.88%
   Best EER: 0.12%

📦 best_checkpoint_eer_my_experiment.pth
   Epoch: 20
   Val EER: 0.12%
   Val Acc: 99.88%
   Best EER: 0.12%
======================================================================"""


def test_listing_matches_the_guide_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = Path("models/g3_heatmap_DF_CCE_100_16_1e-06_group3_contrastiveFalse_my_experiment")
    exp.mkdir(parents=True)
    for name, epoch, eer, acc in [("best_checkpoint_eer", 20, 0.12, 99.88),
                                  ("checkpoint_epoch_20", 20, 0.12, 99.88),
                                  ("checkpoint_epoch_10", 10, 0.16, 99.84)]:
        cf.save(cf.full_checkpoint(epoch, val_eer=eer, val_acc=acc),
                exp / f"{name}_my_experiment.pth")
    (exp / ".checkpoint_epoch_30_my_experiment.pth.tmp.123").write_bytes(b"partial")
    (exp / "checkpoint_epoch_30_my_experiment.pth.tmp").write_bytes(b"partial")
    files = list_checkpoint_files(exp)
    assert [f.name for f in files] == ["checkpoint_epoch_10_my_experiment.pth",
                                       "checkpoint_epoch_20_my_experiment.pth",
                                       "best_checkpoint_eer_my_experiment.pth"]
    infos = [read_checkpoint_info(f) for f in files]
    assert format_checkpoint_listing(exp, infos) == GUIDE_LISTING
    assert format_checkpoint_listing(exp, infos[::-1]) == GUIDE_LISTING  # order is the listing's


def test_listing_of_mixed_folder(tmp_path):
    cf.save(cf.full_checkpoint(10, step_in_epoch=37, numpy_metrics=False),
            tmp_path / "checkpoint_interrupt.pth")
    cf.save(cf.full_checkpoint(9), tmp_path / "checkpoint_epoch_9.pth")
    cf.save(cf.tiny_model().state_dict(), tmp_path / "best_model_eer.pth")
    (tmp_path / "checkpoint_epoch_10.pth").write_bytes(b"PK\x03\x04 half written")
    cf.hostile_plain_pickle(tmp_path / "checkpoint_epoch_11.pth", tmp_path / "marker")
    cf.save({"epoch": 12, "model_state_dict": {}}, tmp_path / "checkpoint_epoch_12.pth")
    infos = [read_checkpoint_info(p) for p in list_checkpoint_files(tmp_path)]
    text = format_checkpoint_listing(Path("models/x"), infos)
    assert text == "\n".join([
        "=" * 70, "📋 Available Checkpoints in models/x", "=" * 70,
        "", "📦 checkpoint_epoch_9.pth", "   Epoch: 9", "   Val EER: 0.16%", "   Val Acc: 99.84%",
        "   Best EER: 0.16%",
        "", "📦 checkpoint_epoch_10.pth",
        "   Unreadable: truncated or not a torch checkpoint (BadZipFile: File is not a zip file)",
        "", "📦 checkpoint_epoch_11.pth", "   Unsafe: pickle would call posix.system",
        "", "📦 checkpoint_epoch_12.pth", "   Epoch: 12",
        "", "📦 checkpoint_interrupt.pth", "   Epoch: 10 (+ 37 steps of epoch 11)",
        "   Val EER: 0.16%", "   Val Acc: 99.84%", "   Best EER: 0.16%",
        "", "📦 best_model_eer.pth",
        "   Legacy checkpoint (weights only): cannot resume optimizer or epoch",
        "=" * 70,
    ])
    assert not (tmp_path / "marker").exists()


def test_empty_listing(tmp_path):
    assert list_checkpoint_files(tmp_path / "nope") == []
    assert format_checkpoint_listing("models/x", []).splitlines()[3:] == [
        "", "   No checkpoints found.", "=" * 70]


def test_copied_checkpoint_keeps_its_sidecar(tmp_path):
    path, _ = _with_sidecar(tmp_path)
    dst = tmp_path / "copy"
    dst.mkdir()
    shutil.copy2(path, dst / path.name)
    shutil.copy2(sidecar_path(path), dst / sidecar_path(path).name)
    assert read_checkpoint_info(dst / path.name).source == "sidecar"
