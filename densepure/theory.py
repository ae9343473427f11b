"""Section 3 of the paper made runnable: an exact diffusion model for a Gaussian mixture, Theorem 3.1's posterior,
Theorem 3.3's highest-density purifier with its robust regions and radii, and DensePure vs one-shot on the exact model.

The data distribution is a labelled mixture of isotropic Gaussians in model space,
``p(x) = sum_k pi_k N(x; mu_k, s_k^2 I)``; ``s_k = 0`` for every k is the zero-variance limit, a finite labelled point
set (``p`` is then a probability mass function). Noising it gives the closed-form marginal
``p_t(x) = sum_k pi_k N(x; sqrt(alpha_bar) mu_k, (alpha_bar s_k^2 + 1 - alpha_bar) I)``, whose score is the exact
``eps`` a perfectly trained network would output (:class:`ExactDenoiser`). Run it as
``densepure theory {thm31,fig2,radius} --help``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar
from scipy.special import logsumexp
from scipy.stats import chi2

from . import rng
from .denoise import model_input, purify_votes
from .schedule import ReversePlan, Schedule, make_plan, make_schedule, reverse_plan
from .smoothing import certify_votes


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


# --- the exact diffusion model --------------------------------------------------------------------------------


class ExactDenoiser:
    """``net(x, t) -> eps`` of the mixture: ``eps(x_t) = -sqrt(1 - a) grad log p_t(x_t)
    = sqrt(1 - a) sum_k r_k(x_t) (x_t - sqrt(a) mu_k) / v_k``, ``v_k = a s_k^2 + 1 - a``,
    ``r_k ∝ pi_k N(x_t; sqrt(a) mu_k, v_k I)``, with ``a = alpha_bar[t / timestep_scale]`` of the *original* schedule.

    The network-timestep convention is the UNet's (densepure.schedule: the net is fed ``t * 1000 / T``), so a
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


# --- Theorem 3.1: the posterior of the reverse process ----------------------------------------------------------


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
    """``n`` outputs [n, d] of the plan's reverse chain (densepure.denoise.purify_votes) with the exact model, started
    at ``x_t = sqrt(alpha_bar[t]) x_a``, ``t = plan.visited[0]``; reverse noise from densepure.rng (stream REVERSE)."""
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


# --- Theorem 3.3: the highest-density purifier and its robust regions --------------------------------------------


def log_objective(mix: Mixture, x: np.ndarray, x_a: np.ndarray, sigma: float) -> np.ndarray:
    """``log p(x) - ||x - x_a||^2 / (2 sigma_t^2)``: Theorem 3.1's log posterior up to a constant (continuous p)."""
    return log_density(mix, x) - ((np.asarray(x) - x_a) ** 2).sum(-1) / (2 * sigma**2)


def highest_density_point(mix: Mixture, x_a: np.ndarray, sigma: float, starts: np.ndarray | None = None,
                          iters: int = 500, tol: float = 1e-12) -> np.ndarray:
    """Algorithm 1's purifier ``P(x_a; t) = argmax_x p(x) N(x; x_a, sigma_t^2 I)`` for every row of ``x_a`` [n, d].

    The objective is the posterior mixture ``sum_k w_k N(x; m_k, c_k I)`` (:func:`posterior`) up to a constant, so
    P is its global mode. Every stationary point solves the fixed point ``x = sum_k r_k(x) m_k / c_k /
    sum_k r_k(x) / c_k``, ``r_k ∝ w_k N(x; m_k, c_k I)`` (mean shift, Carreira-Perpinan 2000); the iteration is run
    from every ``m_k`` and every extra start in ``starts`` [S, d], and the start ending highest wins. A point set's
    P is ``argmax_k log pi_k - ||mu_k - x_a||^2 / (2 sigma_t^2)``.
    """
    x_a = np.atleast_2d(np.asarray(x_a, dtype=np.float64))
    if mix.point_set:
        score = np.log(mix.weights) - ((x_a[:, None, :] - mix.means) ** 2).sum(-1) / (2 * sigma**2)
        return mix.means[score.argmax(1)]
    s2, v = mix.stds**2, mix.stds**2 + sigma**2
    m = (sigma**2 * mix.means[None] + s2[None, :, None] * x_a[:, None, :]) / v[None, :, None]  # [n, K, d]
    c = s2 * sigma**2 / v  # [K]
    log_w = np.log(mix.weights) + _log_normal(x_a, mix.means, v)  # [n, K]
    x = m if starts is None else np.concatenate([m, np.broadcast_to(starts, (len(x_a), *np.shape(starts)))], 1)
    x = x.copy()  # [n, S, d]
    for _ in range(iters):
        log_r = log_w[:, None, :] + _log_normal(x, m[:, None], c)  # [n, S, K]
        r = np.exp(log_r - log_r.max(-1, keepdims=True)) / c
        new = np.einsum("nsk,nkd->nsd", r, m) / r.sum(-1, keepdims=True)
        done = np.abs(new - x).max() < tol
        x = new
        if done:
            break
    value = logsumexp(log_w[:, None, :] + _log_normal(x, m[:, None], c), -1)  # [n, S]
    return x[np.arange(len(x)), value.argmax(1)]


