"""The votes store: round trip, atomic writes, detection of damaged or foreign files, compact storage."""

import os

import numpy as np
import pytest

import densepure.votes as votes_module
from densepure.votes import VoteRecord, VotesError, VotesStore, votes_dtype

SETTING = {"dataset": "cifar10", "classifier": "vit", "sigma": 0.25, "b": 10, "K": 4, "N0": 10, "N": 40, "seed": 0,
           "precision": "fp32", "extra": {"note": "test"}}


def some_labels(rows=50, k=4, classes=10, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=(rows, k))


def test_round_trip(tmp_path):
    store = VotesStore(tmp_path / "v", SETTING, num_classes=10, shape=(50, 4))
    labels = some_labels()
    path = store.write(20, labels, label=3, extra={"seconds": 1.5, "device": "cpu"})
    assert path == tmp_path / "v" / "20.npz" and path.exists()
    record = store.read(20)
    assert isinstance(record, VoteRecord)
    np.testing.assert_array_equal(record.labels, labels)
    assert record.labels.dtype == np.uint8
    assert record.label == 3 and record.setting == SETTING and record.extra == {"seconds": 1.5, "device": "cpu"}
    assert store.has(20) and not store.has(0)
    assert store.completed_ids() == [20]
    # a second store on the same directory (same setting) sees the file; extra is not part of the identity
    again = VotesStore(tmp_path / "v", dict(SETTING))
    again.write(0, labels[:, :2], label=1, extra={"device": "cuda:0"})
    assert again.completed_ids() == [0, 20]
    assert VotesStore.open(tmp_path / "v").setting == SETTING


def test_setting_json_written_once_and_checked(tmp_path):
    VotesStore(tmp_path, SETTING)
    assert (tmp_path / "setting.json").exists()
    VotesStore(tmp_path, {**SETTING, "extra": {"note": "test"}})  # equal setting: fine
    with pytest.raises(VotesError) as err:
        VotesStore(tmp_path, {**SETTING, "sigma": 0.5})
    msg = str(err.value)
    assert "setting.json" in msg and "sigma" in msg and "0.25" in msg and "0.5" in msg and "\n" not in msg
    with pytest.raises(VotesError, match="extra.note"):
        VotesStore(tmp_path, {**SETTING, "extra": {"note": "other"}})
    with pytest.raises(VotesError, match="not a votes store"):
        VotesStore.open(tmp_path / "missing")


def test_file_of_another_setting_is_rejected(tmp_path):
    a = VotesStore(tmp_path / "a", SETTING)
    b = VotesStore(tmp_path / "b", {**SETTING, "b": 5, "precision": "fp16"})
    a.write(7, some_labels(), label=2)
    os.replace(tmp_path / "a" / "7.npz", tmp_path / "b" / "7.npz")  # a file copied into the wrong store
    with pytest.raises(VotesError) as err:
        b.read(7)
    msg = str(err.value)
    assert "7.npz" in msg and "b: file has 10, store has 5" in msg and "precision" in msg and "\n" not in msg
    assert not b.has(7) and b.completed_ids() == [] and b.stored_ids() == [7]


def test_file_under_wrong_image_name_is_rejected(tmp_path):
    store = VotesStore(tmp_path, SETTING)
    store.write(1, some_labels(), label=2)
    os.replace(tmp_path / "1.npz", tmp_path / "2.npz")
    with pytest.raises(VotesError, match="holds image 1"):
        store.read(2)


@pytest.mark.parametrize("cut", [0.0, 0.3, 0.9])
def test_truncated_file_is_rejected(tmp_path, cut):
    store = VotesStore(tmp_path, SETTING)
    path = store.write(40, some_labels(rows=2000, seed=1), label=1)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(VotesError) as err:
        store.read(40)
    msg = str(err.value)
    assert str(path) in msg and "truncated or corrupt" in msg and "\n" not in msg
    assert not store.has(40) and store.completed_ids() == []


def test_corrupt_bytes_are_rejected(tmp_path):
    store = VotesStore(tmp_path, SETTING)
    path = store.write(40, some_labels(rows=2000, seed=1), label=1)
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 16] = bytes(255 - x for x in data[middle:middle + 16])
    path.write_bytes(bytes(data))
    with pytest.raises(VotesError, match="truncated or corrupt"):
        store.read(40)


