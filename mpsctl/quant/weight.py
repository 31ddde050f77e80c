"""Symmetric per-output-channel min-max weight fake-quantization.

The channel statistic ``max|W[c]|`` is computed once per forward and shared by every
candidate precision; precision 0 means the channel is pruned (all zeros, scale 0). The
formulas: docs/algorithm.md#weights-symmetric-min-max.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mpsctl.quant import fused
from mpsctl.quant.fused import Direction


def channel_absmax(weight: Tensor, input_mask: Tensor | None = None) -> Tensor:
    """``max|W[c]|`` over every axis but the first (detached); 1 where a channel is all zero.

    ``input_mask`` (one per input channel/feature) weights each input's ``|W|``: a bool mask
    leaves out weights that read channels a producer has pruned (the statistic of the
    exported layer); a probability in [0, 1] gives the search's smooth statistic.
    """
    w = weight.detach().abs()
    if input_mask is not None:
        w = w * input_mask.reshape((1, -1) + (1,) * (w.dim() - 2)).to(w.dtype)
    m = w.flatten(1).amax(dim=1)
    return torch.where(m > 0, m, torch.ones_like(m))


def minmax_scale(absmax: Tensor, bits: Tensor) -> Tensor:
    """Per-channel step ``2·m / (2^p - 1)``; 0 for 0-bit channels. ``bits`` broadcasts."""
    levels = torch.exp2(bits.to(absmax.dtype)) - 1
    return torch.where(levels > 0, 2 * absmax / levels.clamp_min(1), torch.zeros_like(absmax))


def minmax_forward(weight: Tensor, absmax: Tensor, bits: Tensor) -> Tensor:
    """Quantize-dequantize ``weight`` with a per-channel bit vector (or a scalar bits tensor)."""
    view = (-1,) + (1,) * (weight.dim() - 1)
    bits = bits.to(weight.device).expand(absmax.shape)
    scale = minmax_scale(absmax, bits).reshape(view)
    half = torch.exp2(bits.to(weight.dtype) - 1).reshape(view)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.maximum(torch.minimum(torch.round(weight / safe), half - 1), -half)
    return torch.where(scale > 0, q * scale, torch.zeros_like(weight))


class MinMaxQuantize(torch.autograd.Function):
    """Fixed-precision weights (per-layer bits or per-channel bit vector), identity STE."""

    @staticmethod
    def forward(ctx, weight: Tensor, bits: Tensor, absmax: Tensor | None) -> Tensor:
        absmax = channel_absmax(weight) if absmax is None else absmax
        return minmax_forward(weight, absmax, bits)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None, None


class MixedMinMaxQuantize(torch.autograd.Function):
    """``Σ_j θ_j · Q_{p_j}(W)`` with θ of shape ``(n,)`` (per layer) or ``(n, Cout)``.

    Forward and backward bodies live in :mod:`mpsctl.quant.fused` (compiled by default).
    """

    @staticmethod
    def forward(
        ctx, weight: Tensor, theta: Tensor, bits: Sequence[int], absmax: Tensor | None,
        compiled: bool = False,
    ) -> Tensor:
        absmax = channel_absmax(weight) if absmax is None else absmax
        ctx.save_for_backward(weight, theta, absmax)
        ctx.key = (tuple(bits), theta.dim() == 2)
        ctx.compiled = compiled
        return fused.call("minmax", ctx.key, Direction.FORWARD, weight, theta, absmax,
                          compiled=compiled)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, theta, absmax = ctx.saved_tensors
        grad_w, grad_theta = fused.call(
            "minmax", ctx.key, Direction.BACKWARD, grad.contiguous(), weight, theta, absmax,
            compiled=ctx.compiled,
        )
        return grad_w, grad_theta if ctx.needs_input_grad[1] else None, None, None, None


def minmax_quantize(
    weight: Tensor, bits: int | Tensor, absmax: Tensor | None = None
) -> Tensor:
    """Fake-quantize weights at per-layer ``bits`` or a per-channel bit vector."""
    return MinMaxQuantize.apply(weight, torch.as_tensor(bits), absmax)


def mixed_minmax_quantize(
    weight: Tensor, theta: Tensor, bits: Sequence[int], absmax: Tensor | None = None,
    compiled: bool | None = None,
) -> Tensor:
    """Expected fake-quantized weights under choice weights ``theta``; ``compiled`` picks the
    fused bodies (None: as the environment allows).

    Runs on the ``(Cout, everything else)`` view, so one compiled kernel serves conv and
    linear weights of every shape.
    """
    if compiled is None:
        compiled = fused.compiler_allowed()
    flat = weight.reshape(weight.shape[0], -1)
    out = MixedMinMaxQuantize.apply(flat, theta, tuple(bits), absmax, compiled)
    return out.reshape(weight.shape)