def purified_class(mix: Mixture, x_a: np.ndarray, sigma: float, starts: np.ndarray | None = None) -> np.ndarray:
    """``f(P(x_a; t))`` with f the Bayes classifier (:func:`classify`)."""
    return classify(mix, highest_density_point(mix, x_a, sigma, starts))


def halfspaces(x0: np.ndarray, log_p0: float, others: np.ndarray, log_p_others: np.ndarray,
               sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Theorem 3.3 (i)'s ``D_sub(x0; t) = ∩_{x'} {x_a : (x_a - x0)^T (x' - x0) < sigma_t^2 log(p(x0) / p(x'))
    + ||x' - x0||^2 / 2}`` over the other-label points ``others`` [M, d], as ``(normals, offsets)``:
    ``x_a`` is inside iff ``(x_a - x0) @ normals.T < offsets`` for every row."""
    normals = others - x0
    offsets = sigma**2 * (log_p0 - log_p_others) + 0.5 * (normals**2).sum(-1)
    return normals, offsets


def in_region(x_a: np.ndarray, x0: np.ndarray, normals: np.ndarray, offsets: np.ndarray,
              chunk: int = 1 << 22) -> np.ndarray:
    """Membership of the rows of ``x_a`` in the intersection of half-spaces of :func:`halfspaces` (in chunks of
    about ``chunk`` comparisons)."""
    z = np.atleast_2d(x_a) - x0
    rows = max(1, chunk // max(1, len(normals)))
    return np.concatenate([(z[i:i + rows] @ normals.T < offsets).all(-1) for i in range(0, len(z), rows)])


def other_label_grid(mix: Mixture, label: int, box: tuple[float, float], spacing: float) -> np.ndarray:
    """Points of a square grid over ``box`` (2-D) where the Bayes classifier says a label other than ``label``; for a
    point set, its other-label points."""
    if mix.point_set:
        return mix.means[mix.labels != label]
    ticks = np.arange(box[0], box[1] + spacing / 2, spacing)
    grid = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
    return grid[classify(mix, grid) != label]


def _log_p(mix: Mixture, x: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """log p at points: the density of a mixture, or ``log pi`` of a point set's points (given their ``index``)."""
    if mix.point_set:
        return np.log(mix.weights[index])
    return log_density(mix, x)


def sub_region(mix: Mixture, k0: int, sigma: float, box=(-1.5, 1.5), spacing: float = 0.01):
    """``(x0, normals, offsets)`` of ``D_sub(x0; t)`` with ``x0 = mu_{k0}``: exact for a point set; for a mixture the
    intersection runs over the other-label points of a grid (spacing ``spacing``), a superset of the theorem's set
    that tends to it as the spacing shrinks."""
    label, x0 = mix.labels[k0], mix.means[k0]
    others = other_label_grid(mix, label, box, spacing)
    index = np.flatnonzero(mix.labels != label) if mix.point_set else None
    normals, offsets = halfspaces(x0, float(_log_p(mix, x0[None], np.array([k0]))[0]), others,
                                  _log_p(mix, others, index), sigma)
    return x0, normals, offsets


