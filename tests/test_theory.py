"""Section 3 of the paper on an exact diffusion model (densepure.theory.exact): the closed-form denoiser, Theorem 3.1 with the
real reverse sampler (densepure.core.denoise), Theorem 3.3's purifier, robust regions and radii, and DensePure vs one-shot.

Statistical tests use seeded noise (densepure.core.rng), so they are deterministic; their thresholds are chosen so that, if
the sampler were exact, a fresh seed would fail with probability below FAMILY_ALPHA = 1e-6 (Bonferroni over every
p-value a test checks).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import chi2

from densepure.cli.main import main
from densepure.core import schedule as S
from densepure.core.denoise import step_statistics
from densepure.theory import exact as T
from densepure.theory import radius, regions

torch.set_num_threads(1)

FAMILY_ALPHA = 1e-6
LINEAR = S.linear_schedule(1000)
CONFIG = yaml.safe_load(open(__file__.rsplit("/tests/", 1)[0] + "/config/config.yaml"))["theory"]
THM31 = T.Mixture.from_config(CONFIG["thm31"]["mixture"])
FIG2 = T.Mixture.from_config(CONFIG["fig2"]["mixture"])
RING = T.Mixture.from_config(CONFIG["radius"]["mixture"])
SIGMA_T = T.sigma_t(float(LINEAR.alpha_bar[S.t_star(CONFIG["fig2"]["sigma"], LINEAR)]))


# --- the exact model ---------------------------------------------------------------------------------------------


def test_exact_denoiser_is_minus_sqrt_one_minus_alpha_bar_times_the_noised_score():
    """eps = -sqrt(1 - a) grad log p_t, checked against central differences of p_t written as a mixture itself
    (means sqrt(a) mu_k, stds sqrt(a s_k^2 + 1 - a)). Float64 differences with h = 1e-5 are exact to ~1e-9; the
    denoiser returns float32 (relative 6e-8 of values O(1)), so atol 1e-5."""
    net = T.ExactDenoiser(THM31, LINEAR)
    x = torch.tensor(np.random.default_rng(0).normal(0, 0.7, (16, 2)), dtype=torch.float32).reshape(16, 2, 1, 1)
    for t in (1, 144, 500, 999):
        a = float(LINEAR.alpha_bar[t])
        noised = T.Mixture(math.sqrt(a) * THM31.means, np.sqrt(a * THM31.stds**2 + 1 - a), THM31.weights, THM31.labels)
        eps = net(x, torch.full((16,), t * LINEAR.timestep_scale)).reshape(16, 2).double().numpy()
        xs, h = x.reshape(16, 2).double().numpy(), 1e-5
        grad = np.stack([(T.log_density(noised, xs + h * e) - T.log_density(noised, xs - h * e)) / (2 * h)
                         for e in np.eye(2)], 1)
        np.testing.assert_allclose(eps, -math.sqrt(1 - a) * grad, atol=1e-5)


def test_exact_denoiser_refuses_timesteps_off_the_schedule():
    net = T.ExactDenoiser(THM31, S.cosine_schedule(4000))  # network timesteps are multiples of 0.25
    net(torch.zeros(1, 2, 1, 1), torch.tensor([0.25 * 100]))
    with pytest.raises(ValueError, match="not timesteps"):
        net(torch.zeros(1, 2, 1, 1), torch.tensor([25.1]))


@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_one_shot_x0_is_theorem31_posterior_mean(sigma):
    """Tweedie: the one-shot plan's clamped x0 (the package's step_statistics) is the posterior mean of Theorem 3.1
    at x_a = x_t / sqrt(a), sigma_t^2 = (1 - a) / a. Float32 arithmetic on O(1) values: atol 1e-5."""
    plan = S.one_shot_plan(sigma, LINEAR)
    a = float(LINEAR.alpha_bar[plan.visited[0]])
    x_a = np.random.default_rng(1).uniform(-0.8, 0.8, (8, 2))
    x_t = torch.tensor(math.sqrt(a) * x_a, dtype=torch.float32).reshape(8, 2, 1, 1)
    out = T.ExactDenoiser(THM31, LINEAR)(x_t, torch.full((8,), plan.model_timesteps[0]))
    x0 = step_statistics(out, x_t, 0, plan.coef).x0.reshape(8, 2).double().numpy()
    expected = np.stack([T.posterior(THM31, row, T.sigma_t(a)).mean for row in x_a])
    np.testing.assert_allclose(x0, expected, atol=1e-5)


# --- Theorem 3.1: the b-step sampler against the posterior --------------------------------------------------------

BS = [2, 10, 100]
SAMPLES = 10000


@pytest.fixture(scope="module")
def thm31_rows():
    """The deviation table for the config's x_a, sigma in {0.25, 0.5}, b in {2, 10, 100}; printed with -s."""
    rows = T.theorem31_table(THM31, LINEAR, np.array(CONFIG["thm31"]["x_a"]), [0.25, 0.5], BS, SAMPLES)
    for r in rows:
        print(f"sigma {r['sigma']} t* {r['t']} b {r['b']:3d}: tv {r['tv']:.4f} std_ratio {r['std_ratio']:.3f} "
              f"mean_err {r['mean_err']:.4f} p_mass {r['p_mass']:.2g} p_mean {r['p_mean']:.2g} p_var {r['p_var']:.2g}")
    return rows


