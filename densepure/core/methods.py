"""The purification methods, and which of them are one-shot."""

from __future__ import annotations

METHODS = ("densepure", "onestep", "carlini")
ONE_SHOT_METHODS = ("onestep", "carlini")  # DensePure code's one-shot; Carlini et al.'s own code path


def is_one_shot(method: str, b: int) -> bool:
    """True when a draw is purified by one network call and gives one vote: the one-shot baselines, or DensePure
    with b = 1 (which the reference scripts run as the one-shot)."""
    return method in ONE_SHOT_METHODS or b == 1
