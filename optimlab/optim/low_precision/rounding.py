r"""Stochastic rounding of float32 values to bfloat16, seeded and reproducible.

A bfloat16 number is the upper 16 bits of a float32 one. Between the two bfloat16 neighbours
``lo`` and ``hi = lo + ulp`` (taken towards and away from zero) a float32 value x rounds to ``hi``
with probability ``(|x| − |lo|) / ulp`` and to ``lo`` otherwise, so ``E[round(x)] = x``: an
update far below half an ulp (bf16's ε = 2⁻⁷, so at lr 1e-3 any weight above ≈0.26) still
moves the weight in expectation, where round-to-nearest drops it every time.

Implementation: the lower 16 bits of x's float32 pattern, read as an integer f ∈ [0, 2¹⁶),
measure exactly that distance (float32 spacing is uniform within a binade); adding a uniform
integer r ∈ [0, 2¹⁶) carries into the upper half iff r ≥ 2¹⁶ − f, i.e. with probability f / 2¹⁶,
and truncating then gives the rounded value.

The random bits of one tensor's update come from a generator seeded with (seed, the tensor's
position in the optimizer, its update count), so a run repeats bit for bit and a resumed run
draws what the uninterrupted one would have drawn. The fused kernel draws its own bits from a
counter-based hash of the same three numbers and the element's index (`stream_key`,
``kernels.lowprec_codec``): reproducible too, and unbiased, but not the same bits.
"""

from __future__ import annotations

import numpy as np
import torch

_UPPER_HALF = -(1 << 16)  # 0xFFFF0000 as a signed 32-bit integer


def generator_for(seed: int, position: int, count: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, position, count), well mixed."""
    state = np.random.SeedSequence([seed, position, count]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def stream_key(seed: int, position: int, count: int) -> int:
    """The fused kernels' 64-bit stream key of one tensor's update (see kernels.lowprec_codec).

    The same mixing of (seed, position, count) as `generator_for`; the kernel then draws element
    i's bits by hashing (key, i), so they do not depend on threads or chunking. (The kernel's
    bits are not the reference's torch.Generator stream: both are unbiased, neither equals the
    other.)
    """
    state = np.random.SeedSequence([seed, position, count]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def stochastic_round_to_bf16(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """bfloat16 `values` (float32), each rounded up or down with probability ∝ the distance."""
    x = values.detach().to(torch.float32).contiguous()
    noise = torch.randint(0, 1 << 16, x.shape, generator=generator, dtype=torch.int64)
    bits = (x.view(torch.int32).to(torch.int64) + noise) & _UPPER_HALF
    rounded = bits.to(torch.int32).view(torch.float32)
    # NaN payloads could carry into infinity: keep NaN (and ±inf, whose low bits are zero) as is
    rounded = torch.where(torch.isfinite(x), rounded, x)
    return rounded.to(torch.bfloat16)
