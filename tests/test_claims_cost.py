"""Expected cost of a claim before running it (densepure.plan.claims_cost, `densepure estimate --claims`)."""

from types import SimpleNamespace

import numpy as np
import pytest

from densepure.plan.claims_cost import Effect, images_budget, paper_effect, parse_effect, population, simulate
from densepure.plan.validation import load_config


def test_population_codes_the_effect_exactly():
    x = population(500, Effect(0.756, 0.718, 0.15))
    # 0.15 discordant: (0.15 + 0.038) / 2 first only, (0.15 - 0.038) / 2 second only
    assert (x == 1).sum() == 47 and (x == 0).sum() == 28 and (x == 0.5).sum() == 425
    assert 2 * x.mean() - 1 == pytest.approx(0.038)
    cell = population(30, Effect(0.4))
    assert cell.sum() == 12 and set(cell) == {0.0, 1.0}
    # fewer discordant images than the difference itself is impossible: at least |p1 - p2| discordant
    wide = population(100, Effect(0.9, 0.5, 0.1))
    assert (wide == 1).sum() == 40 and (wide == 0).sum() == 0
    # no image is certified by a side whose accuracy is 0: nothing discordant
    assert set(population(100, Effect(0.0, 0.0, 0.15))) == {0.5}
    assert (population(100, Effect(0.1, 0.0, 0.15)) == 1).sum() == 10


def test_no_difference_is_rarely_decided_positive():
    """A true difference of 0: the claim '> 0' decided true in at most alpha of the runs (waves checked every 10)."""
    alpha, runs = 0.05, 400
    s = simulate(population(200, Effect(0.5, 0.5, 0.15)), alpha, 10, "greater", runs=runs, seed=1)
    rate = s.share("true")
    assert rate <= alpha, f"decided positive in {rate:.1%} of {runs} runs"


def test_stopping_follows_the_waves_and_the_budget():
    s = simulate(population(300, Effect(0.7, 0.55, 0.2)), 0.05, 25, "greater", runs=50, seed=2)
    assert set(np.unique(s.images)) <= set(range(25, 301, 25))
    assert s.share("true") == 1.0
    tight = simulate(population(300, Effect(0.52, 0.5, 0.15)), 0.05, 25, "greater", budget=50, runs=50, seed=2)
    assert tight.images.max() == 50 and tight.decided < 1.0


def test_a_gpu_hours_budget_is_the_first_wave_reaching_it():
    """The run checks its measured hours after each wave: at 0.5 GPU-hours per image and waves of 10, a budget of 12
    hours stops after wave 3 (15 hours), 15 hours after wave 3 too, 15.1 after wave 4; an images budget still caps."""
    claim = SimpleNamespace(budget_images=None, budget_gpu_hours=12.0)
    assert images_budget(claim, 0.5, 10, 500) == 30
    assert images_budget(SimpleNamespace(budget_images=None, budget_gpu_hours=15.0), 0.5, 10, 500) == 30
    assert images_budget(SimpleNamespace(budget_images=None, budget_gpu_hours=15.1), 0.5, 10, 500) == 40
    assert images_budget(SimpleNamespace(budget_images=25, budget_gpu_hours=100.0), 0.5, 10, 500) == 25
    assert images_budget(SimpleNamespace(budget_images=None, budget_gpu_hours=None), 0.5, 10, 500) is None
    assert images_budget(SimpleNamespace(budget_images=None, budget_gpu_hours=1e6), 0.5, 10, 500) == 500


def test_the_table_b_effect_at_sigma_half():
    """The paper's Table B at sigma 0.5: r = 1.0 (67.0 vs 59.8) decided with under a third of the 500 images on
    average; r = 0.5 (75.6 vs 71.8, about half the difference) needs more."""
    far = simulate(population(500, Effect(0.670, 0.598)), 0.05, 10, "greater", runs=100, seed=3)
    near = simulate(population(500, Effect(0.756, 0.718)), 0.05, 10, "greater", runs=100, seed=3)
    assert far.images.mean() < 500 / 3 and far.share("true") == 1.0
    assert near.images.mean() > far.images.mean()


def test_paper_effect_reads_the_papers_cells():
    config = load_config("config/paper.yaml")
    side = SimpleNamespace
    claim = SimpleNamespace(artifact="tableB", dataset="imagenet", sigma=0.5, radius=0.5,
                            first=side(method="densepure", b=10, K=40), second=side(method="onestep", b=1, K=1))
    effect = paper_effect(config, claim)
    assert (effect.first, effect.second) == (pytest.approx(0.756), pytest.approx(0.718))
    cell = SimpleNamespace(**{**vars(claim), "second": None, "radius": 1.0, "sigma": 1.0})
    assert paper_effect(config, cell) == Effect(pytest.approx(0.556))
    digits = SimpleNamespace(**{**vars(claim), "dataset": "digits"})
    assert paper_effect(config, digits) is None  # the paper has no digits


@pytest.mark.parametrize("text", ["x", "x=", "x=1.5", "=0.5", "x=a,b", "x=0.1,0.2,0.3"])
def test_parse_effect_rejects(text):
    with pytest.raises(ValueError, match="NAME=FIRST"):
        parse_effect(text)


def test_parse_effect():
    assert parse_effect("c=0.7,0.6", 0.2) == ("c", Effect(0.7, 0.6, 0.2))
