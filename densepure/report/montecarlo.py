"""Monte-Carlo variation of certified results: how a rerun of the same certification on the same image can differ.

A rerun draws fresh smoothing noise and fresh reverse-process noise, so image i is certified at radius r with some
probability ``q_i(r)``; two runs on the same images differ only through these draws. We estimate ``q_i(r)`` from the
image's observed votes, with the uncertainty of that estimate (the posterior predictive of a rerun):

* The observed votes for the image's label: ``x`` of ``m`` estimation draws, where the result rows carry the vote
  counts (``nA`` of ``n`` voted for the selected class; ``n - nA`` bounds the label's share when the selected class
  is wrong). Without them (imported Cohen logs) ``nA`` is read back from the written radius (the middle of the counts
  that write it, ``m = N``); an abstention without counts gets the largest count that still abstains (the most
  uncertain abstention: this overstates the variation, never understates it). A ``hopeless`` image (its label lost
  the selection; no estimation draws) gets ``q = 0``.
* The label's vote probability p then has the Jeffreys posterior ``Beta(x + 1/2, m - x + 1/2)``; q is averaged
  over it (24 equal-probability points of its normal approximation). Plugging in ``x / m`` instead understates the
  variation of images near a radius threshold, whose rerun outcome is a coin flip the plug-in calls certain.
* Given p, selection: the label wins the N0 selection draws with probability ``P(X > N0/2) + P(X = N0/2)/2``,
  ``X ~ Bin(N0, p)`` (all other votes on one competing class: the least certain selection); estimation: the
  certificate reaches written radius r when ``nA' >= k_min(r)``, ``nA' ~ Bin(N, p)``, where ``k_min(r)`` is the
  smallest count whose Clopper-Pearson bound certifies a radius written (3 significant digits) at least r
  (:func:`min_count`).

So ``q_i(r) = E_p[P_select(p) P(Bin(N, p) >= k_min(r))]``; NaN where N or alpha is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.stats import binom, norm

from densepure.core.smoothing import format_radius, lower_confidence_bound


def _written(k: int, N: int, sigma: float, alpha: float) -> float:
    """Written radius of ``k`` votes of N for the selected class; -inf where it abstains."""
    bound = lower_confidence_bound(k, N, alpha)
    return float(format_radius(sigma * norm.ppf(bound))) if bound >= 0.5 else -np.inf


@lru_cache(maxsize=4096)
def _first_count(N: int, sigma: float, alpha: float, r: float, strict: bool) -> int:
    """Smallest k in [0, N] whose written radius is >= r (> r when ``strict``); N + 1 if none (binary search:
    the written radius grows with k)."""
    lo, hi = 0, N + 1
    while lo < hi:
        mid = (lo + hi) // 2
        w = _written(mid, N, sigma, alpha)
        if (w > r) if strict else (w >= r):
            hi = mid
        else:
            lo = mid + 1
    return lo


def min_count(r: float, N: int, sigma: float, alpha: float) -> int:
    """``k_min(r)``: the fewest estimation votes (of N) for the selected class that certify written radius >= r
    (r = 0: that do not abstain). N + 1 when r is beyond the largest certifiable radius."""
    return _first_count(int(N), float(sigma), float(alpha), float(r), False)


def count_range(radius: float, N: int, sigma: float, alpha: float) -> tuple[int, int]:
    """The counts ``[lo, hi]`` whose certificate writes exactly ``radius`` (empty, lo > hi, if none does)."""
    lo = _first_count(int(N), float(sigma), float(alpha), float(radius), False)
    hi = _first_count(int(N), float(sigma), float(alpha), float(radius), True) - 1
    return lo, hi


def label_votes(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed estimation votes for each row's label, ``x`` of ``m`` draws (NaN where they cannot be known; 0 of 0
    for ``hopeless`` rows), and how they were obtained: ``votes``, ``radius``, ``abstain-bound``, ``hopeless`` or
    ``none``. The rows are those of one setting (one sigma, N, alpha)."""
    sigma, N, alpha = (float(rows[c].iloc[0]) for c in ("sigma", "N", "alpha"))
    known = np.isfinite(N) and np.isfinite(alpha)
    predict = rows["predict"].astype("Int64").fillna(-2).to_numpy(int)
    label = rows["label"].to_numpy(int)
    hopeless = (rows["stop"].astype(str) == "hopeless").to_numpy() if "stop" in rows else np.zeros(len(rows), bool)
    nA = pd.to_numeric(rows["nA"]).to_numpy(float) if "nA" in rows else np.full(len(rows), np.nan)
    n = pd.to_numeric(rows["n"]).to_numpy(float) if "n" in rows else np.full(len(rows), np.nan)
    radius = rows["radius"].to_numpy(float)
    votes = np.isfinite(nA) & np.isfinite(n) & (n > 0) & ~hopeless
    abstain = ~votes & ~hopeless & (predict == -1) & known
    by_radius = ~votes & ~hopeless & ~abstain & np.isfinite(radius) & known
    selected, m = np.where(votes, nA, np.nan), np.where(votes, n, np.nan)
    if by_radius.any():
        written = np.array([float(format_radius(r)) for r in radius[by_radius]])
        middle = {}
        for w in np.unique(written):
            lo, hi = count_range(w, N, sigma, alpha)
            middle[w] = (lo + hi) // 2 if lo <= hi else min_count(w, N, sigma, alpha)
        selected[by_radius] = [middle[w] for w in written]
        m[by_radius] = N
    wrong = (predict != label) & (predict != -1)
    x = np.where(wrong, m - selected, selected)
    if abstain.any():
        x[abstain], m[abstain] = min_count(0.0, N, sigma, alpha) - 1, N
    x[hopeless], m[hopeless] = 0.0, 0.0
    how = np.select([hopeless, votes, abstain, by_radius], ["hopeless", "votes", "abstain-bound", "radius"], "none")
    return x, m, how


