"""Addressable randomness: Gaussian noise that is a pure function of (seed, stream, image, draw, vote, step).

Every noise tensor the certifier uses is indexed, not drawn from a stateful stream, so the votes are
bit-identical whatever the batch size, the shard split or the point where a killed job resumed. The generator is
Philox4x32-10 (Salmon et al., SC'11; the counter-based generator behind cuRAND and JAX), written with int64
tensor arithmetic so it runs on any device, followed by the Box-Muller transform in float64.

Counter layout for element block ``e`` (4 normals per block) of the sample addressed by (draw, vote, step):
``(e, draw, vote, stream << 16 | step)``; key ``(seed, image)``.
"""

from __future__ import annotations

import math
import operator

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
ROUNDS = 10

# Streams keep different uses of noise independent.
SMOOTHING = 0
REVERSE = 1

# The seed and the image id each fill one 32-bit key word, draw and vote one 32-bit counter word: larger values would
# silently alias smaller ones (seed 2^32 would give seed 0's noise), so they are refused.
MAX_SEED = MASK32
MAX_COUNT = 1 << 32  # draws per image, votes per draw


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` if the noise key holds it (0 .. 2^32 - 1), else ValueError naming ``name``."""
    try:
        value = operator.index(seed)
    except TypeError:
        value = None
    if isinstance(seed, bool) or value is None or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in 0..{MAX_SEED} (the noise key's 32-bit word), got {seed!r}")
    return value


def check_count(count: int, name: str = "N0 + N") -> int:
    """``count`` if every index below it (draws of an image, votes of a draw) has its own 32-bit counter word, else
    ValueError naming ``name``."""
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"{name} = {count} exceeds {MAX_COUNT}, the indices one 32-bit word of the noise counter "
                         "holds")
    return count


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of ``m * x`` for 32-bit ``m`` and ``x``, with 16-bit limbs so no int64 overflows."""
    a = x * (m >> 16)  # < 2^48
    low_sum = ((a & 0xFFFF) << 16) + x * (m & 0xFFFF)  # < 2^49
    return (a >> 16) + (low_sum >> 32), low_sum & MASK32


def philox4x32(counter: list[torch.Tensor], key: tuple[int, int]) -> list[torch.Tensor]:
    """Philox4x32-10 of broadcastable int64 counter words (each in [0, 2^32)); returns four 32-bit words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for _ in range(ROUNDS):
        hi0, lo0 = _mulhilo(PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
    return [c0, c1, c2, c3]


def _box_muller(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two standard normals from two 32-bit words (uniforms in (0, 1), computed in float64)."""
    scale = 1.0 / 2**32
    radius = torch.sqrt(-2.0 * torch.log((u1.double() + 0.5) * scale))
    angle = 2 * math.pi * (u2.double() + 0.5) * scale
    return radius * torch.cos(angle), radius * torch.sin(angle)


def normal(
    shape: tuple[int, ...],
    seed: int,
    image: int,
    stream: int,
    draws: torch.Tensor,
    votes: torch.Tensor | None = None,
    step: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of shape ``[len(draws), *shape]`` where row ``r`` is addressed by
    ``(seed, image, stream, draws[r], votes[r], step)``. Same address, same numbers, on every call. ``seed`` and
    ``image`` must lie in 0 .. 2^32 - 1 (:func:`check_seed`)."""
    check_seed(seed)
    check_seed(image, "image id")
    draws = torch.as_tensor(draws, dtype=torch.int64, device=device).reshape(-1, 1)
    votes = torch.zeros_like(draws) if votes is None else torch.as_tensor(votes, dtype=torch.int64, device=device)
    votes = votes.reshape(-1, 1)
    numel = math.prod(shape)
    blocks = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device).reshape(1, -1)
    word3 = torch.full((1, 1), (stream << 16) | step, dtype=torch.int64, device=device)  # no host copy
    c0, c1, c2, c3 = torch.broadcast_tensors(blocks, draws & MASK32, votes & MASK32, word3)
    w = philox4x32([c0, c1, c2, c3], (seed, image))
    z0, z1 = _box_muller(w[0], w[1])
    z2, z3 = _box_muller(w[2], w[3])
    z = torch.stack([z0, z1, z2, z3], dim=-1).reshape(len(draws), -1)[:, :numel]
    return z.to(dtype).reshape(len(draws), *shape)
