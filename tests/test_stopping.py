"""The stopping rules of lazy certification (densepure.core.smoothing): settled majorities, hopeless images, certain
abstention. Each is checked against brute force over every way the missing votes or draws could turn out, and at
its boundaries."""

import itertools

import numpy as np
import pytest

from densepure.core.smoothing import (
    NOT_COMPUTED,
    fewest_hits_to_certify,
    lower_confidence_bound,
    majority_vote,
    must_abstain,
    prefix_majority_votes,
    selected_class,
    votes_to_settle,
)


def completions(prefix: list[int], K: int, classes: int):
    """Every row of K votes that starts with ``prefix``."""
    for rest in itertools.product(range(classes), repeat=K - len(prefix)):
        yield list(prefix) + list(rest)


def settled(prefix: list[int], k: int, classes: int) -> bool:
    """Brute force: every completion of the prefix has the same majority over its first k votes."""
    winners = {int(majority_vote(np.array([row[:k]]))[0]) for row in completions(prefix, max(k, len(prefix)), classes)}
    return len(winners) == 1


def fewest_to_settle(prefix: list[int], Ks: list[int], K: int, classes: int) -> int:
    """Brute force: the least d such that some d next votes settle every k in Ks."""
    for d in range(K - len(prefix) + 1):
        for nxt in itertools.product(range(classes), repeat=d):
            if all(settled(prefix + list(nxt), k, classes) for k in Ks):
                return d
    raise AssertionError("a full row is always settled")


def padded(prefix: list[int], K: int) -> np.ndarray:
    return np.array([prefix + [NOT_COMPUTED] * (K - len(prefix))])


@pytest.mark.parametrize("K,classes", [(3, 3), (4, 3), (5, 2), (5, 3), (6, 3)])
def test_votes_to_settle_is_the_brute_force_minimum(K, classes):
    rng = np.random.default_rng(K * 10 + classes)
    served = [sorted({int(k) for k in rng.integers(1, K + 1, size=rng.integers(1, 3))} | {K}) for _ in range(4)]
    for Ks in served:
        for m in range(K + 1):
            for prefix in itertools.islice(itertools.product(range(classes), repeat=m), 60):
                got = int(votes_to_settle(padded(list(prefix), K), Ks)[0])
                assert got == fewest_to_settle(list(prefix), Ks, K, classes), (prefix, Ks)


def test_settled_row_majority_is_that_of_its_computed_votes():
    """For every settled prefix, the majority of the computed votes (missing ones ignored) is the majority of every
    completion: what a lazy store's row gives at a served K equals the full row's."""
    K, classes = 5, 3
    for m in range(K + 1):
        for prefix in itertools.product(range(classes), repeat=m):
            row = padded(list(prefix), K)
            for k in range(1, K + 1):
                if votes_to_settle(row, [k])[0] == 0:
                    lazy = prefix_majority_votes(row, [k])[k][0]
                    for full in completions(list(prefix), K, classes):
                        assert majority_vote(np.array([full[:k]]))[0] == lazy


def test_tie_decided_by_the_tie_rule_settles():
    """4 votes of K = 8 for label 2 and none computed after: the other 4 could all go to one label, a 4-4 tie that
    the earlier first occurrence wins, so label 2 is settled; with label 2 first seen second, it is not."""
    assert votes_to_settle(padded([2, 2, 2, 2], 8), [8])[0] == 0
    # label 2 leads 4-1 but label 1 came first: with all 4 missing votes it reaches 5 > 4; one more for 2 settles
    assert votes_to_settle(padded([1, 2, 2, 2, 2], 9), [9])[0] == 1
    assert votes_to_settle(padded([1, 2, 2, 2, 2, 2], 9), [9])[0] == 0
    # 3 x label 2 after one label 1, K = 7: label 1 could reach 1 + 3 = 4 > 3: one more vote for 2 settles it
    assert votes_to_settle(padded([1, 2, 2, 2], 7), [7])[0] == 1
    # a 2-2 tie at K = 4 is decided by the first vote: settled with all computed
    assert votes_to_settle(np.array([[5, 6, 6, 5]]), [4])[0] == 0
    assert prefix_majority_votes(np.array([[5, 6, 6, 5]]), [4])[4][0] == 5


def test_first_round_is_half_the_largest_K():
    empty = np.full((3, 50), NOT_COMPUTED)
    assert list(votes_to_settle(empty, [1, 3, 49, 50])) == [25, 25, 25]
    assert list(votes_to_settle(empty[:, :9], [9])) == [5, 5, 5]
    assert list(votes_to_settle(empty[:, :1], [1])) == [1, 1, 1]


def test_settled_rows_need_nothing_and_full_rows_are_settled():
    full = np.random.default_rng(1).integers(0, 4, size=(50, 7))
    assert not votes_to_settle(full, [1, 3, 7]).any()
    prefix_only = full.copy()
    prefix_only[:, 3:] = NOT_COMPUTED
    assert not votes_to_settle(prefix_only, [1, 3]).any()  # K' <= m are known exactly


def test_prefix_majority_ignores_missing_votes_and_marks_empty_rows():
    labels = np.array([[3, 3, NOT_COMPUTED, NOT_COMPUTED], [NOT_COMPUTED] * 4, [1, 2, 2, 1]])
    got = prefix_majority_votes(labels, [1, 4])
    assert list(got[1]) == [3, NOT_COMPUTED, 1]
    assert list(got[4]) == [3, NOT_COMPUTED, 1]


def test_selected_class_breaks_ties_by_lowest_index():
    assert selected_class(np.array([4, 2, 2, 4, 7]), 10) == 2


@pytest.mark.parametrize("N,alpha", [(100, 0.001), (1000, 0.001), (57, 0.05)])
def test_must_abstain_at_its_boundary(N, alpha):
    """must_abstain is exactly 'the best case abstains': at the last n where the remaining draws could still lift
    the bound to 0.5 it is False, one miss later it is True; and it never fires when some outcome certifies."""
    # the fewest hits out of N that certify
    need = next(h for h in range(N + 1) if lower_confidence_bound(h, N, alpha) >= 0.5)
    misses_allowed = N - need
    for n in range(1, N + 1):
        for nA in (max(0, n - misses_allowed - 1), max(0, n - misses_allowed)):
            if nA > n:
                continue
            best_case = lower_confidence_bound(nA + N - n, N, alpha)
            assert must_abstain(nA, n, N, alpha) == (best_case < 0.5)
    # boundary: exactly misses_allowed misses can still certify, one more cannot
    assert not must_abstain(nA=0, n=misses_allowed, N=N, alpha=alpha)
    assert must_abstain(nA=0, n=misses_allowed + 1, N=N, alpha=alpha)
    assert not must_abstain(nA=N, n=N, N=N, alpha=alpha)


@pytest.mark.parametrize("N,alpha", [(1, 0.001), (10, 0.001), (100, 0.001), (10_000, 0.001), (100_000, 0.001),
                                     (57, 0.05)])
def test_fewest_hits_to_certify_is_the_bound_threshold(N, alpha):
    h = fewest_hits_to_certify(N, alpha)
    if h <= N:
        assert lower_confidence_bound(h, N, alpha) >= 0.5
    if h >= 1:
        assert lower_confidence_bound(h - 1, N, alpha) < 0.5 if h - 1 <= N else True
    # the integer form of must_abstain: more misses than N - h
    for n in (0, N // 3, N):
        for misses in {0, max(0, N - h), max(0, N - h + 1), n}:
            if misses <= n:
                assert must_abstain(n - misses, n, N, alpha) == (misses > N - h)
