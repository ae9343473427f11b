"""Certification on label arrays: reference fixtures (bound, radius, text, merge), vote tie rules, and a simulation
of Cohen et al.'s guarantee."""

import numpy as np
import pytest
from conftest import load_json
from scipy.stats import binom, norm

from densepure.core.smoothing import (
    ABSTAIN,
    MERGED_HEADER,
    Certificate,
    certified_accuracy,
    certify,
    certify_votes,
    format_radius,
    lower_confidence_bound,
    majority_vote,
    merged_results_text,
    predict,
    prefix_majority_votes,
)

CERTIFY = load_json("certify_cases.json")
MERGE = load_json("merge_cases.json")


# --- reference fixtures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CERTIFY["lower_bound_cases"], ids=lambda c: f"nA{c['nA']}-n{c['n']}-s{c['sigma']}")
def test_lower_bound_radius_and_text_match_reference(case):
    p = lower_confidence_bound(case["nA"], case["n"], case["alpha"])
    assert p == pytest.approx(case["pA_lower"], rel=1e-13, abs=1e-300)
    # certify() on label arrays with nA hits of class 0 out of n gives the same abstain decision, radius and text
    preds = np.r_[np.zeros(case["nA"], int), np.ones(case["n"] - case["nA"], int)]
    cert = certify(np.zeros(1, int), preds, case["sigma"], case["alpha"], num_classes=2)
    assert cert.abstained == case["abstain"]
    assert cert.pA_lower == pytest.approx(case["pA_lower"], rel=1e-13, abs=1e-300)
    assert cert.radius == pytest.approx(case["radius"], rel=1e-12, abs=0.0)
    assert format_radius(cert.radius) == case["radius_as_written_{:.3}"]
    assert cert.prediction == (ABSTAIN if case["abstain"] else 0)


@pytest.mark.parametrize("run", CERTIFY["certify_runs"], ids=lambda r: r["name"])
def test_certify_runs_match_reference(run):
    classes = np.arange(len(run["n0_counts"]))
    rng = np.random.default_rng(0)  # order of draws is irrelevant to CERTIFY: shuffle to make sure
    n0 = rng.permutation(np.repeat(classes, run["n0_counts"]))
    n = rng.permutation(np.repeat(classes, run["n_counts"]))
    assert (n0.size, n.size) == (run["N0"], run["N"])
    cert = certify(n0, n, run["sigma"], run["alpha"], num_classes=len(classes))
    assert cert.prediction == run["prediction"]
    assert cert.radius == pytest.approx(run["radius"], rel=1e-12, abs=0.0)
    assert format_radius(cert.radius) == run["radius_as_written_{:.3}"]
    np.testing.assert_array_equal(cert.selection_counts, run["n0_counts"])


def merge_votes(sample_id: int) -> np.ndarray:
    """The [N0 + N, K] votes of a merge-fixture sample: row j = draw j, column k = seed k."""
    per_seed = MERGE["per_seed_predictions"][str(sample_id)]
    return np.stack([np.r_[per_seed[str(k)]["n0"], per_seed[str(k)]["n"]] for k in range(MERGE["K"])], axis=1)


def test_merged_file_text_matches_reference_exactly():
    rows = []
    for sample_id, label in zip(MERGE["sample_ids"], MERGE["labels"]):
        votes = merge_votes(sample_id)
        assert votes.shape == (MERGE["N0"] + MERGE["N"], MERGE["K"])
        cert = certify_votes(votes, MERGE["K"], MERGE["N0"], MERGE["sigma"], MERGE["alpha_hardcoded"], MERGE["classes"])
        rows.append((sample_id, label, cert))
    text = merged_results_text(rows)
    assert text == MERGE["merged_file_text"]
    assert text.splitlines()[0] == MERGED_HEADER
    assert [line.split("\t") for line in text.splitlines()] == MERGE["merged_rows"]


def test_merge_tie_case_votes_first_seed():
    votes = merge_votes(20)  # every row is [5,6,5,6] or [6,5,6,5]: a 2-2 tie, the first seed's label wins
    np.testing.assert_array_equal(majority_vote(votes), votes[:, 0])
    assert (majority_vote(votes)[MERGE["N0"]:] == 5).all()


def test_certify_votes_with_one_vote_is_plain_certify():
    votes = merge_votes(0)
    for k in range(MERGE["K"]):
        one = certify_votes(votes[:, k:], 1, MERGE["N0"], 0.25, 0.001, 10)
        plain = certify(votes[: MERGE["N0"], k], votes[MERGE["N0"]:, k], 0.25, 0.001, 10)
        assert (one.prediction, one.radius, one.nA) == (plain.prediction, plain.radius, plain.nA)


# --- majority vote --------------------------------------------------------------------------------------------------


def slow_majority(labels: np.ndarray) -> np.ndarray:
    """The reference's rule, literally: ``max(row, key=row.count)``."""
    return np.array([max(row, key=row.count) for row in labels.tolist()], dtype=labels.dtype)


