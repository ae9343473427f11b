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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import rng
from .denoise import Denoiser, model_input, purify_votes
from .schedule import ReversePlan
from .results import Setting, result_row, write_tsv
from .votes import VotesStore

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
