"""File names taken from users, configs and imported files: each must name a file inside the folder it belongs to."""

from __future__ import annotations

from pathlib import Path


def safe_name(name: str, what: str = "name") -> str:
    """``name`` when it is a plain file name (no folder, not empty, not hidden, no ``..``); ValueError naming
    ``what`` otherwise. Used wherever a name becomes part of a path (``--artifact``, run and image-set names)."""
    text = str(name)
    if not text.strip():
        raise ValueError(f"{what} is empty")
    if "/" in text or "\\" in text or "\0" in text or text in (".", "..") or text.startswith("."):
        raise ValueError(f"{what} {text!r} is not a plain name (no folders, no leading dot)")
    return text


def relative_path(relative: str | Path, what: str = "path", folder: str | Path = "its folder") -> Path:
    """``relative`` as a Path when it names a place below whatever folder it is joined to, read from its text alone
    (not empty nor ``.``, not absolute, no ``..`` part); ValueError naming ``what`` otherwise. Links are not followed: a
    config names files before they exist (``file`` of a model under ``checkpoints_dir``)."""
    text = str(relative)
    path = Path(text)
    if not text.strip() or "\0" in text or not path.parts or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} {text!r} must be a relative path inside {folder}")
    return path


def inside(folder: str | Path, relative: str | Path, what: str = "path") -> Path:
    """``folder / relative``, refused (ValueError naming ``what``) when it would lie outside ``folder`` (an absolute
    path, ``..`` parts, a link out of it) or is empty."""
    folder = Path(folder)
    relative = relative_path(relative, what, folder)
    target = folder / relative
    if not target.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{what} {str(relative)!r} leads outside {folder}")
    return target
