"""What the MAC-based target models share: the MAC count, rounding and a smooth maximum.

Every formula here takes either tensors (the search: fractional channel counts, gradients
through straight-through integer helpers) or plain numbers (hard assignments: exact values).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mpsctl.cost.base import LayerGeometry, LayerKind
from mpsctl.cost.rounding import Quantity, cdiv, if_nonzero

__all__ = ["Quantity", "if_nonzero", "macs", "round_up", "smooth_max"]


def macs(geom: LayerGeometry, cin: Quantity, cout: Quantity) -> Quantity:
    """Multiply-accumulates of the layer with ``cin`` input and ``cout`` output channels.

    The count of ``bitops`` without its bit factors, plus one MAC per output element for the
    bias when the layer has one (as the published MPIC/DIANA models count them). A depthwise
    layer's channels are its ``cout``; a grouped conv reads ``cin / groups`` per output.
    """
    if geom.kind == LayerKind.DEPTHWISE:
        per_output: Quantity = geom.k
    elif geom.kind == LayerKind.LINEAR:
        per_output = cin
    elif geom.groups > 1:
        per_output = geom.k * cin / geom.groups
    else:
        per_output = geom.k * cin
    if geom.bias:
        per_output = per_output + 1
    return geom.out_pixels * cout * per_output


def round_up(count: Quantity, multiple: int) -> Quantity:
    """``count`` rounded up to a multiple of ``multiple`` (straight-through on tensors)."""
    if multiple == 1:
        return count
    return cdiv(count, multiple) * multiple


def smooth_max(values: Tensor, relative_temperature: float, dim: int = -1) -> Tensor:
    """Log-sum-exp maximum along ``dim`` with temperature ``relative_temperature · max``.

    Scaling the temperature by the (detached) maximum keeps the smoothing independent of the
    cost's units: the result exceeds the exact maximum by at most ``t · max · log(n)``, and
    values within a few ``t · max`` of the maximum share its gradient. ``t = 0`` is the exact
    maximum.
    """
    exact = values.max(dim=dim).values
    if relative_temperature <= 0:
        return exact
    tau = (relative_temperature * exact.detach().abs()).clamp_min(1e-12).unsqueeze(dim)
    return (tau * torch.logsumexp(values / tau, dim=dim, keepdim=True)).squeeze(dim)
