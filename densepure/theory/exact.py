"""Section 3 of the paper made runnable: an exact diffusion model for a Gaussian mixture, Theorem 3.1's posterior,
Theorem 3.3's highest-density purifier with its robust regions and radii, and DensePure vs one-shot on the exact model.

The data distribution is a labelled mixture of isotropic Gaussians in model space,
``p(x) = sum_k pi_k N(x; mu_k, s_k^2 I)``; ``s_k = 0`` for every k is the zero-variance limit, a finite labelled point
set (``p`` is then a probability mass function). Noising it gives the closed-form marginal
``p_t(x) = sum_k pi_k N(x; sqrt(alpha_bar) mu_k, (alpha_bar s_k^2 + 1 - alpha_bar) I)``, whose score is the exact
``eps`` a perfectly trained network would output (:class:`ExactDenoiser`). Run it as
``densepure theory {thm31,fig2,radius} --help``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import chi2

from densepure.core import rng
from densepure.core.denoise import purify_votes
from densepure.core.schedule import ReversePlan, Schedule, reverse_plan


@dataclass(frozen=True)
class Mixture:
    """``p(x) = sum_k pi_k N(x; mu_k, s_k^2 I)`` with a class label per component: ``means`` [K, d], ``stds`` [K]
    (all > 0, or all 0 for a point set), ``weights`` [K] (normalised here), ``labels`` [K] (0 .. C-1)."""

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        means = np.atleast_2d(np.asarray(self.means, dtype=np.float64))
        stds = np.asarray(self.stds, dtype=np.float64).reshape(-1)
        weights = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        K = len(means)
        if not len(stds) == len(weights) == len(labels) == K:
            raise ValueError(f"mixture: {K} means but {len(stds)} stds, {len(weights)} weights, {len(labels)} labels")
        if (weights <= 0).any() or (stds < 0).any() or (labels < 0).any():
            raise ValueError("mixture: weights must be > 0, stds >= 0 and labels >= 0")
        if (stds == 0).any() and (stds > 0).any():
            raise ValueError("mixture: stds must be all > 0 (a mixture) or all 0 (a point set), not both")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / weights.sum())
        object.__setattr__(self, "labels", labels)

    @classmethod
    def from_config(cls, components: list[dict]) -> Mixture:
        """From ``[{mean: [..], std: s, weight: w, label: c}, ...]`` (the ``theory`` section of the config)."""
        return cls([c["mean"] for c in components], [c["std"] for c in components],
                   [c.get("weight", 1.0) for c in components], [c["label"] for c in components])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def point_set(self) -> bool:
        return bool((self.stds == 0).all())


def _log_normal(x: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """``log N(x; mu_k, v_k I)`` for x [..., d], means [K, d] (or [..., K, d]), variances [K] (or [..., K])."""
    d = x.shape[-1]
    sq = ((x[..., None, :] - means) ** 2).sum(-1)
    return -0.5 * sq / variances - 0.5 * d * np.log(2 * math.pi * variances)


def log_density(mix: Mixture, x: np.ndarray) -> np.ndarray:
    """``log p(x) = logsumexp_k (log pi_k + log N(x; mu_k, s_k^2 I))`` (a continuous mixture only)."""
    if mix.point_set:
        raise ValueError("a point set has no density; use its weights (log pi_k) as log p at its points")
    return logsumexp(np.log(mix.weights) + _log_normal(np.asarray(x, dtype=np.float64), mix.means, mix.stds**2), -1)


def classify(mix: Mixture, x: np.ndarray) -> np.ndarray:
    """The Bayes-optimal classifier of the labels: ``argmax_c sum_{k: label_k = c} pi_k N(x; mu_k, s_k^2 I)``. For a
    point set, its limit for equal stds -> 0: the label of the nearest point."""
    x = np.asarray(x, dtype=np.float64)
    if mix.point_set:
        nearest = ((x[..., None, :] - mix.means) ** 2).sum(-1).argmin(-1)
        return mix.labels[nearest]
    joint = np.log(mix.weights) + _log_normal(x, mix.means, mix.stds**2)
    per_class = np.stack([logsumexp(np.where(mix.labels == c, joint, -np.inf), -1) for c in range(mix.num_classes)])
    return per_class.argmax(0)


class ExactDenoiser:
    """``net(x, t) -> eps`` of the mixture: ``eps(x_t) = -sqrt(1 - a) grad log p_t(x_t)
    = sqrt(1 - a) sum_k r_k(x_t) (x_t - sqrt(a) mu_k) / v_k``, ``v_k = a s_k^2 + 1 - a``,
    ``r_k ∝ pi_k N(x_t; sqrt(a) mu_k, v_k I)``, with ``a = alpha_bar[t / timestep_scale]`` of the *original* schedule.

    The network-timestep convention is the UNet's (densepure.core.schedule: the net is fed ``t * 1000 / T``), so a
    respaced plan gets eps for the real timestep it visits, as the trained UNet would. Then ``x0 = (x_t - sqrt(1 - a)
    eps) / sqrt(a) = E[x0 | x_t]`` (Tweedie), which the reverse step clamps to [-1, 1]: keep the mixture inside.
    Rows are flattened to d = C*H*W numbers; computed in float64.
    """

    def __init__(self, mix: Mixture, schedule: Schedule):
        self.mix, self.schedule = mix, schedule
        self.calls = 0

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_bar`` of the network timesteps ``t`` [B] (which must be integers times ``1000 / T``)."""
        index = t.double().cpu().numpy() / self.schedule.timestep_scale
        k = np.rint(index).astype(np.int64)
        if np.abs(index - k).max(initial=0) > 1e-4 or k.min(initial=0) < 0 or k.max(initial=0) >= self.schedule.T:
            raise ValueError(f"network timesteps {t.tolist()[:4]} are not timesteps of the T={self.schedule.T} "
                             "schedule")
        return torch.from_numpy(self.schedule.alpha_bar[k])

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        a = self.alpha_bar(t).to(x.device)[:, None, None]  # [B, 1, 1]
        xt = x.double().reshape(len(x), 1, -1)  # [B, 1, d]
        if xt.shape[-1] != self.mix.dim:
            raise ValueError(f"denoiser got {xt.shape[-1]} numbers per row; the mixture has dimension {self.mix.dim}")
        mu = torch.from_numpy(self.mix.means).to(x.device)[None]  # [1, K, d]
        s2 = torch.from_numpy(self.mix.stds**2).to(x.device)[None, :, None]  # [1, K, 1]
        v = a * s2 + 1 - a  # [B, K, 1]
        diff = xt - a.sqrt() * mu  # [B, K, d]
        log_r = torch.from_numpy(np.log(self.mix.weights)).to(x.device)[None] - 0.5 * (
            (diff**2).sum(-1, keepdim=True) / v + self.mix.dim * torch.log(v)).squeeze(-1)
        r = torch.softmax(log_r, dim=1)[..., None]  # [B, K, 1]
        eps = (1 - a[:, 0]).sqrt() * (r * diff / v).sum(1)  # [B, d]
        return eps.reshape(x.shape).float()


