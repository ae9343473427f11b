"""Intervals and tests of densepure.report.intervals against the worked examples of the papers that publish them,
and the Monte-Carlo rerun probabilities against closed forms and brute force."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, norm

from densepure.core.smoothing import format_radius, lower_confidence_bound
from densepure.report import intervals, montecarlo


def test_clopper_pearson_closed_forms():
    # k = 0: [0, 1 - 0.025**(1/n)]; k = n: [0.025**(1/n), 1]
    lo, hi = intervals.clopper_pearson([0, 5], [5, 5])
    assert lo[0] == 0 and hi[0] == pytest.approx(1 - 0.025 ** (1 / 5))
    assert lo[1] == pytest.approx(0.025 ** (1 / 5)) and hi[1] == 1
    # k = 3, n = 5: the bounds are the p where P(X >= 3 | p) = 0.025 and P(X <= 3 | p) = 0.025
    lo, hi = intervals.clopper_pearson(3, 5)
    assert binom.sf(2, 5, float(lo)) == pytest.approx(0.025) and binom.cdf(3, 5, float(hi)) == pytest.approx(0.025)


def test_wilson_newcombe_single_proportion_examples():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (score)
    lo, hi = intervals.wilson([15, 0, 1], [148, 20, 29])
    assert np.round(lo, 4).tolist() == [0.0624, 0.0, 0.0061]
    assert np.round(hi, 4).tolist() == [0.1605, 0.1611, 0.1718]


# Newcombe (1998), "Interval estimation for the difference between independent proportions", Table II, method 10
INDEPENDENT = [((56, 70, 48, 80), (0.0524, 0.3339)), ((9, 10, 3, 10), (0.1705, 0.8090)),
               ((5, 56, 0, 29), (-0.0381, 0.1926)), ((0, 10, 0, 20), (-0.1611, 0.2775)),
               ((0, 10, 0, 10), (-0.2775, 0.2775)), ((10, 10, 0, 20), (0.6791, 1.0000)),
               ((10, 10, 0, 10), (0.6075, 1.0000))]


@pytest.mark.parametrize("counts,expected", INDEPENDENT)
def test_newcombe_independent_worked_examples(counts, expected):
    diff, lo, hi = intervals.newcombe_independent(*counts)
    assert diff == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3])
    assert (round(float(lo), 4), round(float(hi), 4)) == expected


# (both, first only, second only, neither) -> published interval for the difference of the paired proportions
PAIRED = [
    ((20, 12, 2, 16), (0.0562, 0.3292), 4),   # Newcombe (1998), "Improved confidence intervals ... paired data", method 10
    ((1, 1, 7, 12), (-0.507, -0.026), 3),     # Fagerland, Lydersen & Laake (2014), Stat. Med. 33:2850 (Bentur data)
    ((8, 3, 1, 2), (-0.1574, 0.4136), 4),     # Tang, Li & Tang (2010), hybrid (Newcombe) interval example
    ((7, 25, 2, 68), (0.133, 0.318), 3),      # Chang et al. (2024), J. Appl. Stat. 51:139, example
]


@pytest.mark.parametrize("counts,expected,digits", PAIRED)
def test_newcombe_paired_worked_examples(counts, expected, digits):
    a, b, c, d = counts
    diff, lo, hi = intervals.newcombe_paired(*counts)
    assert diff == pytest.approx((b - c) / (a + b + c + d))
    assert (round(float(lo), digits), round(float(hi), digits)) == expected


def test_newcombe_paired_edges():
    # no discordant pairs, all certified by both: difference 0, an interval around it inside [-1, 1]
    diff, lo, hi = intervals.newcombe_paired(5, 0, 0, 0)
    assert diff == 0 and -1 <= lo < 0 < hi <= 1
    # vectorised, and phi = 0 when a margin is empty (no division by zero)
    diff, lo, hi = intervals.newcombe_paired([3, 0], [0, 2], [2, 0], [0, 3])
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and diff.tolist() == [-0.4, 0.4]


def test_mcnemar_exact():
    # Bentur data (Fagerland et al. 2013, BMC Med. Res. Methodol. 13:91): 1 and 7 discordant pairs, exact p = 0.070
    assert intervals.mcnemar_exact(1, 7) == pytest.approx(2 * 9 / 256)
    assert round(float(intervals.mcnemar_exact(1, 7)), 3) == 0.070
    # the two-sided binomial test of b among b + c at 1/2; no discordant pairs -> 1
    assert intervals.mcnemar_exact(12, 2) == pytest.approx(2 * binom.cdf(2, 14, 0.5))
    assert intervals.mcnemar_exact(0, 0) == 1 and intervals.mcnemar_exact(3, 3) == 1


def test_fisher_exact():
    from scipy.stats import fisher_exact

    # Fisher's tea-tasting experiment (3 of 4 cups right): two-sided p = 34/70
    assert intervals.fisher_exact(3, 4, 1, 4)[0] == pytest.approx(34 / 70)
    for x1, n1, x2, n2 in [(40, 100, 230, 500), (0, 100, 3, 500), (100, 100, 480, 500), (7, 30, 2, 40)]:
        expected = fisher_exact([[x1, n1 - x1], [x2, n2 - x2]]).pvalue
        assert intervals.fisher_exact(x1, n1, x2, n2)[0] == pytest.approx(expected, rel=1e-9)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    adjusted = intervals.holm([0.01, 0.04, 0.03, 0.005, np.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(adjusted[4])
    assert intervals.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_poisson_binomial_and_difference_by_brute_force():
    q = np.array([0.1, 0.5, 0.8, 0.95])
    brute = np.zeros(5)
    for outcome in itertools.product([0, 1], repeat=4):
        brute[sum(outcome)] += np.prod([qi if o else 1 - qi for qi, o in zip(q, outcome)])
    pmf = intervals.poisson_binomial_pmf(q[None, :])[0]
    assert pmf == pytest.approx(brute)
    dpmf = intervals.difference_pmf(pmf[None, :])[0]
    expected = np.zeros(9)
    for x in range(5):
        for y in range(5):
            expected[x - y + 4] += pmf[x] * pmf[y]
    assert dpmf == pytest.approx(expected, abs=1e-12)
    assert intervals.two_sided_tail(dpmf[None, :], [2])[0] == pytest.approx(expected[[0, 1, 2, 6, 7, 8]].sum())
    assert intervals.two_sided_tail(dpmf[None, :], [0])[0] == pytest.approx(1.0)
    h = int(intervals.symmetric_quantile(dpmf[None, :])[0])
    cover = lambda k: expected[4 - k:4 + k + 1].sum()  # noqa: E731
    assert cover(h) >= 0.95 and (h == 0 or cover(h - 1) < 0.95)


# --- Monte-Carlo rerun probabilities -------------------------------------------------------------------------------
def test_min_count_is_the_boundary_of_the_certificate():
    N, sigma, alpha = 100, 0.25, 0.001
    k0 = montecarlo.min_count(0.0, N, sigma, alpha)
    assert lower_confidence_bound(k0 - 1, N, alpha) < 0.5 <= lower_confidence_bound(k0, N, alpha)
    for r in (0.1, 0.2, 0.3):
        k = montecarlo.min_count(r, N, sigma, alpha)
        written = lambda c: float(format_radius(sigma * norm.ppf(lower_confidence_bound(c, N, alpha))))  # noqa
        assert written(k) >= r > written(k - 1)
    r_max = float(format_radius(sigma * norm.ppf(alpha ** (1 / N))))
    assert montecarlo.min_count(r_max, N, sigma, alpha) == N
    assert montecarlo.min_count(r_max + 0.01, N, sigma, alpha) == N + 1
    lo, hi = montecarlo.count_range(0.2, N, sigma, alpha)
    assert lo <= hi and all(float(format_radius(sigma * norm.ppf(lower_confidence_bound(c, N, alpha)))) == 0.2
                            for c in range(lo, hi + 1))


def _rows(**cols):
    base = {"sigma": 0.25, "N": 100, "N0": 20, "alpha": 0.001}
    n = len(next(iter(cols.values())))
    return pd.DataFrame({**{k: [v] * n for k, v in base.items()}, **cols})


def test_label_votes_sources():
    rows = _rows(label=[3, 3, 3, 3, 3, 3], predict=pd.array([3, 4, -1, None, 3, -1], dtype="Int64"),
                 radius=[0.2, 0.2, 0.0, np.nan, 0.2, 0.0], nA=[90, 90, 40, np.nan, np.nan, np.nan],
                 n=[100, 100, 60, 0, np.nan, np.nan], stop=["complete", "complete", "abstain", "hopeless", "", ""])
    x, m, how = montecarlo.label_votes(rows)
    assert how.tolist() == ["votes", "votes", "votes", "hopeless", "radius", "abstain-bound"]
    # the label's votes: nA of n; n - nA when another class was selected; 0 of 0 for a hopeless image
    assert x[:4].tolist() == [90, 10, 40, 0] and m[:4].tolist() == [100, 100, 60, 0]
    lo, hi = montecarlo.count_range(0.2, 100, 0.25, 0.001)
    assert (x[4], m[4]) == ((lo + hi) // 2, 100)
    assert (x[5], m[5]) == (montecarlo.min_count(0.0, 100, 0.25, 0.001) - 1, 100)  # the most uncertain abstention
    assert montecarlo.estimate_source(rows.iloc[:4]) == "votes" and montecarlo.estimate_source(rows) == "mixed"
    assert montecarlo.estimate_source(rows.iloc[4:]) == "radius"
    assert montecarlo.estimate_source(rows.assign(N=np.nan).iloc[4:]) == "none"
    q = montecarlo.rerun_probabilities(rows, [0.0])
    assert q[3, 0] == 0 and q[1, 0] < 1e-6 and q[0, 0] > 0.99  # hopeless; 10 of 100 votes; 90 of 100 votes


def test_rerun_probabilities_match_a_brute_force_rerun():
    """q(r) for an image with x of N = 100 estimation votes for its label: the share of 20000 simulated reruns
    certified at r, each drawing the label's vote probability p from the Jeffreys posterior Beta(x + 1/2, N - x +
    1/2), then N0 = 20 selection draws (one competitor gets the rest) and N = 100 estimation draws."""
    rng = np.random.default_rng(0)
    N0, N, sigma, alpha, radii = 20, 100, 0.25, 0.001, [0.0, 0.15, 0.3]
    bounds = [lower_confidence_bound(k, N, alpha) for k in range(N + 1)]
    by_count = np.array([float(format_radius(sigma * norm.ppf(b))) if b >= 0.5 else -1.0 for b in bounds])
    for x in (55, 75, 90):
        rows = _rows(label=[1], predict=pd.array([1], dtype="Int64"), radius=[0.1], nA=[x], n=[N],
                     stop=["complete"])
        q = montecarlo.rerun_probabilities(rows, radii)[0]
        reps = 20000
        p = rng.beta(x + 0.5, N - x + 0.5, reps)
        sel = rng.binomial(N0, p)
        selected = (2 * sel > N0) | ((2 * sel == N0) & (rng.random(reps) < 0.5))
        written = by_count[rng.binomial(N, p)]
        for j, r in enumerate(radii):
            share = np.mean(selected & (written >= r))
            assert q[j] == pytest.approx(share, abs=4 * np.sqrt(share * (1 - share) / reps) + 0.01), (x, r)
