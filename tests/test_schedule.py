"""Schedules, sigma -> t*, and the respaced b-step schedule against the reference's own numbers."""

import numpy as np
import pytest
from conftest import load_json, load_npz

from densepure.core import schedule as S

SCHEDULES = {"imagenet": S.linear_schedule(1000), "cifar10": S.cosine_schedule(4000)}
FIXTURE_PREFIX = {"imagenet": "imagenet_linear1000", "cifar10": "cifar10_cosine4000"}
TIMESTEPS = load_json("timesteps.json")
RESPACING = load_json("respacing.json")
ARRAY_NAMES = {  # fixture name -> StepCoefficients field
    "betas": "betas",
    "alphas_cumprod": "alpha_bar",
    "alphas_cumprod_prev": "alpha_bar_prev",
    "posterior_variance": "posterior_variance",
    "posterior_log_variance_clipped": "posterior_log_variance_clipped",
    "posterior_mean_coef1": "posterior_mean_coef1",
    "posterior_mean_coef2": "posterior_mean_coef2",
    "sqrt_recip_alphas_cumprod": "sqrt_recip_alpha_bar",
    "sqrt_recipm1_alphas_cumprod": "sqrt_recipm1_alpha_bar",
    "log_betas": "log_betas",
}
CASES = [(d, s) for d in SCHEDULES for s in TIMESTEPS[d]]


@pytest.mark.parametrize("dataset", SCHEDULES)
def test_schedule_arrays_equal_reference(dataset):
    ref = load_npz("schedules.npz")
    sched = SCHEDULES[dataset]
    np.testing.assert_array_equal(sched.alpha_bar, ref[f"{FIXTURE_PREFIX[dataset]}_alphas_cumprod"])
    np.testing.assert_allclose(sched.betas, ref[f"{FIXTURE_PREFIX[dataset]}_betas"], rtol=0, atol=2e-16)


@pytest.mark.parametrize("dataset,sigma_key", CASES)
def test_t_star_scale_and_alternatives(dataset, sigma_key):
    case = TIMESTEPS[dataset][sigma_key]
    sched, sigma = SCHEDULES[dataset], case["sigma"]
    t_star = S.t_star(sigma, sched, "reference")
    if dataset == "imagenet":
        assert isinstance(t_star, int) and t_star == case["densepure_t_star"]
    else:
        assert t_star == pytest.approx(case["densepure_t_star"], rel=1e-15)
    assert round(t_star) == case["densepure_t_round"]
    assert S.input_scale(sigma) == pytest.approx(case["densepure_scale"], rel=1e-15)
    assert S.target_alpha_bar(sigma) == pytest.approx(case["target_alpha_bar"], rel=1e-15)
    assert S.t_star(sigma, sched, "carlini") == case["carlini_t"]
    assert S.t_star(sigma, sched, "paper") == case["paper_formula_with_2sigma"]["code_index"]
    assert S.t_paper(sigma, sched.alpha_bar, model_space=False) == case["paper_formula_literal_sigma"]["code_index"]


def test_a_linear_schedule_whose_betas_reach_1_is_refused():
    """guided-diffusion's linear betas end at 0.02 * 1000 / T: T <= 20 gives a beta >= 1 (alpha_bar 0 or negative)."""
    with pytest.raises(ValueError, match=r"needs T > 20 .* got T = 20"):
        S.linear_schedule(20)
    short = S.linear_schedule(21)
    assert np.all(short.alpha_bar > 0) and short.betas.max() < 1


def test_t_star_rejects_nonpositive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        S.t_star(0.0, SCHEDULES["imagenet"])


def test_tiny_sigma_hits_reference_latent_bug():
    """docs/reference-behaviour.md#ref-3-1: no bracket exists for 2 sigma <= r[0]; the reference then returns T - 1."""
    assert S.t_star(0.001, SCHEDULES["imagenet"]) == 999


@pytest.mark.parametrize("dataset,sigma_key", CASES)
@pytest.mark.parametrize("b", ["2", "5", "10"])
def test_respaced_plan_equals_reference(dataset, sigma_key, b):
    ref = RESPACING[dataset][sigma_key][b]
    sigma = TIMESTEPS[dataset][sigma_key]["sigma"]
    plan = S.reverse_plan(sigma, int(b), SCHEDULES[dataset])
    assert plan.visited == ref["indices_t_steps"]
    assert [0] + plan.visited[::-1] == ref["pair_list_used_for_betas"]
    assert plan.model_timesteps == [v["model_timestep_value"] for v in ref["visits"]]
    for fixture_name, field in ARRAY_NAMES.items():
        np.testing.assert_array_equal(getattr(plan.coef, field), np.array(ref[fixture_name]), err_msg=fixture_name)