def test_theorem31_large_b_puts_the_posterior_mass_on_each_component(thm31_rows):
    """At b = 100 the component masses (chi-square) and the component means (chi2(d) of n_k |xbar - m_k|^2 / c_k)
    agree with Theorem 3.1's posterior: 2 tests x 2 sigmas, each p already Bonferroni-corrected over components, so
    each must exceed FAMILY_ALPHA / 4. Components are 4.4+ posterior stds from the assignment boundaries (leakage
    < 1e-5 per sample, far below the tests' resolution)."""
    for r in (r for r in thm31_rows if r["b"] == 100):
        assert r["p_mass"] > FAMILY_ALPHA / 4, r
        assert r["p_mean"] > FAMILY_ALPHA / 4, r


def test_theorem31_few_steps_deviate_and_the_deviation_shrinks_with_b(thm31_rows):
    """Few steps are rejected (p < FAMILY_ALPHA); the mass error falls from b = 2 to b = 10 and the within-component
    spread improves from b = 10 to b = 100. Sampling sd at n = 1e4: total variation of the 3 component frequencies
    ~0.003 (its mean under exactness is ~0.005), std ratio ~0.005; the asserted gaps (tv 0.05-0.08 -> 0.01-0.015, std
    ratio 0.79-0.81 -> 0.90-0.92) are 10+ sds. Between b = 10 and 100 the tv change is within sampling noise: the
    masses already pass at b = 10 (see the printed table)."""
    for sigma in (0.25, 0.5):
        rows = {r["b"]: r for r in thm31_rows if r["sigma"] == sigma}
        assert rows[2]["p"] < FAMILY_ALPHA and rows[2]["tv"] > 0.03
        assert rows[2]["tv"] > rows[10]["tv"] + 0.02
        assert abs(math.log(rows[100]["std_ratio"])) < abs(math.log(rows[10]["std_ratio"])) - 0.05


def _chain_variance(plan: S.ReversePlan, s: float) -> float:
    """Per-coordinate output variance of the plan's chain for data N(0, s^2) started at x_t = 0, by the linear-Gaussian
    recursion: E[x0 | x_t] = g_t x_t with g_t = sqrt(a) s^2 / (a s^2 + 1 - a), so each step is
    x <- (coef1 x0c + coef2) x + sqrt(posterior variance) z, and the last step returns x0c x."""
    var = 0.0
    for i, t in enumerate(plan.visited):
        k = plan.b - 1 - i
        a, a_plan = float(LINEAR.alpha_bar[t]), float(plan.coef.alpha_bar[k])
        eps = (1 - math.sqrt(a) * math.sqrt(a) * s**2 / (a * s**2 + 1 - a)) / math.sqrt(1 - a)  # eps = eps * x_t
        x0c = math.sqrt(1 / a_plan) - math.sqrt(1 / a_plan - 1) * eps
        if k == 0:
            return x0c**2 * var
        m = plan.coef.posterior_mean_coef1[k] * x0c + plan.coef.posterior_mean_coef2[k]
        var = m * m * var + math.exp(plan.coef.posterior_log_variance_clipped[k])
    raise AssertionError("unreachable")


