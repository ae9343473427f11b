"""Argument types and output checks shared by the commands: one-line errors before any work."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def _number(text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def integer(text: str) -> int:
    return _number(text, int)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def alpha(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def alpha_or_word(text: str) -> float | str:
    """A failure probability in (0, 1), or ``infer`` / ``unknown`` (an imported log's setting)."""
    return text if text in ("infer", "unknown") else alpha(text)


def count_or_unknown(text: str) -> int | str:
    """A number of draws >= 1, or ``unknown`` (an imported log's setting)."""
    return text if text == "unknown" else positive_int(text)


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else the nearest folder above it that does (the current folder at worst)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def check_output_path(path: Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, an output ``path`` that cannot be written: a file where a folder is needed (or the
    other way round), a file on the way to it, or a nearest existing folder that is not writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        found, wanted = ("file", "folder") if folder else ("folder", "file")
        raise ValueError(f"{option} {path} is a {found}; expected a {wanted}")
    existing = nearest_existing(path if folder else path.parent)
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable")


DEFAULT_CONFIG = "config/config.yaml"


def config_option(parser: argparse.ArgumentParser, what: str = "workflow config") -> None:
    """``--configfile`` (default :data:`DEFAULT_CONFIG`); ``what`` says what the command reads from it."""
    parser.add_argument("--configfile", default=DEFAULT_CONFIG,
                        help=f"{what}; config/config.yaml and config/paper.yaml (or: default, paper) are found in the "
                             f"installed package when not in the current folder [{DEFAULT_CONFIG}]")
