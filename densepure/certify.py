"""The certification job: votes for each image of a setting, stored as they finish, then certified radii.

For one image ``x`` (pixel space) and draw ``j`` the smoothing noise ``n_j`` and, for vote ``k``, the reverse noise
come from :mod:`densepure.rng` addressed by (seed, image, draw[, vote, step]); so the votes do not depend on the
batch size, the shard split or where a killed job resumed. Draws ``0..N0-1`` select the class, ``N0..N0+N-1``
estimate its probability (Cohen et al.).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import rng
from .denoise import Denoiser, model_input, purify_votes
from .execution import Execution
from .progress import JobProgress
from .schedule import ReversePlan
from .results import Setting, result_row, write_tsv
from .votes import VotesStore

Classifier = Callable[[torch.Tensor], torch.Tensor]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Compiled:
    """``torch.compile`` of a module whose inputs' first dimension is marked dynamic: one graph for every batch
    size (the shared first step runs on draws, later steps on draws x votes, the last batch may be smaller)."""

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


@dataclass
class VoteCounter:
    """Computes the [N0 + N, K] label matrix of one image with a denoiser, a plan and a classifier.

    ``shared_first_step`` (default): a network batch holds ``batch // K`` draws with all their K votes, and the
    first reverse step runs once per draw. Otherwise (the reference's cost) every vote runs all b steps and a batch
    holds ``batch`` draws of one vote. Both compute the same votes: noise is addressed by (draw, vote, step).
    Labels stay on ``device`` until the image is done (one host synchronisation per image).
    """

    denoiser: Denoiser
    classifier: Classifier
    plan: ReversePlan
    setting: Setting
    batch: int = 100
    device: torch.device = torch.device("cpu")
    shared_first_step: bool = True

    def draws_per_batch(self) -> int:
        """Noisy draws per network batch: ``batch`` rows of (draw, vote); a one-shot plan needs one row per draw."""
        votes = 1 if self.plan.one_shot else self.setting.K
        return max(1, self.batch // votes)

    def _draws(self, start: int, stop: int) -> torch.Tensor:
        return torch.arange(start, stop, device=self.device)

    def labels_for_draws(self, x: torch.Tensor, image_id: int, draws: torch.Tensor) -> torch.Tensor:
        """Labels [len(draws), K] of the purified votes of the given draws of image ``x`` (first step shared)."""
        s, K = self.setting, self.setting.K
        draws = draws.to(self.device)
        x_in = self._noisy_input(x, image_id, draws)
        if self.plan.one_shot:  # deterministic: the K votes of a draw are the same image
            purified = purify_votes(self.denoiser, x_in, self.plan, 1, noise_fn=None)
            return self._classify(purified).reshape(-1, 1).expand(-1, K)
        vote_draws = draws.repeat_interleave(K)
        vote_ids = torch.arange(K, device=self.device).repeat(len(draws))

        def reverse_noise(step: int, rows: int) -> torch.Tensor:
            return rng.normal(tuple(x.shape), s.seed, image_id, rng.REVERSE, vote_draws, vote_ids, step, self.device)

        purified = purify_votes(self.denoiser, x_in, self.plan, K, reverse_noise)
        return self._classify(purified).reshape(len(draws), K)

    def labels_for_vote(self, x: torch.Tensor, image_id: int, draws: torch.Tensor, vote: int) -> torch.Tensor:
        """Labels [len(draws)] of vote ``vote`` of the given draws, all b reverse steps run (nothing shared)."""
        s = self.setting
        draws = draws.to(self.device)
        x_in = self._noisy_input(x, image_id, draws)
        votes = torch.full_like(draws, vote)

        def reverse_noise(step: int, rows: int) -> torch.Tensor:
            return rng.normal(tuple(x.shape), s.seed, image_id, rng.REVERSE, draws, votes, step, self.device)

        return self._classify(purify_votes(self.denoiser, x_in, self.plan, 1, reverse_noise))

    def _noisy_input(self, x: torch.Tensor, image_id: int, draws: torch.Tensor) -> torch.Tensor:
        """The scaled noisy copies (the reverse process's start) of the given draws of image ``x``."""
        noise = rng.normal(tuple(x.shape), self.setting.seed, image_id, rng.SMOOTHING, draws, device=self.device)
        return model_input(x.to(self.device), noise, self.plan)

    def _classify(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.classifier(images).argmax(dim=1)

    def votes(self, x: torch.Tensor, image_id: int, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """All votes of one image: int64 array [N0 + N, K]."""
        total, K = self.setting.N0 + self.setting.N, self.setting.K
        x = x.to(self.device)
        labels = torch.empty((total, K), dtype=torch.int64, device=self.device)
        if self.shared_first_step or self.plan.one_shot:
            step = self.draws_per_batch()
            for start in range(0, total, step):
                stop = min(start + step, total)
                labels[start:stop] = self.labels_for_draws(x, image_id, self._draws(start, stop))
                if progress:
                    progress(stop - start)
        else:  # the reference's order: one pass over the draws per vote (it ran one job per reverse seed)
            for vote in range(K):
                for start in range(0, total, self.batch):
                    stop = min(start + self.batch, total)
                    labels[start:stop, vote] = self.labels_for_vote(x, image_id, self._draws(start, stop), vote)
                    if progress:
                        progress((stop - start) / K)
        return labels.cpu().numpy()


def run_certification(
    counter: VoteCounter,
    dataset,
    ids: list[int],
    store: VotesStore,
    tsv_path: Path,
    alpha: float,
    progress: JobProgress | None = None,
) -> None:
    """Compute and store the votes of every image in ``ids`` not yet in ``store``; rewrite the TSV after each.
    ``progress`` (a :class:`~densepure.progress.JobProgress` of ``len(ids)`` images) hears of every draw and image
    and writes its summary at the end; None reports nothing.

    Killing the job loses at most the image in progress: finished images are atomically stored and skipped on
    the next run, and the TSV is rebuilt from the store.
    """
    setting = counter.setting
    row = lambda i: result_row(i, store.read(i), setting, setting.K, alpha, dataset.num_classes)  # noqa: E731
    rows = {i: row(i) for i in ids if store.has(i)}
    todo = [i for i in ids if i not in rows]
    report = progress or JobProgress(len(ids), setting.N0 + setting.N, stream=None)
    report.skipped(len(rows))
    write_tsv(tsv_path, rows.values())
    for image_id in todo:
        x, label = dataset[image_id]
        began = time.monotonic()
        labels = counter.votes(x, image_id, progress=report.draws)
        seconds = time.monotonic() - began
        store.write(image_id, labels, label, extra={"seconds": seconds, "device": str(counter.device)})
        rows[image_id] = row(image_id)
        write_tsv(tsv_path, [rows[i] for i in ids if i in rows])
        report.image_done(image_id, seconds)
    report.close()
