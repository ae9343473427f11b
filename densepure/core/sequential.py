"""Deciding a claim about a finite set of images from a random part of it: anytime-valid confidence sequences for
the mean of a finite population sampled without replacement.

The full table's value over its N images (a cell's certified accuracy, or the paired difference of two settings
on the same images) is a fixed number once the seed is: every image's outcome is determined by addressed noise.
Certifying the images in a pre-registered random order is sampling without replacement from that finite set. For
values ``x_i`` in [0, 1] (a cell: certified or not; a paired difference d in {-1, 0, 1} as ``(d + 1) / 2``), a
candidate population mean ``m`` fixes the mean of the images not yet drawn before draw t,
``mu_t(m) = (N m - sum_{i < t} x_i) / (N - t + 1)``, and the capital process

    K_t^+(m) = prod_{i <= t} (1 + lambda_i^+ (x_i - mu_i(m))),
    K_t^-(m) = prod_{i <= t} (1 - lambda_i^- (x_i - mu_i(m)))

with predictable bets ``lambda_i^+ in [0, c / mu_i(m)]``, ``lambda_i^- in [0, c / (1 - mu_i(m))]`` (c < 1) are
nonnegative martingales with initial value 1 when ``m`` is the true mean (Waudby-Smith and Ramdas, "Confidence
sequences for sampling without replacement", NeurIPS 2020, Section 3), and so is any convex combination of them
with weights fixed in advance. Here the capital is

    K_t(m) = sum_j (theta / J) K_t^+(m; j) + ((1 - theta) / J) K_t^-(m; j)

over J bet scales j (the diversified bets of Waudby-Smith and Ramdas, "Estimating means of bounded random variables
by betting", JRSS-B 2024, Section 5, with the hedged capital of their Section 4.2 as the convex combination).
``K^+`` grows when the true mean is above ``m``, so it raises the lower end; ``theta`` (the *lean*) is the capital
put on that side: 0.9 for a claim that a quantity exceeds a bound (its lower end decides it true; deciding it false
costs more evidence), 1/2 for a claim of lying within a band. By Ville's inequality, with probability at least
1 - alpha over the order ``K_t(m)`` never reaches 1/alpha at the true mean, so

    C_t = {m : K_s(m) < 1/alpha for every s <= t}

holds the true mean at every t simultaneously: a claim decided at any time, by any stopping rule, says what the
full table would say with probability at least 1 - alpha. After all N images ``C_N`` is the population mean itself.
Each scale's bets are the predictable plug-in ``sqrt(2 log(2 / alpha) / (sigma_hat_{t-1}^2 T_j))`` of the JRSS-B
paper with the horizon ``T_j`` fixed at a share of the image budget (:data:`HORIZON_SHARES`), so that whatever the
effect, one scale is close to the bets that decide it soonest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

HORIZON_SHARES = (1 / 8, 1 / 4, 1 / 2, 1.0)  # the bet scales: horizons as shares of the image budget
TRUNCATION = 0.75  # c: a bet never stakes more than this share of what the outcome could lose
LEAN = {"greater": 0.9, "at_least": 0.9, "within": 0.5}  # theta per claim kind: the capital raising the lower end


def lean(kind: str) -> float:
    """The capital share ``theta`` on the side that raises the lower end, for a claim ``kind``."""
    if kind not in LEAN:
        raise ValueError(f"unknown claim {kind!r} (greater, at_least, within)")
    return LEAN[kind]


def log_capital(x: np.ndarray, N: int, alpha: float, m: np.ndarray, horizon: int | None = None,
                theta: float = 0.5) -> Iterator[np.ndarray]:
    """Yield, after each draw t = 1..n, ``log K_t(m)`` ``[runs, len(m)]`` (see the module docstring) for the
    values ``x`` ``[runs, n]`` in [0, 1] drawn without replacement from ``N``, at the candidate means ``m``;
    ``horizon``: the image budget the bet scales are shares of (default N). ``+inf`` where no population of mean
    ``m`` could have given the draws (the mean of the images left would leave [0, 1])."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    runs, n = x.shape
    m = np.asarray(m, dtype=float)[None, None, :]
    horizons = np.array([max(1.0, s * (horizon or N)) for s in HORIZON_SHARES])[None, :, None]
    weights = np.log(np.array([theta, 1 - theta]) / len(HORIZON_SHARES), where=np.array([theta, 1 - theta]) > 0,
                     out=np.full(2, -np.inf))
    log_plus = np.zeros((runs, horizons.size, m.size))
    log_minus = np.zeros_like(log_plus)
    impossible = np.zeros((runs, m.size), dtype=bool)
    total, squares = np.zeros((runs, 1, 1)), np.zeros((runs, 1, 1))
    for t in range(1, n + 1):
        xt = x[:, None, t - 1:t]
        mu = (N * m - total) / (N - t + 1)
        impossible |= ((mu < -1e-12) | (mu > 1 + 1e-12))[:, 0, :]
        mu = np.clip(mu, 0.0, 1.0)
        bet = np.sqrt(2 * math.log(2 / alpha) / ((0.25 + squares) / t * horizons))
        log_plus += np.log1p(np.minimum(bet, TRUNCATION / np.maximum(mu, 1e-12)) * (xt - mu))
        log_minus += np.log1p(-np.minimum(bet, TRUNCATION / np.maximum(1 - mu, 1e-12)) * (xt - mu))
        squares += (xt - (0.5 + total) / t) ** 2
        total += xt
        log_k = np.logaddexp(np.logaddexp.reduce(log_plus + weights[0], axis=1),
                             np.logaddexp.reduce(log_minus + weights[1], axis=1))
        yield np.where(impossible, np.inf, log_k)


