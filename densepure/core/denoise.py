"""The reverse process: one-shot and b-step DensePure purification, K votes per noisy draw.

A *denoiser* is any callable ``net(x, t) -> out`` on model-space images ``x`` in [-1, 1] (B x C x H x W) and the
float timestep values ``t`` (shape [B]) fed to the network, where ``out`` is epsilon (C channels) or epsilon plus
the learned-range variance interpolant ``v`` (2C channels, guided/improved-diffusion's ``learn_sigma``). Plug any
diffusion model in by wrapping it to this signature; with C output channels the fixed (clipped posterior)
variance is used.

Every step follows docs/reference-behaviour.md#ref-4-3: ``x0 = clamp(sqrt(1/a) x - sqrt(1/a - 1) eps, -1, 1)``,
posterior mean
``coef1 x0 + coef2 x``, ``log_var = frac log(beta) + (1 - frac) log(beta~)`` with ``frac = (v + 1) / 2``, and
``x <- mean + [k != 0] exp(log_var / 2) z``. Coefficients are gathered as float32 as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from densepure.core.schedule import ReversePlan, StepCoefficients

NoiseFn = Callable[[int, int], torch.Tensor]
"""``noise_fn(step_i, rows) -> z`` of shape [rows, C, H, W]: the reverse noise of step ``i``."""


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Step:
    """One reverse step's results, all float32 tensors of the batch shape."""

    x0: torch.Tensor
    mean: torch.Tensor
    log_variance: torch.Tensor


_ON_DEVICE: dict[tuple[int, str], tuple[np.ndarray, torch.Tensor]] = {}


def _coef(values: np.ndarray, k: int, like: torch.Tensor) -> torch.Tensor:
    """``values[k]`` as a float32 scalar on ``like``'s device. Off the CPU the whole array is copied once and
    cached, so a reverse step makes no host-to-device copy (each would synchronise the host with the GPU)."""
    if like.device.type == "cpu":
        return torch.tensor(values[k], dtype=torch.float32)
    key = (id(values), str(like.device))
    if key not in _ON_DEVICE or _ON_DEVICE[key][0] is not values:
        _ON_DEVICE[key] = (values, torch.tensor(values, dtype=torch.float32, device=like.device))
    return _ON_DEVICE[key][1][k]


def split_output(out: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split the network output into ``eps`` and the variance interpolant ``v`` (None for eps-only models)."""
    out = out.float()
    if out.shape[1] == channels:
        return out, None
    if out.shape[1] == 2 * channels:
        return out[:, :channels], out[:, channels:]
    raise ValueError(f"denoiser returned {out.shape[1]} channels; expected {channels} or {2 * channels}")


def step_statistics(out: torch.Tensor, x: torch.Tensor, k: int, coef: StepCoefficients) -> Step:
    """x0 (clipped), posterior mean and log-variance at respaced index ``k`` given the network output."""
    eps, v = split_output(out, x.shape[1])
    x0 = (_coef(coef.sqrt_recip_alpha_bar, k, x) * x - _coef(coef.sqrt_recipm1_alpha_bar, k, x) * eps).clamp(-1, 1)
    mean = _coef(coef.posterior_mean_coef1, k, x) * x0 + _coef(coef.posterior_mean_coef2, k, x) * x
    min_log = _coef(coef.posterior_log_variance_clipped, k, x)
    if v is None:
        log_variance = min_log.expand_as(x)
    else:
        frac = (v + 1) / 2
        log_variance = frac * _coef(coef.log_betas, k, x) + (1 - frac) * min_log
    return Step(x0, mean, log_variance)


def sample_step(step: Step, k: int, noise: torch.Tensor | None) -> torch.Tensor:
    """``mean + exp(log_var / 2) z`` for ``k > 0``; the mean itself (which equals x0) at the last step ``k = 0``."""
    if k == 0:
        return step.mean
    return step.mean + torch.exp(0.5 * step.log_variance) * noise


def _timesteps(value: float, rows: int, device: torch.device) -> torch.Tensor:
    return torch.full((rows,), value, dtype=torch.float32, device=device)


@torch.no_grad()
def purify(net: Denoiser, x: torch.Tensor, plan: ReversePlan, noise_fn: NoiseFn) -> torch.Tensor:
    """Purify the scaled noisy batch ``x`` (model space) along ``plan``; returns images in [-1, 1]."""
    return purify_votes(net, x, plan, votes=1, noise_fn=noise_fn)


@torch.no_grad()
def purify_votes(net: Denoiser, x: torch.Tensor, plan: ReversePlan, votes: int, noise_fn: NoiseFn) -> torch.Tensor:
    """K = ``votes`` independent reverse runs of every row of ``x``: returns [B * votes, C, H, W], row-major in
    (row, vote). The first network call is the same for all votes of a row, so it is made once on B rows; the
    chains separate when the first step's noise is added. A one-shot plan is deterministic: its votes are copies.
    """
    out = net(x, _timesteps(plan.model_timesteps[0], len(x), x.device))
    first = step_statistics(out, x, plan.b - 1, plan.coef)
    if plan.one_shot:
        return first.x0.repeat_interleave(votes, dim=0)
    widen = lambda t: t.repeat_interleave(votes, dim=0)  # noqa: E731
    first = Step(widen(first.x0), widen(first.mean), widen(first.log_variance))
    x = sample_step(first, plan.b - 1, noise_fn(0, len(first.mean)))
    for i in range(1, plan.b):
        k = plan.b - 1 - i
        out = net(x, _timesteps(plan.model_timesteps[i], len(x), x.device))
        step = step_statistics(out, x, k, plan.coef)
        x = sample_step(step, k, noise_fn(i, len(x)) if k > 0 else None)
    return x


def model_input(x_pixel: torch.Tensor, noise: torch.Tensor, plan: ReversePlan) -> torch.Tensor:
    """Network input of a smoothing draw: ``scale * (2 (x + noise_sigma * n) - 1)`` (pixel noise, no clipping)."""
    return plan.scale * (2 * (x_pixel + plan.noise_sigma * noise) - 1)
