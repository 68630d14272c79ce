"""How optimizer state is stored below float32, and its conversion between storage forms.

``state_dtype="float32"`` keeps torch.optim's layout. ``"bf16"`` stores each element-wise state
tensor (momentum, second moment, ...) as bfloat16 (round to nearest). ``"int8"`` stores it as
uint8 codes under its own name (``exp_avg``) plus the per-block float32 maxima under
``<name>_absmax`` (see ``quantize``); ``"fp8"`` as float8_e4m3fn codes plus the per-block float32
scales under ``<name>_scale`` (see ``fp8``, torchao's AdamWFp8). A state_dict then holds plain
tensors only, and says by that second key which form a state is in. Tensors too small to
quantize stay float32 in all three.

The update rule never sees the stored form: `decoded` hands it float tensors and `store` encodes
what it left (the parameter update uses the unrounded new state, as torchao does).
"""

from __future__ import annotations

from typing import Any

import torch

from optimlab.optim.low_precision import fp8, quantize

STATE_DTYPES = ("float32", "bf16", "int8", "fp8")
ABSMAX_SUFFIX = "_absmax"
#: the key of an fp8 state's per-block scales (``<name>_scale``)
SCALE_SUFFIX = "_scale"
_BLOCK_KEYS = (ABSMAX_SUFFIX, SCALE_SUFFIX)

#: which map each element-wise state takes (by torch.optim's names): momenta are signed,
#: accumulators of squares (and AdaMax's running max of |g|) are non-negative
SIGNED_STATE: dict[str, bool] = {
    "exp_avg": True,
    "momentum_buffer": True,
    "grad_avg": True,
    "exp_avg_sq": False,
    "max_exp_avg_sq": False,
    "exp_inf": False,
    "square_avg": False,
}


def _element_wise(key: str, value: Any, param: torch.Tensor) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.shape == param.shape
        and not key.endswith(_BLOCK_KEYS)
    )


def _signed(owner: str, key: str) -> bool:
    try:
        return SIGNED_STATE[key]
    except KeyError:
        raise ValueError(
            f"{owner}: state {key!r} has no quantization map declared; low-precision state "
            f"knows {', '.join(map(repr, SIGNED_STATE))} (optimlab.optim.low_precision.state)"
        ) from None


def stored_below_float32(state: dict[str, Any]) -> bool:
    """Whether `state` holds 8-bit codes or bfloat16 tensors (a low-precision form).

    Neither occurs in a float32-state group's own state (bfloat16 parameters keep float32 state),
    so this finds state left by ``state_dtype="int8"|"fp8"|"bf16"`` before a switch to float32.
    """
    for key, value in state.items():
        if key.endswith(_BLOCK_KEYS):
            return True
        if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
            return True
    return False


def decoded(
    owner: str, state: dict[str, Any], param: torch.Tensor, dtype: torch.dtype
) -> dict[str, Any]:
    """The state as the update rule wants it: every stored tensor decoded to `dtype`."""
    work: dict[str, Any] = {}
    for key, value in state.items():
        if key.endswith(_BLOCK_KEYS):
            continue
        absmax = state.get(key + ABSMAX_SUFFIX)
        scale = state.get(key + SCALE_SUFFIX)
        if absmax is not None:
            work[key] = quantize.dequantize(value, absmax, _signed(owner, key), dtype)
        elif scale is not None:
            work[key] = fp8.dequantize(value, scale, dtype)
        elif _element_wise(key, value, param) and value.dtype != dtype:
            work[key] = value.to(dtype)
        else:
            work[key] = value
    return work


