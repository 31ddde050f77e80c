"""PACT activation fake-quantization: fixed precision and the mixture over candidate precisions.

Both are autograd functions that save only the input (and the clip), so a mixture over n
precisions keeps one tensor alive for backward instead of n copies (SPEC §2.2, differs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mpsctl.quant import fused

#: Added to codes before flooring so a value already on the grid (k/s computed in floats)
#: maps back to code k instead of k-1 through round-off.
_FLOOR_EPS = 1e-4


def act_levels(bits: int, signed: bool) -> int:
    """Largest code magnitude: 2^p - 1 unsigned, 2^(p-1) - 1 signed (at least 1)."""
    return max((1 << (bits - 1)) - 1, 1) if signed else (1 << bits) - 1


def act_scale(clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Quantization step ``clip / levels``: the value of one integer code."""
    return clip / act_levels(bits, signed)


def pact_forward(x: Tensor, clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Quantize-dequantize ``x`` at ``bits`` within ``[0, clip]`` or ``[-clip, clip]``."""
    levels = act_levels(bits, signed)
    s = levels / clip
    if signed:
        return torch.round(torch.maximum(torch.minimum(x, clip), -clip) * s) / s
    # The round-off in s·(k/s) grows with the code k: widen the margin above 8 bits so that
    # re-quantizing a quantized value stays exact (float32 at 16 bits: ulp(65535) ≈ 0.004).
    eps = _FLOOR_EPS * max(1.0, levels / 255)
    return torch.floor(torch.minimum(x.clamp_min(0), clip) * s + eps) / s


def _clip_masks(x: Tensor, clip: Tensor, signed: bool) -> tuple[Tensor, Tensor, Tensor]:
    above = x >= clip
    below = x <= -clip if signed else x <= 0
    inside = ~(above | below)
    return inside, above, below


def _pact_backward(
    grad: Tensor, x: Tensor, clip: Tensor, signed: bool, mass: Tensor | float
) -> tuple[Tensor, Tensor]:
    inside, above, below = _clip_masks(x, clip, signed)
    grad_x = grad * inside * mass
    grad_clip = grad[above].sum()
    if signed:
        grad_clip = grad_clip - grad[below].sum()
    return grad_x, (grad_clip * mass).reshape(clip.shape)


class PACTQuantize(torch.autograd.Function):
    """Fixed-precision PACT with the straight-through rules of SPEC §1.1."""

    @staticmethod
    def forward(ctx, x: Tensor, clip: Tensor, bits: int, signed: bool) -> Tensor:
        ctx.save_for_backward(x, clip)
        ctx.signed = signed
        return pact_forward(x, clip, bits, signed)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, clip = ctx.saved_tensors
        grad_x, grad_clip = _pact_backward(grad, x, clip, ctx.signed, 1.0)
        return grad_x, grad_clip, None, None


class MixedPACTQuantize(torch.autograd.Function):
    """``Σ_i θ_i · Q_{p_i}(x)`` that recomputes each ``Q_{p_i}(x)`` in backward.

    Forward and backward bodies live in :mod:`mpsctl.quant.fused` (compiled by default).
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, clip: Tensor, theta: Tensor, bits: Sequence[int], signed: bool
    ) -> Tensor:
        ctx.save_for_backward(x, clip, theta)
        ctx.key = (tuple(bits), signed)
        return fused.call("pact", ctx.key, 0, x, clip, theta)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, clip, theta = ctx.saved_tensors
        grad_x, grad_clip, grad_theta = fused.call(
            "pact", ctx.key, 1, grad.contiguous(), x, clip, theta
        )
        grad_theta = grad_theta if ctx.needs_input_grad[2] else None
        return grad_x, grad_clip.reshape(clip.shape), grad_theta, None, None


def pact_quantize(x: Tensor, clip: Tensor, bits: int, signed: bool = False) -> Tensor:
    """Fake-quantize ``x`` at one precision (learned ``clip``, straight-through gradients)."""
    return PACTQuantize.apply(x, clip, bits, signed)


def mixed_pact_quantize(
    x: Tensor, clip: Tensor, theta: Tensor, bits: Sequence[int], signed: bool = False
) -> Tensor:
    """Expected fake-quantized activation under choice weights ``theta`` (one per precision).

    The function runs on a flat view (it is pointwise), so one compiled kernel serves every
    tensor shape; the reshape back happens outside it, so in-place ops after it are safe.
    """
    flat = MixedPACTQuantize.apply(x.reshape(-1), clip, theta, tuple(bits), signed)
    return flat.reshape(x.shape)
