"""The votes store: round trip, atomic writes, detection of damaged or foreign files, compact storage."""

import json
import os

import numpy as np
import pytest

import densepure.job.votes as votes_module
from densepure.job.votes import NOT_COMPUTED, VoteRecord, VotesError, VotesStore, votes_dtype

SETTING = {"dataset": "cifar10", "classifier": "vit", "sigma": 0.25, "b": 10, "K": 4, "N0": 10, "N": 40, "seed": 0,
           "precision": "fp32", "extra": {"note": "test"}}


def some_labels(rows=50, k=4, classes=10, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=(rows, k))


def test_round_trip(tmp_path):
    store = VotesStore(tmp_path / "v", SETTING, num_classes=10, rows=50)
    labels = some_labels()
    path = store.write(20, labels, label=3, extra={"seconds": 1.5, "device": "cpu"})
    assert path == tmp_path / "v" / "20.npz" and path.exists()
    record = store.read(20)
    assert isinstance(record, VoteRecord)
    np.testing.assert_array_equal(record.labels, labels)
    assert stored_dtype(path) == np.uint8
    assert record.served == {"Ks": [1, 2, 3, 4], "alpha": None} and record.stop == "complete"
    assert record.provenance["version"]
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
    store = VotesStore(tmp_path, SETTING, rows=50)
    with pytest.raises(VotesError, match="rows"):
        store.write(0, some_labels(rows=49), label=0)
    with pytest.raises(VotesError, match="shape"):
        store.write(0, np.zeros(200, int), label=0)
    with pytest.raises(VotesError, match="store K is 4"):
        store.write(0, some_labels(k=5), label=0)
    VotesStore(tmp_path, SETTING).write(1, some_labels(rows=60), label=0)  # written without a rows check
    with pytest.raises(VotesError, match="rows"):
        store.read(1)
    assert not store.has(1)


def test_bad_labels_and_ids_are_rejected(tmp_path):
    store = VotesStore(tmp_path, SETTING, num_classes=10)
    with pytest.raises(VotesError, match="out of range"):
        store.write(0, np.full((3, 2), 10), label=0)
    with pytest.raises(VotesError, match="non-negative"):
        store.write(0, np.full((3, 2), -2), label=0)
    with pytest.raises(VotesError, match="serve"):
        store.write(0, np.full((3, 2), -1), label=0)  # votes not computed: the Ks they serve must be given
    with pytest.raises(VotesError):
        store.write(0, np.zeros((3, 2)), label=0)  # float labels
    for bad in (-1, "3", 1.0, True):
        with pytest.raises(VotesError):
            store.path(bad)
    with pytest.raises(VotesError, match="no votes stored"):
        store.read(3)


def stored_dtype(path) -> np.dtype:
    with np.load(path) as data:
        return data["labels"].dtype


def test_dtype_follows_num_classes(tmp_path):
    """The smallest dtype that holds every class and the not-computed marker (its largest value)."""
    assert votes_dtype(10) == np.uint8 and votes_dtype(255) == np.uint8
    assert votes_dtype(256) == np.uint16 and votes_dtype(1000) == np.uint16
    labels = some_labels(classes=10)
    c10 = VotesStore(tmp_path / "c10", SETTING, num_classes=10)
    assert stored_dtype(c10.write(0, labels, 0)) == np.uint8
    imagenet = VotesStore(tmp_path / "in", SETTING, num_classes=1000)
    assert stored_dtype(imagenet.write(0, labels, 0)) == np.uint16  # small labels, but 1000 classes
    imagenet.write(1, np.full((4, 2), 999), 999)
    np.testing.assert_array_equal(imagenet.read(1).labels, 999)
    free = VotesStore(tmp_path / "free", SETTING)  # no num_classes: the largest label decides
    assert stored_dtype(free.write(0, np.full((4, 2), 254), 0)) == np.uint8
    assert stored_dtype(free.write(1, np.full((4, 2), 255), 0)) == np.uint16
    np.testing.assert_array_equal(free.read(1).labels, 255)


def test_votes_not_computed_round_trip(tmp_path):
    """A lazily computed image: missing votes read back as NOT_COMPUTED; what it serves and why it stopped are
    kept."""
    store = VotesStore(tmp_path, SETTING, num_classes=10)
    labels = some_labels()
    labels[5:, 2:] = NOT_COMPUTED
    labels[40:] = NOT_COMPUTED
    store.write(3, labels, 1, served={"Ks": [1, 2], "alpha": 0.001}, stop="abstain")
    record = store.read(3)
    np.testing.assert_array_equal(record.labels, labels)
    assert record.served == {"Ks": [1, 2], "alpha": 0.001} and record.stop == "abstain"
    with pytest.raises(VotesError, match="stop"):
        store.write(4, labels, 1, served={"Ks": [1]}, stop="tired")


