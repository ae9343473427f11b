"""The certification job: the votes of each image of a setting, computed lazily, stored as they finish.

For one image ``x`` (pixel space) and draw ``j`` the smoothing noise ``n_j`` and, for vote ``k``, the reverse noise
come from :mod:`densepure.rng` addressed by (seed, image, draw[, vote, step]). Draws ``0..N0-1`` select the class,
``N0..N0+N-1`` estimate its probability (Cohen et al.). Which draws and votes an image needs is decided by
:class:`densepure.lazy.ImageVotes`; this module runs them on the networks.

The job is a scheduler of rows. A network call holds either the *first reverse steps* of noisy draws (one row per
draw; its output also gives the one-shot baseline's x0, so the one-shot store of the same draws costs one classifier
call per draw) or the *votes* that follow (one row per (draw, vote), the remaining b - 1 steps). Rows come from
every image in progress, so calls stay full: settled draws leave, the next draws (and the next images) take their
rows. Every call has exactly ``rows`` rows (a short one is padded): a row's result then does not depend on its
neighbours (float kernels are chosen by shape), so the votes are identical whatever the schedule, the savings and
the resume point.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import rng
from .denoise import Denoiser, Step, model_input, sample_step, step_statistics
from .execution import Execution
from .lazy import ImageVotes, Savings
from .results import Setting, result_row, write_tsv
from .schedule import ReversePlan
from .smoothing import NOT_COMPUTED
from .votes import VotesError, VotesStore

Classifier = Callable[[torch.Tensor], torch.Tensor]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Compiled:
    """``torch.compile`` of a module whose inputs' first dimension is marked dynamic: one graph for every batch
    size."""

    def __init__(self, module: torch.nn.Module, backend: str | Callable = "inductor"):
        self.module = module
        self.compiled = torch.compile(module, backend=backend)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for tensor in inputs:
            if isinstance(tensor, torch.Tensor) and tensor.dim():
                torch._dynamo.maybe_mark_dynamic(tensor, 0)
        return self.compiled(*inputs)


class ClassifierCall:
    """``classifier(images)`` with its preprocessing (resize, normalisation: torch ops on the images' device) in
    float32 and its network under ``torch.autocast(dtype)`` when ``precision`` is not fp32, optionally compiled.
    A classifier without a ``preprocess`` attribute is run whole."""

    def __init__(self, classifier: Classifier, precision: str = "fp32", compile: bool = False):
        self.preprocess = getattr(classifier, "preprocess", None)
        model = classifier.model if self.preprocess is not None else classifier
        self.model = Compiled(model) if compile else model
        self.dtype = None if precision == "fp32" else _DTYPES[precision]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.preprocess(images) if self.preprocess is not None else images
        if self.dtype is None:
            return self.model(inputs)
        with torch.autocast(inputs.device.type, dtype=self.dtype):
            return self.model(inputs).float()


def set_compile_cache(directory: str | Path | None) -> None:
    """Make torch.compile keep its compiled kernels and graphs in ``directory`` (reused by later runs)."""
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(directory).resolve())


def prepare_models(net: torch.nn.Module, classifier: Classifier, execution: Execution) -> tuple[Denoiser, Classifier]:
    """The denoiser and classifier callables of ``execution``: channels_last (with cuDNN autotuning), compiled,
    classifier precision. With the custom defaults (fp32 classifier, no channels_last, no compile) both are returned
    unchanged and cuDNN autotuning stays off (PyTorch's default)."""
    torch.backends.cudnn.benchmark = execution.channels_last or execution.compile
    if execution.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if execution.compile:
        set_compile_cache(execution.compile_cache)
    denoiser = Compiled(net) if execution.compile else net
    if execution.classifier_precision == "fp32" and not execution.compile:
        return denoiser, classifier
    return denoiser, ClassifierCall(classifier, execution.classifier_precision, execution.compile)


# --- the networks ---------------------------------------------------------------------------------------------


def shares_first_call(plan: ReversePlan, one_shot: ReversePlan) -> bool:
    """Whether a one-shot plan's network call is DensePure's first one: same input scale and noise, same timestep
    (DensePure's own one-shot, SPEC §5.1; not Carlini et al.'s, whose t and scale differ)."""
    return (plan.scale, plan.noise_sigma, plan.model_timesteps[0]) == (
        one_shot.scale, one_shot.noise_sigma, one_shot.model_timesteps[0])


class Purifier:
    """Runs rows of many images through the networks, ``rows`` rows per call.

    ``plan`` is DensePure's b-step plan (None for a one-shot-only job), ``one_shot`` a one-shot plan whose labels
    come from the first call (None: none wanted). With ``shared_first_step`` the first step of a draw runs once and
    its posterior mean and variance are kept for the draw's votes; otherwise (the reference's cost) every vote runs
    all b steps from the noisy input. Counts the rows it runs (``unet_rows``, ``classifier_rows``, padding included).
    """

    def __init__(self, denoiser: Denoiser, classifier: Classifier, plan: ReversePlan | None,
                 one_shot: ReversePlan | None, seed: int, rows: int = 100, device: torch.device | str = "cpu",
                 shared_first_step: bool = True):
        if plan is None and one_shot is None:
            raise ValueError("a Purifier needs a plan or a one-shot plan")
        if plan is not None and plan.one_shot:
            plan, one_shot = None, plan
        if plan is not None and one_shot is not None and not shares_first_call(plan, one_shot):
            raise ValueError("the one-shot plan does not share DensePure's first network call (other t or scale)")
        self.denoiser, self.classifier, self.plan, self.one_shot = denoiser, classifier, plan, one_shot
        self.start = plan or one_shot
        self.seed, self.rows, self.device = seed, int(rows), torch.device(device)
        self.shared_first_step = shared_first_step
        self.images: dict[int, torch.Tensor] = {}
        self.stats: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}  # image -> draw -> first step
        self.unet_rows = self.classifier_rows = 0  # rows run, padding included
        self.unet_used = self.classifier_used = 0  # rows whose results were used

    def add_image(self, image_id: int, x: torch.Tensor) -> None:
        self.images[image_id] = x.to(self.device)
        self.stats[image_id] = {}

    def drop_image(self, image_id: int) -> None:
        self.images.pop(image_id, None)
        self.stats.pop(image_id, None)

    def held(self, image_id: int) -> list[int]:
        """Draws of the image whose first step is kept, ascending."""
        return sorted(self.stats.get(image_id, {}))

    def release(self, image_id: int, draws) -> None:
        held = self.stats.get(image_id, {})
        for d in draws:
            held.pop(int(d), None)

    # -- batched building blocks --

    def _by_image(self, images: np.ndarray, make: Callable[[int, np.ndarray], torch.Tensor]) -> torch.Tensor:
        """``make(image_id, positions)`` per image of the rows, placed at their positions."""
        parts, order = [], []
        for image_id in dict.fromkeys(images.tolist()):
            where = np.flatnonzero(images == image_id)
            parts.append(make(image_id, where))
            order.append(where)
        out = torch.cat(parts)
        index = torch.as_tensor(np.argsort(np.concatenate(order), kind="stable"), device=out.device)
        return out.index_select(0, index)

    def _noisy_inputs(self, images: np.ndarray, draws: np.ndarray) -> torch.Tensor:
        shape = tuple(next(iter(self.images.values())).shape)
        plan = self.start

        def make(image_id, where):
            noise = rng.normal(shape, self.seed, image_id, rng.SMOOTHING, torch.as_tensor(draws[where]),
                               device=self.device)
            return model_input(self.images[image_id], noise, plan)

        return self._by_image(images, make)

    def _reverse_noise(self, images: np.ndarray, draws: np.ndarray, votes: np.ndarray, step: int) -> torch.Tensor:
        shape = tuple(next(iter(self.images.values())).shape)
        return self._by_image(images, lambda i, w: rng.normal(
            shape, self.seed, i, rng.REVERSE, torch.as_tensor(draws[w]), torch.as_tensor(votes[w]), step,
            self.device))

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n > self.rows:
            raise ValueError(f"{n} rows in a call of {self.rows}")
        return x if n == self.rows else torch.cat([x, x[:1].expand(self.rows - n, *x.shape[1:])])

    def _net(self, x: torch.Tensor, timestep: float) -> torch.Tensor:
        t = torch.full((self.rows,), timestep, dtype=torch.float32, device=x.device)
        self.unet_rows += self.rows
        self.unet_used += len(x)
        with torch.no_grad():
            return self.denoiser(self._padded(x), t)[:len(x)]

    def _classify(self, images: torch.Tensor) -> np.ndarray:
        self.classifier_rows += self.rows
        self.classifier_used += len(images)
        with torch.no_grad():
            return self.classifier(self._padded(images)).argmax(dim=1)[:len(images)].cpu().numpy()

    # -- the two kinds of call --

    def first_steps(self, images: np.ndarray, draws: np.ndarray, keep: np.ndarray, one_shot: np.ndarray
                    ) -> np.ndarray:
        """The first network call on the noisy draws ``(images[i], draws[i])``: keeps the first step of the rows
        with ``keep`` for their votes; returns the one-shot labels of the rows with ``one_shot`` (NOT_COMPUTED
        elsewhere)."""
        x_in = self._noisy_inputs(images, draws)
        out = self._net(x_in, self.start.model_timesteps[0])
        labels = np.full(len(draws), NOT_COMPUTED, dtype=np.int64)
        if keep.any():
            rows = torch.as_tensor(np.flatnonzero(keep), device=x_in.device)
            step = step_statistics(out[rows], x_in[rows], self.plan.b - 1, self.plan.coef)
            for j, i in enumerate(np.flatnonzero(keep)):
                self.stats[int(images[i])][int(draws[i])] = (step.mean[j], step.log_variance[j])
        if one_shot.any():
            rows = torch.as_tensor(np.flatnonzero(one_shot), device=x_in.device)
            x0 = step_statistics(out[rows], x_in[rows], 0, self.one_shot.coef).x0
            labels[one_shot] = self._classify(x0)
        return labels

    def votes(self, images: np.ndarray, draws: np.ndarray, votes: np.ndarray) -> np.ndarray:
        """Labels of vote ``votes[i]`` of draw ``draws[i]`` of image ``images[i]`` (b reverse steps; with the shared
        first step, that step comes from :meth:`first_steps`)."""
        plan = self.plan
        if self.shared_first_step:
            kept = [self.stats[int(i)][int(d)] for i, d in zip(images, draws)]
            first_mean = torch.stack([mean for mean, _ in kept])
            first_log_variance = torch.stack([log_variance for _, log_variance in kept])
        else:
            x_in = self._noisy_inputs(images, draws)
            step = step_statistics(self._net(x_in, plan.model_timesteps[0]), x_in, plan.b - 1, plan.coef)
            first_mean, first_log_variance = step.mean, step.log_variance
        first = Step(first_mean, first_mean, first_log_variance)
        x = sample_step(first, plan.b - 1, self._reverse_noise(images, draws, votes, 0))
        for i in range(1, plan.b):
            k = plan.b - 1 - i
            step = step_statistics(self._net(x, plan.model_timesteps[i]), x, k, plan.coef)
            x = sample_step(step, k, self._reverse_noise(images, draws, votes, i) if k > 0 else None)
        return self._classify(x)


# --- one image in progress ---------------------------------------------------------------------------------------


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


# --- the job over a list of images, with stores, TSVs, checkpoints ----------------------------------------------


@dataclass
class StoreTarget:
    """One votes store a job fills: the store, its setting, the served Ks and the job's TSV of its results."""

    store: VotesStore
    setting: Setting
    Ks: list[int]
    tsv: Path | None
    savings: Savings
    ids: list[int] | None = None  # the job's images this store wants (None: all)
    rows: dict = field(default_factory=dict)


def _image_votes(target: StoreTarget, image_id: int, label: int, alpha: float, num_classes: int) -> ImageVotes | None:
    """The image's ImageVotes in ``target``, resumed from its stored votes or checkpoint; None when the stored
    image already serves every wanted K at ``alpha``."""
    s = target.setting
    store = target.store
    labels, Ks = None, list(target.Ks)
    if store.path(image_id).exists():
        record = store.read(image_id)
        stored_alpha = record.served.get("alpha")
        served = set(record.served["Ks"])
        if set(Ks) <= served and (stored_alpha is None or alpha <= stored_alpha):
            return None
        labels = record.labels
        Ks = sorted(set(Ks) | {k for k in served if k <= s.K})
    partial = store.read_partial(image_id)
    if partial is not None:
        labels = partial[0]
        Ks = sorted(set(Ks) | set(partial[1].get("Ks", [])))
    return ImageVotes(label, s.K, Ks, s.N0, s.N, alpha, num_classes, target.savings, labels=labels)


def run_certification(purifier: Purifier, dataset, ids: list[int], targets: list[StoreTarget], alpha: float,
                      *, checkpoint_seconds: float = 300.0, progress=None, device: str = "cpu") -> dict:
    """Compute and store the votes of every image of ``ids`` that a target does not yet hold, in DensePure's store
    (``targets[0]``, or the one-shot store alone) and the one-shot store (``targets[1]``, optional); rewrite each
    target's TSV after each image. Returns counts: images computed, skipped as done, left to other jobs.

    Killing the job loses at most ``checkpoint_seconds`` of work: images in progress are checkpointed and resume
    from there; finished images are skipped. A second job on the same store skips the images this one holds and
    waits at the end for those still held (the holder may die: then it computes them itself).
    """
    dp_target = next((t for t in targets if not purifier_is_one_shot(t)), None)
    os_target = next((t for t in targets if purifier_is_one_shot(t)), None)
    num_classes = dataset.num_classes
    for target in targets:
        target.store.check_foreign(target.ids if target.ids is not None else ids)
        target.store.remove_orphan_temps()
    counts = {"computed": 0, "skipped": 0, "waited": 0}

    def refresh_tsv(target: StoreTarget, image_id: int) -> None:
        if target.tsv is None or (target.ids is not None and image_id not in target.ids):
            return
        if target.store.path(image_id).exists():
            record = target.store.read(image_id)
            target.rows[image_id] = result_row(image_id, record, target.setting, max(target.Ks), alpha,
                                               num_classes)
        write_tsv(target.tsv, [target.rows[i] for i in ids if i in target.rows])

    for target in targets:
        for i in ids:
            if target.store.path(i).exists():
                refresh_tsv(target, i)
        if target.tsv is not None:
            write_tsv(target.tsv, [target.rows[i] for i in ids if i in target.rows])

    def make_job(image_id: int, wait: bool) -> ImageJob | None:
        label = int(dataset[image_id][1])
        claims, parts = [], {}
        for name, target in (("dp", dp_target), ("os", os_target)):
            if target is None or (target.ids is not None and image_id not in target.ids):
                parts[name] = None
                continue
            claim = target.store.claim(image_id, wait=wait)
            if claim is None:
                for c in claims:
                    c.release()
                return None
            claims.append(claim)
            parts[name] = _image_votes(target, image_id, label, alpha, num_classes)
        return ImageJob(image_id, label, parts["dp"], parts["os"], claims=claims)

    def release(job: ImageJob) -> None:
        """Give the image's claims back and show its stored results in the TSVs."""
        for claim in job.claims:
            claim.release()
        for target in targets:
            refresh_tsv(target, job.image_id)

    def ready(job: ImageJob):
        """The job with its image, or None (after releasing its claims) when nothing is left to compute."""
        if not job.done:
            return job, dataset[job.image_id][0]
        release(job)
        counts["skipped"] += 1
        if progress:
            progress.skipped(1)
        return None

    def finish(job: ImageJob) -> None:
        extra = {"seconds": job.seconds, "device": device}
        for part, target in ((job.dp, dp_target), (job.os, os_target)):
            if part is not None:
                target.store.write(job.image_id, part.labels, job.label, extra=extra, served=part.served(),
                                   stop=part.stop)
        release(job)
        counts["computed"] += 1
        if progress:
            rows = (job.dp or job.os).labels.shape[0]
            progress.draws(max(0, rows - job.draws_started))  # draws an early stop made unnecessary
            progress.image_done(job.image_id, job.seconds)

    def checkpoint(active: list[ImageJob]) -> None:
        for job in active:
            for part, target in ((job.dp, dp_target), (job.os, os_target)):
                if part is not None and not part.done:
                    target.store.write_partial(job.image_id, part.labels, job.label, part.state())

    scheduler = Scheduler(purifier, finish, checkpoint, checkpoint_seconds,
                          on_draws=progress.draws if progress else None)
    scheduler.run(JobSource(ids, make_job, ready))
    return counts


def purifier_is_one_shot(target: StoreTarget) -> bool:
    return target.setting.method in ("onestep", "carlini") or target.setting.b == 1


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


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


__all__ = ["Compiled", "ClassifierCall", "ImageJob", "Purifier", "Scheduler", "Setting", "StoreTarget",
           "VotesError", "image_votes", "prepare_models", "run_certification", "set_compile_cache"]
