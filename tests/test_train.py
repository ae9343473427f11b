"""Training of the embedded default's small models (densepure.models.train, densepure.models.small_models).

CI time matters, so everything runs on one torch thread (robust to a busy 2-core machine) and the diffusion model
is trained for a reduced number of steps (DIFFUSION_TEST_STEPS x batch 64 instead of the default 1000 x 64): that
is already enough for its one-shot denoising to beat the noisy input by a wide margin at every sigma, which is the
assertion. The classifier is trained at its full default setting (about 10 s). Determinism is checked on a few
steps only: bit-identical weights do not need a long run.
"""

import math
import re

import pytest
import torch

from densepure.cli.main import main
from densepure.core.denoise import model_input, purify
from densepure.core.schedule import cosine_schedule, one_shot_plan
from densepure.models.datasets import digits_arrays
from densepure.models.diffusion import load_diffusion, save_bundle
from densepure.models.small_models import DIFFUSION_T, DigitsCNN, digits_unet_config
from densepure.models.train import (
    DiffusionTerms,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    normal_kl,
    one_shot_mse,
    train_classifier,
    train_diffusion,
)
from densepure.models.unet import UNetModel

THREADS = 1
DIFFUSION_TEST_STEPS = 120
SIGMAS = (0.25, 0.5, 1.0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- models ----------------------------------------------------------------------------------------------------


def test_digits_cnn_shapes():
    model = DigitsCNN()
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_digits_unet_config_is_small_and_learns_sigma():
    config = digits_unet_config()
    assert (config.image_size, config.in_channels, config.out_channels) == (8, 1, 2)
    assert config.model_channels % 32 == 0 and config.dropout == 0 and config.use_scale_shift_norm
    net = UNetModel(config)
    assert sum(p.numel() for p in net.parameters()) < 2_000_000
    assert net(torch.zeros(2, 1, 8, 8), torch.tensor([0.0, 999.0])).shape == (2, 2, 8, 8)


# --- classifier ------------------------------------------------------------------------------------------------


def test_classifier_reaches_95_percent():
    model, accuracy = train_classifier(seed=0, threads=THREADS)  # the full default setting
    assert accuracy >= 0.95, accuracy
    assert not model.training


def test_classifier_is_deterministic():
    a, _ = train_classifier(seed=3, epochs=1, threads=THREADS)
    b, _ = train_classifier(seed=3, epochs=1, threads=THREADS)
    c, _ = train_classifier(seed=4, epochs=1, threads=THREADS)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


# --- the hybrid loss -------------------------------------------------------------------------------------------


def test_normal_kl_matches_torch():
    m1, m2 = torch.randn(50), torch.randn(50)
    lv1, lv2 = torch.randn(50), torch.randn(50)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, torch.exp(0.5 * lv1)), torch.distributions.Normal(m2, torch.exp(0.5 * lv2))
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(normal_kl(m1, lv1, m1, lv1).abs() < 1e-6)


def test_discretized_decoder_is_a_distribution_over_256_levels():
    grid = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.0, -3.0), (0.7, -5.0), (-1.0, -2.0)]:
        logp = discretized_gaussian_log_likelihood(
            grid, torch.full_like(grid, mean), torch.full_like(grid, log_scale)
        )
        # the tanh CDF approximation (as in improved-diffusion) is good to about 1e-3
        assert abs(float(logp.exp().sum()) - 1) < 2e-3


class _FixedOutput(torch.nn.Module):
    """A 'network' whose output is a free parameter, to inspect which gradients the hybrid loss produces."""

    def __init__(self, shape):
        super().__init__()
        self.out = torch.nn.Parameter(0.1 * torch.randn(shape))

    def forward(self, x, t):
        return self.out


def test_hybrid_loss_stops_the_vlb_gradient_at_the_mean():
    T = DIFFUSION_T
    terms = DiffusionTerms(cosine_schedule(T))
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    t = torch.tensor([0, 1, 1000, T - 1])
    noise = torch.randn_like(x0)
    net = _FixedOutput((4, 2, 8, 8))
    loss, mse, vb = hybrid_loss(net, x0, t, noise, terms, T)
    assert torch.isfinite(loss).all() and torch.all(vb >= -1e-4)
    torch.testing.assert_close(loss, mse + 1e-3 * T * vb)
    (grad,) = torch.autograd.grad(vb.sum(), net.out)
    assert torch.count_nonzero(grad[:, :1]) == 0  # eps gets nothing from L_vlb
    assert torch.count_nonzero(grad[:, 1:]) > 0  # the variance head does
    (grad,) = torch.autograd.grad(mse.sum(), net.out)
    assert torch.count_nonzero(grad[:, 1:]) == 0


