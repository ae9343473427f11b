"""The votes store: for each certified image the [N0 + N, K] labels of its K purified votes per noisy draw.

Votes are the expensive artifact (K reverse diffusion runs per draw); certification for any K' <= K, alpha or
radius is cheap arithmetic on them (:mod:`densepure.core.smoothing`). One directory holds the votes of one *setting* (an
opaque JSON dict: dataset, models, sigma, b, K, N0, N, seed, precision, ...), recorded in ``setting.json``; each
image is one compressed file ``<image_id>.npz`` holding ``labels`` and a JSON ``meta`` (setting, true label, shape,
what the votes serve, why the image stopped, provenance, and non-identifying ``extra`` such as seconds and device).

A lazily computed image holds only the votes that decide its results: a vote never computed is stored as the
dtype's largest value and read back as :data:`NOT_COMPUTED` (-1). ``meta["served"]`` records the vote counts
``Ks`` (and the ``alpha``) at which every result of the image is exact, ``meta["stop"]`` why its draws stopped
(``complete``, ``hopeless``, ``abstain``). Files of format 1 (every vote computed) read as serving every K.

Guarantees: a file appears under its final name only complete (temp file in the same directory, fsync, atomic
``os.replace``; files follow the umask); reading a truncated, corrupt, misplaced or foreign-setting file raises
:class:`VotesError`; a store refuses a directory whose ``setting.json`` differs from its own setting in anything
but ``K`` (a store grows to more votes per draw). An image being computed is *claimed* with a lock that dies with
its process, so two jobs on one store split the images between them.

Growing: ``setting.json`` is written when the store is created; its ``K`` is the largest number of votes per draw of
an image written, and rises just before the first image with more is written (under a lock, re-read first), never
when a job merely opens the store. So a job that fails before writing an image leaves ``setting.json`` as it was,
jobs at different K on one store (at the same time or not) each raise it to what they wrote, and ``setting.json``
never says less than any image holds (a reader may trust it to bound every file). Every file written also records
the store's setting with the K its writer knew (not part of the identity).

A checkpoint (``<id>.partial.npz``) that is damaged, foreign, or holds labels, Ks or an alpha that no job could
have written is lost work: :meth:`VotesStore.read_partial` removes it. One beside a finished image that serves
everything the checkpoint aimed at is stale (a job killed between writing the image and removing its checkpoint):
:meth:`VotesStore.remove_stale_partials` removes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densepure.core.smoothing import NOT_COMPUTED
from densepure.files.atomic import atomic_write, atomic_write_text, current_umask

FORMAT = "densepure-votes/2"
FORMATS = ("densepure-votes/1", FORMAT)
SETTING_FILE = "setting.json"
STOPS = ("complete", "hopeless", "abstain")
GROWS = "K"  # the setting key a store may grow in
_NAME = re.compile(r"^(0|[1-9][0-9]*)\.npz$")
_TEMP = re.compile(r"^\.(0|[1-9][0-9]*)\.(?:partial\.)?npz\..*\.tmp$")
_PARTIAL = re.compile(r"^(0|[1-9][0-9]*)\.partial\.npz$")
_SETTING_LOCK = ".setting.lock"


class VotesError(ValueError):
    """A votes file or directory that cannot be used; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class VoteRecord:
    """The stored votes of one image: ``labels`` [N0 + N, K] (int32, :data:`NOT_COMPUTED` where never computed), its
    true ``label``, the ``setting`` it was computed under, the ``served`` Ks and alpha, why it ``stop``-ped, its
    ``provenance`` (package version and git commit) and the non-identifying ``extra`` info."""

    labels: np.ndarray
    label: int
    setting: dict
    extra: dict
    served: dict
    stop: str = "complete"
    provenance: dict | None = None