def test_stray_temp_file_is_ignored(tmp_path):
    store = VotesStore(tmp_path, SETTING)
    store.write(0, some_labels(), label=1)
    (tmp_path / ".20.npz.k3j2x.tmp").write_bytes(b"PK\x03\x04 half a file")  # what a crash mid-write leaves
    (tmp_path / "notes.txt").write_text("not votes")
    assert store.stored_ids() == [0] and store.completed_ids() == [0]
    assert not store.has(20)


def test_crash_during_write_leaves_no_file(tmp_path, monkeypatch):
    store = VotesStore(tmp_path, SETTING)
    store.write(5, some_labels(seed=5), label=4)
    before = sorted(os.listdir(tmp_path))

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(votes_module.np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write(6, some_labels(), label=1)  # a new image
    with pytest.raises(KeyboardInterrupt):
        store.write(5, some_labels(seed=9), label=0)  # replacing an existing one
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before  # no partial file, no temp file
    np.testing.assert_array_equal(store.read(5).labels, some_labels(seed=5))  # the old file is intact
    assert store.completed_ids() == [5]


def test_shape_is_checked(tmp_path):
    store = VotesStore(tmp_path, SETTING, shape=(50, 4))
    with pytest.raises(VotesError, match="shape"):
        store.write(0, some_labels(rows=49), label=0)
    with pytest.raises(VotesError, match="shape"):
        store.write(0, np.zeros(200, int), label=0)
    VotesStore(tmp_path, SETTING).write(1, some_labels(rows=60), label=0)  # written without a shape check
    with pytest.raises(VotesError, match="shape"):
        store.read(1)
    assert not store.has(1)


def test_bad_labels_and_ids_are_rejected(tmp_path):
    store = VotesStore(tmp_path, SETTING, num_classes=10)
    with pytest.raises(VotesError, match="out of range"):
        store.write(0, np.full((3, 2), 10), label=0)
    with pytest.raises(VotesError, match="non-negative"):
        store.write(0, np.full((3, 2), -1), label=0)
    with pytest.raises(VotesError):
        store.write(0, np.zeros((3, 2)), label=0)  # float labels
    for bad in (-1, "3", 1.0, True):
        with pytest.raises(VotesError):
            store.path(bad)
    with pytest.raises(VotesError, match="no votes stored"):
        store.read(3)


def test_dtype_follows_num_classes(tmp_path):
    assert votes_dtype(10) == np.uint8 and votes_dtype(256) == np.uint8
    assert votes_dtype(257) == np.uint16 and votes_dtype(1000) == np.uint16
    labels = some_labels(classes=10)
    VotesStore(tmp_path / "c10", SETTING, num_classes=10).write(0, labels, 0)
    assert VotesStore(tmp_path / "c10", SETTING).read(0).labels.dtype == np.uint8
    imagenet = VotesStore(tmp_path / "in", SETTING, num_classes=1000)
    imagenet.write(0, labels, 0)  # small labels, but 1000 classes: uint16
    assert imagenet.read(0).labels.dtype == np.uint16
    imagenet.write(1, np.full((4, 2), 999), 999)
    np.testing.assert_array_equal(imagenet.read(1).labels, 999)
    free = VotesStore(tmp_path / "free", SETTING)  # no num_classes: the largest label decides
    free.write(0, np.full((4, 2), 255), 0)
    free.write(1, np.full((4, 2), 300), 0)
    assert free.read(0).labels.dtype == np.uint8 and free.read(1).labels.dtype == np.uint16


def test_mostly_constant_votes_are_compact(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.full((100_100, 40), 3, dtype=np.int64)  # CIFAR main setting: N0 + N = 100,100 draws x K = 40
    flips = rng.random(labels.shape) < 0.01
    labels[flips] = rng.integers(0, 10, size=int(flips.sum()))
    store = VotesStore(tmp_path, SETTING, num_classes=10)
    path = store.write(0, labels, label=3)
    assert path.stat().st_size < 1_000_000, path.stat().st_size  # raw int64 would be 32 MB, uint8 4 MB
    np.testing.assert_array_equal(store.read(0).labels, labels)
