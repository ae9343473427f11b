"""The certification job: votes for each image of a setting, stored as they finish, then certified radii.

For one image ``x`` (pixel space) and draw ``j`` the smoothing noise ``n_j`` and, for vote ``k``, the reverse noise
come from :mod:`densepure.rng` addressed by (seed, image, draw[, vote, step]); so the votes do not depend on the
batch size, the shard split or where a killed job resumed. Draws ``0..N0-1`` select the class, ``N0..N0+N-1``
estimate its probability (Cohen et al.).
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from . import rng
from .denoise import Denoiser, model_input, purify_votes
from .schedule import ReversePlan
from .smoothing import certify_votes, format_radius
from .votes import VotesStore

TSV_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
SETTING_COLUMNS = ["dataset", "classifier", "method", "sigma", "b", "K", "N0", "N", "alpha", "precision"]


@dataclass(frozen=True)
class Setting:
    """What defines a votes store: two runs with equal settings produce identical votes."""

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


Classifier = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class VoteCounter:
    """Computes the [N0 + N, K] label matrix of one image with a denoiser, a plan and a classifier."""

    denoiser: Denoiser
    classifier: Classifier
    plan: ReversePlan
    setting: Setting
    batch: int = 100
    device: torch.device = torch.device("cpu")

    def draws_per_batch(self) -> int:
        """Noisy draws per network batch: ``batch`` rows of (draw, vote); a one-shot plan needs one row per draw."""
        votes = 1 if self.plan.one_shot else self.setting.K
        return max(1, self.batch // votes)

    def labels_for_draws(self, x: torch.Tensor, image_id: int, draws: torch.Tensor) -> torch.Tensor:
        """Labels [len(draws), K] of the purified votes of the given draws of image ``x``."""
        s, K = self.setting, self.setting.K
        noise = rng.normal(tuple(x.shape), s.seed, image_id, rng.SMOOTHING, draws, device=self.device)
        x_in = model_input(x.to(self.device), noise, self.plan)
        if self.plan.one_shot:  # deterministic: the K votes of a draw are the same image
            purified = purify_votes(self.denoiser, x_in, self.plan, 1, noise_fn=None)
            return self._classify(purified).reshape(-1, 1).expand(-1, K)
        vote_draws = draws.repeat_interleave(K)
        vote_ids = torch.arange(K).repeat(len(draws))

        def reverse_noise(step: int, rows: int) -> torch.Tensor:
            return rng.normal(tuple(x.shape), s.seed, image_id, rng.REVERSE, vote_draws, vote_ids, step, self.device)

        purified = purify_votes(self.denoiser, x_in, self.plan, K, reverse_noise)
        return self._classify(purified).reshape(len(draws), K)

    def _classify(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier(images).argmax(dim=1).cpu()

    def votes(self, x: torch.Tensor, image_id: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """All votes of one image: int64 array [N0 + N, K]."""
        total = self.setting.N0 + self.setting.N
        step = self.draws_per_batch()
        out = []
        for start in range(0, total, step):
            draws = torch.arange(start, min(start + step, total))
            out.append(self.labels_for_draws(x, image_id, draws))
            if progress:
                progress(len(draws))
        return torch.cat(out).numpy().astype(np.int64)


def result_row(image_id: int, record, setting: Setting, K: int, alpha: float, num_classes: int) -> list:
    """Result row ``idx label predict radius correct time`` (+ setting columns) of a stored image, certifying with
    the majority of its first ``K`` votes."""
    cert = certify_votes(record.labels, K, setting.N0, setting.sigma, alpha, num_classes)
    seconds = record.extra.get("seconds", 0.0)
    return [
        image_id, record.label, cert.prediction, format_radius(cert.radius), int(cert.prediction == record.label),
        str(datetime.timedelta(seconds=round(seconds, 6))),
        setting.dataset, setting.classifier, setting.method, setting.sigma, setting.b, K, setting.N0, setting.N,
        alpha, setting.precision,
    ]


def write_tsv(path: Path, rows: Iterable[list]) -> None:
    """Write the result table atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write("\t".join(TSV_COLUMNS + SETTING_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(str(value) for value in row) + "\n")
    tmp.replace(path)


class Progress:
    """A one-line progress report on stderr: images done, draws per second, ETA."""

    def __init__(self, images: int, draws_per_image: int, enabled: bool = True):
        self.total = images * draws_per_image
        self.done = 0
        self.images, self.finished = images, 0
        self.start = time.monotonic()
        self.enabled = enabled

    def draws(self, count: int) -> None:
        self.done += count
        self._print()

    def image(self) -> None:
        self.finished += 1
        self._print(final=self.finished == self.images)

    def _print(self, final: bool = False) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        eta_text = str(datetime.timedelta(seconds=int(eta))) if math.isfinite(eta) else "?"
        sys.stderr.write(f"\rimages {self.finished}/{self.images}  draws {self.done}/{self.total}  "
                         f"{rate:,.0f} draws/s  ETA {eta_text}   ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_certification(
    counter: VoteCounter,
    dataset,
    ids: list[int],
    store: VotesStore,
    tsv_path: Path,
    alpha: float,
    progress: bool = True,
) -> None:
    """Compute and store the votes of every image in ``ids`` not yet in ``store``; rewrite the TSV after each.

    Killing the job loses at most the image in progress: finished images are atomically stored and skipped on
    the next run, and the TSV is rebuilt from the store.
    """
    setting = counter.setting
    row = lambda i: result_row(i, store.read(i), setting, setting.K, alpha, dataset.num_classes)  # noqa: E731
    rows = {i: row(i) for i in ids if store.has(i)}
    todo = [i for i in ids if i not in rows]
    report = Progress(len(todo), setting.N0 + setting.N, enabled=progress)
    write_tsv(tsv_path, rows.values())
    for image_id in todo:
        x, label = dataset[image_id]
        began = time.monotonic()
        labels = counter.votes(x, image_id, progress=report.draws)
        store.write(image_id, labels, label, extra={"seconds": time.monotonic() - began, "device": str(counter.device)})
        rows[image_id] = row(image_id)
        write_tsv(tsv_path, [rows[i] for i in ids if i in rows])
        report.image()
