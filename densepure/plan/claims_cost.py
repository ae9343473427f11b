"""``densepure estimate --claims``: the images and GPU-hours a claim is expected to need, before running it.

A claim (:mod:`densepure.plan.claims`) is decided by certifying its image set in a seeded random order, ``wave``
images at a time, until its confidence sequence (:func:`densepure.core.sequential.confidence_sequence`, at the claim's
share of the family's alpha) settles it or its budget runs out. How many images that takes depends on the effect,
which is unknown before the run; this module simulates the stopping rule on a finite image set built from an assumed
effect:

* a single cell with certified accuracy ``p`` on ``N`` images: ``round(N p)`` images certified, the others not;
* a paired difference of certified accuracies ``p1 - p2`` with a share ``s`` of discordant images (certified by one
  side only; at least ``|p1 - p2|``): ``f = min((s + p1 - p2) / 2, p1, 1 - p2)`` of the images only the first side
  certifies, ``f - (p1 - p2)`` only the second (the bounds keep both within what the accuracies allow), the rest
  both or neither.

By default the effect is the paper's own numbers for the claim's cells (the one-shot baseline's from the paper's
Carlini et al. rows, as :func:`densepure.plan.shares.paper_clean_accuracy` does) with ``s = 0.15``. Each run draws a
fresh order; the expected images are the mean over runs. GPU-hours are images x the per-image cost of the claim's
votes stores (:func:`densepure.plan.estimate.store_costs`, with the config's savings as stated assumptions unless
measured), next to the claim's whole artifact (:func:`densepure.plan.estimate.estimate`).
"""

from __future__ import annotations

import functools
import textwrap
from dataclasses import dataclass

import numpy as np

from densepure.core.sequential import confidence_sequence, decide, lean
from densepure.plan import claims, grid

DISCORDANT = 0.15  # the assumed share of images certified by one side only (paired claims)


@dataclass(frozen=True)
class Effect:
    """An assumed truth on the full image set: certified accuracies (fractions) of the sides, and for a paired
    claim the share of discordant images."""

    first: float
    second: float | None = None
    discordant: float = DISCORDANT

    @property
    def quantity(self) -> float:
        """The value the full artifact would print: the cell, or the paired difference."""
        return self.first if self.second is None else self.first - self.second


def population(N: int, effect: Effect) -> np.ndarray:
    """``N`` values in [0, 1] whose mean codes the effect: a cell's outcomes in {0, 1}; a paired difference
    ``d`` in {-1, 0, 1} as ``(d + 1) / 2``."""
    x = np.zeros(N)
    if effect.second is None:
        x[:round(N * effect.first)] = 1.0
        return x
    diff = effect.first - effect.second
    first_only = min((max(effect.discordant, abs(diff)) + diff) / 2, effect.first, 1 - effect.second)
    first_only, second_only = round(N * first_only), round(N * (first_only - diff))
    x[:] = 0.5
    x[:first_only] = 1.0
    x[first_only:first_only + second_only] = 0.0
    return x


@dataclass(frozen=True)
class Stopping:
    """Simulated runs of the stopping rule: images certified when each run stopped, and its decision."""

    images: np.ndarray
    decisions: list[str | None]

    @property
    def decided(self) -> float:
        return float(np.mean([d is not None for d in self.decisions]))

    def share(self, decision: str) -> float:
        return float(np.mean([d == decision for d in self.decisions]))


def simulate(x: np.ndarray, alpha: float, wave: int, kind: str, delta: float = 0.0, value: float | None = None,
             paired: bool = True, budget: int | None = None, runs: int = 200, seed: int = 0,
             horizon: int | None = None) -> Stopping:
    """Run the stopping rule ``runs`` times on the population ``x`` (:func:`population`), each on a fresh random
    order: after every ``wave`` images (and at the budget or the end of the set) the sequence at ``alpha`` is checked
    for the claim ``kind`` (``greater``, ``at_least``, ``within``) with ``delta`` and ``value`` on the quantity's
    scale (a difference for a paired claim). A run stops at the first check that decides, or at the budget.
    ``horizon``: the image budget the run scales its bets to (the claim's ``budget.images``; default ``budget``)."""
    N = len(x)
    n = min(budget or N, N)
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(x)[:n] for _ in range(runs)])
    bets = budget if horizon is None else horizon
    low, high = confidence_sequence(orders, N, alpha, bets, lean(kind))  # the bets of the run itself
    if paired:  # the sequence is of m = (d + 1) / 2: the difference is 2 m - 1
        low, high = 2 * low - 1, 2 * high - 1
    checks = sorted(set(range(wave, n + 1, wave)) | {n})
    images, decisions = np.full(runs, n), [None] * runs
    for r in range(runs):
        for t in checks:
            decision = decide(low[r, t - 1], high[r, t - 1], kind, delta, 0.0 if value is None else value)
            if decision is not None:
                images[r], decisions[r] = t, decision
                break
    return Stopping(images, decisions)