def selection_probability(p: np.ndarray, N0: float) -> np.ndarray:
    """Probability that the label wins N0 selection draws when it gets each vote with probability p and one other
    class gets the rest (ties split evenly); 1 where N0 is unknown."""
    p = np.asarray(p, dtype=float)
    if not np.isfinite(N0):
        return np.ones_like(p)
    N0 = int(N0)
    tie = binom.pmf(N0 // 2, N0, p) if N0 % 2 == 0 else 0.0
    return binom.sf(N0 // 2, N0, p) + 0.5 * tie


NODES = norm.ppf((np.arange(24) + 0.5) / 24)


def _tail(k_min: np.ndarray, N: int, mean: np.ndarray, sd: np.ndarray, p: np.ndarray) -> np.ndarray:
    """[pairs, radii]: ``E_p P(Bin(N, p) >= k)`` over the posterior points ``p`` [pairs, nodes]. Where the
    posterior lies more than 10 standard deviations (of p and of the count) from ``k / N``, the answer is 0 or 1 to
    double precision and is not computed."""
    t = k_min[None, :] / N
    z = (mean[:, None] - t) / np.sqrt(sd[:, None] ** 2 + np.maximum(t * (1 - t), 1 / N) / N)
    out = (z > 0).astype(float)
    todo = np.abs(z) < 10
    rows, cols = np.nonzero(todo)
    out[rows, cols] = binom.sf(k_min[cols][:, None] - 1, N, p[rows]).mean(axis=1)
    return out


def rerun_probabilities(rows: pd.DataFrame, radii: Sequence[float]) -> np.ndarray:
    """[images, radii]: estimated probability that a rerun certifies each image at each radius (module docstring);
    NaN where it cannot be estimated."""
    sigma, N, alpha, N0 = (float(rows[c].iloc[0]) for c in ("sigma", "N", "alpha", "N0"))
    x, m, how = label_votes(rows)
    if not (np.isfinite(N) and np.isfinite(alpha)):
        return np.full((len(rows), len(radii)), np.nan)
    known = np.isfinite(x) & (how != "hopeless")
    xs, ms = np.where(known, x, 0).astype(np.int64), np.where(known, m, 0).astype(np.int64)
    keys, index = np.unique(ms * (int(ms.max()) + 1) + xs, return_inverse=True)  # compute once per (x, m)
    pair_m, pair_x = np.divmod(keys, int(ms.max()) + 1)
    a, b = pair_x + 0.5, pair_m - pair_x + 0.5
    mean, sd = a / (a + b), np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    p = np.clip(mean[:, None] + sd[:, None] * NODES[None, :], 0.0, 1.0)  # [pairs, nodes]
    k_min = np.array([min_count(r, N, sigma, alpha) for r in radii])
    q = selection_probability(p, N0).mean(axis=1)[:, None] * _tail(k_min, int(N), mean, sd, p)
    q = q[index.ravel()]
    q[how == "hopeless"] = 0.0
    q[~np.isfinite(x)] = np.nan
    return q


def estimate_source(rows: pd.DataFrame) -> str:
    """How the rows' rerun probabilities were estimated: ``votes`` (nA / n of every row), ``radius`` (read back from
    the written radii), ``mixed``, or ``none`` (N or alpha unknown)."""
    _, _, how = label_votes(rows)
    used = set(how) - {"hopeless"}
    if "none" in used:
        return "none"
    if used <= {"votes"}:
        return "votes"
    return "mixed" if "votes" in used else "radius"
