"""Datasets: the synthetic set's determinism and balance, and the ASVspoof loaders on real files.

The ASVspoof tests write tiny FLAC/WAV files and protocol files in all three formats (2019
protocol, 2021 key, In-the-Wild meta.csv) into ``tmp_path`` with soundfile: the real reading
code runs, nothing is mocked.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from training.data import (
    ASVspoofDataset,
    DataError,
    ProtocolEntry,
    SyntheticSpoofDataset,
    build_datasets,
    pad,
    read_protocol,
)

SR = 16000


# --- synthetic ---------------------------------------------------------------------------------

def test_synthetic_item_shape_type_and_range():
    ds = SyntheticSpoofDataset(size=6, clip_samples=4000, seed=3, split="train")
    assert len(ds) == 6
    for i in range(len(ds)):
        wave, label, utt = ds[i]
        assert wave.shape == (4000,) and wave.dtype == torch.float32
        assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0
        assert wave.pow(2).mean().sqrt() > 1e-3  # not silence
        assert label in (0, 1) and isinstance(label, int)
        assert utt == f"SYN_train_{i:07d}"


def test_synthetic_is_deterministic_and_order_independent():
    a = SyntheticSpoofDataset(8, 3000, seed=11, split="train")
    b = SyntheticSpoofDataset(8, 3000, seed=11, split="train")
    forward = [a[i][0] for i in range(8)]
    backward = {i: b[i][0] for i in reversed(range(8))}
    for i in range(8):
        assert torch.equal(forward[i], backward[i])
    assert not torch.equal(forward[0], forward[2])  # same class, different index
    assert not torch.equal(forward[1], forward[3])
    assert not torch.equal(a[0][0], SyntheticSpoofDataset(8, 3000, seed=12, split="train")[0][0])
    assert not torch.equal(a[0][0], SyntheticSpoofDataset(8, 3000, seed=11, split="val")[0][0])


def test_synthetic_leaves_global_rng_state_alone():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    ds = SyntheticSpoofDataset(4, 2000, seed=5, split="train")
    for i in range(4):
        ds[i]
    py_state, np_state, torch_state = before
    assert random.getstate() == py_state
    after_np = np.random.get_state()
    assert after_np[0] == np_state[0] and np.array_equal(after_np[1], np_state[1]) and after_np[2:] == np_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_synthetic_does_not_depend_on_global_rng_state():
    ds = SyntheticSpoofDataset(2, 2000, seed=5, split="train")
    np.random.seed(0), torch.manual_seed(0), random.seed(0)
    first = ds[1][0]
    np.random.seed(99), torch.manual_seed(99), random.seed(99)
    assert torch.equal(first, ds[1][0])


def test_synthetic_class_balance():
    ds = SyntheticSpoofDataset(101, 1000, seed=0, split="val")
    labels = ds.labels
    assert labels.count(1) == 51 and labels.count(0) == 50
    assert all({labels[i], labels[i + 1]} == {0, 1} for i in range(100))  # any 2 neighbours: both classes
    assert [ds[i][1] for i in range(4)] == labels[:4]


def test_synthetic_cache_changes_nothing():
    plain = SyntheticSpoofDataset(4, 2000, seed=2, split="train", cache=False)
    cached = SyntheticSpoofDataset(4, 2000, seed=2, split="train", cache=True)
    first = cached[3][0]
    first.mul_(0)  # a caller scribbling on its tensor must not corrupt the cache
    assert torch.equal(cached[3][0], plain[3][0])
    assert torch.equal(cached[3][0], plain[3][0])


def test_synthetic_index_bounds():
    ds = SyntheticSpoofDataset(3, 1000, seed=0, split="train")
    assert torch.equal(ds[-1][0], ds[2][0])
    with pytest.raises(IndexError):
        ds[3]


def test_synthetic_classes_differ_but_not_trivially():
    # The spoof class must carry *some* signal: e.g. its waveforms are less peaky (dispersed
    # glottal closures), but loudness alone must not separate the classes.
    ds = SyntheticSpoofDataset(60, 8000, seed=0, split="train")
    waves = torch.stack([ds[i][0] for i in range(60)]).double()
    labels = torch.tensor(ds.labels)
    rms = waves.pow(2).mean(1).sqrt()
    crest = waves.abs().amax(1) / rms
    assert crest[labels == 1].mean() > crest[labels == 0].mean()
    # loudness ranges overlap heavily
    assert rms[labels == 1].min() < rms[labels == 0].median() < rms[labels == 1].max()


def test_synthetic_generation_is_fast():
    ds = SyntheticSpoofDataset(40, 16000, seed=0, split="train")
    start = time.perf_counter()
    for i in range(40):
        ds[i]
    per_clip = (time.perf_counter() - start) / 40
    assert per_clip < 0.05, f"{per_clip * 1000:.1f} ms per 1 s clip"  # a few ms normally; lenient for busy CI


# --- fixtures: a tiny ASVspoof tree --------------------------------------------------------------

def _write(path: Path, n: int, seed: int, rate: int = SR, channels: int = 1) -> np.ndarray:
    """A random 16-bit clip written with soundfile; returns what reading it back as float32 gives."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ints = np.random.default_rng(seed).integers(-20000, 20000, size=(n, channels), dtype=np.int16)
    sf.write(str(path), ints, rate, subtype="PCM_16")
    return ints.astype(np.float32) / 32768.0