# --- diffusion -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    net, schedule, log = train_diffusion(seed=0, steps=DIFFUSION_TEST_STEPS, batch=64, threads=THREADS, log_every=40)
    return net, schedule, log


def test_diffusion_schedule_and_log(trained):
    net, schedule, log = trained
    assert schedule.kind == "cosine" and schedule.T == DIFFUSION_T
    assert [r["step"] for r in log.records] == [40, 80, 120]
    assert all(math.isfinite(r["loss"]) for r in log.records)
    assert log.records[-1]["mse"] < log.records[0]["mse"]
    assert not net.training


@pytest.mark.parametrize("sigma", SIGMAS)
def test_diffusion_one_shot_denoising_beats_the_noisy_input(trained, sigma):
    net, schedule, _ = trained
    with torch.no_grad():
        purified, noisy = one_shot_mse(net, schedule, sigma, seed=1)
    assert purified < 0.5 * noisy, (sigma, purified, noisy)


def test_one_shot_mse_is_the_pipelines_one_shot(trained):
    """``one_shot_mse`` is exactly one_shot_plan + model_input + purify on the clean test digits."""
    net, schedule, _ = trained
    x = torch.from_numpy(digits_arrays("test")[0][:20])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    plan = one_shot_plan(0.5, schedule)
    purified = (purify(net, model_input(x, noise, plan), plan, lambda i, rows: None) + 1) / 2
    expected = float(((purified - x) ** 2).mean())
    assert one_shot_mse(net, schedule, 0.5, seed=5, limit=20)[0] == pytest.approx(expected, rel=1e-6)


def test_bundle_round_trip(trained, tmp_path):
    net, schedule, _ = trained
    path = tmp_path / "digits_diffusion.pt"
    save_bundle(path, net, schedule)
    loaded, loaded_schedule = load_diffusion("bundle", path)
    assert (loaded_schedule.kind, loaded_schedule.T) == (schedule.kind, schedule.T)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 10.0, 250.0, 500.0, 750.0, 999.75])
    with torch.no_grad():
        assert torch.equal(net(x, t), loaded(x, t))


def test_diffusion_is_deterministic():
    a, _, la = train_diffusion(seed=7, steps=3, batch=16, threads=THREADS)
    b, _, lb = train_diffusion(seed=7, steps=3, batch=16, threads=THREADS)
    c, _, _ = train_diffusion(seed=8, steps=3, batch=16, threads=THREADS)
    assert _same_weights(a, b) and la.records[-1]["loss"] == lb.records[-1]["loss"]
    assert not _same_weights(a, c)


# --- command line ----------------------------------------------------------------------------------------------


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "classifier" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "diffusion", "--help"])
    assert "--steps" in capsys.readouterr().out


def test_cli_writes_both_files(tmp_path, capsys):
    cls_path, dif_path = tmp_path / "out" / "cnn.pt", tmp_path / "out" / "unet.pt"
    assert main(["train", "classifier", "--out", str(cls_path), "--epochs", "1", "--threads", "1"]) == 0
    assert main(["train", "diffusion", "--out", str(dif_path), "--steps", "2", "--batch", "8", "--log-every", "1",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().err  # progress and results go to stderr (the workflow's log)
    assert "test accuracy" in out and "final loss" in out and "eta" in out and "wall time" in out
    model = DigitsCNN()
    model.load_state_dict(torch.load(cls_path, weights_only=True))
    net, schedule = load_diffusion("bundle", dif_path)
    assert schedule.T == DIFFUSION_T and net.config == digits_unet_config()
    assert sorted(p.name for p in cls_path.parent.iterdir()) == ["cnn.pt", "unet.pt"]  # no temp files left


def test_cli_refuses_an_out_it_cannot_write_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x\n")
    assert main(["train", "classifier", "--out", str(tmp_path / "file" / "cnn.pt")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: --out .*/file/cnn.pt: .*/file is a file, not a folder", err) and "training" not in err
