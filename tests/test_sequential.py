"""Claims decided from part of a finite image set (densepure.core.sequential): simulations on synthetic paired
outcomes, each with its measured rate in the assertion message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densepure.core.sequential import confidence_sequence, decide, lean, log_capital

N = 500
FIXTURE = Path(__file__).parent / "fixtures" / "confseq_capital.json"


def population(plus: int, minus: int, n: int = N) -> np.ndarray:
    """Paired differences of n images: ``plus`` where only the first setting certifies, ``minus`` the other way."""
    d = np.zeros(n)
    d[:plus], d[plus:plus + minus] = 1, -1
    return d


def orders(d: np.ndarray, runs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(d) for _ in range(runs)])


def first_decision(d_orders: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the decision of the claim "difference > 0" and the images it took (N when it ran to the end), with
    the sequence a run of that claim uses (its lean)."""
    low, high = confidence_sequence((d_orders + 1) / 2, N, alpha, theta=lean("greater"))
    low, high = 2 * low - 1, 2 * high - 1  # back to the difference's scale
    verdict = np.array([[decide(lo, hi, "greater") for lo, hi in zip(a, b)] for a, b in zip(low, high)], dtype=object)
    decided = verdict != None  # noqa: E711
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), N - 1)
    return verdict[np.arange(len(first)), first], first + 1


@pytest.mark.slow
def test_a_true_difference_of_zero_is_decided_positive_in_at_most_alpha_of_1000_runs():
    d = population(38, 38)  # 15% discordant, the full set's difference exactly 0
    verdict, used = first_decision(orders(d, 1000, seed=1))
    rate = np.mean(verdict == "true")
    assert rate <= 0.05, f"decided positive in {rate:.1%} of 1000 runs"


def test_the_papers_table_b_effect_is_decided_with_a_third_of_the_images():
    """About 7 points with 15% of the images discordant (55 vs 20 of 500), as DensePure against the one-shot
    baseline in Table B."""
    d = population(55, 20)
    verdict, used = first_decision(orders(d, 200, seed=2))
    assert np.all(verdict == "true")
    assert used.mean() <= N / 3, f"{used.mean():.0f} images on average"


def test_the_true_mean_stays_in_the_sequence_at_every_step():
    d = population(40, 25)
    truth = (d.mean() + 1) / 2
    low, high = confidence_sequence((orders(d, 300, seed=3) + 1) / 2, N, 0.05)
    escaped = np.mean(np.any((low > truth + 1e-12) | (high < truth - 1e-12), axis=1))
    assert escaped <= 0.05, f"the true mean left the sequence in {escaped:.1%} of runs"


def test_a_set_certified_to_the_end_gives_the_full_tables_answer():
    rng = np.random.default_rng(4)
    for plus, minus in [(10, 10), (11, 10), (10, 11), (0, 0), (30, 2)]:
        d = population(plus, minus)
        low, high = confidence_sequence((orders(d, 5, seed=int(rng.integers(1000))) + 1) / 2, N, 0.05)
        exact = d.mean()
        assert np.allclose(2 * low[:, -1] - 1, exact) and np.allclose(2 * high[:, -1] - 1, exact)
        full = "true" if exact > 0 else "false"
        assert all(decide(2 * a - 1, 2 * b - 1, "greater") == full for a, b in zip(low[:, -1], high[:, -1]))


def test_single_cells_and_within_claims():
    """A cell's certified accuracy (values in {0, 1}) and a claim that it lies within 2 points of the paper's."""
    x = np.zeros(N)
    x[:300] = 1  # 60% certified over the full set
    low, high = confidence_sequence(orders(x, 20, seed=5), N, 0.05)
    assert np.all(low[:, -1] == 0.6) and np.all(high[:, -1] == 0.6)
    assert decide(low[0, -1], high[0, -1], "within", delta=0.02, value=0.61) == "true"
    assert decide(low[0, -1], high[0, -1], "within", delta=0.02, value=0.65) == "false"
    assert decide(0.55, 0.7, "within", delta=0.02, value=0.6) is None
    with pytest.raises(ValueError):
        decide(0, 1, "better")


@pytest.mark.parametrize("case", json.loads(FIXTURE.read_text())["cases"],
                         ids=lambda c: f"{c['population']}-theta{c['theta']}-h{c['horizon']}-m{c['m']:.3f}")
def test_the_capital_is_the_authors_own(case):
    """The capital process at a candidate mean equals what Waudby-Smith and Ramdas's own implementation (confseq
    0.0.11, betting_mart for sampling without replacement, convex combination, truncation at 0.75 / mu_t; written by
    tools/confseq_fixture.py) computes for the same bets, at every draw."""
    ours = np.array([k[0, 0] for k in log_capital(np.array(case["x"]), case["N"], case["alpha"], np.array([case["m"]]),
                                                  case["horizon"], case["theta"])])
    theirs = np.array(case["log_capital"], dtype=float)
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=0, atol=1e-9)


def test_the_lean_follows_the_claim():
    """A claim that a quantity exceeds a bound puts 0.9 of the capital on the side raising the lower end; a band
    claim splits it evenly; the sequence is valid for any lean (the true mean stays in it)."""
    assert (lean("greater"), lean("at_least"), lean("within")) == (0.9, 0.9, 0.5)
    with pytest.raises(ValueError, match="unknown claim"):
        lean("better")
    from scipy.stats import binom

    d = population(40, 25)
    truth = (d.mean() + 1) / 2
    runs = 200
    bound = binom.ppf(1 - 1e-3, runs, 0.05)  # a valid sequence escapes more often with probability below 1e-3
    for theta in (0.0, 1.0):
        low, high = confidence_sequence((orders(d, runs, seed=6) + 1) / 2, N, 0.05, theta=theta)
        escaped = np.sum(np.any((low > truth + 1e-12) | (high < truth - 1e-12), axis=1))
        assert escaped <= bound, f"theta {theta}: the true mean left the sequence in {escaped} of {runs} runs"
