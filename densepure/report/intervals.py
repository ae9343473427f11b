"""Published intervals and tests for proportions, vectorised over cells. Fractions in, fractions out.

* one sample: Clopper-Pearson (1934) exact interval; Wilson (1927) score interval;
* two paired samples (the same images under two settings): Newcombe (1998, Stat. Med. 17:2635, method 10) interval
  for the difference, exact McNemar test (two-sided binomial test of the discordant pairs);
* two independent samples (different images): Newcombe (1998, Stat. Med. 17:873, method 10) hybrid score interval,
  Fisher's exact test (two-sided, by minimum likelihood as R and SciPy);
* several tests: Holm (1979) step-down adjustment, which controls the family-wise error;
* Monte-Carlo variation: the Poisson-binomial distribution of a count of independent, unequal Bernoullis, and of
  the difference of two independent copies of it (see :mod:`densepure.report.montecarlo`).
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import gammaln
from scipy.stats import beta, binom, norm


def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2.0))


def clopper_pearson(count, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for ``count / n``: ``low = BetaPPF((1 - level)/2; count, n - count + 1)``
    (0 if count = 0), ``high = BetaPPF((1 + level)/2; count + 1, n - count)`` (1 if count = n)."""
    count = np.asarray(count, dtype=float)
    n = np.asarray(n, dtype=float)
    a = (1.0 - level) / 2.0
    with np.errstate(all="ignore"):
        low = np.where(count > 0, beta.ppf(a, np.maximum(count, 1e-300), n - count + 1), 0.0)
        high = np.where(count < n, beta.ppf(1 - a, count + 1, np.maximum(n - count, 1e-300)), 1.0)
    return low, high