@functools.lru_cache(maxsize=None)
def _paper_numbers(artifact: str):
    """The paper's transcribed cells of an artifact (read once per process)."""
    import pandas as pd

    from densepure.files import resources

    return pd.read_csv(resources.paper_numbers(artifact))


def paper_effect(config: dict, claim, discordant: float = DISCORDANT) -> Effect | None:
    """The paper's numbers for a claim's cells (None where the claim's artifact has none): DensePure's rows, and the
    one-shot baseline's from the paper's Carlini et al. rows."""
    if not grid.has_paper_numbers(claim.artifact):
        return None
    paper = _paper_numbers(claim.artifact)
    paper = paper[paper["dataset"].str.lower().str.replace("-", "") == claim.dataset]

    def cell(side) -> float | None:
        key = "densepure" if side.method == "densepure" and side.b > 1 else "carlini"
        rows = paper[(paper["method_key"] == key) & np.isclose(paper["sigma"], claim.sigma)
                     & np.isclose(paper["radius"], claim.radius)]
        if key == "densepure" and "K" in rows and rows["K"].notna().any():
            rows = rows[(rows["K"] == side.K) & (rows["b"] == side.b)]
        return float(rows["certified_accuracy"].iloc[0]) / 100 if len(rows) == 1 else None

    first = cell(claim.first)
    second = cell(claim.second) if claim.second is not None else None
    if first is None or (claim.second is not None and second is None):
        return None
    return Effect(first, second, discordant)


@dataclass(frozen=True)
class ClaimCost:
    """Expected cost of one claim under an assumed effect (None: no effect to assume)."""

    name: str
    set_size: int
    effect: Effect | None
    stopping: Stopping | None
    hours_per_image: float
    artifact_hours: float

    @property
    def images(self) -> float:
        return float(self.stopping.images.mean()) if self.stopping else float("nan")

    @property
    def hours(self) -> float:
        return self.images * self.hours_per_image

    @property
    def full_set_hours(self) -> float:
        """The claim's settings certified on the whole image set (one column of the artifact)."""
        return self.set_size * self.hours_per_image


def hours_per_image(config: dict, claim, costs: dict) -> float:
    """GPU-hours one image of the claim's set costs: the stores of both sides (a one-shot store filled by the
    DensePure job of the same draws costs what :func:`densepure.plan.estimate.store_costs` says of it)."""
    seconds = 0.0
    ids = set(grid.image_ids(config, claim.dataset, claim.images))
    for key, K in claims.keys(config, claim):
        stores = grid.stores_for(config, grid.Aggregate(key, K, claim.images))
        weight = sum(len(ids & set(s.ids)) for s in stores)
        seconds += sum(costs[s.name].seconds_per_image * len(ids & set(s.ids)) for s in stores) / max(weight, 1)
    return seconds / 3600


