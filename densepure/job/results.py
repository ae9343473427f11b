"""Certification results without the models: the votes-defining setting and the per-image result rows.

Kept free of PyTorch so that aggregation, tables and figures start fast.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from densepure.core.smoothing import (
    ABSTAIN,
    certify,
    format_radius,
    must_abstain,
    prefix_majority_votes,
    selected_class,
    votes_to_settle,
)
from densepure.files.atomic import TEMP_SUFFIX, atomic_write, temp_prefix
from densepure.job.votes import VotesError

TSV_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
SETTING_COLUMNS = ["dataset", "classifier", "method", "sigma", "b", "K", "N0", "N", "alpha", "precision"]
COUNT_COLUMNS = ["nA", "n", "stop", "version"]


@dataclass(frozen=True)
class Setting:
    """What defines a votes store: two runs with equal settings produce identical votes.

    ``checkpoints`` holds the sha256 of each weights file (``diffusion``, ``classifier``; see
    :func:`densepure.models.checkpoints.checkpoint_digests`), so a store refuses votes computed with other weights
    under the same model names."""

    dataset: str
    diffusion: str
    classifier: str
    sigma: float
    b: int
    K: int
    N0: int = 100
    N: int = 100_000
    seed: int = 0
    method: str = "densepure"
    timestep_rule: str = "reference"
    preprocessing: str = "reference"
    precision: str = "fp32"
    attention: str = "sdpa"
    checkpoints: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        for name in ("b", "K", "N0", "N"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """What CERTIFY gives an image at one K from its stored votes. ``predict`` and ``radius`` are None where the
    votes do not determine them (a hopeless image: its selected class is not the label, so it counts at no radius
    whatever they are); ``nA`` of ``n`` computed estimation draws voted for the selected class; ``stop`` says why
    the draws stopped (``complete``, ``hopeless``, ``abstain``)."""

    predict: int | None
    radius: float | None
    correct: int
    nA: int
    n: int
    stop: str


def record_outcome(record, K: int, N0: int, N: int, sigma: float, alpha: float, num_classes: int) -> Outcome:
    """CERTIFY at K votes from a stored image (:class:`densepure.job.votes.VoteRecord`), lazily computed or not.

    Exact: each row's majority over its first K votes is that of its computed votes once settled (checked here); an
    image whose estimation stopped after ``n < N`` draws either abstains whatever the rest vote (``must_abstain``)
    or is hopeless. Raises VotesError when K is not one the votes serve or alpha is larger than the one they were
    stopped at, naming what they serve."""
    labels = record.labels
    served = record.served
    if K not in served["Ks"] or K > labels.shape[1]:
        raise VotesError(f"votes serve K in {served['Ks']}, not K={K}")
    if labels.shape[0] != N0 + N:
        raise VotesError(f"votes have {labels.shape[0]} draws, the setting N0 + N = {N0 + N}")
    open_rows = votes_to_settle(labels[:, :K], [K]) > 0
    if open_rows[:N0].any():
        raise VotesError(f"selection draw {int(np.argmax(open_rows[:N0]))} is not settled at K={K}")
    majority = prefix_majority_votes(labels[:, :K], [K])[K]
    selected = selected_class(majority[:N0], num_classes)
    n = int(np.argmax(open_rows[N0:])) if open_rows[N0:].any() else N
    if n == N:
        cert = certify(majority[:N0], majority[N0:], sigma, alpha, num_classes)
        return Outcome(cert.prediction, cert.radius, int(cert.prediction == record.label), cert.nA, N, "complete")
    nA = int((majority[N0:N0 + n] == selected).sum())
    if must_abstain(nA, n, N, alpha):
        return Outcome(ABSTAIN, 0.0, 0, nA, n, "abstain")
    if selected != record.label:
        return Outcome(None, None, 0, nA, n, "hopeless")
    raise VotesError(f"estimation stopped after {n} of {N} draws, so alpha={alpha} is not determined "
                     f"(the votes serve alpha <= {served.get('alpha')})")


def provenance_text(record) -> str:
    """``<version>+<commit>`` of the package that computed a stored image ('' when not recorded)."""
    p = record.provenance or {}
    if not p:
        return ""
    return f"{p.get('version')}+{p['commit']}" if p.get("commit") else str(p.get("version"))


def result_row(image_id: int, record, setting: Setting, K: int, alpha: float, num_classes: int) -> list:
    """Result row ``idx label predict radius correct time`` + setting columns + ``nA n stop version`` of a stored
    image, certifying with the majority of its first ``K`` votes. ``predict`` and ``radius`` are empty where the
    votes do not determine them (``stop`` = hopeless)."""
    out = record_outcome(record, K, setting.N0, setting.N, setting.sigma, alpha, num_classes)
    seconds = record.extra.get("seconds", 0.0)
    return [
        image_id, record.label, "" if out.predict is None else out.predict,
        "" if out.radius is None else format_radius(out.radius), out.correct,
        str(datetime.timedelta(seconds=round(seconds, 6))),
        setting.dataset, setting.classifier, setting.method, setting.sigma, setting.b, K, setting.N0, setting.N,
        alpha, setting.precision, out.nA, out.n, out.stop, provenance_text(record),
    ]


def write_tsv(path: Path, rows: Iterable[list]) -> None:
    """Write the result table atomically (own temp file + rename: concurrent writers never collide). The temp file
    is flock-ed from before its first byte until it is renamed, so :func:`remove_orphan_temps` tells a live
    writer's temp file from one a killed writer left."""
    lines = ["\t".join(TSV_COLUMNS + SETTING_COLUMNS + COUNT_COLUMNS)]
    lines += ["\t".join(str(value) for value in row) for row in rows]
    data = ("\n".join(lines) + "\n").encode()
    held: list[int] = []

    def write(f) -> None:
        fd = os.dup(f.fileno())  # the lock lives on the open file until this copy is closed, after the rename
        held.append(fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        f.write(data)

    try:
        atomic_write(path, write)
    finally:
        for fd in held:
            os.close(fd)


def remove_orphan_temps(path: Path, min_age: float = 60.0) -> list[Path]:
    """Remove the temp files that killed :func:`write_tsv` calls left beside the table ``path``
    (``.<name>.<random>.tmp``): those no live writer holds locked. A locked one is a live writer's; an empty
    unlocked one may be a writer's between creating and locking it, so it goes only once ``min_age`` seconds old.
    Returns the removed paths."""
    path = Path(path)
    prefix = temp_prefix(path)
    removed = []
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(TEMP_SUFFIX)]
    except OSError:
        return removed
    for temp in candidates:
        try:
            fd = os.open(temp, os.O_RDWR)  # read-write: an exclusive lock over NFS needs it
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer's
            info = os.fstat(fd)
            if info.st_size > 0 or time.time() - info.st_mtime >= min_age:
                temp.unlink(missing_ok=True)
                removed.append(temp)
        finally:
            os.close(fd)
    return removed