def wilson(count, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval for ``count / n``: the p with ``|count/n - p| = z sqrt(p (1 - p) / n)``."""
    count, n = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    z = _z(level)
    p = count / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_paired(both, first_only, second_only, neither, level: float = 0.95):
    """Difference ``p1 - p2`` of two proportions on the same units with Newcombe's interval (1998, method 10).

    ``p1 = (both + first_only) / n``, ``p2 = (both + second_only) / n``; with the Wilson limits ``l_i, u_i`` of each
    and the correlation ``phi = C / sqrt((a+b)(c+d)(a+c)(b+d))``, ``C = ad - bc`` lowered to ``max(C - n/2, 0)``
    when positive (0 when a margin is empty): ``low = d - sqrt((p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2)``,
    ``high = d + sqrt((u1-p1)^2 - 2 phi (u1-p1)(p2-l2) + (p2-l2)^2)``. Returns ``(difference, low, high)``.
    """
    a, b, c, d = (np.asarray(x, dtype=float) for x in (both, first_only, second_only, neither))
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, level)
    l2, u2 = wilson(a + c, n, level)
    cross = a * d - b * c
    cross = np.where(cross > 0, np.maximum(cross - n / 2, 0.0), cross)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    with np.errstate(all="ignore"):
        phi = np.where(margins > 0, cross / np.sqrt(margins), 0.0)
    low = p1 - p2 - np.sqrt(np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0))
    high = p1 - p2 + np.sqrt(np.maximum((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0))
    return p1 - p2, low, high


def newcombe_independent(x1, n1, x2, n2, level: float = 0.95):
    """Difference ``x1/n1 - x2/n2`` of two independent proportions with Newcombe's hybrid score interval (1998,
    method 10): ``d -+ sqrt((p-l)^2 + (u-p)^2)`` from each proportion's Wilson limits. Returns
    ``(difference, low, high)``."""
    x1, n1, x2, n2 = (np.asarray(v, dtype=float) for v in (x1, n1, x2, n2))
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, level)
    l2, u2 = wilson(x2, n2, level)
    return p1 - p2, p1 - p2 - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), p1 - p2 + np.sqrt((u1 - p1) ** 2
                                                                                       + (p2 - l2) ** 2)


def mcnemar_exact(first_only, second_only) -> np.ndarray:
    """Exact McNemar p-value: the two-sided binomial test of ``first_only`` successes among the ``first_only +
    second_only`` discordant pairs at 1/2, ``min(1, 2 P(X <= min(b, c)))``; 1 without discordant pairs."""
    b, c = np.asarray(first_only, dtype=float), np.asarray(second_only, dtype=float)
    return np.minimum(1.0, 2.0 * binom.cdf(np.minimum(b, c), b + c, 0.5))


def _log_hypergeom(k, total, drawn, sample):
    """log P(X = k), X ~ Hypergeometric(total, drawn successes, sample size); -inf outside the support."""
    def log_choose(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    k = np.asarray(k, dtype=float)
    inside = (k >= np.maximum(0, sample + drawn - total)) & (k <= np.minimum(sample, drawn))
    with np.errstate(invalid="ignore"):
        value = log_choose(drawn, k) + log_choose(total - drawn, sample - k) - log_choose(total, sample)
    return np.where(inside, value, -np.inf)


def fisher_exact(x1, n1, x2, n2) -> np.ndarray:
    """Two-sided Fisher exact p-value of ``x1/n1`` against ``x2/n2``: the probability, given the total count, of
    every table no more likely than the observed one (hypergeometric; relative tolerance 1e-7, as SciPy)."""
    x1, n1, x2, n2 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x1, n1, x2, n2))
    k = np.arange(int(n1.max()) + 1)[None, :]
    total, drawn, sample = (n1 + n2)[:, None], (x1 + x2)[:, None], n1[:, None]
    log_pmf = _log_hypergeom(k, total, drawn, sample)
    log_observed = _log_hypergeom(x1[:, None], total, drawn, sample)
    keep = log_pmf <= log_observed + np.log1p(1e-7)
    return np.minimum(1.0, np.where(keep, np.exp(log_pmf), 0.0).sum(axis=1))


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries are not tests and stay NaN): rejecting where the adjusted
    value is below a level controls the family-wise error at that level."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def poisson_binomial_pmf(q: np.ndarray) -> np.ndarray:
    """PMF [..., M + 1] of the number of successes among M independent Bernoulli(q[..., j]) (the last axis)."""
    q = np.asarray(q, dtype=float)
    pmf = np.zeros(q.shape[:-1] + (q.shape[-1] + 1,))
    pmf[..., 0] = 1.0
    for j in range(q.shape[-1]):
        qj = q[..., j, None]
        shifted = np.concatenate([np.zeros_like(pmf[..., :1]), pmf[..., :-1]], axis=-1)
        pmf = pmf * (1 - qj) + shifted * qj
    return pmf


def difference_pmf(pmf: np.ndarray) -> np.ndarray:
    """PMF [..., 2M + 1] of ``X - Y`` (values -M ... M) for independent X, Y with the same PMF [..., M + 1]."""
    out = fftconvolve(pmf, pmf[..., ::-1], axes=-1)
    return np.clip(out, 0.0, None)


def _folded_cdf(dpmf: np.ndarray) -> np.ndarray:
    """``P(|D| <= h)`` for h = 0 ... M, from a difference PMF [..., 2M + 1] (values -M ... M)."""
    M = (dpmf.shape[-1] - 1) // 2
    folded = dpmf[..., M:].copy()
    folded[..., 1:] += dpmf[..., :M][..., ::-1]
    return np.cumsum(folded, axis=-1)


def two_sided_tail(dpmf: np.ndarray, d) -> np.ndarray:
    """``P(|D| >= |d|)`` for a difference PMF [..., 2M + 1] (values -M ... M); ``d`` an integer per row."""
    cdf = _folded_cdf(dpmf)
    d = np.abs(np.rint(np.asarray(d, dtype=float))).astype(int)
    below = np.where(d > 0, np.take_along_axis(cdf, np.clip(d - 1, 0, cdf.shape[-1] - 1)[..., None], -1)[..., 0], 0.0)
    return np.clip(1.0 - below, 0.0, 1.0)


def symmetric_quantile(dpmf: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Smallest h with ``P(|D| <= h) >= level`` for a difference PMF [..., 2M + 1]."""
    return np.argmax(_folded_cdf(dpmf) >= level - 1e-12, axis=-1).astype(float)