def sigma_t(alpha_bar: float) -> float:
    """Theorem 3.1's ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)``: the noise of ``x_t / sqrt(alpha_bar_t)``."""
    return math.sqrt((1 - alpha_bar) / alpha_bar)


@dataclass(frozen=True)
class Posterior:
    """Theorem 3.1's ``P(x0 = x | x_t = sqrt(a) x_a) ∝ p(x) N(x; x_a, sigma_t^2 I)`` for the mixture, itself a mixture
    ``sum_k w_k N(x; m_k, c_k I)``: ``w_k ∝ pi_k N(x_a; mu_k, (s_k^2 + sigma_t^2) I)``,
    ``m_k = (sigma_t^2 mu_k + s_k^2 x_a) / (s_k^2 + sigma_t^2)``, ``c_k = s_k^2 sigma_t^2 / (s_k^2 + sigma_t^2)``."""

    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """``sum_k w_k m_k``."""
        return self.weights @ self.means

    @property
    def covariance(self) -> np.ndarray:
        """``sum_k w_k (c_k I + m_k m_k^T) - mean mean^T``."""
        d = self.means.shape[1]
        second = np.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        second += (self.weights @ self.variances) * np.eye(d)
        return second - np.outer(self.mean, self.mean)


def posterior(mix: Mixture, x_a: np.ndarray, sigma: float) -> Posterior:
    """Theorem 3.1's posterior for the adversarial (noisy) input ``x_a`` [d] and ``sigma = sigma_t``."""
    x_a = np.asarray(x_a, dtype=np.float64)
    s2, v = mix.stds**2, mix.stds**2 + sigma**2
    log_w = np.log(mix.weights) + _log_normal(x_a, mix.means, v)
    weights = np.exp(log_w - logsumexp(log_w))
    means = (sigma**2 * mix.means + s2[:, None] * x_a) / v[:, None]
    return Posterior(weights, means, s2 * sigma**2 / v)


