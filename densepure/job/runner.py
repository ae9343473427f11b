"""The certification job: the votes of each image of a setting, computed lazily, stored as they finish.

For one image ``x`` (pixel space) and draw ``j`` the smoothing noise ``n_j`` and, for vote ``k``, the reverse noise
come from :mod:`densepure.core.rng` addressed by (seed, image, draw[, vote, step]). Draws ``0..N0-1`` select the class,
``N0..N0+N-1`` estimate its probability (Cohen et al.). Which draws and votes an image needs is decided by
:class:`densepure.core.lazy.ImageVotes`; this module runs them on the networks.

The job is a scheduler of rows. A network call holds either the *first reverse steps* of noisy draws (one row per
draw; its output also gives the one-shot baseline's x0, so the one-shot store of the same draws costs one classifier
call per draw) or the *votes* that follow (one row per (draw, vote), the remaining b - 1 steps). Rows come from
every image in progress, so calls stay full: settled draws leave, the next draws (and the next images) take their
rows. Every call has exactly ``rows`` rows (a short one is padded): a row's result then does not depend on its
neighbours (float kernels are chosen by shape), so the votes are identical whatever the schedule, the savings and
the resume point."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from densepure.core.lazy import ImageVotes, Savings
from densepure.core.methods import is_one_shot
from densepure.job.purifier import Purifier
from densepure.job.results import Setting, result_row, write_tsv
from densepure.job.scheduler import ImageJob, JobSource, Scheduler
from densepure.job.votes import VotesStore


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

    @property
    def one_shot(self) -> bool:
        return is_one_shot(self.setting.method, self.setting.b)


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
    dp_target = next((t for t in targets if not t.one_shot), None)
    os_target = next((t for t in targets if t.one_shot), None)
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

