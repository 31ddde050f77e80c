"""PACT activation fake-quantization: fixed precision and the mixture over candidate precisions.

Both are autograd functions that save only the input (and the clip), so a mixture over n
precisions keeps one tensor alive for backward instead of n copies
(docs/algorithm.md#effective-tensors).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mpsctl.quant import fused
from mpsctl.quant.fused import Direction
from mpsctl.quant.grid import act_levels, act_scale, floor_margin


def pact_forward(x: Tensor, clip: Tensor, bits: int, signed: bool) -> Tensor:
    """Quantize-dequantize ``x`` at ``bits`` within ``[0, clip]`` or ``[-clip, clip]``:
    the integer code times the step ``clip / levels`` (the value an integer kernel gets)."""
    levels = act_levels(bits, signed)
    s = levels / clip
    step = act_scale(clip, bits, signed)
    if signed:
        return torch.round(torch.maximum(torch.minimum(x, clip), -clip) * s) * step
    eps = floor_margin(levels)
    return torch.floor(torch.minimum(x.clamp_min(0), clip) * s + eps) * step


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
    """Fixed-precision PACT with straight-through rules (docs/algorithm.md#activations-pact)."""

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

    With ``relu`` (a signed quantizer whose only consumer is a ReLU) the ReLU is applied
    inside. Forward and backward bodies live in :mod:`mpsctl.quant.fused` (compiled by
    default).
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, clip: Tensor, theta: Tensor, bits: Sequence[int], signed: bool,
        relu: bool = False, compiled: bool = False,
    ) -> Tensor:
        ctx.key = (tuple(bits), signed, relu)
        ctx.compiled = compiled
        out = fused.call("pact", ctx.key, Direction.FORWARD, x, clip, theta, compiled=compiled)
        # The eager backward reads the ReLU mask from the output; the compiled one recomputes
        # it (see fused._pact_bodies).
        keep = relu and not fused.runs_compiled(compiled)
        ctx.save_for_backward(x, clip, theta, out if keep else None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, clip, theta, out = ctx.saved_tensors
        grad_x, grad_clip, grad_theta = fused.call(
            "pact", ctx.key, Direction.BACKWARD, grad.contiguous(), x, clip, theta, out,
            compiled=ctx.compiled,
        )
        grad_theta = grad_theta if ctx.needs_input_grad[2] else None
        return grad_x, grad_clip.reshape(clip.shape), grad_theta, None, None, None, None


def pact_quantize(x: Tensor, clip: Tensor, bits: int, signed: bool = False) -> Tensor:
    """Fake-quantize ``x`` at one precision (learned ``clip``, straight-through gradients)."""
    return PACTQuantize.apply(x, clip, bits, signed)


def mixed_pact_quantize(
    x: Tensor, clip: Tensor, theta: Tensor, bits: Sequence[int], signed: bool = False,
    relu: bool = False, compiled: bool | None = None,
) -> Tensor:
    """Expected fake-quantized activation under choice weights ``theta`` (one per precision),
    followed by a ReLU when ``relu`` is set; ``compiled`` picks the fused bodies (None: as
    the environment allows).

    The function is pointwise, so it runs on a flat view of ``x`` in memory order (one
    compiled kernel serves every shape, and a channels-last tensor is not copied); the
    view back happens outside it, so in-place ops after it are safe.
    """
    flat, restore = _flat_in_memory_order(x)
    if compiled is None:
        compiled = fused.compiler_allowed()
    out = MixedPACTQuantize.apply(flat, clip, theta, tuple(bits), signed, relu, compiled)
    return restore(out)


def _flat_in_memory_order(x: Tensor):
    """A 1-D view of ``x`` and the function that views a result back to ``x``'s layout."""
    if x.is_contiguous():
        return x.view(-1), lambda flat: flat.view(x.shape)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        nhwc = x.permute(0, 2, 3, 1)
        return nhwc.reshape(-1), lambda flat: flat.view(nhwc.shape).permute(0, 3, 1, 2)
    return x.reshape(-1), lambda flat: flat.view(x.shape)
