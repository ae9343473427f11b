"""What a figure shows around its curves: whether the 95% bands are drawn, how far the radius axis goes, how a curve
that is 0% everywhere is named, and the one legend of the figure."""

from __future__ import annotations

import itertools
import math

import pandas as pd

BANDS = ("auto", "on", "off")
MAX_BANDED_CURVES = 2  # auto: bands only where a panel draws at most this many curves ...
MOST_OF_THE_RANGE = 0.5  # ... and no two of their bands overlap over more than this share of the radii
ZERO_NOTE = "(0% at every radius)"
X_MARGIN, X_STEP = 0.08, 0.05  # the radius axis ends 8% after the last nonzero value, rounded up to 0.05


def bands_mode(value) -> str:
    """``auto``, ``on`` or ``off`` from a ``--bands`` option or a spec's ``bands`` key (YAML reads on/off as
    booleans; None is ``auto``). ValueError naming the key for anything else."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text not in BANDS:
        raise ValueError(f"artifact spec key `bands`: expected one of {', '.join(BANDS)}, got {value!r}")
    return text


def overlap_share(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Share of the radii both curves reach, where either is above zero, at which their 95% intervals
    ``[ci_low, ci_high]`` intersect (0 when there is no such radius)."""
    both = a[["radius", "ci_low", "ci_high", "certified_accuracy"]].merge(
        b[["radius", "ci_low", "ci_high", "certified_accuracy"]], on="radius", suffixes=("_a", "_b"))
    both = both[(both["certified_accuracy_a"] > 0) | (both["certified_accuracy_b"] > 0)]
    if both.empty:
        return 0.0
    meet = (both["ci_low_a"] <= both["ci_high_b"]) & (both["ci_low_b"] <= both["ci_high_a"])
    return float(meet.mean())


def show_bands(curves: list[pd.DataFrame], mode: str = "auto") -> bool:
    """Whether a panel draws the 95% bands of its curves: ``on``/``off`` as given; ``auto`` draws them where the
    panel has at most :data:`MAX_BANDED_CURVES` curves and no two bands overlap over more than
    :data:`MOST_OF_THE_RANGE` of the radii (where they would hide each other)."""
    mode = bands_mode(mode)
    if mode != "auto":
        return mode == "on"
    if len(curves) > MAX_BANDED_CURVES:
        return False
    return all(overlap_share(a, b) <= MOST_OF_THE_RANGE for a, b in itertools.combinations(curves, 2))


def is_zero(curve: pd.DataFrame) -> bool:
    """A curve that certifies nothing at any radius it shows: drawn on the axis, so its legend entry says so."""
    return bool(len(curve)) and bool((curve["certified_accuracy"] == 0).all())


def zero_label(label: str) -> str:
    return f"{label} {ZERO_NOTE}"


def x_limit(curves: list[pd.DataFrame], max_radius: float, extra: list[float] = ()) -> float:
    """Right end of the radius axis: the last radius with a nonzero value of any curve (or of ``extra`` points such
    as the paper's), plus :data:`X_MARGIN` of it rounded up to a multiple of :data:`X_STEP`; never beyond
    ``max_radius``, and ``max_radius`` when nothing is above zero."""
    ends = [float(c.loc[c["certified_accuracy"] > 0, "radius"].max()) for c in curves
            if (c["certified_accuracy"] > 0).any()] + [float(r) for r in extra]
    if not ends:
        return float(max_radius)
    last = max(ends)
    end = math.ceil(round(last * (1 + X_MARGIN) / X_STEP, 9)) * X_STEP
    return float(min(max_radius, max(end, last + X_STEP / 2)))


def legend_columns(n: int, width: float) -> int:
    """Columns of a figure's legend under its panels: as many as about 2.4 inches each allow, at most ``n``."""
    return max(1, min(n, int(width // 2.4)))


def shared_legend(fig, entries: list[tuple], handles) -> None:
    """One legend for the whole figure, under its panels: ``entries`` of every panel, each label once (the first
    style given for it)."""
    seen, ordered = set(), []
    for entry in entries:
        if entry[0] not in seen:
            seen.add(entry[0])
            ordered.append(entry)
    if not ordered:
        return
    width = fig.get_size_inches()[0]
    fig.legend(handles=handles(ordered), loc="outside lower center", ncol=legend_columns(len(ordered), width),
               frameon=False)