def store(
    owner: str,
    work: dict[str, Any],
    state: dict[str, Any],
    param: torch.Tensor,
    state_dtype: str,
    min_size: int = quantize.MIN_ELEMENTS,
) -> None:
    """Write the rule's float state `work` back into `state` in the form `state_dtype` asks for
    (tensors below `min_size` elements, or not whole blocks, stay float32)."""
    for key in [k for k in state if k.endswith(_BLOCK_KEYS)]:
        del state[key]
    for key, value in work.items():
        if not _element_wise(key, value, param) or state_dtype == "float32":
            state[key] = value
        elif not quantize.quantizable(value, min_size):
            state[key] = value.to(torch.float32) if value.dtype == torch.bfloat16 else value
        elif state_dtype == "bf16":
            state[key] = value.to(torch.bfloat16)
        elif state_dtype == "fp8":
            _signed(owner, key)  # (a state of unknown meaning is refused as for int8)
            state[key], state[key + SCALE_SUFFIX] = fp8.quantize(value)
        else:
            codes, absmax = quantize.quantize(value, _signed(owner, key))
            state[key], state[key + ABSMAX_SUFFIX] = codes, absmax


def convert_loaded(
    owner: str,
    state: dict[str, Any],
    param: torch.Tensor,
    state_dtype: str,
    work_dtype: torch.dtype,
    min_size: int = quantize.MIN_ELEMENTS,
) -> None:
    """Bring a just-loaded `state` (from any storage form) into the form `state_dtype` asks for.

    ``load_state_dict`` has cast every state tensor to the parameter's state dtype; uint8 codes
    and bfloat16 values survive that cast exactly, so nothing is lost. A state saved in the form
    asked for is restored bit for bit; another form is quantized or dequantized.
    """
    for key in list(state):
        if not key.endswith(_BLOCK_KEYS):
            continue
        fp8_form = key.endswith(SCALE_SUFFIX)
        base = key[: -len(SCALE_SUFFIX if fp8_form else ABSMAX_SUFFIX)]
        what = "fp8" if fp8_form else "8-bit"
        codes = state.get(base)
        blocks = None if codes is None else codes.numel() // quantize.BLOCK_SIZE
        if (
            codes is None
            or codes.shape != param.shape
            or codes.numel() % quantize.BLOCK_SIZE
            or state[key].numel() != blocks
        ):
            raise ValueError(
                f"{owner}: cannot load {what} state {base!r} for a parameter of shape "
                f"{tuple(param.shape)}: it needs codes of that shape and one "
                f"{'scale' if fp8_form else 'maximum'} per {quantize.BLOCK_SIZE} elements "
                f"({param.numel() / quantize.BLOCK_SIZE:g} blocks), got "
                f"{'no codes' if codes is None else f'codes {tuple(codes.shape)}'} "
                f"and {state[key].numel()} {'scales' if fp8_form else 'maxima'}"
            )
        if fp8_form:
            # loading cast the codes to the parameter's dtype, exactly; anything else is not one
            as_fp8 = codes.to(fp8.DTYPE)
            back = as_fp8.to(codes.dtype)
            if not torch.all((back == codes) | (back.isnan() & codes.isnan())):
                raise ValueError(
                    f"{owner}: cannot load fp8 state {base!r}: its codes are not float8_e4m3fn "
                    f"values (a float state saved next to a {key!r} entry?)"
                )
            state[base] = as_fp8
        else:
            if torch.any((codes != codes.round()) | (codes < 0) | (codes > 255)):
                raise ValueError(
                    f"{owner}: cannot load 8-bit state {base!r}: its codes are not integers in "
                    f"[0, 255] (a float state saved next to a {key!r} entry?)"
                )
            state[base] = codes.to(torch.uint8)
        state[key] = state[key].to(torch.float32)
    suffix = {"int8": ABSMAX_SUFFIX, "fp8": SCALE_SUFFIX}.get(state_dtype)
    # codes loaded into an optimizer of the same form stay as saved (bit for bit); the rest is
    # decoded to floats and stored in the asked form (quantized, rounded to bfloat16, or kept)
    kept = {}
    if suffix is not None:
        kept = {
            k[: -len(suffix)]: (state[k[: -len(suffix)]], state[k])
            for k in state
            if k.endswith(suffix)
        }
    work = decoded(owner, state, param, work_dtype)
    rest = {k: v for k, v in work.items() if k not in kept}
    store(owner, rest, state, param, state_dtype, min_size)
    for key, (codes, blocks) in kept.items():
        state[key], state[key + suffix] = codes, blocks
