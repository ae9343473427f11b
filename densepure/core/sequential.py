"""Deciding a claim about a finite set of images from a random part of it: anytime-valid confidence sequences for
the mean of a finite population sampled without replacement.

The full table's value over its N images (a cell's certified accuracy, or the paired difference of two settings
on the same images) is a fixed number once the seed is: every image's outcome is determined by addressed noise.
Certifying the images in a pre-registered random order is sampling without replacement from that finite set. For
values ``x_i`` in [0, 1] (a cell: certified or not; a paired difference d in {-1, 0, 1} as ``(d + 1) / 2``), a
candidate population mean ``m`` fixes the mean of the images not yet drawn before draw t,
``mu_t(m) = (N m - sum_{i < t} x_i) / (N - t + 1)``, and the capital process

    K_t(m) = 1/2 prod_{i <= t} (1 + lambda_i^+ (x_i - mu_i(m))) + 1/2 prod_{i <= t} (1 - lambda_i^- (x_i - mu_i(m)))

with predictable bets ``lambda_i^+ in [0, c / mu_i(m)]``, ``lambda_i^- in [0, c / (1 - mu_i(m))]`` (c < 1) is a
nonnegative martingale with initial value 1 when ``m`` is the true mean (Waudby-Smith and Ramdas, "Confidence
sequences for sampling without replacement", NeurIPS 2020, Section 3: the hedged capital process). By Ville's
inequality, with probability at least 1 - alpha over the order it never reaches 1/alpha, so

    C_t = {m : K_s(m) < 1/alpha for every s <= t}

holds the true mean at every t simultaneously: a claim decided at any time, by any stopping rule, says what the
full table would say with probability at least 1 - alpha. After all N images ``C_N`` is the population mean itself.
The bets use the running variance (Waudby-Smith and Ramdas, "Estimating means of bounded random variables by
betting", JRSS-B 2024, the predictable plug-in), tuned to decide near a target number of images.
"""

from __future__ import annotations

import math

import numpy as np


def confidence_sequence(x: np.ndarray, N: int, alpha: float, target: int | None = None,
                        truncation: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds ``[runs, t]`` of the confidence sequence of the mean of a population of ``N`` values
    in [0, 1], from the values ``x`` ``[runs, n]`` drawn without replacement in order (n <= N). Candidate means lie
    on the grid of multiples of 1/(2N) (the mean of N values in {0, 1/2, 1}). ``target``: the number of images the
    bets are tuned for (default N / 4)."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    runs, n = x.shape
    if n > N or not 0 < alpha < 1 or np.any((x < 0) | (x > 1)):
        raise ValueError("values in [0, 1], at most N of them, and alpha in (0, 1)")
    target = target or max(1, N // 4)
    m = np.linspace(0.0, 1.0, 2 * N + 1)[None, :]
    log_plus, log_minus = np.zeros((runs, m.size)), np.zeros((runs, m.size))
    rejected = np.zeros((runs, m.size), dtype=bool)
    low, high = np.empty((runs, n)), np.empty((runs, n))
    total, squares = np.zeros((runs, 1)), np.zeros((runs, 1))
    level = math.log(1 / alpha)
    for t in range(1, n + 1):
        xt = x[:, t - 1:t]
        mu = (N * m - total) / (N - t + 1)
        rejected |= (mu < -1e-12) | (mu > 1 + 1e-12)  # no population with mean m could have given these draws
        mu = np.clip(mu, 0.0, 1.0)
        bet = np.sqrt(2 * math.log(2 / alpha) / ((0.25 + squares) / t * target))
        plus = np.minimum(bet, truncation / np.maximum(mu, 1e-12))
        minus = np.minimum(bet, truncation / np.maximum(1 - mu, 1e-12))
        log_plus += np.log1p(plus * (xt - mu))
        log_minus += np.log1p(-minus * (xt - mu))
        rejected |= np.logaddexp(log_plus, log_minus) - math.log(2) >= level
        squares += (xt - (0.5 + total) / t) ** 2
        total += xt
        if t == N:  # every image drawn: the mean is known
            rejected = ~np.isclose(m, total / N, atol=0.25 / N)
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
