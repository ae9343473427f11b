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

import numpy as np

from densepure.core.lazy import ImageVotes, Savings
from densepure.core.methods import is_one_shot
from densepure.core.smoothing import NOT_COMPUTED
from densepure.job.purifier import Purifier
from densepure.job.results import Setting, remove_orphan_temps, result_row, write_tsv
from densepure.job.scheduler import ImageJob, JobSource, Scheduler
from densepure.job.votes import VotesError, VotesStore, serves


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

    def wants(self, image_id: int) -> bool:
        return self.ids is None or image_id in self.ids


@dataclass
class Resumed:
    """What an image's ImageVotes starts from: the votes, Ks, K and alpha it must serve, and the seconds already
    spent on the stored votes."""

    labels: np.ndarray | None
    Ks: set
    K: int
    alpha: float
    seconds: float = 0.0


def _image_votes(target: StoreTarget, image_id: int, label: int, alpha: float, num_classes: int,
                 seconds: dict | None = None) -> ImageVotes | None:
    """The image's ImageVotes in ``target`` (hold its claim), grown from its stored votes and resumed from its
    checkpoint; None when the stored image already serves every wanted K at ``alpha`` and no checkpoint aims at
    more.

    Growing keeps what the stored image serves: the ImageVotes serves the union of the wanted Ks, the stored Ks and
    the checkpoint's, with as many votes per draw as the largest of this job's K and the stored or checkpointed
    votes (a job at a smaller K extends a grown image without dropping its Ks), at the largest of this job's alpha
    and the alpha the stored or checkpointed votes were stopped at (a larger alpha extends an image stopped by
    certain abstention; a smaller one is served by it). A checkpoint of any K is resumed, never refused; one the
    stored image already serves is stale and removed. Errors name the file. ``seconds`` (optional) receives the
    seconds already spent on the stored votes."""
    s, store = target.setting, target.store
    start = Resumed(None, set(target.Ks), s.K, alpha)
    path = store.path(image_id)
    record = store.read(image_id) if path.exists() else None  # VotesError names the file
    if record is not None and record.label != label:
        raise VotesError(f"{path}: holds true label {record.label}, the dataset says {label}")
    partial = store.read_partial(image_id, label)  # an unusable one is removed
    if partial is not None and record is not None and serves(record.served, partial[1]["Ks"], partial[1]["alpha"]):
        store.remove_partial(image_id)  # stale: left by a job killed after writing the image
        partial = None
    if record is not None:
        if partial is None and serves(record.served, target.Ks, alpha):
            return None
        _resume_from(start, record.labels, record.served["Ks"], record.served.get("alpha"))
        start.seconds = float(record.extra.get("seconds", 0.0) or 0.0)
    if partial is not None:
        labels, state = partial
        if start.labels is not None and not _agree(start.labels, labels):
            store.remove_partial(image_id)  # votes no run of this setting computes: damaged, lost work
            partial = None
        else:
            _resume_from(start, labels, state["Ks"], state["alpha"])
    if seconds is not None:
        seconds[image_id] = start.seconds
    store.grow(start.K)
    where = store.partial_path(image_id) if partial is not None else path
    try:
        return ImageVotes(label, start.K, sorted(start.Ks), s.N0, s.N, start.alpha, num_classes, target.savings,
                          labels=start.labels)
    except ValueError as err:
        raise VotesError(f"{where}: {err}") from None


def _resume_from(start: Resumed, labels: np.ndarray, Ks, alpha: float | None) -> None:
    """Add stored or checkpointed votes (and what they serve) to ``start``: each draw keeps the longer prefix of
    computed votes (both are prefixes of the same deterministic votes)."""
    start.K = max(start.K, labels.shape[1])
    start.Ks |= set(Ks)
    if alpha is not None:
        start.alpha = max(start.alpha, float(alpha))
    if start.labels is None:
        start.labels = labels
        return
    width = max(start.labels.shape[1], labels.shape[1])
    a, b = _widen(start.labels, width), _widen(labels, width)
    start.labels = np.where(b >= 0, b, a)


