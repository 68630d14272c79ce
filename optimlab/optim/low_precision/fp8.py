r"""Block-wise scaled float8 (e4m3) state: torchao's ``AdamWFp8`` scheme, the reference rule.

* A state tensor is cut into blocks of ``quantize.BLOCK_SIZE`` = 256 consecutive elements. Each
  block keeps one float32 *scale* ``s_b = max(max_i |x_i|, 1e-12) / 448`` (448 = the largest
  finite float8_e4m3fn) and each element the float8_e4m3fn *code* ``fl8(x_i / s_b)``: torch's
  own cast, round to nearest even (the quotient is at most 448·(1 + 2⁻²³), which rounds to 448).
  Decoding is ``x_i ≈ float(code_i) · s_b``.
* e4m3 has 4 exponent bits and 3 mantissa bits: every code is within a relative 2⁻⁴ of the value
  (the dynamic map's few per cent), down to 2⁻⁶ · s_b; below, subnormal steps of 2⁻⁹ · s_b. Unlike
  the dynamic map's nearest-entry search, the code is a few integer operations on the float32
  bits (``kernels.lowprec_fp8``), which is why this form is cheaper to compute than ``"int8"``.
* Small tensors (< 4,096 elements, torchao's ``min_quantized_size``) and sizes not a multiple of
  256 stay float32, as for ``"int8"``. One scale costs 4/256 = 0.016 bytes per element.
"""

from __future__ import annotations

import torch

from optimlab.optim.low_precision.quantize import BLOCK_SIZE, MIN_ABSMAX

#: the storage dtype of the codes
DTYPE = torch.float8_e4m3fn
#: the largest finite e4m3fn value: a block's largest |x| codes to it
LARGEST = 448.0


def quantize(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scale): float8_e4m3fn codes shaped like `values` and one float32 scale per block.

    scale = max(amax, 1e-12) / 448 (float32 division), code = fl8(x / scale).
    """
    x = values.detach().to(torch.float32).reshape(-1, BLOCK_SIZE)
    scale = x.abs().amax(dim=1).clamp(min=MIN_ABSMAX) / LARGEST
    codes = (x / scale.unsqueeze(1)).to(DTYPE)
    return codes.reshape(values.shape), scale


def dequantize(
    codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """x ≈ float(code) · scale, in float32 (then cast to `dtype`)."""
    blocks = codes.reshape(-1, BLOCK_SIZE).to(torch.float32) * scale.to(torch.float32).unsqueeze(1)
    return blocks.reshape(codes.shape).to(dtype)


def level_gap(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The width of the quantization step around each code (the larger neighbouring gap), scaled:
    2^(e − 3) for a normal code of exponent e (2⁻⁹ for subnormals), times the block's scale."""
    magnitude = codes.reshape(-1, BLOCK_SIZE).to(torch.float32).abs()
    exponent = torch.floor(torch.log2(magnitude.clamp(min=2.0**-6)))
    # the gap above a power of two is its own ulp; the larger one is the ulp of the code's octave
    gap = torch.pow(2.0, exponent - 3) * scale.to(torch.float32).unsqueeze(1)
    return gap.reshape(codes.shape)
