"""Reverse-process math against the reference's traced runs (tests/fixtures/reverse_*.npz, onestep_*.npz).

The network is replaced by a replay of the reference's recorded outputs, so these tests check the reverse
math alone; tests/test_unet.py checks the network and test_pipeline.py the two together.
Tolerance: float32 CPU arithmetic in a different operation order; the SPEC's independent re-derivation
reproduced the same tensors to < 1e-6, and we assert atol 1e-6 (values are O(1)).
"""

import numpy as np
import pytest
import torch
from conftest import load_json, load_npz

from densepure.core import schedule as S
from densepure.core.denoise import model_input, purify, sample_step, step_statistics

ATOL = 1e-6
SCHEDULES = {"guided": S.linear_schedule(1000), "improved": S.cosine_schedule(4000)}
SIGMA = 0.25


class Replay:
    """A stand-in network returning the reference's recorded outputs in order, checking what it is fed."""

    def __init__(self, inputs, outputs, timesteps):
        self.inputs, self.outputs, self.timesteps, self.calls = inputs, outputs, timesteps, 0

    def __call__(self, x, t):
        i = self.calls
        np.testing.assert_allclose(x.numpy(), self.inputs[i], atol=ATOL)
        np.testing.assert_array_equal(t.numpy(), self.timesteps[i])
        self.calls += 1
        return torch.from_numpy(self.outputs[i])


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("b", [2, 5])
def test_each_reverse_step_matches_reference(kind, b):
    ref = load_npz(f"reverse_{kind}_b{b}.npz")
    plan = S.reverse_plan(SIGMA, b, SCHEDULES[kind])
    for s in range(2 * b):  # the reference runner was called twice; steps of both calls are recorded
        k = b - 1 - s % b
        x = torch.from_numpy(ref["steps_x_in"][s])
        step = step_statistics(torch.from_numpy(ref["steps_model_output"][s]), x, k, plan.coef)
        np.testing.assert_allclose(step.x0.numpy(), ref["steps_pred_xstart"][s], atol=ATOL)
        np.testing.assert_allclose(step.mean.numpy(), ref["steps_mean"][s], atol=ATOL)
        np.testing.assert_allclose(step.log_variance.numpy(), ref["steps_log_variance"][s], atol=ATOL)
        sample = sample_step(step, k, torch.from_numpy(ref["steps_noise"][s]))
        np.testing.assert_allclose(sample.numpy(), ref["steps_sample"][s], atol=ATOL)


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("b", [2, 5])
def test_full_chain_matches_reference(kind, b):
    ref = load_npz(f"reverse_{kind}_b{b}.npz")
    plan = S.reverse_plan(SIGMA, b, SCHEDULES[kind])
    x = model_input(torch.from_numpy(ref["x_clean"]), torch.from_numpy(ref["smoothing_noise"]) / SIGMA, plan)
    np.testing.assert_allclose(x.numpy(), ref["x_scaled"], atol=ATOL)
    for call, final in enumerate([ref["final_output"], ref["final_output_call2"]]):
        steps = slice(call * b, (call + 1) * b)
        net = Replay(ref["steps_x_in"][steps], ref["steps_model_output"][steps],
                     ref["steps_model_timestep_value"][steps])
        noise = ref["steps_noise"][steps]
        out = purify(net, torch.from_numpy(ref["steps_x_in"][call * b]), plan, lambda i, rows: torch.from_numpy(noise[i]))
        assert net.calls == b
        np.testing.assert_allclose(out.numpy(), final, atol=ATOL)
        assert out.abs().max() <= 1.0


@pytest.mark.parametrize("kind", SCHEDULES)
def test_densepure_one_shot_matches_reference(kind):
    ref = load_npz(f"onestep_densepure_{kind}.npz")
    plan = S.one_shot_plan(SIGMA, SCHEDULES[kind])
    x = model_input(torch.from_numpy(ref["x_clean"]), torch.from_numpy(ref["smoothing_noise"]) / SIGMA, plan)
    np.testing.assert_allclose(x.numpy(), ref["x_scaled"], atol=ATOL)
    net = Replay(ref["steps_x_in"], ref["steps_model_output"], ref["steps_model_timestep_value"])
    out = purify(net, x, plan, noise_fn=None)
    np.testing.assert_allclose(out.numpy(), ref["final_output"], atol=ATOL)


@pytest.mark.parametrize("dataset,kind", [("imagenet", "guided"), ("cifar10", "improved")])
@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_carlini_one_shot_matches_reference(dataset, kind, sigma):
    ref = load_npz(f"onestep_carlini_{dataset}_sigma{sigma}.npz")
    meta = load_json(f"onestep_carlini_{dataset}_meta.json")[f"sigma{sigma}"]
    plan = S.carlini_plan(sigma, SCHEDULES[kind])
    assert plan.visited == [meta["t"]] and plan.model_timesteps == [meta["model_timestep_value"]]
    # Carlini's q_sample noise n maps to pixel noise n (the plan's noise_sigma carries sqrt(1-a)/(2 sqrt(a))).
    x = model_input(torch.from_numpy(ref["x_clean"]), torch.from_numpy(ref["q_sample_noise"]), plan)
    np.testing.assert_allclose(x.numpy(), ref["x_t"], atol=ATOL)
    net = Replay(ref["x_t"][None], ref["model_output"][None], ref["model_timestep_value"][None])
    out = purify(net, torch.from_numpy(ref["x_t"]), plan, noise_fn=None)
    np.testing.assert_allclose(out.numpy(), ref["pred_xstart"], atol=ATOL)