@pytest.mark.parametrize("b", [10, 50])
def test_within_mode_spread_is_the_discrete_chains_own(b):
    """Why the spread test of Theorem 3.1 fails even at large b: with the exact eps, the DDPM chain (fixed posterior
    variance, last step returning x0) is under-dispersed for a single Gaussian, N(0, 0.1^2) in 2-D, exactly as the
    linear-Gaussian recursion predicts. Sampled sum of squares / predicted variance ~ chi2(2n), two-sided at
    FAMILY_ALPHA / 2. The predicted std ratio to Theorem 3.1's posterior grows towards 1 with b."""
    s, sigma, n = 0.1, 0.25, 4000
    mix = T.Mixture([[0.0, 0.0]], [s], [1.0], [0])
    plan = S.reverse_plan(sigma, b, LINEAR)
    samples = T.reverse_samples(mix, LINEAR, np.zeros(2), plan, n, seed=3)
    predicted = _chain_variance(plan, s)
    ss = float((samples**2).sum() / predicted)
    p = 2 * min(chi2.sf(ss, 2 * n), chi2.cdf(ss, 2 * n))
    assert p > FAMILY_ALPHA / 2, (ss / (2 * n), p)
    exact = T.posterior(mix, np.zeros(2), T.sigma_t(float(LINEAR.alpha_bar[plan.visited[0]]))).variances[0]
    ratios = [math.sqrt(_chain_variance(S.reverse_plan(sigma, bb, LINEAR), s) / exact) for bb in (2, 10, 50, 144)]
    assert ratios == sorted(ratios) and 0.9 < ratios[-1] < 1


# --- Theorem 3.3: the highest-density purifier and its robust region ----------------------------------------------


def test_highest_density_point_is_the_argmax_against_a_brute_force_grid():
    """P(x_a) beats every point of a grid of spacing 0.003 over [-1.2, 1.2]^2 (up to 1e-9) for 40 random x_a: a
    solver stuck at a lesser local mode would lose to the grid points near the global one."""
    ticks = np.arange(-1.2, 1.2, 0.003)
    grid = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)
    log_p = T.log_density(FIG2, grid)
    x_a = np.random.default_rng(2).uniform(-1, 1, (40, 2))
    P = regions.highest_density_point(FIG2, x_a, SIGMA_T)
    for row, p in zip(x_a, P):
        best = (log_p - ((grid - row) ** 2).sum(1) / (2 * SIGMA_T**2)).max()
        assert regions.log_objective(FIG2, p[None], row, SIGMA_T)[0] >= best - 1e-9


@pytest.fixture(scope="module")
def fig2_radii():
    r, u_r = regions.robust_radius(FIG2, 0, SIGMA_T)
    r_sub, u_sub = regions.sub_radius(FIG2, 0, SIGMA_T)
    return r, u_r, r_sub, u_sub


def test_robust_radius_is_the_distance_to_the_misclassified_region(fig2_radii):
    """Definition 3.2: every point of the ball of radius r (2000 on the sphere at 0.999 r, 2000 inside) is purified
    to x0's class, and the point at 1.001 r in the returned direction is not."""
    r, u_r, _, _ = fig2_radii
    x0, label = FIG2.means[0], FIG2.labels[0]
    theta = np.linspace(0, 2 * math.pi, 2000, endpoint=False)
    sphere = x0 + 0.999 * r * np.stack([np.cos(theta), np.sin(theta)], 1)
    g = np.random.default_rng(4)
    inside = x0 + r * np.sqrt(g.uniform(0, 1, (2000, 1))) * np.stack([np.cos(t := g.uniform(0, 7, 2000)), np.sin(t)], 1)
    assert (regions.purified_class(FIG2, np.vstack([sphere, inside]), SIGMA_T) == label).all()
    assert regions.purified_class(FIG2, (x0 + 1.001 * r * u_r)[None], SIGMA_T)[0] != label