@pytest.mark.parametrize(
    "row, expected",
    [
        ([5, 6, 5, 6], 5),
        ([6, 5, 5, 6], 6),
        ([1, 2, 3], 1),
        ([3, 2, 1], 3),
        ([2, 2, 1, 1, 3], 2),
        ([0, 1, 1], 1),
        ([3, 1, 1, 3, 3], 3),
        ([9, 0, 0, 7, 7, 9], 9),
        ([4], 4),
    ],
)
def test_majority_vote_hand_made_ties(row, expected):
    labels = np.array([row])
    assert majority_vote(labels)[0] == expected
    assert prefix_majority_votes(labels, [len(row)])[len(row)][0] == expected


@pytest.mark.parametrize("K", [1, 2, 3, 4, 7, 40])
@pytest.mark.parametrize("classes", [2, 3, 10, 1000])
def test_majority_vote_matches_slow_loop(K, classes):
    rng = np.random.default_rng(K * 1000 + classes)
    labels = rng.integers(0, classes, size=(1500, K))
    expected = slow_majority(labels)
    np.testing.assert_array_equal(majority_vote(labels), expected)
    np.testing.assert_array_equal(majority_vote(labels.astype(np.uint8 if classes <= 256 else np.uint16)), expected)


def test_majority_vote_chunked_path(monkeypatch):
    import densepure.core.smoothing as smoothing

    monkeypatch.setattr(smoothing, "_TABLE_ENTRIES", 64)  # forces many small chunks
    labels = np.random.default_rng(1).integers(0, 5, size=(333, 6))
    np.testing.assert_array_equal(majority_vote(labels), slow_majority(labels))


def test_prefix_majority_votes_equal_majority_of_each_prefix():
    labels = np.random.default_rng(2).integers(0, 4, size=(2000, 12))
    prefixes = prefix_majority_votes(labels, range(1, 13))
    assert sorted(prefixes) == list(range(1, 13))
    for k, votes in prefixes.items():
        np.testing.assert_array_equal(votes, slow_majority(labels[:, :k]))


def test_majority_vote_rejects_bad_input():
    with pytest.raises(ValueError):
        majority_vote(np.zeros(5, int))
    with pytest.raises(ValueError):
        majority_vote(np.zeros((5, 0), int))
    with pytest.raises(ValueError):
        majority_vote(np.array([[0, -1]]))
    with pytest.raises(ValueError):
        majority_vote(np.zeros((2, 2)))


# --- PREDICT, radius text, certified accuracy -------------------------------------------------------------------------


def test_predict():
    assert predict(np.r_[np.full(90, 2), np.full(10, 7)], 0.001, 10) == 2
    assert predict(np.r_[np.full(50, 2), np.full(50, 7)], 0.001, 10) == ABSTAIN
    assert predict(np.full(5, 3), 0.001, 10) == ABSTAIN  # 5/5: two-sided p = 0.0625 > alpha
    assert predict(np.full(5, 3), 0.1, 10) == 3


@pytest.mark.parametrize(
    "r, text", [(0.7996443786845846, "0.8"), (0.00013655075720807726, "0.000137"), (0.0, "0.0"), (0.25, "0.25"),
                (1.0, "1.0"), (3.8114565633899145, "3.81"), (np.float64(0.2031), "0.203")],
)
def test_format_radius(r, text):
    assert format_radius(r) == text


def test_certified_accuracy_thresholds_written_radius():
    radii = [0.7996443786845846, 0.5, 0.0, 0.9]
    correct = [1, 1, 0, 0]
    assert certified_accuracy(radii, correct, 0.8) == 0.25  # 0.7996 is written "0.8" and counts at r = 0.8
    assert certified_accuracy(radii, correct, 0.0) == 0.5
    assert certified_accuracy(["0.8", "0.5", "0.0", "0.9"], correct, 0.8) == 0.25
    assert certified_accuracy(radii, correct, 0.81) == 0.0


def test_certificate_type():
    cert = certify(np.array([1, 1, 0]), np.ones(1000, int), 0.5, 0.001, 3)
    assert isinstance(cert, Certificate)
    assert cert.prediction == 1 and cert.nA == 1000 and cert.n == 1000 and cert.radius > 0
    assert isinstance(cert.prediction, int) and isinstance(cert.radius, float)


def test_lower_bound_rejects_bad_input():
    for args in [(5, 4, 0.01), (-1, 4, 0.01), (0, 0, 0.01), (1, 4, 0.0), (1, 4, 1.0)]:
        with pytest.raises(ValueError):
            lower_confidence_bound(*args)


