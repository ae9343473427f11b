"""Randomized smoothing certification on label arrays (Cohen et al., 2019), with DensePure's K-vote base classifier.

Everything here works on integer class labels that a base classifier already produced; no model is called. The
base classifier of DensePure is ``F_K(x + delta) = majority_k f(rev_k(x + delta))``: K purified classifications of
the *same* noisy input, combined by :func:`majority_vote`. Its smoothed classifier
``g(x) = argmax_c P(F_K(x + delta) = c)``, ``delta ~ N(0, sigma^2 I)``, is certified by :func:`certify` exactly as
in Cohen et al.'s CERTIFY.

Reference quirks reproduced on purpose (docs/reference-behaviour.md#ref-7 and #ref-8-3): selection ties go to the
lowest class index, vote ties to the
tied label met first in seed order, radii are written with ``{:.3}`` and certified accuracy thresholds that text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta, binomtest, norm

ABSTAIN = -1
NOT_COMPUTED = -1  # a vote of the label matrix that was never computed (lazy votes, stopped images)
MERGED_HEADER = "idx\tlabel\tpredict\tradius\tcorrect"

# Largest table of per-row class counts built at once by majority_vote (entries); bounds its memory.
_TABLE_ENTRIES = 1 << 22


@dataclass(frozen=True)
class Certificate:
    """Outcome of CERTIFY for one input: ``prediction`` (ABSTAIN = -1) and the L2 ``radius`` (0.0 when abstaining).

    ``pA_lower`` is the one-sided Clopper–Pearson lower bound on the top class's probability, from ``nA`` hits among
    ``n`` estimation draws; ``selection_counts`` are the class counts of the N0 selection draws that chose the class.
    """

    prediction: int
    radius: float
    pA_lower: float
    nA: int
    n: int
    selection_counts: np.ndarray = field(compare=False, repr=False)

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


def lower_confidence_bound(nA: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper–Pearson lower bound on p from ``nA`` successes in ``n`` Bernoulli(p) trials.

    Guarantee: ``P(bound > p) <= alpha`` for every p. Equals statsmodels
    ``proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]``, i.e. ``BetaPPF(alpha; nA, n - nA + 1)``; 0 when
    ``nA == 0``.
    """
    if not 0 <= nA <= n or n < 1:
        raise ValueError(f"need 0 <= nA <= n and n >= 1, got nA={nA}, n={n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if nA == 0:
        return 0.0
    return float(beta.ppf(alpha, nA, n - nA + 1))


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [num_classes] of the labels; raises ValueError for a label outside [0, num_classes)."""
    labels = np.asarray(labels).ravel()
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return np.bincount(labels.astype(np.intp), minlength=num_classes)


def majority_vote(labels: np.ndarray) -> np.ndarray:
    """Per row of ``labels`` [rows, K] (non-negative ints), the most frequent label.

    Ties go to the tied label that appears first in the row (column = seed order), as the reference's
    ``max(row, key=row.count)``. Vectorised: per chunk of rows a table of class counts is built with one bincount;
    each entry is given its label's count and the first column with the largest count wins.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError(f"labels must be a [rows, K >= 1] array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    rows, k = labels.shape
    if k == 1 or rows == 0:
        return labels[:, 0].copy()
    if labels.min() < 0:
        raise ValueError("labels must be non-negative")
    classes = int(labels.max()) + 1
    out = np.empty(rows, dtype=labels.dtype)
    chunk = max(1, _TABLE_ENTRIES // max(classes, k))
    for start in range(0, rows, chunk):
        lab = labels[start:start + chunk].astype(np.intp)
        m = lab.shape[0]
        keys = (np.arange(m, dtype=np.intp)[:, None] * classes + lab).ravel()
        table = np.bincount(keys, minlength=m * classes).reshape(m, classes)
        count_of_entry = np.take_along_axis(table, lab, axis=1)
        first_best = count_of_entry.argmax(axis=1)  # argmax returns the first maximum: earliest seed wins ties
        out[start:start + m] = lab[np.arange(m), first_best]
    return out


def prefix_majority_votes(labels: np.ndarray, ks: Iterable[int]) -> dict[int, np.ndarray]:
    """``{k: majority_vote(labels[:, :k])}`` for every k in ``ks``, in one pass over the columns.

    Same tie rule as :func:`majority_vote`: among labels with the top count, the one whose first occurrence is
    earliest. A negative entry is a vote that was never computed (:data:`NOT_COMPUTED`): it is not counted, so a row
    whose first ``m < k`` votes were computed gets the majority of those ``m`` (``NOT_COMPUTED`` when ``m = 0``),
    which is the majority over the first ``k`` whenever the row is settled at ``k`` (:func:`votes_to_settle`).
    Costs O(rows * (K + classes)) for all prefixes together instead of once per prefix.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError(f"labels must be a [rows, K >= 1] array, got shape {labels.shape}")
    wanted = sorted(set(int(k) for k in ks))
    if wanted and not 1 <= wanted[0] <= wanted[-1] <= labels.shape[1]:
        raise ValueError(f"every k must be in [1, {labels.shape[1]}], got {wanted}")
    if not wanted:
        return {}
    rows = labels.shape[0]
    classes = int(labels.max()) + 1 if rows and labels.max() >= 0 else 1
    counts = np.zeros((rows, classes + 1), dtype=np.int32)  # the last column collects the missing votes
    first_seen = np.full((rows, classes + 1), np.iinfo(np.int32).max, dtype=np.int32)
    best = np.full(rows, classes, dtype=np.intp)
    best_count = np.zeros(rows, dtype=np.int32)
    r = np.arange(rows)
    out: dict[int, np.ndarray] = {}
    dtype = labels.dtype if np.issubdtype(labels.dtype, np.signedinteger) else np.int64
    for j in range(wanted[-1]):
        lab = labels[:, j].astype(np.intp)
        missing = lab < 0
        lab = np.where(missing, classes, lab)
        counts[r, lab] += ~missing
        first_seen[r, lab] = np.where(missing, first_seen[r, lab], np.minimum(first_seen[r, lab], j))
        c = counts[r, lab]
        takes = ~missing & ((c > best_count) | ((c == best_count) & (first_seen[r, lab] < first_seen[r, best])))
        best = np.where(takes, lab, best)
        best_count = np.where(takes, c, best_count)
        if j + 1 in wanted:
            out[j + 1] = np.where(best == classes, NOT_COMPUTED, best).astype(dtype)
    return out


# --- sequential stopping: what the votes computed so far already decide -----------------------------------------


def votes_to_settle(labels: np.ndarray, Ks: Sequence[int]) -> np.ndarray:
    """Per row of ``labels`` [rows, K] whose first ``m`` votes are computed (the rest :data:`NOT_COMPUTED`), the fewest
    further votes after which the majority over the first K' votes is *settled* for every K' in ``Ks``: no values
    of its missing votes can change it. 0 means settled now.

    With leader L of the ``m`` votes (the tie rule of :func:`majority_vote`), counts ``c`` and ``r = K' - m`` missing
    votes, a challenger j (seen or not) takes the majority only with all ``r``: settled iff
    ``c_L >= c_j + r + [j first seen before L]`` for every j, where an unseen label counts ``c_j = 0``, never first.
    Settlement is fastest when the next d votes go to L, so the fewest is the least d with
    ``c_L + d >= c_j + [j before L] + r - d``, i.e. ``ceil((c_j + [j before L] + K' - m - c_L) / 2)``, capped at
    ``r`` (all votes computed). For ``m = 0`` it is ``ceil(K' / 2)``: the fewest votes any settlement needs.
    """
    labels = np.asarray(labels)
    rows, K = labels.shape
    Ks = sorted(set(int(k) for k in Ks))
    if not Ks or not 1 <= Ks[0] <= Ks[-1] <= K:
        raise ValueError(f"every K' must be in [1, {K}], got {Ks}")
    computed = labels >= 0
    m = computed.sum(axis=1)
    if rows == 0:
        return np.zeros(0, dtype=np.int64)
    classes = int(labels.max()) + 1 if labels.max() >= 0 else 1
    lab = np.where(computed, labels, classes).astype(np.intp)
    r = np.arange(rows)[:, None]
    counts = np.zeros((rows, classes + 1), dtype=np.int64)
    np.add.at(counts, (np.broadcast_to(r, lab.shape), lab), 1)
    counts = counts[:, :classes]
    first = np.full((rows, classes + 1), K, dtype=np.int64)
    position = np.broadcast_to(np.arange(K), lab.shape)
    np.minimum.at(first, (np.broadcast_to(r, lab.shape), lab), position)
    first = first[:, :classes]
    leader = prefix_majority_votes(labels, [K])[K].astype(np.intp)  # NOT_COMPUTED when m = 0
    has_leader = leader >= 0
    safe = np.where(has_leader, leader, 0)
    c_leader = np.where(has_leader, counts[r[:, 0], safe], 0)
    first_leader = np.where(has_leader, first[r[:, 0], safe], K)
    challenger = counts + (first < first_leader[:, None])  # seen labels: count + [first seen before L]
    challenger[r[:, 0], safe] = np.where(has_leader, 0, challenger[r[:, 0], safe])  # L is not its own challenger
    strongest = np.maximum(challenger.max(axis=1), 0)  # an unseen label challenges with 0
    need = np.zeros(rows, dtype=np.int64)
    for k in Ks:
        missing = np.maximum(k - m, 0)
        d = np.clip(-(-(strongest + k - m - c_leader) // 2), 0, missing)
        need = np.maximum(need, np.where(missing > 0, d, 0))
    return need


def selected_class(majorities: np.ndarray, num_classes: int) -> int:
    """The class CERTIFY selects from the base classifier's labels of the N0 selection draws (ties: lowest index)."""
    return int(class_counts(majorities, num_classes).argmax())


def fewest_hits_to_certify(N: int, alpha: float) -> int:
    """The least ``h`` with ``lower_confidence_bound(h, N, alpha) >= 0.5``: CERTIFY with N estimation draws returns a
    class only when at least this many vote for it (``N + 1`` when no count does)."""
    lo, hi = 0, N + 1  # the bound grows with the hits: binary search for the first h that reaches 0.5
    while lo < hi:
        mid = (lo + hi) // 2
        if mid <= N and lower_confidence_bound(mid, N, alpha) >= 0.5:
            hi = mid
        else:
            lo = mid + 1
    return lo


def must_abstain(nA: int, n: int, N: int, alpha: float) -> bool:
    """True when CERTIFY abstains whatever the ``N - n`` estimation draws still to come vote: even if every one of
    them votes for the selected class, the Clopper-Pearson bound ``lower_confidence_bound(nA + N - n, N, alpha)``
    stays below 0.5 (the bound grows with the number of hits, so fewer hits abstain too). Equivalently, more than
    ``N - fewest_hits_to_certify(N, alpha)`` of the first ``n`` draws missed."""
    if not 0 <= nA <= n <= N:
        raise ValueError(f"need 0 <= nA <= n <= N, got nA={nA}, n={n}, N={N}")
    return lower_confidence_bound(nA + N - n, N, alpha) < 0.5


def certify(n0_preds: np.ndarray, n_preds: np.ndarray, sigma: float, alpha: float, num_classes: int) -> Certificate:
    """Cohen et al.'s CERTIFY from base-classifier labels of N0 selection and N estimation noisy draws.

    Guarantee (Cohen et al. 2019, Thm 1 + Prop. 2): if the draws are i.i.d. ``f(x + delta)``, ``delta ~ N(0, sigma^2
    I)``, then with probability >= 1 - alpha over them, a returned non-abstaining class ``cA`` equals the smoothed
    classifier ``g(x + e)`` for every ``||e||_2 < radius = sigma * Phi^-1(pA_lower)``. The class is chosen on the N0
    draws only (ties -> lowest index); abstains (prediction -1, radius 0.0) when ``pA_lower < 0.5``.
    """
    counts0 = class_counts(n0_preds, num_classes)
    n_preds = np.asarray(n_preds).ravel()
    if counts0.sum() == 0 or n_preds.size == 0:
        raise ValueError("need at least one selection and one estimation draw")
    c_a = int(counts0.argmax())
    n_a = int(class_counts(n_preds, num_classes)[c_a])
    n = int(n_preds.size)
    p_lower = lower_confidence_bound(n_a, n, alpha)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, p_lower, n_a, n, counts0)
    return Certificate(c_a, float(sigma * norm.ppf(p_lower)), p_lower, n_a, n, counts0)


def predict(preds: np.ndarray, alpha: float, num_classes: int) -> int:
    """Cohen et al.'s PREDICT: the top class of ``preds``, or ABSTAIN (-1) unless a two-sided binomial test of the top
    two counts rejects equality at level ``alpha``.

    Guarantee: the probability of returning a class other than the smoothed classifier's ``g(x)`` is <= alpha.
    Count ties are ordered by lowest class index.
    """
    counts = class_counts(preds, num_classes)
    order = np.argsort(-counts, kind="stable")
    top = int(order[0])
    n_top = int(counts[top])
    n_second = int(counts[order[1]]) if num_classes > 1 else 0
    if n_top + n_second == 0:
        return ABSTAIN
    if binomtest(n_top, n_top + n_second, p=0.5).pvalue > alpha:
        return ABSTAIN
    return top


def certify_votes(
    votes: np.ndarray, K_prime: int, N0: int, sigma: float, alpha: float, num_classes: int
) -> Certificate:
    """DensePure K-vote certification (docs/reference-behaviour.md#ref-8-3): row-wise majority over the first
    ``K_prime`` columns of ``votes``
    [N0 + N, K] (rows = noisy draws in draw order, columns = reverse runs in seed order), then :func:`certify` with
    the first N0 rows as selection and the rest as estimation draws.

    The guarantee of :func:`certify` holds for the smoothed K'-vote classifier because the rows are i.i.d. draws of it.
    """
    votes = np.asarray(votes)
    if votes.ndim != 2 or not 1 <= K_prime <= votes.shape[1]:
        raise ValueError(f"need votes [N0 + N, K] with 1 <= K_prime <= K, got shape {votes.shape}, K_prime={K_prime}")
    if not 1 <= N0 < votes.shape[0]:
        raise ValueError(f"need 1 <= N0 < rows, got N0={N0}, rows={votes.shape[0]}")
    voted = majority_vote(votes[:, :K_prime])
    return certify(voted[:N0], voted[N0:], sigma, alpha, num_classes)


def format_radius(radius: float) -> str:
    """The radius as the reference writes it: ``'{:.3}'.format(r)`` (3 significant digits; 0.0 -> ``'0.0'``)."""
    return "{:.3}".format(float(radius))


def certified_accuracy(radii: Sequence[float | str], correct: Sequence[int | bool], r: float) -> float:
    """Fraction of rows that are correct and have ``radius >= r``, thresholding the *written* radius (``{:.3}``) as
    the reference's ``compute_accuracy.py`` does (so 0.7996 counts as certified at r = 0.8)."""
    written = np.array([float(x) if isinstance(x, str) else float(format_radius(x)) for x in radii], dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if written.shape != ok.shape:
        raise ValueError(f"radii and correct differ in length: {written.shape} vs {ok.shape}")
    if written.size == 0:
        return float("nan")
    return float(np.mean(ok & (written >= r)))


def merged_result_line(idx: int, label: int, cert: Certificate) -> str:
    """One row ``idx label predict radius correct`` of the reference's merged result file (no newline)."""
    return f"{idx}\t{label}\t{cert.prediction}\t{format_radius(cert.radius)}\t{int(cert.prediction == label)}"


def merged_results_text(rows: Iterable[tuple[int, int, Certificate]]) -> str:
    """Text of the reference's ``<dataset>_<sigma>_merge_results.txt`` for ``(idx, label, certificate)`` rows: the
    tab-separated header, then one line per row, each newline-terminated."""
    lines = [MERGED_HEADER] + [merged_result_line(idx, label, cert) for idx, label, cert in rows]
    return "\n".join(lines) + "\n"
