"""Learned-step-size (LSQ) weight fake-quantization, one step per output channel.

Esser et al., "Learned Step Size Quantization" (ICLR 2020): the step is trained with the
weights, its gradient scaled by ``1/sqrt(numel · Qp)``; initialised as ``2·mean|W|/sqrt(Qp)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def lsq_bounds(bits: int) -> tuple[int, int]:
    """Signed code range ``[-2^(p-1), 2^(p-1) - 1]`` (at least one positive level)."""
    return -(1 << (bits - 1)), max((1 << (bits - 1)) - 1, 1)


def lsq_init_step(weight: Tensor, bits: int) -> Tensor:
    """Per-channel initial step from the weights' mean magnitude."""
    _, qp = lsq_bounds(bits)
    mean_abs = weight.detach().abs().flatten(1).mean(1)
    return (2 * mean_abs / math.sqrt(qp)).clamp_min(1e-8)


def _scale_grad(x: Tensor, factor: float) -> Tensor:
    """Identity in forward, gradient multiplied by ``factor`` in backward."""
    return (x - x * factor).detach() + x * factor


def _round_ste(x: Tensor) -> Tensor:
    return (torch.round(x) - x).detach() + x


def lsq_quantize(weight: Tensor, step: Tensor, bits: int) -> Tensor:
    """Quantize-dequantize with per-channel ``step`` (shape ``(Cout,)``); 0 bits gives zeros."""
    if bits == 0:
        return torch.zeros_like(weight)
    qn, qp = lsq_bounds(bits)
    view = (-1,) + (1,) * (weight.dim() - 1)
    grad_factor = 1.0 / math.sqrt(weight[0].numel() * qp)
    s = _scale_grad(step.abs().clamp_min(1e-8), grad_factor).reshape(view)
    return _round_ste(torch.clamp(weight / s, qn, qp)) * s