@pytest.mark.parametrize("dataset,sigma_key", CASES)
def test_b1_is_not_a_respaced_chain(dataset, sigma_key):
    """The reference crashes for b = 1 in the fast sampler; we refuse it there and route b = 1 to the one-shot."""
    ref = RESPACING[dataset][sigma_key]
    sigma = TIMESTEPS[dataset][sigma_key]["sigma"]
    assert ref["1"]["ok"] is False
    with pytest.raises(ValueError, match="b >= 2"):
        S.reverse_plan(sigma, 1, SCHEDULES[dataset])
    plan = S.make_plan(sigma, 1, SCHEDULES[dataset])
    assert plan.one_shot and plan.visited == [ref["one_step"]["t"]]
    assert plan.model_timesteps == [ref["one_step"]["model_timestep_value"]]
    for fixture_name, field in ARRAY_NAMES.items():
        np.testing.assert_array_equal(getattr(plan.coef, field), np.array([ref["one_step"][fixture_name]]))


@pytest.mark.parametrize("dataset,sigma_key", CASES)
def test_carlini_plan(dataset, sigma_key):
    case = TIMESTEPS[dataset][sigma_key]
    plan = S.carlini_plan(case["sigma"], SCHEDULES[dataset])
    assert plan.visited == [case["carlini_t"]]
    assert plan.model_timesteps == [case["carlini_model_timestep_value"]]
    assert plan.scale == pytest.approx(case["carlini_sqrt_alphas_cumprod_at_t"], rel=1e-15)
    assert plan.noise_sigma == pytest.approx(case["carlini_effective_pixel_sigma"], rel=1e-14)


# --- (sigma, b) that would be silently wrong are refused ---------------------------------------------------------


@pytest.mark.parametrize("sigma, b, schedule, names", [
    (0.01, 10, S.cosine_schedule(1000), ["sigma 0.01", "b 10", "t* = 7.12", "repeat", "at most 7"]),
    (0.5, 500, S.cosine_schedule(1000), ["sigma 0.5", "b 500", "t* = 496.05", "repeat", "at most 496"]),
    (0.01, 10, S.linear_schedule(1000), ["sigma 0.01", "b 10", "t* = 2 ", "repeat", "at most 2"]),
    (1e6, 10, S.cosine_schedule(1000), ["sigma 1e+06", "b 10", "beyond the schedule's last timestep 999"]),
    (1e6, 1, S.cosine_schedule(1000), ["sigma 1e+06", "b 1", "beyond the schedule's last timestep 999"]),
    (0.001, 10, S.linear_schedule(1000), ["sigma 0.001", "t* = 999", "smallest noise level"]),
    (0.001, 1, S.linear_schedule(1000), ["sigma 0.001", "t* = 999", "smallest noise level"]),
])
def test_silently_wrong_plans_are_refused_naming_sigma_b_and_t_star(sigma, b, schedule, names):
    with pytest.raises(S.PlanError) as err:
        S.make_plan(sigma, b, schedule)
    assert all(name in str(err.value) for name in names), str(err.value)


def test_without_the_check_those_plans_are_not_finite():
    """What the check prevents: b > t* repeats a timestep, whose respaced beta is 0 and log variance -inf."""
    schedule = S.cosine_schedule(1000)
    visited = S.visited_timesteps(S.t_star(0.01, schedule), 10)
    assert len(set(visited)) < len(visited)
    with np.errstate(all="ignore"):
        coef = S.step_coefficients(S.respaced_betas(visited, schedule.alpha_bar_fn()))
    assert (coef.betas == 0).any() and not np.isfinite(coef.posterior_log_variance_clipped).all()


@pytest.mark.parametrize("schedule", [S.cosine_schedule(1000), S.cosine_schedule(4000), S.linear_schedule(1000)])
@pytest.mark.parametrize("sigma", [0.01, 0.12, 0.25, 0.5, 1.0])
def test_largest_b_is_the_boundary(schedule, sigma):
    """``largest_b`` is accepted, one more is refused (or exceeds t*): the hint in the message is exact."""
    ts = S.t_star(sigma, schedule)
    b = S.largest_b(ts)
    if b >= 2:
        S.reverse_plan(sigma, b, schedule)
    with pytest.raises(S.PlanError):
        S.reverse_plan(sigma, b + 1, schedule)


@pytest.mark.parametrize("sigma", [float("inf"), float("nan"), -0.25])
def test_non_finite_sigma_is_refused_by_name(sigma):
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        S.make_plan(sigma, 10, S.cosine_schedule(1000))