LA_TRAIN = [("LA_0079", "LA_T_1000001", "-", "bonafide"), ("LA_0079", "LA_T_1000002", "A01", "spoof"),
            ("LA_0080", "LA_T_1000003", "A02", "spoof"), ("LA_0080", "LA_T_1000004", "-", "bonafide")]
LA_DEV = [("LA_0069", "LA_D_2000001", "-", "bonafide"), ("LA_0069", "LA_D_2000002", "A05", "spoof"),
          ("LA_0070", "LA_D_2000003", "A06", "spoof")]


@pytest.fixture
def la_tree(tmp_path: Path) -> dict[str, Path]:
    """``db/ASVspoof2019_LA_{train,dev}/flac/*.flac`` and ``protocols/*.txt`` as in the 2019 release."""
    db, proto = tmp_path / "db", tmp_path / "protocols"
    proto.mkdir()
    for part, rows, name in (("train", LA_TRAIN, "ASVspoof2019.LA.cm.train.trn.txt"),
                             ("dev", LA_DEV, "ASVspoof2019.LA.cm.dev.trl.txt")):
        for k, (_, utt, _, _) in enumerate(rows):
            _write(db / f"ASVspoof2019_LA_{part}" / "flac" / f"{utt}.flac", n=500 + 700 * k, seed=k)
        lines = [f"{spk} {utt} - {attack} {label}" for spk, utt, attack, label in rows]
        (proto / name).write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    return {"db": db, "protocols": proto}


@pytest.fixture
def itw_tree(tmp_path: Path) -> Path:
    """``release_in_the_wild/{0..19}.wav`` + ``meta.csv`` as in the In-the-Wild zip."""
    root = tmp_path / "itw" / "release_in_the_wild"
    rows = ["file,speaker,label"]
    for i in range(20):
        _write(root / f"{i}.wav", n=300 + 10 * i, seed=100 + i)
        rows.append(f"{i}.wav,Speaker {i % 3},{'bona-fide' if i % 2 else 'spoof'}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "itw"


# --- protocols ---------------------------------------------------------------------------------

def test_read_2019_protocol(la_tree):
    entries = read_protocol(la_tree["protocols"] / "ASVspoof2019.LA.cm.train.trn.txt")
    assert entries == [
        ProtocolEntry("LA_T_1000001", 1, "LA_0079", "-"),
        ProtocolEntry("LA_T_1000002", 0, "LA_0079", "A01"),
        ProtocolEntry("LA_T_1000003", 0, "LA_0080", "A02"),
        ProtocolEntry("LA_T_1000004", 1, "LA_0080", "-"),
    ]


def test_read_2021_keys(tmp_path):
    df = tmp_path / "DF_trial_metadata.txt"
    df.write_text(
        "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -\n"
        "\n"
        "TEF2 DF_E_2000013 low_m4a vcc2018 bonafide bonafide notrim eval bonafide - - - -\n"
    )
    assert read_protocol(df) == [
        ProtocolEntry("DF_E_2000011", 0, "LA_0023", "A14"),
        ProtocolEntry("DF_E_2000013", 1, "TEF2", "bonafide"),
    ]
    la = tmp_path / "LA_trial_metadata.txt"
    la.write_text(
        "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval\n"
        "LA_0013 LA_E_6866159 none - bonafide bonafide notrim progress\n"
    )
    assert [(e.utt_id, e.label) for e in read_protocol(la)] == [("LA_E_9332881", 0), ("LA_E_6866159", 1)]


def test_read_in_the_wild_meta(itw_tree):
    entries = read_protocol(itw_tree / "release_in_the_wild" / "meta.csv")
    assert len(entries) == 20
    assert entries[0] == ProtocolEntry("0", 0, "Speaker 0", "-")
    assert entries[1] == ProtocolEntry("1", 1, "Speaker 1", "-")


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("A U1 - - bonafide\nA U2 - - spoof\n\nA U3 - A01 foo\n", 4,
         "expected 'bonafide' or 'spoof' in field 5, got 'foo'"),
        ("A U1 - - bonafide\nA U2 - spoof\n", 2, "expected 5 fields like the first line, got 4: 'A U2 - spoof'"),
        ("A U1 bonafide\n", 1, "expected 5 fields (2019 protocol) or at least 7 (2021 key), got 3"),
        ("A U1 nocodec src A01 fake notrim eval\n", 1, "expected 'bonafide' or 'spoof' in field 6, got 'fake'"),
        ("file,speaker,label\n0.wav,X,spoof\n1.wav,Y,bonafied\n", 3,
         "expected 'bona-fide' or 'spoof' in column 'label', got 'bonafied'"),
        ("file,speaker,label\n0.wav,X\n", 2, "expected 3 comma-separated fields, got '0.wav,X'"),
        ("name,who,kind\n0.wav,X,spoof\n", 1, "expected a header with 'file' and 'label' columns"),
    ],
)
def test_malformed_protocol_names_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / "protocols" / "x.txt"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(DataError) as err:
        read_protocol(path)
    message = str(err.value)
    assert message.startswith(f"{path} line {line}: "), message
    assert fragment in message
    assert "\n" not in message


