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
but ``K`` (a store grows to more votes per draw: its ``K`` is the largest written). An image being computed is
*claimed* with a lock that dies with its process, so two jobs on one store split the images between them.
"""

from __future__ import annotations

import fcntl
import functools
import json
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
        if setting_path.exists():
            found = self._read_setting_file(setting_path)
            if not same_setting(found, self.setting):
                diff = setting_difference(found, self.setting)
                raise VotesError(f"{setting_path}: directory holds votes of another setting: {diff}")
            if GROWS in self.setting and self.setting[GROWS] > found.get(GROWS, 0):
                self._write_setting(setting_path)  # the store grows to more votes per draw
            elif GROWS in found:
                self.setting[GROWS] = found[GROWS]
        else:
            self._write_setting(setting_path)

    def _write_setting(self, path: Path) -> None:
        text = json.dumps(self.setting, indent=2, sort_keys=True) + "\n"
        atomic_write_text(path, text)

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
        atomic_write(path, self._encode(path, labels, meta))
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
        labels = stored.astype(np.int32)
        if meta["format"] != FORMATS[0]:
            labels[stored == np.iinfo(stored.dtype).max] = NOT_COMPUTED
        return labels, meta

    def read(self, image_id: int) -> VoteRecord:
        """The stored votes of ``image_id``; VotesError if the file is missing, truncated/corrupt, of another
        setting or image, or of the wrong shape."""
        path = self.path(image_id)
        if not path.exists():
            raise VotesError(f"{path}: no votes stored for image {image_id}")
        labels, meta = self._load(path, image_id)
        served = meta.get("served") or {"Ks": list(range(1, labels.shape[1] + 1)), "alpha": None}
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

    def read_partial(self, image_id: int) -> tuple[np.ndarray, dict] | None:
        """``(labels, state)`` of the image's checkpoint, or None when there is none or it is unusable (a damaged or
        foreign checkpoint is only lost work: it is removed)."""
        path = self.partial_path(image_id)
        if not path.exists():
            return None
        try:
            labels, meta = self._load(path, image_id)
        except VotesError:
            path.unlink(missing_ok=True)
            return None
        return labels, meta.get("state", {})

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