def confidence_sequence(x: np.ndarray, N: int, alpha: float, horizon: int | None = None,
                        theta: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds ``[runs, t]`` of the confidence sequence of the mean of a population of ``N`` values
    in [0, 1], from the values ``x`` ``[runs, n]`` drawn without replacement in order (n <= N). Candidate means lie
    on the grid of multiples of 1/(2N) (the mean of N values in {0, 1/2, 1}). ``horizon``: the image budget the bets
    are scaled to (default N); ``theta``: the lean (:func:`lean`)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    runs, n = x.shape
    if n > N or not 0 < alpha < 1 or np.any((x < 0) | (x > 1)) or not 0 <= theta <= 1:
        raise ValueError("values in [0, 1], at most N of them, alpha in (0, 1) and theta in [0, 1]")
    m = np.linspace(0.0, 1.0, 2 * N + 1)
    rejected = np.zeros((runs, m.size), dtype=bool)
    low, high = np.empty((runs, n)), np.empty((runs, n))
    level = math.log(1 / alpha)
    for t, log_k in enumerate(log_capital(x, N, alpha, m, horizon, theta), start=1):
        rejected |= log_k >= level
        if t == N:  # every image drawn: the mean is known
            rejected = ~np.isclose(m[None, :], x.sum(axis=1, keepdims=True) / N, atol=0.25 / N)
        alive = ~rejected
        low[:, t - 1] = np.where(alive, m, np.inf).min(axis=1)
        high[:, t - 1] = np.where(alive, m, -np.inf).max(axis=1)
    return low, high


def decide(low: float, high: float, claim: str, delta: float = 0.0, value: float = 0.0) -> str | None:
    """What a confidence interval ``[low, high]`` of a quantity says of a claim: ``greater`` (quantity > delta),
    ``at_least`` (>= delta) or ``within`` (|quantity - value| <= delta). ``"true"`` or ``"false"`` once the interval
    settles it, None while it does not."""
    if claim == "greater":
        return "true" if low > delta else ("false" if high <= delta else None)
    if claim == "at_least":
        return "true" if low >= delta else ("false" if high < delta else None)
    if claim == "within":
        if value - delta <= low and high <= value + delta:
            return "true"
        return "false" if high < value - delta or low > value + delta else None
    raise ValueError(f"unknown claim {claim!r} (greater, at_least, within)")
