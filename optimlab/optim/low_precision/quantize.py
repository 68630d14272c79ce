r"""Block-wise 8-bit quantization with a dynamic map (Dettmers et al., 2022, section 2.1).

The scheme is torchao's ``AdamW8bit`` (itself bitsandbytes' 8-bit Adam without its zero padding):

* A state tensor is cut into blocks of ``BLOCK_SIZE`` = 256 consecutive elements (row-major).
  Each block keeps its absolute maximum ``a_b = max(max_i |x_i|, 1e-12)`` in float32 and each
  element the uint8 *code* of the map entry nearest to ``x_i / a_b`` (ties round up). Decoding
  is ``x_i ≈ map[code_i] · a_b``. Small blocks bound the damage of one outlier to 256 elements;
  the per-block float32 maximum costs 4/256 = 0.016 bytes per element.
* Only tensors of at least ``MIN_ELEMENTS`` = 4,096 elements whose size is a multiple of the
  block size are quantized; the rest (biases, norm scales) stay in float32, where their few bytes
  do not matter and where quantization noise would hurt most.
* The *dynamic map* (Dettmers, 2016, "8-Bit Approximations for Parallelism in Deep Learning")
  is a floating-point-like code: the magnitudes ``10^{i−6} · μ`` for exponents i = 0..6, where μ
  runs over the midpoints of ``2^i`` (signed map; ``2^{i+1}`` for the unsigned one) equal steps
  of [0.1, 1], plus 0 and 1; the signed map also has the negatives. Values spanning seven
  decades keep a relative error of a few per cent, which Adam's second moment (squared
  gradients) needs; the unsigned map spends the sign bit on twice the resolution for v ≥ 0.
"""

from __future__ import annotations

import functools

import torch

#: elements per block sharing one float32 absolute maximum
BLOCK_SIZE = 256
#: tensors with fewer elements stay in float32
MIN_ELEMENTS = 4096
#: the smallest block maximum, so an all-zero block decodes to zeros instead of NaN
MIN_ABSMAX = 1e-12
_EXPONENTS = 7


@functools.cache
def _dynamic_map_values(signed: bool) -> tuple[float, ...]:
    values: list[float] = []
    for exponent in range(_EXPONENTS):
        steps = 2**exponent if signed else 2 ** (exponent + 1)
        # midpoints of `steps` equal steps of [0.1, 1], scaled in float32 as the peers do so that
        # the map (and so every code) is the same bit for bit
        edges = torch.linspace(0.1, 1, steps + 1)
        midpoints = (edges[:-1] + edges[1:]) / 2.0
        decade = 10.0 ** (exponent - (_EXPONENTS - 1))
        values += (decade * midpoints).tolist()
        if signed:
            values += (-decade * midpoints).tolist()
    values += [0.0, 1.0]
    assert len(values) == 256, len(values)
    return tuple(sorted(values))


def dynamic_map(signed: bool, device: torch.device | str | None = None) -> torch.Tensor:
    """The 256 sorted float32 values a code stands for (signed: [−1, 1], unsigned: [0, 1])."""
    return torch.tensor(_dynamic_map_values(signed), dtype=torch.float32, device=device)


def quantizable(tensor: torch.Tensor, min_elements: int = MIN_ELEMENTS) -> bool:
    """Whether `tensor` is stored below float32 (at least `min_elements`, whole blocks).

    `min_elements` is the optimizer option ``min_quantized_size`` (default ``MIN_ELEMENTS``,
    torchao's rule); lowering it reaches the small layers of small networks.
    """
    n = tensor.numel()
    return n >= min_elements and n % BLOCK_SIZE == 0


def quantize(values: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, absmax): uint8 codes shaped like `values` and one float32 maximum per block.

    code = the index of the map entry nearest to x / a_b, the upper one on a tie.
    """
    x = values.detach().to(torch.float32).reshape(-1, BLOCK_SIZE)
    absmax = x.abs().amax(dim=1).clamp(min=MIN_ABSMAX)
    scaled = x / absmax.unsqueeze(1)
    table = dynamic_map(signed, x.device)
    # the largest entry <= x, then one up when x is at least half-way to the next entry
    lower = (torch.searchsorted(table, scaled, right=True) - 1).clamp(0, 255)
    upper = (lower + 1).clamp(max=255)
    low_value, high_value = table[lower], table[upper]
    codes = torch.where(scaled - low_value >= (high_value - low_value) * 0.5, upper, lower)
    return codes.to(torch.uint8).reshape(values.shape), absmax


def dequantize(
    codes: torch.Tensor, absmax: torch.Tensor, signed: bool, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """x ≈ map[code] · a_b, in float32 (then cast to `dtype`)."""
    table = dynamic_map(signed, codes.device)
    blocks = table[codes.reshape(-1, BLOCK_SIZE).long()] * absmax.to(torch.float32).unsqueeze(1)
    return blocks.reshape(codes.shape).to(dtype)


def level_gap(codes: torch.Tensor, absmax: torch.Tensor, signed: bool) -> torch.Tensor:
    """The width of the quantization step around each code (the larger neighbouring gap), scaled.

    One quantization level: two decodings that differ by at most this are one code apart or less.
    """
    table = dynamic_map(signed, codes.device)
    index = codes.reshape(-1, BLOCK_SIZE).long()
    up = table[(index + 1).clamp(max=255)] - table[index]
    down = table[index] - table[(index - 1).clamp(min=0)]
    gap = torch.maximum(up, down) * absmax.to(torch.float32).unsqueeze(1)
    return gap.reshape(codes.shape)
