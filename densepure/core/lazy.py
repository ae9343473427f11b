"""Lazy certification of one image in one votes store: which draws and votes are still needed, and when to stop.

An image's votes form the matrix ``labels`` [N0 + N, K] (rows = noisy draws in draw order, columns = reverse runs in
seed order). CERTIFY at vote count K' needs, per row, only the majority over its first K' votes, and per image only
the class selected on the N0 selection rows and the hits among the N estimation rows. :class:`ImageVotes` asks for
exactly the votes that decide these, every saving exact (no output at a served K' can differ from the full matrix):

* **lazy votes** -- a row's votes are computed in seed order until its majority is settled at every served K'
  (:func:`densepure.core.smoothing.votes_to_settle`); each request is the fewest votes that could settle it, so a row
  ends with the same votes whatever the batching or the interruptions;
* **hopeless images** (``skip_hopeless``) -- when the selected class is not the label at every served K', no
  estimation row is computed: the image counts at no radius;
* **certain abstention** (``stop_abstain``) -- estimation stops at the first prefix of ``n`` rows after which every
  served K' abstains whatever the rest vote (more than ``N - fewest_hits_to_certify(N, alpha)`` misses).

Decisions are taken on prefixes of rows in draw order, and rows past a stop are cleared, so the final matrix is a
function of the votes alone: the same for every batch size, schedule and resume point. PyTorch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densepure.core.smoothing import (
    NOT_COMPUTED,
    fewest_hits_to_certify,
    prefix_majority_votes,
    selected_class,
    votes_to_settle,
)


@dataclass(frozen=True)
class Savings:
    """Which exact savings a certification job uses (every output at the served Ks is identical either way)."""

    lazy_votes: bool = True
    skip_hopeless: bool = False
    stop_abstain: bool = True


NO_SAVINGS = Savings(lazy_votes=False, skip_hopeless=False, stop_abstain=False)

class ImageVotes:
    """The votes one store still needs of one image. ``labels`` (optional) resumes from votes computed earlier (a
    checkpoint, or a stored image extended to more Ks or a larger K): they are kept and only missing votes asked.

    Protocol: read :attr:`need` (votes wanted per row, in seed order after the computed ones), :meth:`record` the
    labels of computed votes, until :attr:`done`; then :attr:`labels`, :attr:`stop` and :meth:`served` are final.
    Rows below :attr:`due` are needed now; with ``skip_hopeless`` the estimation rows are not due until the
    selection shows the image is not hopeless, but their votes may be computed *speculatively* (to fill a network
    call that would otherwise be padded): they are kept if the image goes on and cleared if it is hopeless.
    """

    def __init__(self, label: int, K: int, Ks: list[int], N0: int, N: int, alpha: float, num_classes: int,
                 savings: Savings = Savings(), labels: np.ndarray | None = None):
        self.label, self.K, self.N0, self.N, self.alpha = int(label), int(K), int(N0), int(N), float(alpha)
        self.Ks = sorted(set(int(k) for k in Ks))
        if not self.Ks or not 1 <= self.Ks[0] <= self.Ks[-1] <= self.K:
            raise ValueError(f"served Ks must lie in [1, K={self.K}], got {self.Ks}")
        self.num_classes, self.savings = num_classes, savings
        rows = self.N0 + self.N
        self.labels = np.full((rows, self.K), NOT_COMPUTED, dtype=np.int32)
        if labels is not None:
            if labels.shape[0] != rows or labels.shape[1] > self.K:
                raise ValueError(f"resumed labels have shape {labels.shape}, expected [{rows}, <= {self.K}]")
            self.labels[:, :labels.shape[1]] = labels
        self.computed = (self.labels >= 0).sum(axis=1)
        self.need = np.zeros(rows, dtype=np.int64)
        self.phase = "selection"
        self.stop = "complete"
        self.stopped_at = self.N  # estimation rows that decide the image
        self.decided_abstain = False
        self._h = fewest_hits_to_certify(self.N, self.alpha)
        # Estimation rows are due from the start unless the selection may make them unnecessary; with certain
        # abstention only those before the earliest possible stop are (work on rows past a stop is lost).
        self.due = self.N0 if savings.skip_hopeless else self.N0 + self._needed_rows(0, {k: 0 for k in self.Ks})
        self._refresh(np.arange(rows))
        self._advance()

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def _refresh(self, rows: np.ndarray) -> None:
        """Recompute the votes wanted of ``rows`` from what they hold."""
        if not len(rows):
            return
        if self.savings.lazy_votes:
            self.need[rows] = votes_to_settle(self.labels[rows], self.Ks)
        else:
            self.need[rows] = self.K - self.computed[rows]

    def record(self, rows: np.ndarray, votes: np.ndarray, labels: np.ndarray) -> None:
        """Labels of vote ``votes[i]`` of row ``rows[i]``. Each row's votes must arrive in seed order (a row holds a
        prefix of its votes); votes of rows the image no longer needs are ignored."""
        if self.done:
            return
        rows, votes, labels = (np.asarray(a, dtype=np.int64).ravel() for a in (rows, votes, labels))
        if not len(rows):
            return
        order = np.lexsort((votes, rows))
        rows, votes, labels = rows[order], votes[order], labels[order]
        touched = np.unique(rows)
        asked = self.computed[touched] + self.need[touched]
        self.labels[rows, votes] = labels
        if not _is_prefix(self.labels[touched]):
            raise ValueError("votes of a row must be recorded in seed order")
        self.computed[touched] = (self.labels[touched] >= 0).sum(axis=1)
        over = self.computed[touched] > asked
        if self.savings.lazy_votes and over.any():
            self._keep_settling_votes(touched[over], asked[over])
        self._refresh(touched)
        self._advance()

    def _keep_settling_votes(self, rows: np.ndarray, asked: np.ndarray) -> None:
        """Rows given more votes than were asked (``asked``: the fewest that could settle them) keep only those that
        the lazy rounds would have computed: round after round of the fewest that could settle, up to the first
        prefix that settles. So a row ends with the same votes however many were computed ahead."""
        for row, m in zip(rows, asked):
            have = int(self.computed[row])
            while m < have:
                prefix = np.where(np.arange(self.K) < m, self.labels[row], NOT_COMPUTED)[None]
                more = int(votes_to_settle(prefix, self.Ks)[0])
                if more == 0:
                    self.labels[row, m:] = NOT_COMPUTED
                    self.computed[row] = m
                    break
                m += more

    def _advance(self) -> None:
        """Move to the next phase or stop, as far as the rows computed allow."""
        if self.phase == "selection":
            if self.need[:self.N0].any():
                return
            selection = prefix_majority_votes(self.labels[:self.N0], self.Ks)
            self.selected = {k: selected_class(selection[k], self.num_classes) for k in self.Ks}
            if all(self._hopeless_at(k) for k in self.Ks):
                self._finish("hopeless", 0)
                return
            self.phase = "estimation"
            self._misses = {k: 0 for k in self.Ks}
            self._checked = 0
            self.due = self.N0 + self._needed_rows(0, self._misses)
        if self.phase == "estimation":
            self._check_estimation()

    def _check_estimation(self) -> None:
        settled = self.need[self.N0:] == 0
        prefix = int(np.argmin(settled)) if not settled.all() else self.N
        if prefix > self._checked and (self.savings.stop_abstain or self.savings.skip_hopeless):
            stop = self._first_decided_prefix(self._checked, prefix)
            if stop is not None and stop < self.N:
                self._finish("abstain" if self.decided_abstain else "hopeless", stop)
                return
            self._checked = prefix
        if prefix == self.N:
            self._finish("complete", self.N)
            return
        self.due = self.N0 + self._needed_rows(prefix, self._misses)

    def _hopeless_at(self, k: int) -> bool:
        """With ``skip_hopeless``, the class selected at K' = k is not the label: the image counts at no radius at k
        whatever its estimation rows vote (known once the selection is settled)."""
        return self.savings.skip_hopeless and self.selected[k] != self.label

    def _needed_rows(self, prefix: int, misses: dict) -> int:
        """How many estimation rows (counted from the first) are certainly used, given ``misses[k]`` among the first
        ``prefix``: the image stops only once every live K' (not hopeless) has more than N - h misses, so even if
        every later row misses it stops after no fewer than prefix + max_k' (N - h + 1 - misses[k']) rows; rows
        before that are part of whatever prefix decides it. Without certain abstention every row is used."""
        if not self.savings.stop_abstain:
            return self.N
        live = [k for k in self.Ks if not (self.phase == "estimation" and self._hopeless_at(k))]
        earliest_stop = prefix + max(self.N - self._h + 1 - misses[k] for k in live)
        return min(self.N, max(prefix + 1, earliest_stop))

    def _first_decided_prefix(self, start: int, stop: int) -> int | None:
        """The least n in (start, stop] after which every served K' is decided (hopeless, or certain to abstain),
        updating the running miss counts; None if none."""
        rows = self.labels[self.N0 + start:self.N0 + stop]
        majorities = prefix_majority_votes(rows, self.Ks)
        first_all = start  # every K' decided after this many rows
        abstains = False
        for k in self.Ks:
            if self._hopeless_at(k):
                continue  # hopeless at k: decided from the start
            if not self.savings.stop_abstain:
                return None
            misses = self._misses[k] + np.cumsum(majorities[k] != self.selected[k])
            over = np.flatnonzero(misses > self.N - self._h)
            if self._misses[k] > self.N - self._h:
                at = start
            elif len(over):
                at = start + int(over[0]) + 1
            else:
                self._misses[k] = int(misses[-1]) if len(misses) else self._misses[k]
                first_all = None
                continue
            abstains = True
            if first_all is not None:
                first_all = max(first_all, at)
            self._misses[k] = int(misses[-1]) if len(misses) else self._misses[k]
        if first_all is None:
            return None
        self.decided_abstain = abstains
        return first_all

    def _finish(self, stop: str, estimation_rows: int) -> None:
        self.phase, self.stop, self.stopped_at = "done", stop, estimation_rows
        self.labels[self.N0 + estimation_rows:] = NOT_COMPUTED
        self.computed[self.N0 + estimation_rows:] = 0
        self.need[:] = 0

    def served(self) -> dict:
        """What the image's stored votes are exact for: the Ks (every K when all votes were computed), and the
        largest alpha (None: any) when it stopped by certain abstention."""
        Ks = list(range(1, self.K + 1)) if (self.labels >= 0).all() else self.Ks
        return {"Ks": Ks, "alpha": self.alpha if self.stop == "abstain" else None}

    def state(self) -> dict:
        """What a checkpoint needs besides the labels."""
        return {"Ks": self.Ks, "alpha": self.alpha}


def _is_prefix(labels: np.ndarray) -> bool:
    """Every row's computed votes come first (no computed vote after a missing one)."""
    computed = labels >= 0
    return bool((computed[:, 1:] <= computed[:, :-1]).all())
