"""Addressable noise: a pure function of its address, standard normal, independent across addresses."""

import numpy as np
import pytest
import torch
from scipy import stats

from densepure.core import rng


def test_philox_known_answer():
    """Random123's published known-answer vector for Philox4x32-10 (counter and key all 0xFFFFFFFF... / pi digits)."""
    words = lambda values: [torch.tensor([v], dtype=torch.int64) for v in values]  # noqa: E731
    out = rng.philox4x32(words([0, 0, 0, 0]), (0, 0))
    assert [int(w) for w in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    out = rng.philox4x32(words([0xFFFFFFFF] * 4), (0xFFFFFFFF, 0xFFFFFFFF))
    assert [int(w) for w in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    out = rng.philox4x32(words([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]), (0xA4093822, 0x299F31D0))
    assert [int(w) for w in out] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_rows_depend_only_on_their_address():
    shape = (3, 5, 5)
    whole = rng.normal(shape, seed=7, image=3, stream=rng.REVERSE, draws=torch.arange(10), votes=torch.arange(10) % 3)
    part = rng.normal(shape, seed=7, image=3, stream=rng.REVERSE, draws=torch.arange(4, 7), votes=torch.arange(4, 7) % 3)
    assert torch.equal(whole[4:7], part)
    again = rng.normal(shape, seed=7, image=3, stream=rng.REVERSE, draws=torch.arange(10), votes=torch.arange(10) % 3)
    assert torch.equal(whole, again)


@pytest.mark.parametrize(
    "change",
    [{"seed": 9}, {"image": 9}, {"stream": rng.REVERSE}, {"draws": torch.tensor([4])}, {"votes": torch.tensor([5])},
     {"step": 9}],
)
def test_every_address_field_changes_the_noise(change):
    base = dict(seed=1, image=2, stream=rng.SMOOTHING, draws=torch.tensor([3]), votes=torch.tensor([4]), step=5)
    other = {**base, **change}
    a, b = rng.normal((64,), **base), rng.normal((64,), **other)
    assert not torch.equal(a, b)
    assert abs(np.corrcoef(a.flatten(), b.flatten())[0, 1]) < 0.5


def test_marginal_is_standard_normal():
    """200k samples: the KS test's p-value is uniform under the null; p > 1e-4 fails once in 10,000 seeds."""
    z = rng.normal((1000,), seed=0, image=0, stream=rng.SMOOTHING, draws=torch.arange(200), dtype=torch.float64)
    z = z.flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.var() - 1) < 5 * np.sqrt(2 / z.size)


def test_odd_sizes_and_dtypes():
    z = rng.normal((3, 7), seed=0, image=0, stream=0, draws=torch.arange(2), dtype=torch.float16)
    assert z.shape == (2, 3, 7) and z.dtype == torch.float16


@pytest.mark.parametrize("seed", [2**32, -1, 2**40 + 7, 1.5, True])
def test_seeds_the_key_does_not_hold_are_refused(seed):
    """The key word holds 32 bits: seed 2^32 would give seed 0's noise (and -1 seed 2^32 - 1's) without a word."""
    with pytest.raises(ValueError, match="seed must be an integer in 0..4294967295"):
        rng.normal((2,), seed, 0, rng.SMOOTHING, torch.arange(2))


def test_image_ids_the_key_does_not_hold_are_refused():
    with pytest.raises(ValueError, match="image id must be an integer in 0..4294967295"):
        rng.normal((2,), 0, 2**32, rng.SMOOTHING, torch.arange(2))


def test_largest_seed_is_its_own():
    a = rng.normal((4,), rng.MAX_SEED, 0, rng.SMOOTHING, torch.arange(2))
    b = rng.normal((4,), rng.MAX_SEED - 1, 0, rng.SMOOTHING, torch.arange(2))
    assert not torch.equal(a, b)
