"""Training of the embedded default's two small models on scikit-learn's digits (train split: the first 1200).

* :func:`train_classifier`: :class:`~densepure.models.small_models.DigitsCNN` on the clean training digits in model
  space [-1, 1], lightly augmented (one-pixel shifts, Gaussian pixel noise); about 98 % test accuracy in about 10 s.
* :func:`train_diffusion`: the digits UNet as an improved-diffusion model (Nichol & Dhariwal 2021): cosine schedule
  with ``T = 4000`` steps, epsilon prediction plus learned-range variance, hybrid loss
  ``L_simple + lambda * L_vlb`` with ``lambda = 0.001`` and a stop-gradient on the mean in the vlb term, uniform
  timestep sampling, Adam, the network fed ``t * 1000 / T``; about 2.3 minutes on one CPU thread at the defaults
  (1000 steps x batch 64), after which its one-shot denoising MSE on the test digits is 0.012 / 0.029 / 0.055 at
  sigma 0.25 / 0.5 / 1 (noisy input: 0.063 / 0.25 / 1.0; a linear Wiener filter fitted on the training digits:
  0.017 / 0.037 / 0.057).

Why ``T = 4000``: it is the schedule of the paper's CIFAR-10 model (improved-diffusion ``cifar10_uncond``, cosine,
T = 4000), so the embedded default exercises the same sigma -> t* rule (the continuous cosine solve of the reference)
and the same respacing as the paper's CIFAR-10 runs; the reference's off-by-one between ``f(t/T)`` and
``alpha_bar[t]`` is a quarter as large as with T = 1000. Training cost does not depend on T (the network sees the
continuous value ``t * 1000 / T`` and t is sampled uniformly), and ``lambda * L_vlb`` is estimated as
``lambda * T * L_t`` (improved-diffusion's ``RESCALED_MSE``), so the relative weight of the two terms matches the
reference's CIFAR-10 training.

Determinism: the initial weights come from ``torch.manual_seed(seed)``; the data order, the timesteps and the
training noise from a separate ``torch.Generator`` seeded with ``seed``. The same seed (and the same number of
torch threads) gives bit-identical weights.

Command line (``densepure train --help``; progress and results go to stderr)::

    densepure train classifier --out digits_cnn.pt [--seed 0 --epochs 20]
    densepure train diffusion --out digits_diffusion.pt [--seed 0 --steps 1000]
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from densepure.core.denoise import model_input, purify
from densepure.core.schedule import Schedule, cosine_schedule, one_shot_plan
from densepure.models.datasets import digits_arrays
from densepure.models.small_models import DIFFUSION_T, DigitsCNN, digits_unet_config
from densepure.models.unet import UNetConfig, UNetModel

HYBRID_LAMBDA = 1e-3
DEFAULT_THREADS = 4
"""Upper bound on the command line's torch threads: the models are tiny, more threads only add overhead."""

Progress = Callable[[str], None]


# --- helpers ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave torch's setting), restoring it afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_threads() -> int:
    """``min(4, usable cores // 2)``, at least 1: what the command line uses (1 on a 2-core machine).

    These models are so small that a second thread buys little: on 2 cores, one training step of a 0.76 M-parameter
    digits UNet at batch 128 took 0.24 s with 2 threads and 0.30 s with 1 on an idle machine, but with any other
    process running, 2 OpenMP threads spin-wait on each other and the step took 0.7-5 s against 0.3-0.45 s with 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return max(1, min(DEFAULT_THREADS, cores // 2))


def digits_model_space(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits ``split`` as model-space images ``2 * pixel - 1`` [n, 1, 8, 8] float32 and int64 labels."""
    images, labels = digits_arrays(split)
    return torch.from_numpy(images) * 2 - 1, torch.from_numpy(labels)