def claim_costs(config: dict, plan, rates: dict | None = None, shares: dict | None = None, runs: int = 200,
                discordant: float = DISCORDANT, effects: dict[str, Effect] | None = None,
                seed: int = 0) -> list[ClaimCost]:
    """Expected images and GPU-hours of every claim of ``plan`` (:func:`densepure.plan.claims.load_claims`) under
    ``effects[name]`` where given, else the paper's effect, and the GPU-hours of its whole artifact; ``shares`` as
    for :func:`densepure.plan.estimate.store_costs` (None: every draw and vote)."""
    effects = effects or {}
    from densepure.plan.estimate import estimate, store_costs

    if shares is None:
        config = {**config, "savings": {name: False for name in grid.savings(config)}}
    costs = store_costs(config, rates, None, shares)
    rows, _ = estimate(config, rates, None, shares)
    artifact_hours = {row.name: row.hours for row in rows}
    out = []
    for claim in plan.claims:
        N = len(grid.image_ids(config, claim.dataset, claim.images))
        effect = effects.get(claim.name) or paper_effect(config, claim, discordant)
        per_image = hours_per_image(config, claim, costs)
        stopping = None
        if effect is not None:
            stopping = simulate(population(N, effect), claim.alpha, plan.wave, claim.kind, claim.delta,
                                claim.value, claim.second is not None, images_budget(claim, per_image, plan.wave, N),
                                runs, seed, horizon=claim.budget_images)
        out.append(ClaimCost(claim.name, N, effect, stopping, per_image,
                             artifact_hours.get(claim.artifact, float("nan"))))
    return out


def images_budget(claim, hours_per_image: float, wave: int, N: int) -> int | None:
    """The images a claim may use: its ``budget.images``, and with ``budget.gpu_hours`` at most the first whole
    wave whose images reach those hours at ``hours_per_image`` (the run checks its measured hours after each
    wave); None: the whole set."""
    budget = claim.budget_images
    if claim.budget_gpu_hours is not None and hours_per_image > 0:
        waves = max(1, int(np.ceil(claim.budget_gpu_hours / (hours_per_image * wave) - 1e-9)))
        budget = min(budget or N, waves * wave, N)
    return budget


def parse_effect(text: str, discordant: float = DISCORDANT) -> tuple[str, Effect]:
    """``NAME=FIRST[,SECOND]`` (certified accuracies as fractions) -> (claim name, effect)."""
    name, sep, values = text.partition("=")
    try:
        numbers = [float(v) for v in values.split(",")]
    except ValueError:
        numbers = []
    if not sep or not name or len(numbers) not in (1, 2) or not all(0 <= v <= 1 for v in numbers):
        raise ValueError(f"--effect {text!r}: expected NAME=FIRST[,SECOND], certified accuracies in [0, 1]")
    return name, Effect(numbers[0], numbers[1] if len(numbers) == 2 else None, discordant)


def claims_text(costs: list[ClaimCost], alpha: float, wave: int, runs: int) -> str:
    """The table ``densepure estimate --claims`` prints: per claim the assumed effect, the expected images (mean and
    90th percentile over the simulated orders), the share of runs that decided, and the GPU-hours next to the
    claim's settings on the whole set and the whole artifact."""
    w = max([5, *(len(c.name) for c in costs)])
    lines = [f"Claims decided sequentially (family alpha {alpha:g}, waves of {wave} images; {runs} simulated orders "
             "per claim under the assumed effect):",
             f"{'claim':<{w}} {'effect':>13} {'images':>7} {'p90':>5} {'of':>5} {'decided':>8} {'GPU-h':>9} "
             f"{'set GPU-h':>10} {'artifact GPU-h':>15}"]
    for c in costs:
        if c.stopping is None:
            lines.append(f"{c.name:<{w}} {'no effect known':>13}   (pass --effect {c.name}=FIRST[,SECOND])")
            continue
        e = c.effect
        effect = f"{e.first:.3f}" if e.second is None else f"{e.first:.3f}-{e.second:.3f}"
        p90 = float(np.percentile(c.stopping.images, 90))
        lines.append(f"{c.name:<{w}} {effect:>13} {c.images:>7.0f} {p90:>5.0f} {c.set_size:>5d} "
                     f"{c.stopping.decided:>8.0%} {c.hours:>9.1f} {c.full_set_hours:>10.1f} {c.artifact_hours:>15.1f}")
    lines += textwrap.wrap("effect: the assumed certified accuracies (first-second); images: mean over the orders, "
                           "p90: their 90th percentile, of: the image set; decided: share of orders decided within the "
                           "budget; GPU-h: expected, images x the claim's stores per image; set GPU-h: its stores on "
                           "the whole set; artifact GPU-h: the whole artifact.", 118)
    return "\n".join(lines) + "\n"
