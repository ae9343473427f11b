"""Rows of noisy draws through the networks: first reverse steps (which also give the one-shot x0), the
remaining steps of each vote, and the classifier's labels."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from densepure.core import rng
from densepure.core.denoise import Denoiser, Step, model_input, sample_step, step_statistics
from densepure.core.schedule import ReversePlan
from densepure.core.smoothing import NOT_COMPUTED
from densepure.job.networks import ClassifierFn


def shares_first_call(plan: ReversePlan, one_shot: ReversePlan) -> bool:
    """Whether a one-shot plan's network call is DensePure's first one: same input scale and noise, same timestep
    (DensePure's own one-shot, docs/reference-behaviour.md#ref-5-1; not Carlini et al.'s, whose t and scale differ)."""
    return (plan.scale, plan.noise_sigma, plan.model_timesteps[0]) == (
        one_shot.scale, one_shot.noise_sigma, one_shot.model_timesteps[0])


class Purifier:
    """Runs rows of many images through the networks, ``rows`` rows per call.

    ``plan`` is DensePure's b-step plan (None for a one-shot-only job), ``one_shot`` a one-shot plan whose labels
    come from the first call (None: none wanted). With ``shared_first_step`` the first step of a draw runs once and
    its posterior mean and variance are kept for the draw's votes; otherwise (the reference's cost) every vote runs
    all b steps from the noisy input. Counts the rows it runs (``unet_rows``, ``classifier_rows``, padding included).
    """

    def __init__(self, denoiser: Denoiser, classifier: ClassifierFn, plan: ReversePlan | None,
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
