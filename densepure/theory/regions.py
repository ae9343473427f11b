"""Theorem 3.3 on the exact model: the highest-density purifier, its robust region D(G(x0); t), the
sub-regions D_sub and the radii r and r_sub."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import logsumexp

from densepure.theory.exact import Mixture, _log_normal, classify, log_density


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
