"""Certified radius on the exact model: DensePure's majority vote of K reverse chains against the one-shot
posterior mean, with Cohen et al.'s CERTIFY."""

from __future__ import annotations

import numpy as np
import torch

from densepure.core import rng
from densepure.core.denoise import model_input, purify_votes
from densepure.core.schedule import Schedule, make_plan, reverse_plan
from densepure.core.smoothing import certify_votes
from densepure.theory.exact import ExactDenoiser, Mixture, classify, posterior, sigma_t


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
    """Cohen et al.'s CERTIFY (densepure.core.smoothing.certify_votes) at every component mean as the clean input: one
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