def test_theorem33_sub_region_ball_is_inside_and_the_union_is_larger(fig2_radii):
    """Theorem 3.3 (i): the ball of radius r_sub around x0 lies in D_sub(x0), so it is purified correctly; and the
    figure's claim: the union of sub-regions gives r > r_sub (here by more than 10%: 0.43 vs 0.34). The point just
    beyond D_sub(x0)'s nearest face is outside D_sub(x0) yet purified correctly (to another same-label mode)."""
    r, _, r_sub, u_sub = fig2_radii
    x0, label = FIG2.means[0], FIG2.labels[0]
    assert 0 < 1.1 * r_sub < r
    theta = np.linspace(0, 2 * math.pi, 1000, endpoint=False)
    ball = x0 + 0.999 * r_sub * np.stack([np.cos(theta), np.sin(theta)], 1)
    assert (regions.purified_class(FIG2, ball, SIGMA_T) == label).all()
    x_sub, normals, offsets = regions.sub_region(FIG2, 0, SIGMA_T)
    assert regions.in_region(ball, x_sub, normals, offsets).all()
    beyond = x0 + 0.5 * (r + r_sub) * u_sub
    assert not regions.in_region(beyond[None], x_sub, normals, offsets)[0]
    purified = regions.highest_density_point(FIG2, beyond[None], SIGMA_T)[0]
    assert T.classify(FIG2, purified[None])[0] == label and np.linalg.norm(purified - x0) > 0.2


def test_theorem33_only_if_the_purified_point_witnesses_its_sub_region():
    """Theorem 3.3 (ii), 'only if': a correctly purified x_a lies in D_sub(P(x_a)) (P(x_a) beats every other-label
    point, here every point of the other-label grid); a wrongly purified one lies in no D_sub of a same-label mean."""
    g = np.random.default_rng(5)
    x_a = g.uniform(-1, 1, (30, 2))
    P = regions.highest_density_point(FIG2, x_a, SIGMA_T)
    label = FIG2.labels[0]
    others = regions.other_label_grid(FIG2, label, (-1.5, 1.5), 0.01)
    log_p_others = T.log_density(FIG2, others)
    subs = [regions.sub_region(FIG2, k, SIGMA_T) for k in np.flatnonzero(FIG2.labels == label)]
    for row, p in zip(x_a, P):
        if T.classify(FIG2, p[None])[0] == label:
            normals, offsets = regions.halfspaces(p, T.log_density(FIG2, p[None])[0], others, log_p_others, SIGMA_T)
            assert regions.in_region(row[None], p, normals, offsets)[0]
        else:
            assert not any(regions.in_region(row[None], *sub)[0] for sub in subs)


# The zero-variance limit: Figure 2's picture with points. x0, x1, x2 share label 0, x3 has label 1, equal weights
# (so sigma_t drops out). By hand: D_sub(x0) is the half-plane x < 0.5, r_sub = 0.5; the region purified to x3 is
# its Voronoi cell, a wedge with apex where the bisector of x1 and x3 meets y = 0:
# (x - 0.5)^2 + 0.4^2 = (x - 1)^2  =>  x = 0.59, so r = 0.59.
POINTS = T.Mixture([[0, 0], [0.5, 0.4], [0.5, -0.4], [1, 0]], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 1])


def test_point_set_radii_match_the_hand_computed_values():
    """Tolerance 1e-5: bisection stops at 1e-7 and the angle refinement at 1e-6 rad (the minimum sits at a kink)."""
    assert regions.sub_radius(POINTS, 0, 0.7)[0] == pytest.approx(0.5, abs=1e-12)
    assert regions.robust_radius(POINTS, 0, 0.7)[0] == pytest.approx(0.59, abs=1e-5)


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_point_set_robust_region_is_the_union_of_sub_regions(sigma):
    """Theorem 3.3 (ii) exactly (finite intersections, no grid), with unequal weights so sigma_t matters: x_a is
    purified to label 0 iff it lies in D_sub(x_i) for some label-0 point x_i, on 5000 random points."""
    mix = T.Mixture(POINTS.means, POINTS.stds, [1, 2, 0.5, 1.5], POINTS.labels)
    x_a = np.random.default_rng(6).uniform(-1.5, 2.5, (5000, 2))
    union = np.zeros(len(x_a), dtype=bool)
    for k in (0, 1, 2):
        union |= regions.in_region(x_a, *regions.sub_region(mix, k, sigma))
    assert ((regions.purified_class(mix, x_a, sigma) == 0) == union).all()
    assert 0.05 < union.mean() < 0.95


# --- the paper's argument: majority vote vs posterior mean ----------------------------------------------------------


