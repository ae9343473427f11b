"""The scheduler of rows: which draws and votes of the images in progress fill each network call, so calls stay
full and every row's result is independent of its neighbours."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from densepure.core.lazy import ImageVotes, Savings
from densepure.job.purifier import Purifier
from densepure.job.results import Setting


@dataclass
class ImageJob:
    """An image in progress: its DensePure votes (``dp``) and one-shot votes (``os``), either None when not wanted."""

    image_id: int
    label: int
    dp: ImageVotes | None
    os: ImageVotes | None
    seconds: float = 0.0
    claims: list = field(default_factory=list)
    draws_started: int = 0  # draws whose first call ran (progress)

    @property
    def done(self) -> bool:
        return (self.dp is None or self.dp.done) and (self.os is None or self.os.done)

    def first_step_rows(self, purifier: Purifier, limit: int, speculative: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``limit`` draws whose first call is due (or, ``speculative``, wanted but not yet due): (draws, keep
        for votes, one-shot label wanted). A first call serves both stores: its step is kept for every draw the
        DensePure votes may still want, and a draw that only the one-shot store needs now but DensePure may want
        later waits until it is due for both (or fills a call speculatively), so no draw's first call runs twice."""
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
        if self.done:
            return empty
        R = (self.dp or self.os).labels.shape[0]
        no = np.zeros(R, dtype=bool)
        dp_wants = dp_due = no
        if self.dp is not None and not self.dp.done and purifier.shared_first_step:
            dp_wants = self.dp.need > 0
            dp_wants[purifier.held(self.image_id)] = False
            dp_due = dp_wants & _wanted(self.dp, False)
        os_wants = self.os.need > 0 if self.os is not None and not self.os.done else no
        os_due = _wanted(self.os, False) if os_wants.any() else no
        due = dp_due | (os_due & ~dp_wants)
        wanted = (dp_wants | os_wants) & ~due if speculative else due
        draws = np.flatnonzero(wanted)[:limit]
        return draws, dp_wants[draws], os_wants[draws]

    def vote_rows(self, purifier: Purifier, limit: int, speculative: bool = False, ahead: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``limit`` (draw, vote) rows due (or, ``speculative``, wanted but not yet due): the next votes of
        draws whose first step is held (or any draw without the shared first step). With ``ahead``, the votes of
        due draws after the ones they ask for (kept only as far as the lazy rounds would have gone)."""
        empty = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if self.dp is None or self.dp.done:
            return empty
        wanted = _wanted(self.dp, speculative)
        due = [d for d in purifier.held(self.image_id) if wanted[d]] if purifier.shared_first_step \
            else np.flatnonzero(wanted)
        draws_out, votes_out, total = [], [], 0
        for d in due:
            m, n = int(self.dp.computed[d]), int(self.dp.need[d])
            if ahead:  # the votes after those asked, up to K (the asked ones are in the same call)
                m, n = m + n, self.dp.K - m - n
                if n <= 0:
                    continue
            take = min(n, limit - total)
            draws_out.append(np.full(take, d))
            votes_out.append(np.arange(m, m + take))
            total += take
            if total >= limit:
                break
        if not draws_out:
            return empty
        return np.concatenate(draws_out), np.concatenate(votes_out)


def _wanted(votes: ImageVotes, speculative: bool) -> np.ndarray:
    """Rows that want votes and are due (or, ``speculative``, not yet due)."""
    rows = np.arange(len(votes.need))
    return (votes.need > 0) & ((rows >= votes.due) if speculative else (rows < votes.due))


class JobSource:
    """The images of a job in order, each claimed before it is given out. ``make(image_id, wait)`` claims and builds
    its ImageJob (None while another process holds it); ``ready(job)`` gives (job, image) or None when the image
    needs no work. Images held elsewhere are deferred and asked for again; :meth:`take` with ``wait`` blocks for
    the first of them."""

    def __init__(self, ids: list[int], make: Callable, ready: Callable):
        self.pending, self.deferred = list(ids), []
        self.make, self.ready = make, ready

    @classmethod
    def of(cls, jobs) -> JobSource:
        """A source over ready (job, image) pairs."""
        items = list(jobs)
        return cls(list(range(len(items))), lambda i, wait: items[i], lambda item: item)

    @property
    def exhausted(self) -> bool:
        return not self.pending and not self.deferred

    def take(self, wait: bool):
        while self.pending:
            image_id = self.pending.pop(0)
            job = self.make(image_id, False)
            if job is None:
                self.deferred.append(image_id)
                continue
            if (taken := self.ready(job)) is not None:
                return taken
        for image_id in list(self.deferred):
            job = self.make(image_id, False)
            if job is not None:
                self.deferred.remove(image_id)
                if (taken := self.ready(job)) is not None:
                    return taken
        if wait and self.deferred:
            job = self.make(self.deferred.pop(0), True)
            return self.ready(job)
        return None


def _total(parts) -> int:
    return sum(len(part[1]) for part in parts)


class Scheduler:
    """Runs the images of a job through one :class:`Purifier`: fills every call from the images in progress,
    opening the next image when they cannot fill it; calls ``finish(job)`` when an image is done and
    ``checkpoint(jobs)`` every ``checkpoint_seconds``. A call that would still be padded (the job's last images)
    takes votes ahead of those its draws ask for, then rows not yet due: neither changes any stored vote."""

    def __init__(self, purifier: Purifier, finish: Callable[[ImageJob], None],
                 checkpoint: Callable[[list[ImageJob]], None] | None = None, checkpoint_seconds: float = 300.0,
                 on_draws: Callable[[int], None] | None = None):
        self.purifier, self.finish, self.checkpoint = purifier, finish, checkpoint
        self.checkpoint_seconds = checkpoint_seconds
        self.on_draws = on_draws
        self.last_checkpoint = time.monotonic()

    def run(self, jobs) -> None:
        """``jobs``: an iterable of (ImageJob, image tensor), or a :class:`JobSource` (which may have no image to
        give now while others hold them: the scheduler then works on what it has and asks again later)."""
        source = jobs if isinstance(jobs, JobSource) else JobSource.of(jobs)
        rows = self.purifier.rows
        active: list[ImageJob] = []
        while True:
            self._finish_done(active)
            votes = self._collect_votes(active, rows)
            if sum(len(d) for _, d, _ in votes) >= rows:
                self._run_votes(votes)
                continue
            firsts = self._collect_first_steps(active, rows)
            if sum(len(d) for _, d, _, _ in firsts) < rows and not source.exhausted:
                # the calls cannot be filled from the images in progress: take the next image (waiting for one
                # only when nothing else is in progress, so two jobs on one store never wait for each other)
                taken = source.take(wait=not active)
                if taken is not None:
                    job, x = taken
                    self.purifier.add_image(job.image_id, x)
                    active.append(job)
                    continue
                if not active:
                    continue
            if firsts:  # a call that would be padded takes rows not yet due instead
                self._run_first_steps(firsts + self._collect_first_steps(active, rows - _total(firsts), True))
            elif votes:
                votes += self._collect_votes(active, rows - _total(votes), ahead=True)
                self._run_votes(votes + self._collect_votes(active, rows - _total(votes), True))
            elif all(job.done for job in active) and source.exhausted:
                self._finish_done(active)
                return
            else:
                raise RuntimeError("certification scheduler made no progress")  # a bug, never a user error

    def _finish_done(self, active: list[ImageJob]) -> None:
        for job in [j for j in active if j.done]:
            active.remove(job)
            self.purifier.drop_image(job.image_id)
            self.finish(job)
        now = time.monotonic()
        if self.checkpoint and active and now - self.last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint(active)
            self.last_checkpoint = now

    def _collect_votes(self, active, rows, speculative=False, ahead=False):
        out, total = [], 0
        for job in active:
            if total >= rows:
                break
            draws, votes = job.vote_rows(self.purifier, rows - total, speculative, ahead)
            if len(draws):
                out.append((job, draws, votes))
                total += len(draws)
            if total >= rows:
                break
        return out

    def _collect_first_steps(self, active, rows, speculative=False):
        out, total = [], 0
        for job in active:
            if total >= rows:
                break
            draws, keep, one_shot = job.first_step_rows(self.purifier, rows - total, speculative)
            if len(draws):
                out.append((job, draws, keep, one_shot))
                total += len(draws)
            if total >= rows:
                break
        return out

    def _timed(self, parts, run):
        began = time.monotonic()
        result = run()
        seconds = time.monotonic() - began
        total = sum(len(p[1]) for p in parts)
        for part in parts:
            part[0].seconds += seconds * len(part[1]) / total
        return result

    def _run_first_steps(self, parts) -> None:
        images = np.concatenate([np.full(len(d), job.image_id) for job, d, _, _ in parts])
        draws = np.concatenate([d for _, d, _, _ in parts])
        keep = np.concatenate([k for _, _, k, _ in parts])
        one_shot = np.concatenate([o for _, _, _, o in parts])
        labels = self._timed(parts, lambda: self.purifier.first_steps(images, draws, keep, one_shot))
        start = 0
        for job, d, _, o in parts:
            job.draws_started += len(d)
            got = labels[start:start + len(d)]
            start += len(d)
            if o.any():
                job.os.record(d[o], np.zeros(int(o.sum()), dtype=np.int64), got[o])
            self._release_unneeded(job)
        if self.on_draws:
            self.on_draws(len(draws))

    def _run_votes(self, parts) -> None:
        images = np.concatenate([np.full(len(d), job.image_id) for job, d, _ in parts])
        draws = np.concatenate([d for _, d, _ in parts])
        votes = np.concatenate([v for _, _, v in parts])
        labels = self._timed(parts, lambda: self.purifier.votes(images, draws, votes))
        start = 0
        for job, d, v in parts:
            job.dp.record(d, v, labels[start:start + len(d)])
            start += len(d)
            self._release_unneeded(job)

    def _release_unneeded(self, job: ImageJob) -> None:
        """Free the first steps of draws that need no more votes."""
        if job.dp is None:
            return
        held = self.purifier.held(job.image_id)
        self.purifier.release(job.image_id, [d for d in held if job.dp.done or job.dp.need[d] == 0])


def image_votes(purifier: Purifier, x: torch.Tensor, image_id: int, label: int, setting: Setting, Ks=None,
                alpha: float = 0.001, num_classes: int = 10, savings: Savings = Savings(lazy_votes=False,
                                                                                        stop_abstain=False),
                one_shot: bool = False) -> tuple[ImageVotes | None, ImageVotes | None]:
    """The votes of one image (no store): a convenience for tests and benchmarks. Returns (DensePure, one-shot)."""
    s = setting
    dp = None if purifier.plan is None else ImageVotes(label, s.K, Ks or [s.K], s.N0, s.N, alpha, num_classes,
                                                       savings)
    os = ImageVotes(label, 1, [1], s.N0, s.N, alpha, num_classes, savings) if (one_shot or purifier.plan is None) \
        else None
    job = ImageJob(image_id, label, dp, os)
    Scheduler(purifier, lambda j: None).run(iter([(job, x)]))
    return dp, os