# --- Cohen et al.'s guarantee, simulated -----------------------------------------------------------------------------
#
# A certification is *false* when it does not abstain and claims more than the truth: it returns class c with
# pA_lower > p_c, i.e. a radius sigma * Phi^-1(pA_lower) larger than the true sigma * Phi^-1(p_c) (for a class with
# p_c < 1/2, e.g. a wrong class, any certification is false). Cohen et al. guarantee P(false) <= alpha. We draw the
# selection and estimation counts for T independent certifications at once (multinomial), run CERTIFY's arithmetic
# vectorised (argmax of selection counts, lowest index on ties; our lower_confidence_bound evaluated on the distinct
# nA values), and count false certifications.
#
# The cases sit on the boundary: p_true is a hair below lower_confidence_bound(k, N, alpha) for some k, so the false
# rate is P(Bin(N, p_true) >= k) = alpha - O(1e-9) -- Clopper-Pearson is exact there, the worst case over p. Hence the
# tolerance: the observed rate of T Bernoulli(q <= alpha) trials is <= alpha + 4 * sqrt(alpha (1 - alpha) / T) except
# with probability ~3e-5 (one-sided 4-sigma normal tail; T * alpha >= 200 so the normal approximation is fine). The
# seeds are fixed, so the test is deterministic. Power check: the classic mistake of passing the two-sided level
# (2 * alpha) makes the same simulation exceed that tolerance.

BOUNDARY_CASES = [
    # (name, N0, N, alpha, k, top class probability is split from the rest as [p, 1 - p - rest, rest])
    ("N100-alpha0.1-k70", 100, 100, 0.1, 70),
    ("N1000-alpha0.05-k900", 100, 1000, 0.05, 900),
    ("N10000-alpha0.01-k6000", 100, 10_000, 0.01, 6000),
]


def simulate_false_rate(p: np.ndarray, N0: int, N: int, alpha: float, trials: int, seed: int, bound_alpha=None):
    """Fraction of ``trials`` vectorised CERTIFY runs (class probabilities ``p``) that certify a class c with
    pA_lower > p[c]."""
    rng = np.random.default_rng(seed)
    sel = rng.multinomial(N0, p, size=trials)
    est = rng.multinomial(N, p, size=trials)
    c_a = sel.argmax(axis=1)  # lowest index on ties, as certify()
    n_a = est[np.arange(trials), c_a]
    values, inverse = np.unique(n_a, return_inverse=True)
    bounds = np.array([lower_confidence_bound(int(v), N, bound_alpha or alpha) for v in values])[inverse]
    false = (bounds >= 0.5) & (bounds > p[c_a])
    return false.mean()


@pytest.mark.parametrize("name, N0, N, alpha, k", BOUNDARY_CASES, ids=[c[0] for c in BOUNDARY_CASES])
def test_false_certification_rate_at_most_alpha(name, N0, N, alpha, k):
    trials = max(20_000, int(200 / alpha))
    p_top = lower_confidence_bound(k, N, alpha) * (1 - 1e-9)
    p = np.array([p_top, (1 - p_top) * 0.7, (1 - p_top) * 0.3])
    exact = binom.sf(k - 1, N, p_top)  # P(nA >= k): the false rate if class 0 is always selected
    assert alpha * 0.99 < exact <= alpha  # we really are at the worst case
    slack = 4 * np.sqrt(alpha * (1 - alpha) / trials)
    rate = simulate_false_rate(p, N0, N, alpha, trials, seed=k)
    assert rate <= alpha + slack, f"false certification rate {rate:.5f} > alpha {alpha} + slack {slack:.5f}"
    assert abs(rate - exact) <= slack  # the simulation is sharp: it sees the exact rate
    # the claimed radius of a false certification does exceed the true one
    assert 0.25 * norm.ppf(lower_confidence_bound(k, N, alpha)) > 0.25 * norm.ppf(p_top)
    # power: a bound at the two-sided level (2 alpha) is caught by the same test
    wrong = simulate_false_rate(p, N0, N, alpha, trials, seed=k, bound_alpha=2 * alpha)
    assert wrong > alpha + slack


def test_near_tie_wrong_class_is_rarely_certified():
    # two classes at 0.495: any certification claims pA_lower >= 0.5 > p_c, so every certification is false
    alpha, trials = 0.05, 20_000
    p = np.array([0.495, 0.495, 0.01])
    rate = simulate_false_rate(p, 10, 400, alpha, trials, seed=3)
    assert rate <= alpha + 4 * np.sqrt(alpha * (1 - alpha) / trials)


def test_vectorised_simulation_mirrors_certify():
    """The simulation above reimplements certify()'s arithmetic; check it agrees with certify() on label arrays."""
    rng = np.random.default_rng(4)
    p, N0, N, alpha = np.array([0.6, 0.3, 0.1]), 20, 200, 0.1
    for _ in range(200):
        n0 = rng.choice(3, size=N0, p=p)
        n = rng.choice(3, size=N, p=p)
        cert = certify(n0, n, 1.0, alpha, 3)
        c_a = int(np.bincount(n0, minlength=3).argmax())
        bound = lower_confidence_bound(int((n == c_a).sum()), N, alpha)
        assert cert.prediction == (c_a if bound >= 0.5 else ABSTAIN)
        assert cert.pA_lower == bound
