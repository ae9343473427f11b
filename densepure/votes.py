"""The votes store: for each certified image the [N0 + N, K] labels of its K purified votes per noisy draw.

Votes are the expensive artifact (K reverse diffusion runs per draw); certification for any K' <= K, alpha or
radius is cheap arithmetic on them (:mod:`densepure.smoothing`). One directory holds the votes of one *setting* (an
opaque JSON dict: dataset, models, sigma, b, K, N0, N, seed, precision, ...), recorded in ``setting.json``; each
image is one compressed file ``<image_id>.npz`` holding ``labels`` (uint8 when there are <= 256 classes, else uint16)
and a JSON ``meta`` (setting, true label, shape, and non-identifying ``extra`` such as seconds and device).

Guarantees: a file appears under its final name only complete (temp file in the same directory, fsync, atomic
``os.replace``); reading a truncated, corrupt, misplaced or foreign-setting file raises :class:`VotesError`; a store
refuses a directory whose ``setting.json`` differs from its own setting.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "densepure-votes/1"
SETTING_FILE = "setting.json"
_NAME = re.compile(r"^(0|[1-9][0-9]*)\.npz$")


class VotesError(ValueError):
    """A votes file or directory that cannot be used; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class VoteRecord:
    """The stored votes of one image: ``labels`` [N0 + N, K], its true ``label``, the ``setting`` it was computed
    under and the non-identifying ``extra`` info."""

    labels: np.ndarray
    label: int
    setting: dict
    extra: dict


def votes_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned dtype for labels in [0, num_classes): uint8 up to 256 classes, else uint16."""
    if not 1 <= num_classes <= 1 << 16:
        raise ValueError(f"num_classes must be in [1, 65536], got {num_classes}")
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.uint16)


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


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync it and rename it to ``path``. A crash leaves at most
    a ``.<name>.tmp*`` file, never a partial ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


class VotesStore:
    """Votes of one setting in one directory, one ``<image_id>.npz`` per image (image ids: non-negative ints).

    ``num_classes`` (optional) fixes the stored dtype and checks labels lie in [0, num_classes); without it the dtype
    follows the largest label. ``shape`` (optional) is the expected [N0 + N, K], checked on write and read.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        setting: dict,
        *,
        num_classes: int | None = None,
        shape: tuple[int, int] | None = None,
    ):
        self.directory = Path(directory)
        self.setting = _canonical(setting)
        self.num_classes = num_classes
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        if num_classes is not None:
            votes_dtype(num_classes)
        self.directory.mkdir(parents=True, exist_ok=True)
        setting_path = self.directory / SETTING_FILE
        if setting_path.exists():
            found = self._read_setting_file(setting_path)
            if found != self.setting:
                diff = setting_difference(found, self.setting)
                raise VotesError(f"{setting_path}: directory holds votes of another setting: {diff}")
        else:
            text = json.dumps(self.setting, indent=2, sort_keys=True) + "\n"
            _atomic_write(setting_path, lambda f: f.write(text.encode()))

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

    def _dtype_for(self, labels: np.ndarray, file: Path) -> np.dtype:
        if labels.size and labels.min() < 0:
            raise VotesError(f"{file}: labels must be non-negative, got {labels.min()}")
        top = int(labels.max()) + 1 if labels.size else 1
        if self.num_classes is not None:
            if top > self.num_classes:
                raise VotesError(f"{file}: label {top - 1} out of range for {self.num_classes} classes")
            return votes_dtype(self.num_classes)
        if top > 1 << 16:
            raise VotesError(f"{file}: label {top - 1} does not fit uint16")
        return votes_dtype(top)

    def write(self, image_id: int, labels: np.ndarray, label: int, extra: dict | None = None) -> Path:
        """Store the votes ``labels`` [N0 + N, K] of image ``image_id`` (true class ``label``) atomically, replacing
        any previous file; ``extra`` is kept but is not part of the identity. Returns the file path."""
        path = self.path(image_id)
        labels = np.asarray(labels)
        if labels.ndim != 2 or 0 in labels.shape or not np.issubdtype(labels.dtype, np.integer):
            raise VotesError(
                f"{path}: labels must be a non-empty 2-D int array [N0 + N, K], got {labels.dtype} {labels.shape}"
            )
        if self.shape is not None and labels.shape != self.shape:
            raise VotesError(f"{path}: labels have shape {labels.shape}, store expects {self.shape}")
        stored = labels.astype(self._dtype_for(labels, path))
        meta = {
            "format": FORMAT,
            "image_id": int(image_id),
            "label": int(label),
            "shape": list(stored.shape),
            "dtype": stored.dtype.name,
            "setting": self.setting,
            "extra": _canonical(dict(extra or {}), "extra"),
        }
        meta_bytes = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        _atomic_write(path, lambda f: np.savez_compressed(f, labels=stored, meta=meta_bytes))
        return path

    def read(self, image_id: int) -> VoteRecord:
        """The stored votes of ``image_id``; VotesError if the file is missing, truncated/corrupt, of another
        setting or image, or of the wrong shape."""
        path = self.path(image_id)
        if not path.exists():
            raise VotesError(f"{path}: no votes stored for image {image_id}")
        try:
            with np.load(path, allow_pickle=False) as data:
                labels = data["labels"]
                meta = json.loads(data["meta"].tobytes().decode())
        except Exception as exc:  # BadZipFile, EOFError, zlib.error, KeyError, ValueError, ... from a damaged file
            raise VotesError(f"{path}: truncated or corrupt votes file ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise VotesError(f"{path}: not a {FORMAT} file")
        if meta.get("setting") != self.setting:
            found = meta.get("setting") if isinstance(meta.get("setting"), dict) else {}
            raise VotesError(f"{path}: votes of another setting: {setting_difference(found, self.setting)}")
        if meta.get("image_id") != int(image_id):
            raise VotesError(f"{path}: holds image {meta.get('image_id')}, not {image_id}")
        if labels.ndim != 2 or list(labels.shape) != meta.get("shape"):
            raise VotesError(f"{path}: labels have shape {labels.shape}, file metadata says {meta.get('shape')}")
        if self.shape is not None and labels.shape != self.shape:
            raise VotesError(f"{path}: labels have shape {labels.shape}, store expects {self.shape}")
        return VoteRecord(labels=labels, label=int(meta["label"]), setting=meta["setting"], extra=meta.get("extra", {}))

    def has(self, image_id: int) -> bool:
        """True only when a complete, valid votes file of this setting is stored for ``image_id``."""
        try:
            self.read(image_id)
        except VotesError:
            return False
        return True

    def stored_ids(self) -> list[int]:
        """Ids with a file under its final name (not validated), ascending; temp files are ignored."""
        names = (m.group(1) for p in self.directory.iterdir() if (m := _NAME.match(p.name)) and p.is_file())
        return sorted(int(n) for n in names)

    def completed_ids(self) -> list[int]:
        """Ids whose file is complete and valid for this setting (each file is read and checked), ascending."""
        return [i for i in self.stored_ids() if self.has(i)]