def test_format_1_files_read_as_serving_every_K(tmp_path):
    """A store written before votes could be missing (format 1) reads as all computed, every K served."""
    store = VotesStore(tmp_path, SETTING, num_classes=10)
    labels = some_labels()
    meta = {"format": "densepure-votes/1", "image_id": 2, "label": 1, "shape": [50, 4], "dtype": "uint8",
            "setting": SETTING, "extra": {}}
    with open(store.path(2), "wb") as f:
        np.savez_compressed(f, labels=np.full((50, 4), 255, np.uint8),
                            meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    record = store.read(2)
    assert (record.labels == 255).all() and record.served["Ks"] == [1, 2, 3, 4] and record.stop == "complete"
    del labels


def test_store_grows_in_K_only(tmp_path):
    VotesStore(tmp_path, SETTING).write(0, some_labels(), 1)
    grown = VotesStore(tmp_path, {**SETTING, "K": 8})
    # opening at a larger K changes nothing on disk: setting.json rises with the first image of more votes
    assert grown.setting["K"] == 8 and VotesStore.open(tmp_path).setting["K"] == 4
    assert grown.read(0).labels.shape == (50, 4)  # images keep the votes they hold
    grown.write(1, some_labels(k=8), 1)
    assert VotesStore.open(tmp_path).setting["K"] == 8
    assert VotesStore(tmp_path, SETTING).setting["K"] == 8  # a smaller K reads the grown store
    VotesStore(tmp_path, {**SETTING, "K": 6}).write(2, some_labels(k=6), 1)
    assert VotesStore.open(tmp_path).setting["K"] == 8  # never lowered
    assert not list(tmp_path.glob(".*"))  # no lock file left


def test_mostly_constant_votes_are_compact(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.full((100_100, 40), 3, dtype=np.int64)  # CIFAR main setting: N0 + N = 100,100 draws x K = 40
    flips = rng.random(labels.shape) < 0.01
    labels[flips] = rng.integers(0, 10, size=int(flips.sum()))
    store = VotesStore(tmp_path, {**SETTING, "K": 40}, num_classes=10)
    path = store.write(0, labels, label=3)
    assert path.stat().st_size < 1_000_000, path.stat().st_size  # raw int64 would be 32 MB, uint8 4 MB
    np.testing.assert_array_equal(store.read(0).labels, labels)


def test_unusable_checkpoints_are_dropped_and_stale_ones_swept(tmp_path):
    """A checkpoint no job writes (Ks beyond its votes, no alpha, another true label) is dropped as lost work; one
    beside a finished image that serves all it aimed at is stale and swept; one that aims at more is kept."""
    store = VotesStore(tmp_path, SETTING, num_classes=10, rows=50)
    labels = some_labels()
    for state in ({"Ks": [5], "alpha": 0.01}, {"Ks": [0, 2], "alpha": 0.01}, {"Ks": [2]}, {"Ks": [2], "alpha": 1.5}):
        store.write_partial(0, labels, 1, state)
        assert store.read_partial(0) is None and not store.partial_path(0).exists(), state
    store.write_partial(0, labels, 1, {"Ks": [2, 4], "alpha": 0.01})
    assert store.read_partial(0, label=2) is None and not store.partial_path(0).exists()
    store.write(1, labels, 1, served={"Ks": [4], "alpha": None})
    store.write(2, labels, 1, served={"Ks": [4], "alpha": None})
    store.write_partial(1, labels, 1, {"Ks": [4], "alpha": 0.01})  # left by a kill after the image was written
    store.write_partial(2, labels, 1, {"Ks": [2, 4], "alpha": 0.01})  # a killed job growing image 2
    store.remove_stale_partials()
    assert not store.partial_path(1).exists() and store.partial_path(2).exists()
    assert store.read_partial(2, label=1)[1] == {"Ks": [2, 4], "alpha": 0.01}
    assert not list(tmp_path.glob(".*"))


def test_a_finished_file_that_no_job_writes_is_an_error_naming_it(tmp_path):
    store = VotesStore(tmp_path, SETTING, num_classes=10, rows=50)
    store.write(3, some_labels(), 1, served={"Ks": [7], "alpha": None})  # 4 votes per draw cannot serve K' = 7
    with pytest.raises(VotesError, match=r"3\.npz: served Ks must be vote counts in \[1, 4\]"):
        store.read(3)
    labels = some_labels()
    labels[0, 0], labels[0, 1:] = NOT_COMPUTED, 1
    store.write(4, labels, 1, served={"Ks": [4], "alpha": None})
    with pytest.raises(VotesError, match=r"4\.npz: draw 0 has a vote after a missing one"):
        store.read(4)