def sub_radius(mix: Mixture, k0: int, sigma: float, box=(-1.5, 1.5), spacing: float = 0.01) -> tuple[float, np.ndarray]:
    """``r_sub(x0)``: radius of the largest ball around ``x0 = mu_{k0}`` inside ``D_sub(x0; t)``, i.e.
    ``inf_{x'} [sigma_t^2 log(p(x0) / p(x')) + ||x' - x0||^2 / 2] / ||x' - x0||`` over other-label ``x'`` (0 if
    negative), and the unit direction of the nearest boundary. Mixture: grid minimum refined by Nelder-Mead
    inside the other-label region."""
    x0, normals, offsets = sub_region(mix, k0, sigma, box, spacing)
    dist = offsets / np.linalg.norm(normals, axis=1)
    j = int(dist.argmin())
    best, u = float(dist[j]), normals[j] / np.linalg.norm(normals[j])
    if not mix.point_set:
        label, log_p0 = mix.labels[k0], float(log_density(mix, x0[None])[0])

        def phi(x):
            if classify(mix, x[None])[0] == label or np.allclose(x, x0):
                return math.inf
            n = x - x0
            return (sigma**2 * (log_p0 - log_density(mix, x[None])[0]) + 0.5 * n @ n) / np.linalg.norm(n)

        res = minimize(phi, x0 + normals[j], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
        if res.fun < best:
            best, u = float(res.fun), (res.x - x0) / np.linalg.norm(res.x - x0)
    return max(best, 0.0), u


def robust_radius(mix: Mixture, k0: int, sigma: float, r_max: float = 2.0, directions: int = 360,
                  step: float = 0.005, starts: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Definition 3.2's ``r(x0; t) = max{r : f(P(x0 + r u; t)) = f(x0) for all ||u|| <= 1}`` for ``x0 = mu_{k0}``
    in 2-D, and the direction where it is attained.

    The distance from x0 to the complement of D is the smallest first crossing over all directions, so: first
    crossings along ``directions`` rays on a ``step`` grid, bisection to 1e-7, then the best ray's angle refined by a
    bounded scalar minimisation. Returns ``r_max`` if no ray leaves D within it."""
    x0, label = mix.means[k0], mix.labels[k0]

    def wrong(points):
        return purified_class(mix, points, sigma, starts) != label

    def crossing(theta: float, lo: float = 0.0) -> float:
        u = np.array([math.cos(theta), math.sin(theta)])
        radii = np.arange(lo + step, r_max + step / 2, step)
        bad = np.flatnonzero(wrong(x0 + radii[:, None] * u))
        if len(bad) == 0:
            return r_max
        lo, hi = (radii[bad[0] - 1] if bad[0] > 0 else lo), radii[bad[0]]
        while hi - lo > 1e-7:
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if wrong((x0 + mid * u)[None])[0] else (mid, hi)
        return 0.5 * (lo + hi)

    thetas = np.linspace(0, 2 * math.pi, directions, endpoint=False)
    radii = np.arange(step, r_max + step / 2, step)
    points = x0 + radii[None, :, None] * np.stack([np.cos(thetas), np.sin(thetas)], -1)[:, None, :]
    bad = wrong(points.reshape(-1, 2)).reshape(directions, len(radii))
    first = np.where(bad.any(1), radii[bad.argmax(1)], r_max)
    if first.min() >= r_max:
        return r_max, np.array([1.0, 0.0])
    i = int(first.argmin())
    width = 2 * math.pi / directions
    res = minimize_scalar(crossing, bounds=(thetas[i] - width, thetas[i] + width), method="bounded",
                          options={"xatol": 1e-6})
    theta = float(res.x) if res.fun <= crossing(thetas[i]) else float(thetas[i])
    return float(min(res.fun, crossing(thetas[i]))), np.array([math.cos(theta), math.sin(theta)])


# --- DensePure vs the one-shot posterior mean on the exact model -------------------------------------------------


def vote_labels(mix: Mixture, schedule: Schedule, x: np.ndarray, sigma: float, method: str, b: int, K: int,
                n_draws: int, seed: int, image: int) -> tuple[np.ndarray, float]:
    """Labels [n_draws, K] of the base classifier ``F`` at the noisy draws ``x + delta`` of the model-space point
    ``x`` [d]: the Bayes classifier (:func:`classify`) of each purified vote. densepure: K reverse chains of b steps
    (votes); onestep / carlini: the one-shot ``E[x0 | x_t]`` (one vote). Also returns the plan's pixel noise
    ``noise_sigma`` (= sigma, except for Carlini's ceil rule). Noise is addressed like the certification runner's:
    (seed, image, draw, vote, step)."""
    plan = make_plan(sigma, b, schedule, method)
    votes = 1 if plan.one_shot else K
    d = mix.dim
    draws = torch.arange(n_draws)
    x_pixel = torch.tensor((np.asarray(x) + 1) / 2, dtype=torch.float32).reshape(1, d, 1, 1)
    x_in = model_input(x_pixel, rng.normal((d, 1, 1), seed, image, rng.SMOOTHING, draws), plan)
    vote_draws, vote_ids = draws.repeat_interleave(votes), torch.arange(votes).repeat(len(draws))
    noise = lambda i, rows: rng.normal((d, 1, 1), seed, image, rng.REVERSE, vote_draws, vote_ids, i)  # noqa: E731
    out = purify_votes(ExactDenoiser(mix, schedule), x_in, plan, votes, noise)
    return classify(mix, out.reshape(len(out), d).double().numpy()).reshape(n_draws, votes), plan.noise_sigma


def class_mass(mix: Mixture, x_a: np.ndarray, sigma: float) -> np.ndarray:
    """Theorem 3.1's posterior mass of each class at ``x_a``: ``sum of w_k`` over the class's components."""
    return np.bincount(mix.labels, weights=posterior(mix, x_a, sigma).weights, minlength=mix.num_classes)


def radius_table(mix: Mixture, schedule: Schedule, sigmas: list[float], b: int, Ks: list[int], one_shot: list[str],
                 N0: int, N: int, alpha: float, seed: int) -> list[dict]:
    """Cohen et al.'s CERTIFY (densepure.smoothing.certify_votes) at every component mean as the clean input: one
    row per (point, sigma, method, K) with the prediction and certified radius of the smoothed classifier. DensePure's
    base classifier is the majority of the first K votes (one set of max(Ks) chains); the one-shot methods classify
    the posterior mean. ``posterior_mass`` is Theorem 3.1's mass of the true class at the clean point."""
    rows = []
    for k, x in enumerate(mix.means):
        for sigma in sigmas:
            s_t = sigma_t(float(schedule.alpha_bar[round(reverse_plan(sigma, 2, schedule).visited[0])]))
            mass = float(class_mass(mix, x, s_t)[mix.labels[k]])
            runs = [(method, 1, [1]) for method in one_shot] + [("densepure", b, sorted(Ks))]
            for method, steps, ks in runs:
                labels, noise_sigma = vote_labels(mix, schedule, x, sigma, method, steps, max(ks), N0 + N, seed, k)
                for K in ks:
                    cert = certify_votes(labels, K, N0, noise_sigma, alpha, mix.num_classes)
                    rows.append({"point": k, "label": int(mix.labels[k]), "sigma": sigma, "method": method,
                                 "b": steps, "K": K, "predict": cert.prediction,
                                 "correct": int(cert.prediction == mix.labels[k]), "radius": cert.radius,
                                 "pA_lower": cert.pA_lower, "posterior_mass": mass})
    return rows


# --- outputs ------------------------------------------------------------------------------------------------------


def _schedule(settings: dict) -> Schedule:
    return make_schedule(settings["schedule"]["kind"], settings["schedule"]["T"])


def _write_csv(path: str, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def _write_md(path: str, rows: list[dict], title: str) -> None:
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"{title}\n", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(fmt(v) for v in row.values()) + " |" for row in rows]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def thm31_outputs(settings: dict, csv_path: str, md_path: str) -> list[dict]:
    """Theorem 3.1 deviation table (:func:`theorem31_table`) as CSV and Markdown."""
    s = settings["thm31"]
    rows = theorem31_table(Mixture.from_config(s["mixture"]), _schedule(settings), np.array(s["x_a"]), s["sigmas"],
                           s["bs"], s["samples"], settings["seed"])
    _write_csv(csv_path, rows)
    _write_md(md_path, rows, "Theorem 3.1 on the exact model: b-step sampler vs the posterior p(x) N(x; x_a, "
              "sigma_t^2 I) (tv: total variation of component masses; std_ratio: sampled / exact within-component "
              "std; p: Bonferroni p-value of mass, mean and variance tests)")
    return rows


def fig2_numbers(settings: dict) -> dict:
    """Everything Figure 2 plots: sigma_t, r and r_sub around ``x0``, and an ``x_a`` in D but outside D_sub(x0)."""
    s = settings["fig2"]
    mix, schedule = Mixture.from_config(s["mixture"]), _schedule(settings)
    t = round(reverse_plan(s["sigma"], 2, schedule).visited[0])
    sig = sigma_t(float(schedule.alpha_bar[t]))
    k0 = s["x0"]
    r, u_r = robust_radius(mix, k0, sig, r_max=s["r_max"])
    r_sub, u_sub = sub_radius(mix, k0, sig, spacing=s["spacing"])
    x_a = mix.means[k0] + 0.5 * (r + r_sub) * u_sub  # beyond D_sub(x0)'s nearest face, inside the ball of radius r
    p_a = highest_density_point(mix, x_a[None], sig)[0]
    return {"sigma": s["sigma"], "t": t, "sigma_t": sig, "x0": k0, "r": r, "r_sub": r_sub, "r_dir": u_r,
            "r_sub_dir": u_sub, "x_a": x_a, "P_x_a": p_a, "P_x_a_class": int(classify(mix, p_a[None])[0]),
            "mix": mix}


def fig2_outputs(settings: dict, png: str, pdf: str, csv_path: str) -> dict:
    """Figure 2: the robust region D(G(x0); t) (shaded), the sub-regions D_sub(x_i; t) of the same-label component
    means (outlined), and the balls of radius r and r_sub around x0; the plotted numbers go to ``csv_path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from .report import figure_style

    s = settings["fig2"]
    num = fig2_numbers(settings)
    mix, sig, k0 = num["mix"], num["sigma_t"], num["x0"]
    lo, hi = s["box"]
    ticks = np.linspace(lo, hi, s["pixels"])
    grid = np.stack(np.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(-1, 2)
    inside = (purified_class(mix, grid, sig) == mix.labels[k0]).reshape(len(ticks), len(ticks))
    same = np.flatnonzero(mix.labels == mix.labels[k0])
    rows = [("sigma", num["sigma"]), ("t_star", num["t"]), ("sigma_t", sig), ("r", num["r"]), ("r_sub", num["r_sub"]),
            ("r_over_r_sub", num["r"] / num["r_sub"] if num["r_sub"] > 0 else math.inf),
            ("area_D", float(inside.mean()) * (hi - lo) ** 2)]
    with figure_style():
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        ax.contourf(ticks, ticks, inside, levels=[-0.5, 0.5, 1.5], colors=["#f4cccc", "#cfe2f3"])
        ax.contour(ticks, ticks, inside, levels=[0.5], colors="#3d85c6", linewidths=1.5)
        for i, k in enumerate(same):
            x0, normals, offsets = sub_region(mix, int(k), sig, spacing=s["spacing"])
            member = in_region(grid, x0, normals, offsets).reshape(len(ticks), len(ticks))
            ax.contour(ticks, ticks, member, levels=[0.5], colors=f"C{i + 2}", linestyles="--", linewidths=1)
            ax.plot([], [], f"C{i + 2}--", lw=1, label=f"$D_{{sub}}(x_{k})$")
            rows.append((f"area_D_sub_{k}", float(member.mean()) * (hi - lo) ** 2))
        theta = np.linspace(0, 2 * math.pi, 200)
        for radius, style, name in [(num["r"], "-", "r"), (num["r_sub"], ":", "r_sub")]:
            ax.plot(mix.means[k0, 0] + radius * np.cos(theta), mix.means[k0, 1] + radius * np.sin(theta), "k" + style,
                    lw=1.2, label=f"{name} = {radius:.3f}")
        for k, (mu, lab) in enumerate(zip(mix.means, mix.labels)):
            ax.plot(*mu, "o" if lab == mix.labels[k0] else "s", color="k", ms=5)
            ax.annotate(f"$x_{k}$", mu, xytext=(4, 4), textcoords="offset points")
            rows += [(f"mean_{k}_x", mu[0]), (f"mean_{k}_y", mu[1]), (f"label_{k}", int(lab))]
        ax.annotate("", num["P_x_a"], num["x_a"], arrowprops={"arrowstyle": "->", "color": "0.3"})
        ax.plot(*num["x_a"], "x", color="k", ms=6)
        ax.annotate("$x_a$", num["x_a"], xytext=(4, -10), textcoords="offset points")
        rows += [("x_a_x", num["x_a"][0]), ("x_a_y", num["x_a"][1]), ("P_x_a_x", num["P_x_a"][0]),
                 ("P_x_a_y", num["P_x_a"][1]), ("P_x_a_class", num["P_x_a_class"])]
        ax.set_aspect("equal")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"Robust region D(G(x0); t), σ = {num['sigma']:g} (σ_t = {sig:.3f})")
        ax.plot([], [], color="#3d85c6", lw=1.5, label="$D(G(x_0); t)$ boundary")
        ax.legend(loc="lower left", fontsize=7)
        fig.savefig(png, dpi=150)
        fig.savefig(pdf)
    _write_csv(csv_path, [{"quantity": k, "value": v} for k, v in rows])
    return num


def radius_outputs(settings: dict, csv_path: str, md_path: str, png: str, pdf: str) -> list[dict]:
    """DensePure's majority vote vs the one-shot posterior mean: certified radius per clean point, sigma and method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from .report import figure_style

    s = settings["radius"]
    mix = Mixture.from_config(s["mixture"])
    rows = radius_table(mix, _schedule(settings), s["sigmas"], s["b"], s["Ks"], s["one_shot"], s["N0"], s["N"],
                        s["alpha"], settings["seed"])
    _write_csv(csv_path, rows)
    _write_md(md_path, rows, f"Certified radius on the exact model (alpha = {s['alpha']}, N0 = {s['N0']}, "
              f"N = {s['N']}): DensePure's majority vote of K reverse chains vs the one-shot posterior mean")
    series = list(dict.fromkeys((r["method"], r["K"]) for r in rows))
    with figure_style():
        fig = Figure(figsize=(2 + 2.2 * len(s["sigmas"]) + 0.4 * len(mix.means), 3.4))
        axes = fig.subplots(1, len(s["sigmas"]), squeeze=False, sharey=True)[0]
        width = 0.8 / len(series)
        for ax, sigma in zip(axes, s["sigmas"]):
            for j, (method, K) in enumerate(series):
                radii = [r["radius"] if r["correct"] else 0.0 for r in rows
                         if r["sigma"] == sigma and (r["method"], r["K"]) == (method, K)]
                label = f"DensePure K={K}" if method == "densepure" else method
                ax.bar(np.arange(len(radii)) + (j - (len(series) - 1) / 2) * width, radii, width, label=label)
            ax.set_xticks(np.arange(len(mix.means)), [f"$x_{k}$\nclass {c}" for k, c in enumerate(mix.labels)])
            ax.set_title(f"σ = {sigma:g}")
        axes[0].set_ylabel("certified radius (0: wrong or abstain)")
        axes[-1].legend(fontsize=7)
        fig.savefig(png, dpi=150)
        fig.savefig(pdf)
    return rows


# --- command line (`densepure theory`, defined in densepure.cli) ---------------------------------------------------


def _settings(spec: str) -> dict:
    import yaml

    with open(spec) as handle:
        config = yaml.safe_load(handle) or {}
    if "theory" not in config:
        raise ValueError(f"{spec}: no `theory` section")
    return config["theory"]


def run(args: argparse.Namespace) -> int:
    """``densepure theory {thm31,fig2,radius}``: write one artifact from the `theory` section of ``args.spec``."""
    torch.set_num_threads(1)
    try:
        settings = _settings(args.spec)
        if args.theory_command == "thm31":
            for row in thm31_outputs(settings, args.csv, args.md):
                print(f"sigma {row['sigma']:g} b {row['b']:4d}: tv {row['tv']:.4f} std_ratio {row['std_ratio']:.3f} "
                      f"p {row['p']:.2g}", file=sys.stderr)
        elif args.theory_command == "fig2":
            num = fig2_outputs(settings, args.png, args.pdf, args.csv)
            print(f"sigma_t {num['sigma_t']:.4f}: r {num['r']:.4f}, r_sub {num['r_sub']:.4f}", file=sys.stderr)
        else:
            radius_outputs(settings, args.csv, args.md, args.png, args.pdf)
    except (KeyError, OSError) as err:  # a missing setting or an unreadable spec: one line, like a ValueError
        raise ValueError(f"{args.spec}: {err}") from err
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m densepure.theory ...``, the same as ``densepure theory ...``."""
    from .cli import main as cli_main

    return cli_main(["theory", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
