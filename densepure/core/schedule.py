"""Noise schedules, sigma -> (t_star, scale), and the b-step respaced schedule.

Conventions (docs/reference-behaviour.md#ref-1): pixel images live in [0, 1], the diffusion model works on [-1, 1], so
pixel noise
``sigma`` is model-space noise ``2 * sigma``. Timestep *indices* are 0-based code indices:
``alpha_bar[t] = prod_{s <= t} (1 - beta_s)``. The network is fed ``t * 1000 / T`` (``rescale_timesteps``).

All arrays are float64 numpy, computed with the same operation order as the reference so that they match
``tests/fixtures/{schedules.npz, timesteps.json, respacing.json}`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

COSINE_S = 0.008
MAX_BETA = 0.999

TimestepRule = Literal["reference", "paper", "carlini"]


class PlanError(ValueError):
    """A (sigma, b) whose reverse chain would be silently wrong; the message names sigma, b and t*."""


def cosine_f(u: np.ndarray | float) -> np.ndarray | float:
    """Unnormalised cosine alpha-bar ``f(u) = cos^2(((u + s) / (1 + s)) * pi / 2)``, s = 0.008."""
    return np.cos((np.asarray(u, dtype=np.float64) + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2


@dataclass(frozen=True)
class Schedule:
    """A discrete diffusion schedule: ``kind`` is ``linear`` or ``cosine``; ``T`` steps.

    ``betas`` are re-derived from ``alpha_bar`` as ``1 - alpha_bar[t] / alpha_bar[t-1]`` because the reference
    wraps every diffusion in an identity-spaced ``SpacedDiffusion`` that does exactly that.
    """

    kind: str
    T: int
    betas: np.ndarray
    alpha_bar: np.ndarray

    @property
    def timestep_scale(self) -> float:
        """Factor from code index to the value fed to the network (``rescale_timesteps``): 1000 / T."""
        return 1000.0 / self.T

    def alpha_bar_fn(self) -> Callable[[int], float]:
        """``A(j)`` used by the DensePure fast sampler to respace (docs/reference-behaviour.md#ref-4-2).

        Linear (guided-diffusion): the discrete ``alpha_bar[j]``. Cosine (improved-diffusion): the continuous
        ``f(j / T)``, which is ``alpha_bar[j - 1] * f(0)``: the reference's off-by-one, kept on purpose.
        """
        if self.kind == "linear":
            return lambda j: float(self.alpha_bar[j])
        return lambda j: float(cosine_f(j / self.T))


def _from_raw_betas(kind: str, raw_betas: np.ndarray) -> Schedule:
    alpha_bar = np.cumprod(1.0 - raw_betas)
    previous = np.append(1.0, alpha_bar[:-1])
    return Schedule(kind, len(raw_betas), 1.0 - alpha_bar / previous, alpha_bar)


def linear_schedule(T: int = 1000) -> Schedule:
    """guided-diffusion linear schedule: ``beta = linspace(1e-4 * 1000/T, 0.02 * 1000/T, T)``. ValueError for
    T <= 20, where the largest beta, 20 / T, reaches 1 and alpha_bar vanishes or turns negative."""
    if T <= 20:
        raise ValueError(f"a linear schedule needs T > 20 (its largest beta, 20 / T, must stay below 1), got T = {T}")
    scale = 1000 / T
    return _from_raw_betas("linear", np.linspace(scale * 0.0001, scale * 0.02, T, dtype=np.float64))


def cosine_schedule(T: int = 4000) -> Schedule:
    """improved-diffusion cosine schedule: ``beta_i = min(1 - f((i+1)/T) / f(i/T), 0.999)``."""
    betas = [min(1 - cosine_f((i + 1) / T) / cosine_f(i / T), MAX_BETA) for i in range(T)]
    return _from_raw_betas("cosine", np.array(betas, dtype=np.float64))


def make_schedule(kind: str, T: int) -> Schedule:
    """Schedule by name: ``linear`` or ``cosine``."""
    if kind == "linear":
        return linear_schedule(T)
    if kind == "cosine":
        return cosine_schedule(T)
    raise ValueError(f"unknown noise schedule {kind!r} (expected 'linear' or 'cosine')")


# --- sigma -> start timestep ------------------------------------------------------------------------------


def target_alpha_bar(sigma: float) -> float:
    """``a* = 1 / (1 + (2 sigma)^2)``: the alpha-bar whose noise-to-signal ratio equals model-space sigma."""
    return 1.0 / (1.0 + (2 * sigma) ** 2)


def input_scale(sigma: float) -> float:
    """DensePure's input scale ``sqrt(a*) = 1 / sqrt(1 + 4 sigma^2)`` (the target, not ``sqrt(alpha_bar[t*])``)."""
    return 1.0 / math.sqrt(1 + 4 * sigma**2)


def t_star_nearest_ratio(sigma: float, alpha_bar: np.ndarray) -> int:
    """Reference ImageNet t*: nearest index in noise-to-signal ratio ``r[t] = sqrt(1/alpha_bar[t] - 1)``.

    Scans for the first bracket ``r[t] < 2 sigma <= r[t+1]`` and picks ``t + 1`` only if strictly nearer (ties go
    to ``t``). Without a bracket (``2 sigma <= r[0]``) the reference returns ``T - 1``; so do we.
    """
    s = 2 * sigma
    r = np.sqrt(1 / alpha_bar - 1)
    for t in range(len(alpha_bar) - 1):
        if r[t] < s <= r[t + 1]:
            return t + 1 if s - r[t] > r[t + 1] - s else t
    return len(alpha_bar) - 1


def t_star_continuous_cosine(sigma: float, T: int) -> float:
    """Reference CIFAR-10 t* (a float): solves ``f(t/T) / f(0) = a*`` for the continuous cosine schedule."""
    k = 2 * (1 + COSINE_S) / math.pi
    return T * (1 - k * math.asin(math.sin(math.pi / 2 / (1 + COSINE_S)) / math.sqrt(1 + (2 * sigma) ** 2)))


def t_carlini(sigma: float, alpha_bar: np.ndarray) -> int:
    """Carlini et al.'s t: the smallest ``t >= 1`` with ``sqrt(1 - alpha_bar[t]) / sqrt(alpha_bar[t]) >= 2 sigma``."""
    ratio = np.sqrt(1 - alpha_bar) / np.sqrt(alpha_bar)
    for t in range(1, len(alpha_bar)):
        if ratio[t] >= 2 * sigma:
            return t
    raise PlanError(f"sigma {sigma:g} is beyond the schedule's largest noise level (Carlini et al.'s rule finds no t)")


def t_paper(sigma: float, alpha_bar: np.ndarray, model_space: bool = True) -> int:
    """The paper's Alg. 2: ``argmin_n |alpha_n - 1/(1 + sigma^2)|`` as a 0-based code index.

    The paper omits the factor 2 between pixel and model space; ``model_space=True`` restores it (which is what
    the reference effectively does), ``False`` applies the formula literally.
    """
    s = 2 * sigma if model_space else sigma
    return int(np.argmin(np.abs(alpha_bar - 1 / (1 + s**2))))


def t_star(sigma: float, schedule: Schedule, rule: TimestepRule = "reference") -> float:
    """Start timestep for ``sigma``. ``reference``: what DensePure's code does for this schedule (int for linear,
    float for cosine); ``paper``: Alg. 2 with the factor 2; ``carlini``: Carlini et al.'s ceil rule."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    if rule == "reference":
        if schedule.kind == "linear":
            return t_star_nearest_ratio(sigma, schedule.alpha_bar)
        return t_star_continuous_cosine(sigma, schedule.T)
    if rule == "paper":
        return t_paper(sigma, schedule.alpha_bar)
    if rule == "carlini":
        return t_carlini(sigma, schedule.alpha_bar)
    raise ValueError(f"unknown timestep rule {rule!r} (expected 'reference', 'paper' or 'carlini')")


# --- the b-step respaced schedule ---------------------------------------------------------------------------


def visited_timesteps(t_star_value: float, b: int) -> list[int]:
    """Real timesteps visited by the b-step sampler: ``round(t* - i t*/b)`` for ``i = 0..b-1``.

    Python's ``round`` (half to even), last entry ``round(t*/b)`` (not 1), as in the reference.
    """
    if b < 1:
        raise ValueError(f"b must be >= 1, got {b}")
    step = t_star_value / b
    return [round(t_star_value - i * step) for i in range(b)]


@dataclass(frozen=True)
class StepCoefficients:
    """Per-step coefficients of a reverse chain, indexed by respaced ``k`` (``k = b-1`` is the first step).

    Formulas (Ho et al. / improved-diffusion): ``alpha_bar_prev[k] = alpha_bar[k-1]`` (1 at k=0),
    posterior variance ``beta (1 - alpha_bar_prev) / (1 - alpha_bar)``, its log clipped at k=0 to the k=1 value,
    ``coef1 = beta sqrt(alpha_bar_prev) / (1 - alpha_bar)``, ``coef2 = (1 - alpha_bar_prev) sqrt(1 - beta) /
    (1 - alpha_bar)``.
    """

    betas: np.ndarray
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    sqrt_recip_alpha_bar: np.ndarray
    sqrt_recipm1_alpha_bar: np.ndarray
    log_betas: np.ndarray


def step_coefficients(betas: np.ndarray) -> StepCoefficients:
    """All reverse-step coefficients derived from ``betas`` (docs/reference-behaviour.md#ref-2), with the reference's
    operation order.

    Needs at least two betas: the clipped log variance borrows index 1 (the reference's b = 1 crash).
    """
    if len(betas) < 2:
        raise ValueError("a respaced chain needs b >= 2 steps; b = 1 is the one-shot path")
    alphas = 1.0 - betas
    alpha_bar = np.cumprod(alphas, axis=0)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    return StepCoefficients(
        betas=betas,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
        posterior_mean_coef1=betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
        posterior_mean_coef2=(1.0 - alpha_bar_prev) * np.sqrt(alphas) / (1.0 - alpha_bar),
        sqrt_recip_alpha_bar=np.sqrt(1.0 / alpha_bar),
        sqrt_recipm1_alpha_bar=np.sqrt(1.0 / alpha_bar - 1),
        log_betas=np.log(betas),
    )


def respaced_betas(visited: list[int], alpha_bar_fn: Callable[[int], float]) -> np.ndarray:
    """``beta'_k = min(1 - A(L[k+1]) / A(L[k]), 0.999)`` over ``L = [0] + visited[::-1]``
    (docs/reference-behaviour.md#ref-4-2)."""
    ladder = [0] + visited[::-1]
    return np.array(
        [min(1 - alpha_bar_fn(ladder[k + 1]) / alpha_bar_fn(ladder[k]), MAX_BETA) for k in range(len(visited))],
        dtype=np.float64,
    )


def _where(sigma: float, b: int, t_star_value: float, schedule: Schedule) -> str:
    return f"sigma {sigma:g}, b {b}: t* = {t_star_value:.6g} on the {schedule.kind} schedule with T = {schedule.T}"


def _distinct(t_star_value: float, b: int) -> bool:
    visited = visited_timesteps(t_star_value, b)
    return len(set(visited)) == b and visited[-1] > 0


def largest_b(t_star_value: float) -> int:
    """The largest b whose visited timesteps are distinct and positive at this t* (1 when no b >= 2 is)."""
    return next((b for b in range(math.ceil(t_star_value) + 1, 1, -1) if _distinct(t_star_value, b)), 1)


def check_start(sigma: float, b: int, t_star_value: float, schedule: Schedule, rule: TimestepRule) -> None:
    """Refuse a start timestep the schedule does not have (``round(t*) > T - 1``: the one-shot would index past the
    schedule, a chain would feed the network a timestep it was never trained on), and the reference's tiny-sigma
    fallback (``2 sigma`` below the linear schedule's smallest noise level: t* = T - 1, i.e. purification from pure
    noise, see :func:`t_star_nearest_ratio`)."""
    where = _where(sigma, b, t_star_value, schedule)
    if round(t_star_value) > schedule.T - 1:
        raise PlanError(f"{where} is beyond the schedule's last timestep {schedule.T - 1}: sigma is too large")
    if rule == "reference" and schedule.kind == "linear":
        smallest = math.sqrt(1 / schedule.alpha_bar[0] - 1)
        if 2 * sigma <= smallest:
            raise PlanError(f"{where}: 2 sigma is at or below the schedule's smallest noise level {smallest:.3g}, "
                            "where the reference rule falls back to the last timestep (purification from pure noise)")


def check_visited(sigma: float, visited: list[int], t_star_value: float, schedule: Schedule) -> None:
    """Refuse a b-step chain whose visited timesteps repeat or reach 0: its respaced betas would be 0 and its
    coefficients not finite (b larger than about t*)."""
    b = len(visited)
    repeated = sorted({t for t in visited if visited.count(t) > 1}, reverse=True)
    if repeated or visited[-1] <= 0:
        shown = ", ".join(map(str, repeated[:3])) + (", ..." if len(repeated) > 3 else "")
        what = f"repeat ({shown})" if repeated else "reach timestep 0"
        raise PlanError(f"{_where(sigma, b, t_star_value, schedule)}: the visited timesteps {what}, which makes "
                        f"respaced betas 0 and coefficients not finite; at this sigma b can be at most "
                        f"{largest_b(t_star_value)}")


def check_finite(sigma: float, b: int, t_star_value: float, schedule: Schedule, coef: StepCoefficients) -> None:
    """Refuse coefficients that are not all finite (the chain would compute NaN images and classify them)."""
    bad = [name for name in coef.__dataclass_fields__ if not np.isfinite(getattr(coef, name)).all()]
    if bad:
        raise PlanError(f"{_where(sigma, b, t_star_value, schedule)}: the reverse coefficients are not finite "
                        f"({', '.join(bad)})")


@dataclass(frozen=True)
class ReversePlan:
    """Everything one purification needs (docs/reference-behaviour.md#ref-3).

    The network input for a clean pixel image ``x`` and standard normal ``n`` is
    ``scale * (2 (x + noise_sigma * n) - 1)``; then the chain visits the real timesteps ``visited`` (feeding the
    network ``model_timesteps``), with coefficients indexed by respaced ``k = b-1-i``. A ``one_shot`` plan returns
    the clipped x0 of its single step; a b-step plan returns the last step's posterior mean (which is that x0).
    """

    visited: list[int]
    model_timesteps: list[float]
    coef: StepCoefficients
    scale: float
    noise_sigma: float
    one_shot: bool

    @property
    def b(self) -> int:
        return len(self.visited)


def reverse_plan(sigma: float, b: int, schedule: Schedule, rule: TimestepRule = "reference") -> ReversePlan:
    """DensePure's b-step plan for ``sigma`` (b >= 2; b = 1 is :func:`one_shot_plan`): scale ``sqrt(a*)``.
    :class:`PlanError` for a (sigma, b) that would be silently wrong (:func:`check_start`, :func:`check_visited`,
    :func:`check_finite`)."""
    ts = t_star(sigma, schedule, rule)
    visited = visited_timesteps(ts, b)
    if b >= 2:
        check_start(sigma, b, ts, schedule, rule)
        check_visited(sigma, visited, ts, schedule)
    coef = step_coefficients(respaced_betas(visited, schedule.alpha_bar_fn()))
    check_finite(sigma, b, ts, schedule, coef)
    model_ts = [t * schedule.timestep_scale for t in visited]
    return ReversePlan(visited, model_ts, coef, input_scale(sigma), sigma, one_shot=False)


def _single_step(schedule: Schedule, t: int) -> StepCoefficients:
    full = step_coefficients(schedule.betas)
    return StepCoefficients(**{name: getattr(full, name)[t : t + 1] for name in full.__dataclass_fields__})


def one_shot_plan(sigma: float, schedule: Schedule, rule: TimestepRule = "reference") -> ReversePlan:
    """DensePure-code one-shot ("Carlini22" in the paper's tables, docs/reference-behaviour.md#ref-5-1): scale
    ``sqrt(a*)``, one step of the
    unmodified schedule at ``round(t*)``, returning the clipped x0. :class:`PlanError` where the schedule has no
    such step (:func:`check_start`)."""
    ts = t_star(sigma, schedule, rule)
    check_start(sigma, 1, ts, schedule, rule)
    t = round(ts)
    return ReversePlan([t], [t * schedule.timestep_scale], _single_step(schedule, t), input_scale(sigma), sigma, True)


def carlini_plan(sigma: float, schedule: Schedule) -> ReversePlan:
    """Carlini et al.'s own one-shot (docs/reference-behaviour.md#ref-5-2): ``x_t = sqrt(alpha_bar[t_C]) (2x - 1) +
    sqrt(1 - alpha_bar[t_C])
    n``, i.e. scale ``sqrt(alpha_bar[t_C])`` and pixel noise ``sqrt((1 - alpha_bar)/alpha_bar) / 2 >= sigma``."""
    t = t_carlini(sigma, schedule.alpha_bar)
    a = float(schedule.alpha_bar[t])
    noise_sigma = math.sqrt(1 - a) / math.sqrt(a) / 2
    return ReversePlan([t], [t * schedule.timestep_scale], _single_step(schedule, t), math.sqrt(a), noise_sigma, True)


def make_plan(sigma: float, b: int, schedule: Schedule, method: str = "densepure", rule: TimestepRule = "reference"):
    """Plan by method: ``densepure`` (b >= 2 steps; b = 1 falls back to the DP one-shot as the reference scripts
    do), ``onestep`` (DP's one-shot), ``carlini`` (Carlini et al.'s code)."""
    if method == "carlini":
        return carlini_plan(sigma, schedule)
    if method == "onestep" or b == 1:
        return one_shot_plan(sigma, schedule, rule)
    if method == "densepure":
        return reverse_plan(sigma, b, schedule, rule)
    raise ValueError(f"unknown purification method {method!r} (expected 'densepure', 'onestep' or 'carlini')")
