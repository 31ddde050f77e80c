"""32-bit bias fake-quantization with the scale tied to input and weight scales.

See docs/algorithm.md#bias.
"""

from __future__ import annotations

import torch
from torch import Tensor

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Below this scale a channel counts as pruned and its bias as zero.
_TINY_SCALE = 1e-30


def _int32_max(dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` within int32 (float32 rounds 2^31 - 1 up to 2^31)."""
    top = torch.tensor(float(INT32_MAX), dtype=dtype)
    if float(top) > INT32_MAX:
        top = torch.nextafter(top, torch.zeros_like(top))
    return float(top)


def bias_forward(bias: Tensor, scale: Tensor) -> Tensor:
    """``rne(b / s_b)`` saturated to int32, times ``s_b``; 0 where ``s_b`` is (nearly) 0."""
    live = scale.abs() > _TINY_SCALE
    safe = torch.where(live, scale, torch.ones_like(scale))
    q = torch.round(bias / safe).clamp(INT32_MIN, _int32_max(bias.dtype))
    return torch.where(live, q * safe, torch.zeros_like(q))


class BiasQuantize(torch.autograd.Function):
    """Bias quantizer whose gradient passes straight through (not scaled by ``s_b``)."""

    @staticmethod
    def forward(ctx, bias: Tensor, scale: Tensor) -> Tensor:
        live = scale.abs() > _TINY_SCALE
        ctx.save_for_backward(live)
        return bias_forward(bias, scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (live,) = ctx.saved_tensors
        grad_b = grad * live
        # Reduce over the leading axes added by broadcasting (e.g. candidate precisions).
        while grad_b.dim() > 1:
            grad_b = grad_b.sum(0)
        return grad_b, None


def quantize_bias(bias: Tensor, scale: Tensor) -> Tensor:
    """Fake-quantize ``bias`` (``(Cout,)``) at per-channel scales broadcast to ``scale``'s shape."""
    return BiasQuantize.apply(bias, scale.detach())
