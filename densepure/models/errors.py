"""The models' user errors: one line each, ``ValueError`` subclasses (the command line prints them as they are)."""

from __future__ import annotations


class ClassifierError(ValueError):
    """A user-caused classifier problem (unknown name or preprocessing, a network that cannot be built)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