def _batches(n: int, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless index batches: a fresh permutation per epoch, the tail of an epoch dropped when short."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch + 1, batch):
            yield order[start : start + batch]


def random_shift(x: torch.Tensor, generator: torch.Generator, background: float = -1.0) -> torch.Tensor:
    """Shift every image of ``x`` [B, C, H, W] by a random offset in {-1, 0, 1}^2, filling with ``background``."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=background)
    views = torch.stack([padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3)], dim=1)
    choice = torch.randint(0, 9, (len(x),), generator=generator)
    return views[torch.arange(len(x)), choice]


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# --- classifier ------------------------------------------------------------------------------------------------


@torch.no_grad()
def classifier_accuracy(model: torch.nn.Module, split: str = "test") -> float:
    """Top-1 accuracy of ``model`` (fed model-space images) on the clean digits ``split``."""
    x, y = digits_model_space(split)
    was_training = model.training
    model.eval()
    correct = int((model(x).argmax(dim=1) == y).sum())
    model.train(was_training)
    return correct / len(y)


def train_classifier(
    seed: int = 0,
    epochs: int = 20,
    *,
    batch: int = 64,
    lr: float = 2e-3,
    noise_std: float = 0.1,
    threads: int | None = None,
    progress: Progress | None = None,
) -> tuple[DigitsCNN, float]:
    """Train :class:`DigitsCNN` on the clean training digits; returns ``(model in eval mode, test accuracy)``.

    Inputs are model space ``2 * pixel - 1``; augmentation: a random shift by up to one pixel per image (the test
    split comes from other writers, see :mod:`densepure.models.datasets`) and Gaussian noise of pixel std uniform in
    ``[0, noise_std]`` per image (so the classifier tolerates the small residue of purification). Adam with a
    cosine-decayed learning rate, cross-entropy. 97.8-99.2 % test accuracy at the defaults (seeds 0-2).
    """
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs and batch must be >= 1, got epochs={epochs}, batch={batch}")
    with torch_threads(threads):
        torch.manual_seed(seed)
        model = DigitsCNN()
        generator = torch.Generator().manual_seed(seed)
        x, y = digits_model_space("train")
        batch = min(batch, len(x))
        steps_per_epoch = len(x) // batch
        total = epochs * steps_per_epoch
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
        batches = _batches(len(x), batch, generator)
        model.train()
        start = time.perf_counter()
        for epoch in range(epochs):
            running = 0.0
            for _ in range(steps_per_epoch):
                idx = next(batches)
                xb = random_shift(x[idx], generator)
                std = torch.rand(len(idx), 1, 1, 1, generator=generator) * noise_std
                xb = xb + 2 * std * torch.randn(xb.shape, generator=generator)
                loss = F.cross_entropy(model(xb), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                running += float(loss.detach())
            if progress is not None:
                elapsed = time.perf_counter() - start
                eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
                progress(f"epoch {epoch + 1}/{epochs}  loss {running / steps_per_epoch:.4f}  "
                         f"elapsed {_fmt_seconds(elapsed)}  eta {_fmt_seconds(eta)}")
        model.eval()
        return model, classifier_accuracy(model, "test")


# --- diffusion: the improved-diffusion hybrid loss -------------------------------------------------------------


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF used by improved-diffusion's decoder."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Elementwise log-likelihood (nats) of ``x`` in [-1, 1] on a 256-level grid (bins of width 2/255) under
    N(means, e^(2 log_scales)); the edge bins extend to -inf / +inf (Ho et al.'s decoder)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


class DiffusionTerms:
    """float32 tensors of the forward-process quantities a training step gathers per sample (index = code t)."""

    def __init__(self, schedule: Schedule) -> None:
        betas = schedule.betas
        alpha_bar = schedule.alpha_bar
        alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
        posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        table = {
            "sqrt_alpha_bar": np.sqrt(alpha_bar),
            "sqrt_one_minus_alpha_bar": np.sqrt(1.0 - alpha_bar),
            "sqrt_recip_alpha_bar": np.sqrt(1.0 / alpha_bar),
            "sqrt_recipm1_alpha_bar": np.sqrt(1.0 / alpha_bar - 1.0),
            "coef1": betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
            "coef2": (1.0 - alpha_bar_prev) * np.sqrt(1.0 - betas) / (1.0 - alpha_bar),
            # the posterior variance is 0 at t = 0: its log is clipped to the t = 1 value (as in the sampler)
            "posterior_log_variance": np.log(np.append(posterior_variance[1], posterior_variance[1:])),
            "log_betas": np.log(betas),
        }
        for name, values in table.items():
            setattr(self, name, torch.tensor(values, dtype=torch.float32))

    @staticmethod
    def at(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return values[t][:, None, None, None]


def hybrid_loss(
    net: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, terms: DiffusionTerms, T: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample ``(loss, mse, vb)`` of improved-diffusion's hybrid objective for model-space ``x0`` at code
    timesteps ``t`` with noise ``noise``.

    ``mse`` = mean squared epsilon error (L_simple); ``vb`` = L_t in bits per dimension: KL(q(x_{t-1}|x_t,x0) ||
    p(x_{t-1}|x_t)) for t > 0 and the discretized decoder NLL at t = 0, with the model mean built from the
    *detached* epsilon so that only the variance head learns from it. ``loss = mse + lambda * T * vb``
    (``lambda = 0.001``: the uniform-t estimate of ``lambda * L_vlb``).
    """
    at = DiffusionTerms.at
    x_t = at(terms.sqrt_alpha_bar, t) * x0 + at(terms.sqrt_one_minus_alpha_bar, t) * noise
    out = net(x_t, t.float() * (1000.0 / T))
    eps, v = out[:, : x0.shape[1]], out[:, x0.shape[1] :]
    mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))

    # p(x_{t-1} | x_t) with the mean frozen (stop-gradient on eps) and the learned-range variance
    pred_x0 = at(terms.sqrt_recip_alpha_bar, t) * x_t - at(terms.sqrt_recipm1_alpha_bar, t) * eps.detach()
    model_mean = at(terms.coef1, t) * pred_x0 + at(terms.coef2, t) * x_t
    frac = (v + 1) / 2
    model_log_var = frac * at(terms.log_betas, t) + (1 - frac) * at(terms.posterior_log_variance, t)
    # q(x_{t-1} | x_t, x0)
    true_mean = at(terms.coef1, t) * x0 + at(terms.coef2, t) * x_t
    true_log_var = at(terms.posterior_log_variance, t)
    kl = normal_kl(true_mean, true_log_var, model_mean, model_log_var).mean(dim=(1, 2, 3)) / math.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).mean(dim=(1, 2, 3))
    vb = torch.where(t == 0, nll / math.log(2.0), kl)
    return mse + HYBRID_LAMBDA * T * vb, mse, vb