def votes_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned dtype holding labels in [0, num_classes) and the not-computed marker (its largest value):
    uint8 up to 255 classes, else uint16."""
    if not 1 <= num_classes < 1 << 16:
        raise ValueError(f"num_classes must be in [1, 65535], got {num_classes}")
    return np.dtype(np.uint8) if num_classes < 256 else np.dtype(np.uint16)


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """The package version and, where the package runs from a git checkout, its commit (``+dirty`` when modified)."""
    from densepure import __version__

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty=+dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": __version__, "commit": commit}


def _canonical(value: dict, what: str = "setting") -> dict:
    """``value`` as it reads back from JSON (tuples -> lists, keys as strings); VotesError if not serialisable."""
    if not isinstance(value, dict):
        raise VotesError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.loads(json.dumps(value, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise VotesError(f"{what} is not JSON-serialisable: {exc}") from None


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def setting_difference(found: dict, expected: dict, limit: int = 3) -> str:
    """Text naming the first ``limit`` differing (dotted) keys with both values, '' when equal."""
    a, b = _flatten(found), _flatten(expected)
    missing = object()
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))
    parts = []
    for key in keys[:limit]:
        got = json.dumps(a[key]) if key in a else "<missing>"
        want = json.dumps(b[key]) if key in b else "<missing>"
        parts.append(f"{key}: file has {got}, store has {want}")
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "; ".join(parts) + more


def same_setting(a: dict, b: dict) -> bool:
    """Equal but for the :data:`GROWS` key."""
    return {**a, GROWS: None} == {**b, GROWS: None}


def serves(served: dict, Ks, alpha: float | None) -> bool:
    """Whether votes serving ``served`` (``{"Ks": [...], "alpha": a}``) give exact results at every K' of ``Ks`` at
    ``alpha`` (None: whatever alpha the served one allows)."""
    largest = served.get("alpha")
    return set(Ks) <= set(served["Ks"]) and (largest is None or alpha is None or alpha <= largest)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _served_problem(served, columns: int) -> str | None:
    """What is wrong with a ``served`` record of votes with ``columns`` votes per draw (None: nothing)."""
    if not isinstance(served, dict):
        return f"served must be a dict, got {served!r}"
    Ks, alpha = served.get("Ks"), served.get("alpha")
    if not isinstance(Ks, list) or not Ks or not all(_is_int(k) and 1 <= k <= columns for k in Ks):
        return f"served Ks must be vote counts in [1, {columns}], got {Ks!r}"
    if alpha is not None and not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
                                  and math.isfinite(alpha) and 0 < alpha < 1):
        return f"served alpha must be None or in (0, 1), got {alpha!r}"
    return None


class Claim:
    """A held image lock (:meth:`VotesStore.claim`); :meth:`release` after the image's file is written."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


