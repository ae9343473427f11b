"""Writing files so that a crash or a full disk never leaves a half-written one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


class WriteError(ValueError):
    """A file that cannot be written (full disk, read-only folder); the message is one line naming it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


TEMP_SUFFIX = ".tmp"


def temp_prefix(path: Path) -> str:
    """The name start of :func:`atomic_write`'s temp files for ``path``: ``.<name>.`` (hidden, never a result)."""
    return f".{path.name}."


def current_umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temp file next to ``path``, fsync it and rename it onto ``path`` with the mode a new
    file gets under the umask; the parent folders are created. A crash leaves at most a ``.<name>.*.tmp`` file,
    never a partial ``path``; concurrent writers of one path each use their own temp file. An OSError (full disk,
    read-only folder) becomes a :class:`WriteError` naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def probe_writable(directory: str | Path, probe_bytes: int = 1 << 16) -> None:
    """:class:`WriteError` naming ``directory`` unless a file of ``probe_bytes`` can be written there: a read-only
    folder or a full disk is found before any work is done. Nothing is left behind."""
    probe = Path(directory) / ".write-probe"
    atomic_write(probe, lambda f: f.write(b"\0" * probe_bytes))
    try:
        probe.unlink()
    except OSError:
        pass