def test_densepure_vote_follows_the_posterior_class_mass_where_the_mean_fails():
    """The ring (class 0 around class 1, weights 1:1:1:1.5) at sigma = 0.25: the one-shot posterior mean of a noisy
    ring point is pulled into the centre and classified 1, while DensePure's K = 41 majority follows Theorem 3.1's
    class mass (0.61 for class 0) and certifies class 0; at the centre (class-1 mass 0.45 < 0.5) the vote goes to the
    ring and the mean is right. Seeded; per-vote class-0 frequency ~0.6 gives a 41-vote majority of ~0.9, far from
    the 0.5 abstention line at N = 500 (Clopper-Pearson half-width < 0.05 at alpha = 0.001)."""
    rows = radius.radius_table(RING, LINEAR, [0.25], b=10, Ks=[41], one_shot=["carlini"], N0=50, N=500, alpha=0.001,
                          seed=0)
    for row in rows:
        ring_point = row["label"] == 0
        assert (row["posterior_mass"] > 0.5) == ring_point, row
        if row["method"] == "carlini":
            assert row["predict"] == 1, row
        else:
            assert row["predict"] == 0 and (row["radius"] > 0.1 or not ring_point), row


# --- config and command line ---------------------------------------------------------------------------------------


def test_schema_defaults_are_the_default_configs_theory_section(tmp_path):
    """config/paper.yaml says `theory: {}`: the schema's defaults must be the values config/config.yaml spells out."""
    from snakemake.utils import validate

    root = __file__.rsplit("/tests/", 1)[0]
    filled = {"theory": {}}
    schema = yaml.safe_load(open(f"{root}/workflow/schemas/config.schema.yaml"))
    schema = {**schema, "required": []}
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    validate(filled, str(path))
    assert filled["theory"] == CONFIG


def test_cli_help_and_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["theory", "--help"])
    assert exit_.value.code == 0 and "fig2" in capsys.readouterr().out
    spec = tmp_path / "spec.yaml"
    spec.write_text("run: x\n")
    assert main(["theory", "fig2", "--spec", str(spec), "--png", "a.png", "--pdf", "a.pdf", "--csv", "a.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no `theory` section" in err


# --- the figures and tables as written ---------------------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """The figures the theory outputs save, as matplotlib objects (in the order saved)."""
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig

    def record(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def _small(section: str, **changes) -> dict:
    return {"seed": 0, "schedule": {"kind": "linear", "T": 1000}, section: {**CONFIG[section], **changes}}


def test_radius_figure_has_one_legend_in_the_papers_words_and_an_html_table(tmp_path, drawn):
    from densepure.report.theory import radius_outputs

    settings = _small("radius", sigmas=[0.25], Ks=[1, 3], N0=20, N=100)
    out = {k: str(tmp_path / f"r.{k}") for k in ("csv", "md", "png", "pdf")}
    rows = radius_outputs(settings, out["csv"], out["md"], out["png"], out["pdf"])
    fig = drawn[0]
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "one-shot (DensePure code)", "Carlini et al.", "DensePure (K = 1)", "DensePure (K = 3)"]
    page = (tmp_path / "r.html").read_text()
    assert page.count("<tr>") == len(rows) + 1 and "Certified radius on the exact model" in page


def test_fig2_legend_shows_the_shaded_regions_and_boundaries_are_smooth(tmp_path, drawn):
    from matplotlib.patches import Patch

    from densepure.report.theory import fig2_outputs

    fig2_outputs(_small("fig2", pixels=80, spacing=0.05), png=str(tmp_path / "f.png"))
    fig = drawn[0]
    legend = fig.legends[0]
    patches = [h for h in legend.legend_handles if isinstance(h, Patch)]
    assert [p.get_label() for p in patches] == ["$D(G(x_0); t)$: purified to $x_0$'s class",
                                                "purified to the other class"]
    assert fig.axes[0].get_legend() is None
    # the boundary of D: a contour of a smoothed field, not the 0/45/90-degree staircase of a pixel grid
    vertices = np.concatenate([p.vertices for p in fig.axes[0].collections[1].get_paths() if len(p.vertices) > 1])
    angles = np.degrees(np.arctan2(*np.diff(vertices, axis=0).T[::-1])) % 45
    off_grid = np.minimum(angles, 45 - angles) > 1
    assert off_grid.mean() > 0.5, off_grid.mean()