def test_missing_empty_and_duplicate_protocols(tmp_path):
    with pytest.raises(DataError, match="nope.txt: protocol file not found"):
        read_protocol(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="empty.txt: protocol file is empty"):
        read_protocol(tmp_path / "empty.txt")
    (tmp_path / "dup.txt").write_text("A U1 - - bonafide\n\nA U1 - - spoof\n")
    with pytest.raises(DataError, match="dup.txt line 3: utterance 'U1' already listed on line 1"):
        read_protocol(tmp_path / "dup.txt")
    with pytest.raises(DataError, match="found a folder"):
        read_protocol(tmp_path)


# --- audio -------------------------------------------------------------------------------------

def test_pad_cuts_and_tiles_like_the_baseline():
    x = np.arange(5, dtype=np.float32)
    assert pad(x, 3).tolist() == [0, 1, 2]
    assert pad(x, 5).tolist() == [0, 1, 2, 3, 4]
    assert pad(x, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_asvspoof_dataset_reads_cuts_and_tiles(tmp_path):
    audio = tmp_path / "audio"
    long = _write(audio / "long.flac", 1000, seed=1)[:, 0]
    short = _write(audio / "short.wav", 300, seed=2)[:, 0]  # .wav found when no .flac
    stereo = _write(audio / "stereo.flac", 900, seed=3, channels=2)
    entries = [ProtocolEntry("long", 1, "S", "-"), ProtocolEntry("short", 0, "S", "A01"),
               ProtocolEntry("stereo", 0, "S", "A02")]
    ds = ASVspoofDataset(entries, audio, clip_samples=800)
    assert len(ds) == 3 and ds.labels == [1, 0, 0]
    wave, label, utt = ds[0]
    assert (label, utt) == (1, "long") and wave.dtype == torch.float32
    np.testing.assert_array_equal(wave.numpy(), long[:800])  # cut: the first 800 samples
    np.testing.assert_array_equal(ds[1][0].numpy(), np.tile(short, 3)[:800])  # tiled
    np.testing.assert_allclose(ds[2][0].numpy(), stereo.mean(axis=1)[:800], atol=1e-7)  # mono


def test_asvspoof_dataset_reports_missing_audio_up_front(tmp_path):
    audio = tmp_path / "audio"
    _write(audio / "a.flac", 100, seed=0)
    entries = [ProtocolEntry(u, 1, "S", "-") for u in ("a", "b", "c")]
    with pytest.raises(DataError) as err:
        ASVspoofDataset(entries, audio)
    assert str(err.value) == f"2 of 3 audio files missing in {audio}; first: {audio / 'b.flac'} (or .wav)"
    with pytest.raises(DataError, match="audio folder not found"):
        ASVspoofDataset(entries, tmp_path / "elsewhere")


def test_asvspoof_dataset_rejects_wrong_sample_rate(tmp_path):
    _write(tmp_path / "a.flac", 100, seed=0, rate=22050)
    with pytest.raises(DataError, match=r"a\.flac: sample rate 22050 Hz, expected 16000 Hz"):
        ASVspoofDataset([ProtocolEntry("a", 1, "S", "-")], tmp_path)


def test_unreadable_audio_is_a_data_error(tmp_path):
    (tmp_path / "bad.flac").write_bytes(b"not audio at all")
    with pytest.raises(DataError, match=r"bad\.flac: cannot read audio"):
        ASVspoofDataset([ProtocolEntry("bad", 1, "S", "-")], tmp_path)


# --- build_datasets ------------------------------------------------------------------------------

def test_build_synthetic_datasets():
    args = {"dataset": "synthetic", "train_size": 10, "val_size": 4, "clip_samples": 2000, "seed": 7}
    train, val = build_datasets(args)
    assert isinstance(train, SyntheticSpoofDataset) and (len(train), len(val)) == (10, 4)
    assert (train.split, val.split, train.seed) == ("train", "val", 7)
    assert train[0][0].shape == (2000,)
    assert not torch.equal(train[0][0], val[0][0])


@pytest.mark.parametrize("track", ["LA", "DF"])
def test_build_asvspoof_2019_la(la_tree, track):
    args = {"dataset": "asvspoof", "track": track, "database_path": str(la_tree["db"]),
            "protocols_path": str(la_tree["protocols"])}
    train, val = build_datasets(args)
    assert (len(train), len(val)) == (4, 3)
    assert train.labels == [1, 0, 0, 1]
    wave, label, utt = val[2]
    assert wave.shape == (64600,) and (label, utt) == (0, "LA_D_2000003")


def test_build_asvspoof_release_layout(la_tree):
    # protocols inside ASVspoof2019_LA_cm_protocols/, as the official LA.zip unpacks
    release = la_tree["protocols"] / "ASVspoof2019_LA_cm_protocols"
    release.mkdir()
    for f in list(la_tree["protocols"].glob("*.txt")):
        f.rename(release / f.name)
    train, _ = build_datasets({"dataset": "asvspoof", "track": "LA", "database_path": la_tree["db"],
                               "protocols_path": la_tree["protocols"]})
    assert len(train) == 4


def test_build_asvspoof_missing_flags_and_folders(la_tree, tmp_path):
    with pytest.raises(DataError, match="--dataset asvspoof needs --database_path"):
        build_datasets({"dataset": "asvspoof", "track": "DF"})
    with pytest.raises(DataError, match="--dataset asvspoof needs --protocols_path"):
        build_datasets({"dataset": "asvspoof", "track": "LA", "database_path": str(la_tree["db"])})
    with pytest.raises(DataError, match=r"ASVspoof2019_LA_train/flac .*check --database_path"):
        build_datasets({"dataset": "asvspoof", "track": "LA", "database_path": str(tmp_path / "none"),
                        "protocols_path": str(la_tree["protocols"])})


def test_build_in_the_wild_split(itw_tree):
    args = {"dataset": "asvspoof", "track": "In-the-Wild", "database_path": str(itw_tree), "seed": 1}
    train, val = build_datasets(args)
    assert (len(train), len(val)) == (18, 2)
    train_ids = {e.utt_id for e in train.entries}
    val_ids = {e.utt_id for e in val.entries}
    assert not train_ids & val_ids and train_ids | val_ids == {str(i) for i in range(20)}
    again, _ = build_datasets(args)
    assert [e.utt_id for e in again.entries] == [e.utt_id for e in train.entries]
    other, _ = build_datasets({**args, "seed": 2})
    assert {e.utt_id for e in other.entries} != train_ids
    wave, label, utt = val[0]
    assert wave.shape == (64600,) and label == int(utt) % 2
    # meta.csv given explicitly, audio folder given directly
    train2, val2 = build_datasets({**args, "database_path": str(itw_tree / "release_in_the_wild"),
                                   "protocols_path": str(itw_tree / "release_in_the_wild" / "meta.csv")})
    assert [e.utt_id for e in val2.entries] == [e.utt_id for e in val.entries]
