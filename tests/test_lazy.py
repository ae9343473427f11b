"""Proof that the savings are exact, on randomised synthetic vote streams: lazy votes, hopeless images and certain
abstention, each on and off, give identical certified outputs at every served K, and the lazy rows' majorities equal
the full rows'. The streams run through the real scheduler (densepure.job.scheduler.Scheduler) with a label oracle in
place of the networks, so batching, interleaving of images and resuming are exercised too."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from densepure.core.lazy import NO_SAVINGS, ImageVotes, Savings
from densepure.core.smoothing import (
    NOT_COMPUTED,
    fewest_hits_to_certify,
    lower_confidence_bound,
    prefix_majority_votes,
    votes_to_settle,
)
from densepure.job.results import record_outcome
from densepure.job.scheduler import ImageJob, Scheduler
from densepure.job.votes import VoteRecord

CLASSES, N0, N, K, ALPHA, SIGMA = 6, 20, 150, 9, 0.001, 0.5


class Oracle:
    """Labels as a pure function of (image, draw, vote), drawn once into a table: each draw has a 'true' class (the
    image's top class with probability p, else another), each vote is that class with probability q, else uniform.
    Images span sure certifications, near-0.5 images, ties between votes, hopeless images and certain abstentions.
    One image in four has another label than its top class (a wrong prediction or a hopeless image)."""

    def __init__(self, seed: int, images: int):
        rng = np.random.default_rng(seed)
        self.top = rng.integers(0, CLASSES, images)
        p = rng.choice([0.3, 0.5, 0.62, 0.7, 0.8, 0.95, 1.0], images)[:, None]
        q = rng.choice([0.34, 0.5, 0.6, 0.8, 1.0], images)[:, None, None]
        R = N0 + N
        other = (self.top[:, None] + 1 + rng.integers(0, CLASSES - 1, (images, R))) % CLASSES
        draw_class = np.where(rng.random((images, R)) < p, self.top[:, None], other)
        uniform = rng.integers(0, CLASSES, (images, R, K + 1))
        self.table = np.where(rng.random((images, R, K + 1)) < q, draw_class[:, :, None], uniform)
        self.labels = np.where(np.arange(images) % 4 == 1, (self.top + 1) % CLASSES, self.top)

    def vote(self, image: int, draw: int, vote: int) -> int:
        return int(self.table[image, draw, vote])

    def one_shot(self, image: int, draw: int) -> int:
        return int(self.table[image, draw, K])


class FakePurifier:
    """The Purifier interface over an Oracle: counts rows, holds 'first steps' like the real one."""

    def __init__(self, oracle: Oracle, rows: int, one_shot: bool = True, shared_first_step: bool = True):
        self.oracle, self.rows, self.shared_first_step = oracle, rows, shared_first_step
        self.plan, self.one_shot = object(), (object() if one_shot else None)
        self.stats: dict[int, dict[int, bool]] = {}
        self.first_rows = self.vote_rows = 0
        self.computed: list[tuple[int, int]] = []  # (draw, vote) of every vote row
        self.first_calls: list[tuple[int, int]] = []  # (image, draw) of every first-step row

    def add_image(self, image_id, x):
        self.stats[image_id] = {}

    def drop_image(self, image_id):
        self.stats.pop(image_id, None)

    def held(self, image_id):
        return sorted(self.stats.get(image_id, {}))

    def release(self, image_id, draws):
        for d in draws:
            self.stats.get(image_id, {}).pop(int(d), None)

    def first_steps(self, images, draws, keep, one_shot):
        assert len(draws) <= self.rows
        self.first_rows += len(draws)
        self.first_calls += list(zip(images.tolist(), draws.tolist()))
        for i, d, k in zip(images, draws, keep):
            if k:
                self.stats[int(i)][int(d)] = True
        return np.where(one_shot, self.oracle.table[images, draws, K], NOT_COMPUTED)

    def votes(self, images, draws, votes):
        assert len(draws) <= self.rows
        self.vote_rows += len(draws)
        self.computed += list(zip(draws.tolist(), votes.tolist()))
        if self.shared_first_step:
            assert all(int(d) in self.stats[int(i)] for i, d in zip(images, draws)), "a vote before its first step"
        return self.oracle.table[images, draws, votes]


def run(oracle: Oracle, images: list[int], Ks: list[int], savings: Savings, rows: int = 64,
        one_shot: bool = True) -> tuple[dict, dict, FakePurifier]:
    """(DensePure ImageVotes, one-shot ImageVotes) per image, all images through one scheduler."""
    purifier = FakePurifier(oracle, rows, one_shot)
    labels = {i: int(oracle.labels[i]) for i in images}
    jobs = {i: ImageJob(i, labels[i], ImageVotes(labels[i], K, Ks, N0, N, ALPHA, CLASSES, savings),
                        ImageVotes(labels[i], 1, [1], N0, N, ALPHA, CLASSES, savings) if one_shot else None)
            for i in images}
    Scheduler(purifier, lambda job: None).run(iter([(jobs[i], None) for i in images]))
    return ({i: j.dp for i, j in jobs.items()}, {i: j.os for i, j in jobs.items()}, purifier)


def outcome(votes: ImageVotes, k: int):
    record = VoteRecord(votes.labels, votes.label, {}, {}, votes.served(), votes.stop)
    return record_outcome(record, k, N0, N, SIGMA, ALPHA, CLASSES)


def certified_fields(out) -> tuple:
    """What tables and figures use (correct, and the radius it is certified at: none when not correct) and predict
    where the votes define it."""
    return out.correct, (out.radius if out.correct else None), out.predict


IMAGES = list(range(48))
ORACLE = Oracle(seed=7, images=len(IMAGES))
SERVED = [[K], [1, 3, K], [2, 5]]
COMBINATIONS = [Savings(lazy, hopeless, abstain) for lazy, hopeless, abstain in itertools.product([False, True],
                                                                                                 repeat=3)]


@pytest.fixture(scope="module")
def full():
    return {tuple(Ks): run(ORACLE, IMAGES, Ks, NO_SAVINGS) for Ks in SERVED}


def test_full_run_computes_every_vote(full):
    dp, os, purifier = full[(K,)]
    assert all((v.labels >= 0).all() and v.stop == "complete" for v in dp.values())
    assert purifier.vote_rows == len(IMAGES) * (N0 + N) * K and purifier.first_rows == len(IMAGES) * (N0 + N)


def test_the_streams_cover_every_case(full):
    """The synthetic images are not all easy: some certify, some abstain, some are wrong, near 0.5 and tied."""
    dp = full[(K,)][0]
    outs = [outcome(v, K) for v in dp.values()]
    assert sum(o.predict == -1 for o in outs) >= 5 and sum(o.correct for o in outs) >= 5
    assert sum(o.predict not in (-1, v.label) for o, v in zip(outs, dp.values())) >= 3
    h = fewest_hits_to_certify(N, ALPHA)
    assert any(abs(o.nA - h) <= 10 for o in outs), "no image near the certification threshold"
    ties = sum(int((np.bincount(row, minlength=CLASSES) == np.bincount(row).max()).sum() > 1)
               for v in dp.values() for row in v.labels[:, :K])
    assert ties > 50


@pytest.mark.parametrize("Ks", SERVED, ids=lambda Ks: "Ks" + "-".join(map(str, Ks)))
@pytest.mark.parametrize("savings", COMBINATIONS, ids=lambda s: f"lazy{int(s.lazy_votes)}-hopeless"
                         f"{int(s.skip_hopeless)}-abstain{int(s.stop_abstain)}")
def test_savings_give_identical_certified_outputs(full, Ks, savings):
    dp_full, os_full, purifier_full = full[tuple(Ks)]
    dp, os, purifier = run(ORACLE, IMAGES, Ks, savings, rows=37)
    for i in IMAGES:
        for k in Ks:
            a, b = outcome(dp_full[i], k), outcome(dp[i], k)
            assert certified_fields(b)[:2] == certified_fields(a)[:2], (i, k)
            if b.predict is not None:  # defined wherever the votes decide it
                assert b.predict == a.predict, (i, k)
            assert (b.stop == "hopeless") <= savings.skip_hopeless
        a, b = outcome(os_full[i], 1), outcome(os[i], 1)
        assert certified_fields(b)[:2] == certified_fields(a)[:2]
    assert purifier.vote_rows <= purifier_full.vote_rows
    if savings != NO_SAVINGS:
        assert purifier.vote_rows < purifier_full.vote_rows


@pytest.mark.parametrize("Ks", SERVED, ids=lambda Ks: "Ks" + "-".join(map(str, Ks)))
def test_lazy_majorities_equal_the_full_ones_on_every_settled_draw(full, Ks):
    dp_full = full[tuple(Ks)][0]
    dp = run(ORACLE, IMAGES, Ks, Savings(lazy_votes=True, skip_hopeless=False, stop_abstain=False))[0]
    for i in IMAGES:
        lazy, complete = dp[i].labels, dp_full[i].labels
        assert not votes_to_settle(lazy, Ks).any()  # every row is settled at every served K
        computed = lazy >= 0
        np.testing.assert_array_equal(lazy[computed], complete[computed])  # the votes computed are the same votes
        for k in Ks:
            np.testing.assert_array_equal(prefix_majority_votes(lazy, [k])[k], prefix_majority_votes(complete, [k])[k])


def test_lazy_votes_save_most_votes_and_stop_exactly_when_settled(full):
    dp_full = full[(K,)][0]
    dp, _, purifier = run(ORACLE, IMAGES, [K], Savings(lazy_votes=True, skip_hopeless=False, stop_abstain=False))
    share = purifier.vote_rows / full[(K,)][2].vote_rows
    assert share < 0.85, share
    for i in IMAGES[:8]:
        for row, full_row in zip(dp[i].labels, dp_full[i].labels):
            m = int((row >= 0).sum())
            assert m >= (K + 1) // 2  # the first round: the fewest votes any settlement needs
            prefix = np.r_[full_row[:m - 1], [NOT_COMPUTED] * (K - m + 1)]
            assert votes_to_settle(prefix[None], [K])[0] > 0 or m == (K + 1) // 2  # one vote fewer was not enough


def test_schedule_and_batch_size_do_not_change_the_votes():
    savings = Savings(lazy_votes=True, skip_hopeless=True, stop_abstain=True)
    runs = [run(ORACLE, IMAGES[:12], [1, 3, K], savings, rows=rows) for rows in (1, 7, 200)]
    for dp, os, _ in runs[1:]:
        for i in IMAGES[:12]:
            np.testing.assert_array_equal(dp[i].labels, runs[0][0][i].labels)
            np.testing.assert_array_equal(os[i].labels, runs[0][1][i].labels)
            assert dp[i].stop == runs[0][0][i].stop


def test_votes_computed_ahead_are_kept_only_as_far_as_the_lazy_rounds_go():
    """A row given all K votes at once ends with exactly the votes the rounds of fewest-that-could-settle would have
    computed (the scheduler computes votes ahead to fill a call that would otherwise be padded)."""
    savings = Savings(lazy_votes=True, skip_hopeless=False, stop_abstain=False)
    for i in IMAGES[:6]:
        Ks = [1, 3, K]
        rounds = ImageVotes(int(ORACLE.labels[i]), K, Ks, N0, N, ALPHA, CLASSES, savings)
        while not rounds.done:
            rows = np.flatnonzero(rounds.need)
            draws = np.repeat(rows, rounds.need[rows])
            votes = np.concatenate([np.arange(rounds.computed[r], rounds.computed[r] + rounds.need[r]) for r in rows])
            rounds.record(draws, votes, ORACLE.table[i, draws, votes])
        ahead = ImageVotes(int(ORACLE.labels[i]), K, Ks, N0, N, ALPHA, CLASSES, savings)
        draws, votes = np.divmod(np.arange((N0 + N) * K), K)
        ahead.record(draws, votes, ORACLE.table[i, draws, votes])
        assert ahead.done
        np.testing.assert_array_equal(ahead.labels, rounds.labels)


def test_no_draw_has_its_first_call_twice():
    """The first call of a draw serves DensePure's votes and the one-shot store together: a draw the one-shot store
    needs before DensePure does waits for it, so no (image, draw) runs through the first call twice."""
    for rows in (7, 64, 200):
        _, _, purifier = run(ORACLE, IMAGES[:16], [1, 3, K], Savings(True, True, True), rows=rows)
        assert len(purifier.first_calls) == len(set(purifier.first_calls))


def test_resuming_from_any_partial_matrix_gives_the_same_votes():
    """A checkpoint holds some computed votes (a prefix of each row, any rows): resuming computes the rest and ends
    with the matrix of an uninterrupted run."""
    savings = Savings(lazy_votes=True, skip_hopeless=True, stop_abstain=True)
    straight = run(ORACLE, IMAGES[:10], [1, K], savings)[0]
    rng = np.random.default_rng(3)
    for i in IMAGES[:10]:
        partial = straight[i].labels.copy()
        partial[N0:][rng.random(N) < 0.5] = NOT_COMPUTED  # some rows dropped
        keep = rng.integers(0, K + 1, size=N0 + N)
        partial[np.arange(K)[None, :] >= keep[:, None]] = NOT_COMPUTED  # others cut short
        full_partial = np.where(partial >= 0, partial, NOT_COMPUTED)
        votes = ImageVotes(straight[i].label, K, [1, K], N0, N, ALPHA, CLASSES, savings, labels=full_partial)
        purifier = FakePurifier(ORACLE, 16, one_shot=False)
        Scheduler(purifier, lambda job: None).run(iter([(ImageJob(i, straight[i].label, votes, None), None)]))
        np.testing.assert_array_equal(votes.labels, straight[i].labels)
        assert votes.stop == straight[i].stop


def test_extending_to_more_Ks_and_a_larger_K_computes_only_the_missing_votes():
    savings = Savings(lazy_votes=True, skip_hopeless=True, stop_abstain=True)
    small = run(ORACLE, IMAGES[:10], [3], savings)[0]
    fresh_dp, _, fresh = run(ORACLE, IMAGES[:10], [1, 3, K], savings, one_shot=False)
    extended_rows = 0
    for i in IMAGES[:10]:
        old = small[i].labels[:, :K]
        votes = ImageVotes(small[i].label, K, [1, 3, K], N0, N, ALPHA, CLASSES, savings, labels=old)
        purifier = FakePurifier(ORACLE, 16, one_shot=False)
        Scheduler(purifier, lambda job: None).run(iter([(ImageJob(i, small[i].label, votes, None), None)]))
        np.testing.assert_array_equal(votes.labels, fresh_dp[i].labels)
        extended_rows += purifier.vote_rows
        assert not any(old[d, v] >= 0 for d, v in purifier.computed), "a stored vote was computed again"
    assert extended_rows < fresh.vote_rows


def test_certain_abstention_stops_at_the_first_row_that_decides():
    """An image whose estimation draws all miss: with h = fewest hits that certify, the first N - h misses can
    still be followed by enough hits; the (N - h + 1)-th miss decides, and estimation stops right there."""
    h = fewest_hits_to_certify(N, ALPHA)
    label = 0
    votes = ImageVotes(label, 1, [1], N0, N, ALPHA, CLASSES, Savings(stop_abstain=True))
    votes.record(np.arange(N0), np.zeros(N0), np.zeros(N0))  # selection: class 0
    misses = N - h
    votes.record(np.arange(N0, N0 + misses), np.zeros(misses), np.ones(misses))
    assert not votes.done  # every remaining draw hitting would still certify
    assert lower_confidence_bound(N - misses, N, ALPHA) >= 0.5
    votes.record([N0 + misses], [0], [1])
    assert votes.done and votes.stop == "abstain" and votes.stopped_at == misses + 1
    out = outcome(votes, 1)
    assert (out.predict, out.radius, out.n, out.stop) == (-1, 0.0, misses + 1, "abstain")
    # at a larger alpha the bound is higher: the stored image cannot say, and says so
    with pytest.raises(ValueError, match="alpha"):
        record_outcome(VoteRecord(votes.labels, 0, {}, {}, votes.served(), votes.stop), 1, N0, N, SIGMA, 0.2,
                       CLASSES)


def test_hopeless_image_skips_estimation_and_counts_at_no_radius():
    votes = ImageVotes(3, 5, [5], N0, N, ALPHA, CLASSES, Savings(skip_hopeless=True, stop_abstain=False))
    rows = np.repeat(np.arange(N0), 3)
    votes.record(rows, np.tile(np.arange(3), N0), np.full(3 * N0, 4))  # 3 votes of 5 for class 4: settled
    assert votes.done and votes.stop == "hopeless" and (votes.labels[N0:] == NOT_COMPUTED).all()
    out = outcome(votes, 5)
    assert (out.predict, out.radius, out.correct, out.n, out.stop) == (None, None, 0, 0, "hopeless")
    with pytest.raises(ValueError, match="serve K in \\[5\\], not K=3"):
        outcome(votes, 3)