@dataclass
class TrainLog:
    """Per-interval averages of a diffusion training run (``records``: dicts with step, loss, mse, vb, elapsed_s)."""

    records: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    steps: int = 0

    @property
    def final_loss(self) -> float:
        return self.records[-1]["loss"] if self.records else float("nan")


def train_diffusion(
    seed: int = 0,
    steps: int = 1000,
    batch: int = 64,
    *,
    T: int = DIFFUSION_T,
    lr: float = 4e-3,
    warmup: int = 50,
    ema: float = 0.99,
    config: UNetConfig | None = None,
    log_every: int = 50,
    threads: int | None = None,
    progress: Progress | None = None,
) -> tuple[UNetModel, Schedule, TrainLog]:
    """Train the digits UNet (:func:`~densepure.models.small_models.digits_unet_config`) as an improved-diffusion model.

    Returns ``(net, schedule, log)``: ``net`` in eval mode holds the exponential moving average (rate ``ema``;
    0 disables it) of the weights, as improved-diffusion samples from its EMA weights; ``schedule`` is
    ``cosine_schedule(T)``. Adam with ``warmup`` linear warm-up steps then a cosine decay to 0 over ``steps``;
    each step draws ``batch`` training digits (a fresh permutation per epoch), t uniform in ``0..T-1`` and
    Gaussian noise, and minimises :func:`hybrid_loss`. ``progress`` gets a line every ``log_every`` steps.
    """
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    with torch_threads(threads):
        schedule = cosine_schedule(T)
        terms = DiffusionTerms(schedule)
        torch.manual_seed(seed)
        net = UNetModel(config or digits_unet_config())
        ema_net = UNetModel(net.config)
        ema_net.load_state_dict(net.state_dict())
        ema_net.requires_grad_(False)
        generator = torch.Generator().manual_seed(seed)
        x, _ = digits_model_space("train")
        batch = min(batch, len(x))
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        batches = _batches(len(x), batch, generator)
        log = TrainLog()
        sums = torch.zeros(3, dtype=torch.float64)
        count = 0
        net.train()
        start = time.perf_counter()
        for step in range(steps):
            x0 = x[next(batches)]
            t = torch.randint(0, T, (len(x0),), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            loss, mse, vb = hybrid_loss(net, x0, t, noise, terms, T)
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                rate = min(ema, (1 + step) / (10 + step))  # short warm-up of the average, as in common practice
                for p_ema, p in zip(ema_net.parameters(), net.parameters()):
                    p_ema.lerp_(p, 1 - rate)
            sums += torch.stack([loss.mean(), mse.mean(), vb.mean()]).detach().double()
            count += 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                elapsed = time.perf_counter() - start
                record = {"step": step + 1, "loss": float(sums[0] / count), "mse": float(sums[1] / count),
                          "vb": float(sums[2] / count), "elapsed_s": elapsed}
                log.records.append(record)
                if progress is not None:
                    eta = elapsed / (step + 1) * (steps - step - 1)
                    progress(f"step {step + 1}/{steps}  loss {record['loss']:.4f}  mse {record['mse']:.4f}  "
                             f"vb {record['vb']:.4f}  elapsed {_fmt_seconds(elapsed)}  eta {_fmt_seconds(eta)}")
                sums.zero_()
                count = 0
        log.wall_s = time.perf_counter() - start
        log.steps = steps
        result = ema_net.requires_grad_(True) if ema > 0 else net
        return result.eval(), schedule, log


@torch.no_grad()
def one_shot_mse(
    net: torch.nn.Module, schedule: Schedule, sigma: float, *, seed: int = 0, split: str = "test",
    limit: int | None = None,
) -> tuple[float, float]:
    """``(purified, noisy)`` pixel-space MSE on the clean digits ``split`` at pixel noise ``sigma``.

    Each image ``x`` gets noise ``n`` (standard normal, generator seeded with ``seed``); the noisy error is that of
    ``x + sigma n``, the purified one that of DensePure's one-shot denoising of the same draw
    (:func:`~densepure.core.schedule.one_shot_plan`, :func:`~densepure.core.denoise.model_input`,
    :func:`~densepure.core.denoise.purify`), mapped back to pixels by ``(y + 1) / 2``.
    """
    images, _ = digits_arrays(split)
    x = torch.from_numpy(images[:limit])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    plan = one_shot_plan(sigma, schedule)
    purified = (purify(net, model_input(x, noise, plan), plan, lambda i, rows: None) + 1) / 2
    return float(((purified - x) ** 2).mean()), float(((sigma * noise) ** 2).mean())