class VotesStore:
    """Votes of one setting in one directory, one ``<image_id>.npz`` per image (image ids: non-negative ints).

    ``num_classes`` (optional) fixes the stored dtype and checks labels lie in [0, num_classes); without it the dtype
    follows the largest label. ``rows`` (optional) is the expected N0 + N, checked on write and read.
    """

    def __init__(self, directory: str | os.PathLike, setting: dict, *, num_classes: int | None = None,
                 rows: int | None = None):
        self.directory = Path(directory)
        self.setting = _canonical(setting)
        self.num_classes = num_classes
        self.rows = rows
        if num_classes is not None:
            votes_dtype(num_classes)
        if self.directory.exists() and not self.directory.is_dir():
            raise VotesError(f"{self.directory} is a file, not a votes store directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VotesError(f"cannot create votes store {self.directory}: {exc.strerror or exc}") from None
        setting_path = self.directory / SETTING_FILE
        if not setting_path.exists():
            with self._setting_lock():
                if not setting_path.exists():  # a job starting beside this one may have created it meanwhile
                    self._write_setting(setting_path, self.setting)
        found = self._check_setting_file(setting_path)
        #: K recorded in setting.json (as last read or written): an image with more votes per draw raises it first
        self.recorded_K = found.get(GROWS)
        if GROWS in self.setting and GROWS in found:
            self.setting[GROWS] = max(self.setting[GROWS], found[GROWS])  # the K of this store's files

    def _check_setting_file(self, path: Path) -> dict:
        found = self._read_setting_file(path)
        if not same_setting(found, self.setting):
            diff = setting_difference(found, self.setting)
            raise VotesError(f"{path}: directory holds votes of another setting: {diff}")
        if GROWS in found and not (_is_int(found[GROWS]) and found[GROWS] >= 1):
            raise VotesError(f"{path}: {GROWS} must be a positive int, got {found[GROWS]!r}")
        return found

    @staticmethod
    def _write_setting(path: Path, setting: dict) -> None:
        text = json.dumps(setting, indent=2, sort_keys=True) + "\n"
        atomic_write_text(path, text)

    @contextlib.contextmanager
    def _setting_lock(self):
        """Hold the store's setting lock (an flock on ``.setting.lock``, removed after): the read and write of
        ``setting.json`` by jobs on one store are serialised. A holder that finds the lock file replaced under it
        (a previous holder removed it) takes the new one."""
        path = self.directory / _SETTING_LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
            except OSError as exc:
                raise VotesError(f"cannot write in {self.directory}: {exc.strerror or exc}") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            os.close(fd)

    def grow(self, K: int) -> None:
        """Allow this store object to write images of up to ``K`` votes per draw (``setting.json`` rises when the
        first such image is written, :meth:`write`)."""
        if GROWS in self.setting and K > self.setting[GROWS]:
            self.setting[GROWS] = int(K)

    def _record_K(self, K: int) -> None:
        """Raise ``setting.json``'s K to ``K`` unless it says as much already (re-read under the lock)."""
        if GROWS not in self.setting or (self.recorded_K is not None and K <= self.recorded_K):
            return
        path = self.directory / SETTING_FILE
        with self._setting_lock():
            found = self._check_setting_file(path)
            if found.get(GROWS, 0) < K:
                found = {**found, GROWS: int(K)}
                self._write_setting(path, found)
            self.recorded_K = found[GROWS]

    @classmethod
    def open(cls, directory: str | os.PathLike, **kwargs) -> VotesStore:
        """The existing store in ``directory``, with the setting recorded in its ``setting.json``."""
        path = Path(directory) / SETTING_FILE
        if not path.exists():
            raise VotesError(f"{path}: no such file; {directory} is not a votes store")
        return cls(directory, cls._read_setting_file(path), **kwargs)

    @staticmethod
    def _read_setting_file(path: Path) -> dict:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise VotesError(f"{path}: unreadable or corrupt setting file ({exc})") from None
        if not isinstance(found, dict):
            raise VotesError(f"{path}: setting file does not hold a JSON object")
        return found

    def path(self, image_id: int) -> Path:
        """Final file name of an image's votes."""
        if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) or image_id < 0:
            raise VotesError(f"image id must be a non-negative int, got {image_id!r}")
        return self.directory / f"{int(image_id)}.npz"

    def partial_path(self, image_id: int) -> Path:
        """Checkpoint of an image in progress: a name no reader takes for a finished image."""
        return self.directory / f"{int(image_id)}.partial.npz"

    def _stored_dtype(self, labels: np.ndarray, file: Path) -> np.dtype:
        computed = labels[labels != NOT_COMPUTED]
        if computed.size and computed.min() < 0:
            raise VotesError(f"{file}: labels must be non-negative (or {NOT_COMPUTED}: not computed), "
                             f"got {computed.min()}")
        top = int(computed.max()) + 1 if computed.size else 1
        if self.num_classes is not None:
            if top > self.num_classes:
                raise VotesError(f"{file}: label {top - 1} out of range for {self.num_classes} classes")
            return votes_dtype(self.num_classes)
        if top >= 1 << 16:
            raise VotesError(f"{file}: label {top - 1} does not fit uint16")
        return votes_dtype(top)

    def _encode(self, path: Path, labels: np.ndarray, meta: dict):
        labels = np.asarray(labels)
        if labels.ndim != 2 or 0 in labels.shape or not np.issubdtype(labels.dtype, np.integer):
            raise VotesError(
                f"{path}: labels must be a non-empty 2-D int array [N0 + N, K], got {labels.dtype} {labels.shape}")
        if self.rows is not None and labels.shape[0] != self.rows:
            raise VotesError(f"{path}: labels have {labels.shape[0]} rows, store expects N0 + N = {self.rows}")
        if GROWS in self.setting and labels.shape[1] > self.setting[GROWS]:
            raise VotesError(f"{path}: labels have {labels.shape[1]} votes per draw, store K is {self.setting[GROWS]}")
        dtype = self._stored_dtype(labels, path)
        stored = np.where(labels == NOT_COMPUTED, np.iinfo(dtype).max, labels).astype(dtype)
        meta = {"format": FORMAT, "shape": list(stored.shape), "dtype": dtype.name, "setting": self.setting, **meta}
        meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        return lambda f: np.savez_compressed(f, labels=stored, meta=meta_bytes)

    def write(self, image_id: int, labels: np.ndarray, label: int, extra: dict | None = None, *,
              served: dict | None = None, stop: str = "complete") -> Path:
        """Store the votes ``labels`` [N0 + N, K] of image ``image_id`` (true class ``label``) atomically, replacing
        any previous file and removing its checkpoint. ``served`` = ``{"Ks": [...], "alpha": a}``: the vote counts
        (and the largest alpha, None for any) at which the image's results are exact; default every K with all
        votes computed. ``extra`` is kept but is not part of the identity. Returns the file path."""
        path = self.path(image_id)
        if stop not in STOPS:
            raise VotesError(f"{path}: stop must be one of {', '.join(STOPS)}, got {stop!r}")
        labels = np.asarray(labels)
        if served is None and labels.ndim == 2:
            if (labels == NOT_COMPUTED).any():
                raise VotesError(f"{path}: votes with uncomputed entries need the Ks they serve")
            served = {"Ks": list(range(1, labels.shape[1] + 1)), "alpha": None}
        meta = {"image_id": int(image_id), "label": int(label), "served": _canonical(served or {}, "served"),
                "stop": stop, "provenance": provenance(), "extra": _canonical(dict(extra or {}), "extra")}
        encoded = self._encode(path, labels, meta)
        self._record_K(labels.shape[1])  # before the image: setting.json never says less than a file holds
        atomic_write(path, encoded)
        self.partial_path(image_id).unlink(missing_ok=True)
        return path

    def _load(self, path: Path, image_id: int) -> tuple[np.ndarray, dict]:
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = data["labels"]
                meta = json.loads(data["meta"].tobytes().decode())
        except Exception as exc:  # BadZipFile, EOFError, zlib.error, KeyError, ValueError, ... from a damaged file
            raise VotesError(f"{path}: truncated or corrupt votes file ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
            raise VotesError(f"{path}: not a densepure votes file")
        found = meta.get("setting") if isinstance(meta.get("setting"), dict) else {}
        if not same_setting(found, self.setting):
            raise VotesError(f"{path}: votes of another setting: {setting_difference(found, self.setting)}")
        if meta.get("image_id") != int(image_id):
            raise VotesError(f"{path}: holds image {meta.get('image_id')}, not {image_id}")
        if stored.ndim != 2 or list(stored.shape) != meta.get("shape"):
            raise VotesError(f"{path}: labels have shape {stored.shape}, file metadata says {meta.get('shape')}")
        if self.rows is not None and stored.shape[0] != self.rows:
            raise VotesError(f"{path}: labels have {stored.shape[0]} rows, store expects N0 + N = {self.rows}")
        if 0 in stored.shape or not np.issubdtype(stored.dtype, np.unsignedinteger):
            raise VotesError(f"{path}: labels must be a non-empty unsigned int array, got {stored.dtype} "
                             f"{stored.shape}")
        labels = stored.astype(np.int32)
        if meta["format"] != FORMATS[0]:
            labels[stored == np.iinfo(stored.dtype).max] = NOT_COMPUTED
        computed = labels >= 0
        if self.num_classes is not None and meta["format"] != FORMATS[0] and (labels >= self.num_classes).any():
            raise VotesError(f"{path}: label {int(labels.max())} out of range for {self.num_classes} classes")
        if not (computed[:, 1:] <= computed[:, :-1]).all():
            row = int(np.argmax((computed[:, 1:] > computed[:, :-1]).any(axis=1)))
            raise VotesError(f"{path}: draw {row} has a vote after a missing one (votes are computed in seed order)")
        label = meta.get("label")
        if not _is_int(label) or label < 0 or (self.num_classes is not None and label >= self.num_classes):
            raise VotesError(f"{path}: true label {label!r} out of range")
        return labels, meta

    def read(self, image_id: int) -> VoteRecord:
        """The stored votes of ``image_id``; VotesError if the file is missing, truncated/corrupt, of another
        setting or image, or of the wrong shape."""
        path = self.path(image_id)
        if not path.exists():
            raise VotesError(f"{path}: no votes stored for image {image_id}")
        labels, meta = self._load(path, image_id)
        served = meta.get("served") or {"Ks": list(range(1, labels.shape[1] + 1)), "alpha": None}
        problem = _served_problem(served, labels.shape[1])
        if problem is None and meta.get("stop", "complete") not in STOPS:
            problem = f"stop must be one of {', '.join(STOPS)}, got {meta.get('stop')!r}"
        if problem is not None:
            raise VotesError(f"{path}: {problem}")
        return VoteRecord(labels=labels, label=int(meta["label"]), setting=meta["setting"],
                          extra=meta.get("extra", {}), served=served, stop=meta.get("stop", "complete"),
                          provenance=meta.get("provenance"))

    def has(self, image_id: int) -> bool:
        """True only when a complete, valid votes file of this setting is stored for ``image_id``."""
        try:
            self.read(image_id)
        except VotesError:
            return False
        return True

    def check_foreign(self, ids: list[int]) -> None:
        """VotesError naming the first file of ``ids`` that exists but is not valid votes of this setting (a file
        of another store or damaged): never silently overwritten."""
        for i in ids:
            if self.path(i).exists():
                self.read(i)

    def write_partial(self, image_id: int, labels: np.ndarray, label: int, state: dict) -> Path:
        """Checkpoint the votes computed so far of an image in progress (atomically); ``state`` is what resuming
        needs besides the labels (JSON)."""
        path = self.partial_path(image_id)
        meta = {"image_id": int(image_id), "label": int(label), "state": _canonical(state, "state"),
                "provenance": provenance()}
        atomic_write(path, self._encode(path, labels, meta))
        return path

    def read_partial(self, image_id: int, label: int | None = None) -> tuple[np.ndarray, dict] | None:
        """``(labels, state)`` of the image's checkpoint, or None when there is none or it is unusable: damaged,
        foreign, of another true label than ``label`` (when given), or holding a state no job writes (Ks outside
        [1, its votes per draw], an alpha outside (0, 1)). An unusable checkpoint is only lost work: it is
        removed. ``state`` is ``{"Ks": [...], "alpha": a}``."""
        path = self.partial_path(image_id)
        if not path.exists():
            return None
        try:
            labels, meta = self._load(path, image_id)
            state = meta.get("state")
            if not isinstance(state, dict):
                raise VotesError(f"{path}: no state")
            problem = _served_problem(state, labels.shape[1])
            if problem is None and state.get("alpha") is None:
                problem = "no alpha"
            if problem is None and label is not None and meta["label"] != int(label):
                problem = f"true label {meta['label']}, not {label}"
            if problem is not None:
                raise VotesError(f"{path}: {problem}")
        except VotesError:
            path.unlink(missing_ok=True)
            return None
        return labels, {"Ks": sorted(set(state["Ks"])), "alpha": float(state["alpha"])}

    def remove_partial(self, image_id: int) -> None:
        """Remove the image's checkpoint (hold its claim)."""
        self.partial_path(image_id).unlink(missing_ok=True)

    def remove_stale_partials(self) -> None:
        """Remove every checkpoint beside a finished image that serves all the checkpoint aimed at (its Ks at its
        alpha): a job killed after writing the image and before removing the checkpoint leaves one. Images held by
        a live job, and checkpoints that aim at more (a killed job growing the image: the next job on the image
        resumes it), are left alone; unusable checkpoints are removed (:meth:`read_partial`)."""
        ids = sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := _PARTIAL.match(p.name)))
        for i in ids:
            if not self.path(i).exists():
                continue
            claim = self.claim(i)
            if claim is None:
                continue
            try:
                try:
                    record = self.read(i)
                except VotesError:
                    continue  # the finished file is reported where a job wants the image
                partial = self.read_partial(i, record.label)
                if partial is not None and serves(record.served, partial[1]["Ks"], partial[1]["alpha"]):
                    self.remove_partial(i)
            finally:
                claim.release()

    def claim(self, image_id: int, wait: bool = False) -> Claim | None:
        """The lock of image ``image_id`` while this process computes it, or None when another live process holds
        it (``wait=False``; ``wait=True`` blocks until it is free). The lock is an flock on ``.<id>.lock``: the kernel
        drops it when its holder dies, so a killed job never leaves an image claimed. Taking it also removes the
        image's orphan temp files (no live writer owns them). Re-check :meth:`has` after taking it."""
        lock_path = self.directory / f".{int(image_id)}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        except OSError as exc:
            raise VotesError(f"cannot write in {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        self._remove_orphans(image_id)
        return Claim(fd, lock_path)

    def _remove_orphans(self, image_id: int) -> None:
        for p in self.directory.glob(f".{int(image_id)}.*npz.*.tmp"):
            p.unlink(missing_ok=True)

    def orphan_temp_ids(self) -> list[int]:
        """Image ids with temp files left in the directory (a killed write leaves one)."""
        return sorted({int(m.group(1)) for p in self.directory.iterdir() if (m := _TEMP.match(p.name))})

    def remove_orphan_temps(self) -> None:
        """Remove the temp files of every image that no live process is writing."""
        for i in self.orphan_temp_ids():
            claim = self.claim(i)
            if claim is not None:
                claim.release()

    def stored_ids(self) -> list[int]:
        """Ids with a file under its final name (not validated), ascending; temp files are ignored."""
        names = (m.group(1) for p in self.directory.iterdir() if (m := _NAME.match(p.name)) and p.is_file())
        return sorted(int(n) for n in names)

    def completed_ids(self) -> list[int]:
        """Ids whose file is complete and valid for this setting (each file is read and checked), ascending."""
        return [i for i in self.stored_ids() if self.has(i)]