def _widen(labels: np.ndarray, width: int) -> np.ndarray:
    out = np.full((labels.shape[0], width), NOT_COMPUTED, dtype=np.int32)
    out[:, :labels.shape[1]] = labels
    return out


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Same rows, and equal votes wherever both computed one."""
    if a.shape[0] != b.shape[0]:
        return False
    width = min(a.shape[1], b.shape[1])
    a, b = a[:, :width], b[:, :width]
    both = (a >= 0) & (b >= 0)
    return bool((a[both] == b[both]).all())


def run_certification(purifier: Purifier, dataset, ids: list[int], targets: list[StoreTarget], alpha: float,
                      *, checkpoint_seconds: float = 300.0, progress=None, device: str = "cpu") -> dict:
    """Compute and store the votes of every image of ``ids`` that a target does not yet serve, in DensePure's
    store (``targets[0]``, or the one-shot store alone) and the one-shot store (``targets[1]``, optional); write
    each target's TSV (its largest K at ``alpha``) from what each image serves once this job has handled it.
    Returns counts: images computed, skipped as done, left to other jobs.

    Growing: a stored image that does not serve a wanted K, or was stopped by certain abstention at a smaller
    alpha, is extended (only its missing votes are computed, :func:`_image_votes`), and one whose stored votes
    already settle the new Ks is rewritten with what it now serves. An image's TSV row is computed only after this
    job has handled the image, never from what it served before. ``setting.json`` changes only when the first
    image with more votes per draw than it records is written (:class:`densepure.job.votes.VotesStore`): a job
    that fails first leaves it as it was, and jobs at different K on one store each raise it to what they wrote.

    Killing the job loses at most ``checkpoint_seconds`` of work: images in progress are checkpointed and resume
    from there (by a job at any K); finished images are skipped. The litter of a killed job (temp files of votes and
    of the TSV, a checkpoint beside the image it finished) is removed when a job next runs. A second job on the
    same store skips the images this one holds and waits at the end for those still held (the holder may die: then
    it computes them itself).
    """
    dp_target = next((t for t in targets if not t.one_shot), None)
    os_target = next((t for t in targets if t.one_shot), None)
    num_classes = dataset.num_classes
    for target in targets:
        target.store.check_foreign(target.ids if target.ids is not None else ids)
        target.store.remove_orphan_temps()
        target.store.remove_stale_partials()
        if target.tsv is not None:
            remove_orphan_temps(target.tsv)
    counts = {"computed": 0, "skipped": 0, "waited": 0}
    spent: dict[tuple[int, int], float] = {}  # (target, image) -> seconds spent on its stored votes
    held: list = []  # the claims this job holds: given back however it ends (an exception in a library call too)

    def refresh_row(target: StoreTarget, image_id: int) -> bool:
        """The image's TSV row from what its stored votes serve now; True if the target has a TSV row for it."""
        if target.tsv is None or not target.wants(image_id) or not target.store.path(image_id).exists():
            return False
        path = target.store.path(image_id)
        record = target.store.read(image_id)
        try:
            target.rows[image_id] = result_row(image_id, record, target.setting, max(target.Ks), alpha, num_classes)
        except VotesError as err:
            raise VotesError(f"{path}: {err}") from None
        return True

    def write_tsvs() -> None:
        for target in targets:
            if target.tsv is not None:
                write_tsv(target.tsv, [target.rows[i] for i in ids if i in target.rows])

    def make_job(image_id: int, wait: bool) -> ImageJob | None:
        label = int(dataset[image_id][1])
        claims, parts = [], {}
        for name, target in (("dp", dp_target), ("os", os_target)):
            if target is None or not target.wants(image_id):
                parts[name] = None
                continue
            claim = target.store.claim(image_id, wait=wait)
            if claim is None:
                for c in claims:
                    c.release()
                return None
            claims.append(claim)
            held.append(claim)
            try:
                seconds: dict = {}
                parts[name] = _image_votes(target, image_id, label, alpha, num_classes, seconds)
                spent[(id(target), image_id)] = seconds.get(image_id, 0.0)
            except BaseException:
                for c in claims:
                    c.release()
                raise
        return ImageJob(image_id, label, parts["dp"], parts["os"], claims=claims)

    def release(job: ImageJob, write: bool) -> None:
        """Give the image's claims back and take its stored results into the TSVs (written now with ``write``)."""
        for claim in job.claims:
            claim.release()
        job.claims = []
        for target in targets:
            refresh_row(target, job.image_id)
        if write:
            write_tsvs()

    def ready(job: ImageJob):
        """The job with its image, or None when nothing is left to compute: a stored image whose votes already
        serve what is wanted is stored again with what it now serves; one that served it already is skipped."""
        if not job.done:
            return job, dataset[job.image_id][0]
        if job.dp is not None or job.os is not None:
            finish(job)
            return None
        release(job, write=False)  # the TSVs are written with the next image finished, or at the end
        counts["skipped"] += 1
        if progress:
            progress.skipped(1)
        return None

    def finish(job: ImageJob) -> None:
        # both stores of one job record its whole time; "shared" says so, so that a cost over both counts it once
        shared = {"shared": True} if job.dp is not None and job.os is not None else {}
        for part, target in ((job.dp, dp_target), (job.os, os_target)):
            if part is not None:
                seconds = job.seconds + spent.pop((id(target), job.image_id), 0.0)
                target.store.write(job.image_id, part.labels, job.label,
                                   extra={"seconds": seconds, "device": device, **shared},
                                   served=part.served(), stop=part.stop)
        release(job, write=True)
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
    try:
        scheduler.run(JobSource(ids, make_job, ready))
    finally:
        for claim in held:
            claim.release()
    write_tsvs()
    return counts
