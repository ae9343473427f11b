"""The reverse process with our UNet, K votes with a shared first step, and batch-independent votes."""

import numpy as np
import pytest
import torch
from conftest import FIXTURES, load_json, load_npz

from densepure.core import schedule as S
from densepure.core.denoise import purify, purify_votes
from densepure.job.purifier import Purifier
from densepure.job.results import Setting
from densepure.job.scheduler import image_votes
from densepure.models.unet import UNetModel, config_from_fixture_meta, load_unet

SIGMA = 0.25
SCHEDULES = {"guided": S.linear_schedule(1000), "improved": S.cosine_schedule(4000)}


def tiny_unet(kind: str) -> UNetModel:
    meta = load_json("tiny_oracles_meta.json")[f"{kind}_tiny"]["constructor"]
    config = config_from_fixture_meta(kind, meta, image_size=16)
    return load_unet(FIXTURES / f"tiny_{kind}_unet_state_dict.pt", config)


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("b", [2, 5])
def test_unet_and_reverse_process_reproduce_reference_runs(kind, b):
    """Our UNet + our sampler, fed the reference's reverse noise, give the reference's purified images.
    Tolerance 1e-5: float32 CPU results through b network calls (the UNet alone agrees to ~1e-6 relative)."""
    ref = load_npz(f"reverse_{kind}_b{b}.npz")
    plan = S.reverse_plan(SIGMA, b, SCHEDULES[kind])
    net = tiny_unet(kind)
    for call, final in enumerate([ref["final_output"], ref["final_output_call2"]]):
        noise = ref["steps_noise"][call * b:(call + 1) * b]
        out = purify(net, torch.from_numpy(ref["x_scaled"]), plan, lambda i, rows: torch.from_numpy(noise[i]))
        np.testing.assert_allclose(out.numpy(), final, atol=1e-5)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_one_shot_with_unet_reproduces_reference(kind):
    ref = load_npz(f"onestep_densepure_{kind}.npz")
    out = purify(tiny_unet(kind), torch.from_numpy(ref["x_scaled"]), S.one_shot_plan(SIGMA, SCHEDULES[kind]), None)
    np.testing.assert_allclose(out.numpy(), ref["final_output"], atol=1e-5)


def test_votes_share_the_first_step_and_equal_separate_runs():
    """K votes from one call equal K separate reverse runs fed the same per-vote noise: sharing the first
    network evaluation changes nothing but the cost. Tolerance 1e-5, not 0: CPU convolution kernels sum in a
    batch-size-dependent order, so the same image in a batch of 8 and of 1 differs by an ulp or so (seen: 1.2e-6)."""
    net, plan, K = tiny_unet("guided"), S.reverse_plan(SIGMA, 3, SCHEDULES["guided"]), 4
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(plan.b, 2 * K, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    calls = []
    counting = lambda x, t: calls.append(len(x)) or net(x, t)  # noqa: E731
    together = purify_votes(counting, x, plan, K, lambda i, rows: noise[i])
    assert calls == [2, 2 * K, 2 * K]  # the first step runs on the 2 inputs only
    for row in range(2):
        for k in range(K):
            alone = purify(net, x[row:row + 1], plan, lambda i, rows: noise[i, row * K + k:row * K + k + 1])
            torch.testing.assert_close(together[row * K + k:row * K + k + 1], alone, rtol=0, atol=1e-5)


def mean_pixel_classifier(images: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in classifier: 10 classes by binned mean intensity (model space [-1, 1])."""
    means = images.flatten(1).mean(1)
    bins = ((means + 1) / 2 * 10).clamp(0, 9.999).floor().long()
    return torch.nn.functional.one_hot(bins, 10).float()


def votes_of(net, plan, setting, x, image_id, rows):
    """The full [N0 + N, K] votes of one image (no savings), ``rows`` network rows per call."""
    purifier = Purifier(net, mean_pixel_classifier, plan, None, setting.seed, rows=rows)
    dp, os = image_votes(purifier, x, image_id, label=0, setting=setting)
    return dp.labels if dp is not None else np.repeat(os.labels, setting.K, axis=1)


@pytest.mark.parametrize("b", [1, 3])
def test_votes_do_not_depend_on_batch_size(b):
    net = tiny_unet("guided")
    setting = Setting("synthetic", "tiny", "mean-pixel", sigma=SIGMA, b=b, K=3, N0=4, N=9, seed=5)
    plan = S.make_plan(SIGMA, b, SCHEDULES["guided"])
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    results = [votes_of(net, plan, setting, x, 7, rows) for rows in (1, 5, 64)]
    assert results[0].shape == (13, 3)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    different_image = votes_of(net, plan, setting, x, 8, 100)
    assert different_image.shape == (13, 3)
