"""Straight-through integer helpers for cost models written as closed forms.

A hardware target's cost is made of floors, ceilings and remainders of channel counts. The
search needs it differentiable in (fractional) channel counts, so on tensors these helpers
pass the gradient to ``a`` unchanged; on plain numbers they are exact integer arithmetic,
so the same formula gives refine and the reports exact costs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: A channel count, bit width or cycle count: a tensor in the search, a number elsewhere.
Quantity = Tensor | int | float


class _FloorDiv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Quantity) -> Tensor:
        return torch.div(a, b, rounding_mode="floor")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _CeilDiv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Quantity) -> Tensor:
        return torch.div(a - 1, b, rounding_mode="floor") + 1

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _Mod(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Quantity) -> Tensor:
        return a - b * torch.div(a, b, rounding_mode="floor")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _as_tensor_pair(a: Quantity, b: Quantity) -> tuple[Quantity, Quantity]:
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        a = torch.as_tensor(a, device=b.device)
    return a, b


def fdiv(a: Quantity, b: Quantity) -> Quantity:
    """``floor(a / b)``; on tensors the gradient passes to ``a`` unchanged (straight-through)."""
    a, b = _as_tensor_pair(a, b)
    if isinstance(a, Tensor):
        return _FloorDiv.apply(a, b)
    return a // b


def cdiv(a: Quantity, b: Quantity) -> Quantity:
    """``floor((a - 1) / b) + 1`` (ceil for integers); straight-through gradient to ``a``."""
    a, b = _as_tensor_pair(a, b)
    if isinstance(a, Tensor):
        return _CeilDiv.apply(a, b)
    return (a - 1) // b + 1


def mod(a: Quantity, b: Quantity) -> Quantity:
    """``a - b * fdiv(a, b)``; straight-through gradient to ``a`` (not ``1 - b``)."""
    a, b = _as_tensor_pair(a, b)
    if isinstance(a, Tensor):
        return _Mod.apply(a, b)
    return a - b * (a // b)


def if_nonzero(selector: Quantity, value: Quantity) -> Quantity:
    """``[selector != 0] * value`` without letting the zero branch's gradient through."""
    if isinstance(selector, Tensor):
        value = torch.as_tensor(value, device=selector.device)
        return torch.where(selector != 0, value, torch.zeros_like(value))
    return value if selector != 0 else 0 * value