def reverse_samples(mix: Mixture, schedule: Schedule, x_a: np.ndarray, plan: ReversePlan, n: int,
                    seed: int = 0) -> np.ndarray:
    """``n`` outputs [n, d] of the plan's reverse chain (densepure.core.denoise.purify_votes) with the exact model,
    started at ``x_t = sqrt(alpha_bar[t]) x_a``, ``t = plan.visited[0]``; reverse noise from densepure.core.rng
    (stream REVERSE)."""
    a = float(schedule.alpha_bar[plan.visited[0]])
    x = torch.tensor(math.sqrt(a) * np.asarray(x_a, dtype=np.float64), dtype=torch.float32).reshape(1, mix.dim, 1, 1)
    draws = torch.arange(n)
    noise = lambda i, rows: rng.normal((mix.dim, 1, 1), seed, 0, rng.REVERSE, draws[:rows], step=i)  # noqa: E731
    return purify_votes(ExactDenoiser(mix, schedule), x, plan, votes=n, noise_fn=noise).reshape(n, -1).double().numpy()


@dataclass(frozen=True)
class PosteriorCheck:
    """Samples against Theorem 3.1's posterior: each sample is assigned to its nearest posterior component mean.

    ``p_mass``: chi-square test of the component counts against ``N w_k``; ``p_mean``: per component,
    ``n_k ||xbar_k - m_k||^2 / c_k ~ chi2(d)``; ``p_var``: per component, ``sum ||x - xbar_k||^2 / c_k ~
    chi2(d (n_k - 1))``, two-sided. Each p is Bonferroni-corrected over its components (min(1, K p_min)).
    ``tv``: total variation between the component frequencies and ``w``; ``std_ratio``: worst
    ``sqrt(S_k^2 / c_k)`` (1 when exact); ``mean_err``: ``||sample mean - posterior mean||``.
    """

    n: int
    tv: float
    std_ratio: float
    mean_err: float
    p_mass: float
    p_mean: float
    p_var: float

    @property
    def p_min(self) -> float:
        """Bonferroni over the three tests: the family's p-value."""
        return min(1.0, 3 * min(self.p_mass, self.p_mean, self.p_var))


def check_posterior(samples: np.ndarray, post: Posterior, min_count: int = 50) -> PosteriorCheck:
    """Compare ``samples`` [n, d] with ``post`` (components with an expected count below ``min_count`` are pooled
    in the mass test and skipped in the within-component tests). Needs separated components (assignment by nearest
    mean) with ``c_k > 0``."""
    n, d = samples.shape
    nearest = ((samples[:, None, :] - post.means) ** 2).sum(-1).argmin(1)
    counts = np.bincount(nearest, minlength=len(post.weights))
    expected = n * post.weights
    big = expected >= min_count
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    x2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    p_mass = float(chi2.sf(x2, max(1, keep.sum() - 1)))
    p_means, p_vars, ratios = [], [], []
    for k in np.flatnonzero(big):
        rows = samples[nearest == k]
        if len(rows) < 2:
            p_means.append(0.0)
            p_vars.append(0.0)
            ratios.append(0.0)
            continue
        c = post.variances[k]
        xbar = rows.mean(0)
        p_means.append(float(chi2.sf(len(rows) * ((xbar - post.means[k]) ** 2).sum() / c, d)))
        ss, dof = float(((rows - xbar) ** 2).sum() / c), d * (len(rows) - 1)
        p_vars.append(float(2 * min(chi2.sf(ss, dof), chi2.cdf(ss, dof))))
        ratios.append(math.sqrt(ss / dof))
    bonferroni = lambda ps: min(1.0, len(ps) * min(ps)) if ps else 1.0  # noqa: E731
    worst = max(ratios, key=lambda r: abs(math.log(r)) if r > 0 else math.inf) if ratios else 1.0
    return PosteriorCheck(n, float(0.5 * np.abs(counts / n - post.weights).sum()), worst,
                          float(np.linalg.norm(samples.mean(0) - post.mean)), p_mass, bonferroni(p_means),
                          bonferroni(p_vars))


def theorem31_table(mix: Mixture, schedule: Schedule, x_a: np.ndarray, sigmas: list[float], bs: list[int], n: int,
                    seed: int = 0) -> list[dict]:
    """One row per (sigma, b): the b-step sampler started at ``sqrt(alpha_bar[t*]) x_a`` against Theorem 3.1's
    posterior (:func:`check_posterior`). ``t*`` is DensePure's start timestep for ``sigma`` (reference rule)."""
    rows = []
    for sigma in sigmas:
        for b in bs:
            plan = reverse_plan(sigma, b, schedule)
            t = plan.visited[0]
            s_t = sigma_t(float(schedule.alpha_bar[t]))
            check = check_posterior(reverse_samples(mix, schedule, x_a, plan, n, seed), posterior(mix, x_a, s_t))
            rows.append({"sigma": sigma, "t": t, "sigma_t": s_t, "b": b, "t_last": plan.visited[-1], "n": n,
                         "tv": check.tv, "std_ratio": check.std_ratio, "mean_err": check.mean_err,
                         "p_mass": check.p_mass, "p_mean": check.p_mean, "p_var": check.p_var, "p": check.p_min})
    return rows
