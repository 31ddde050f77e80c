"""Cost of a supernet layer: expected under θ in the search, exact under an assignment.

``Σ_i Σ_j θin_i · w_j · f(p_i, p_j, Cin_eff, Cout_j)`` where, per layer, ``w_j = θ_j`` and
``Cout_j = Cout``; per channel, ``w_j = 1`` and ``Cout_j = Σ_c θ_{j,c}`` (each channel counted
once, see docs/algorithm.md#expected-cost). ``Cin_eff`` is the producer's non-pruned
channel mass (× the spatial size where a flatten sits between). 0-bit groups cost nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from mpsctl.cost.base import CostModel
from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.layers import SearchableLayer

ThetaFn = Callable[[PrecisionChoice], Tensor]


def expected_theta(choice: PrecisionChoice) -> Tensor:
    """θ of the current step (what the loss sees)."""
    return choice.theta()


def hard_theta(choice: PrecisionChoice) -> Tensor:
    """One-hot θ of the argmax assignment (what export produces)."""
    return choice.one_hot().to(_device(choice))


@functools.lru_cache(maxsize=256)
def _bits_tensor(bits: tuple[int, ...], device: torch.device) -> Tensor:
    """Candidate precisions as a float tensor, built once per (bits, device): the cost is
    evaluated every step and should not rebuild constants."""
    return torch.tensor(bits, dtype=torch.float32, device=device)


def _device(choice: PrecisionChoice) -> torch.device:
    source = choice.alpha if choice.alpha is not None else choice.fixed_index
    return source.device


def kept_channels(choice: PrecisionChoice, theta_fn: ThetaFn) -> Tensor:
    """Expected (or exact) number of output channels that are not pruned."""
    theta = theta_fn(choice)
    if not (choice.per_channel and choice.can_prune):
        return torch.tensor(float(choice.channels or 0), device=theta.device)
    return choice.channels - theta[0].sum()


def layer_cost(
    layer: SearchableLayer,
    model: CostModel,
    theta_fn: ThetaFn = expected_theta,
) -> Tensor:
    """Cost of one layer under ``model`` (expected, or exact with :func:`hard_theta`)."""
    cin_source = layer.cin_source
    geom = layer.geometry
    choice: PrecisionChoice = layer.choice
    slot = layer.input_slot
    theta_w = theta_fn(choice)
    theta_in = theta_fn(slot.choice)
    device = theta_w.device
    p_w = _bits_tensor(choice.bits, device)
    p_in = _bits_tensor(slot.bits, device).unsqueeze(1)
    producer = cin_source[0] if cin_source is not None else None
    if producer is None or not (producer.per_channel and producer.can_prune):
        # A producer that cannot prune (e.g. a per-layer choice, whose ``channels`` is None)
        # passes every channel: the layer's own static input count is exact.
        cin = torch.tensor(float(geom.cin), device=device)
    else:
        cin = kept_channels(producer, theta_fn) * cin_source[1]
    if choice.per_channel:
        weight = torch.ones_like(p_w)
        cout = theta_w.sum(1)
    else:
        weight = theta_w
        cout = torch.full_like(p_w, float(geom.cout))
    f = model.group_costs(geom, p_in, p_w.unsqueeze(0), cin, cout.unsqueeze(0))
    f = torch.broadcast_to(f, (len(slot.bits), len(choice.bits)))
    f = torch.where(p_w.unsqueeze(0) > 0, f, torch.zeros_like(f))
    weighted = theta_in.unsqueeze(1) * weight.unsqueeze(0) * f
    if choice.per_channel:
        # The groups of one layer: the model says how they add up (a sum, or a max where
        # the target runs them concurrently).
        total = model.combine_groups(weighted).sum()
    else:
        total = weighted.sum()
    if choice.per_channel and choice.can_prune:
        kept = kept_channels(choice, theta_fn)
    else:
        kept = torch.tensor(float(geom.cout), device=device)
    return total + model.layer_term(geom, cin, kept)


def exact_layer_cost(layer: SearchableLayer, model: CostModel) -> Tensor:
    """Exact cost of one layer at its argmax (or frozen) assignment, from the integer channel
    counts per precision (a DIANA-style maximum is exact here, smooth only in the search)."""
    choice: PrecisionChoice = layer.choice
    index = choice.assignment()
    if choice.per_channel:
        found = torch.bincount(index.detach().cpu().long(), minlength=len(choice.bits)).tolist()
        counts = {int(b): int(n) for b, n in zip(choice.bits, found, strict=True)}
    else:
        counts = {int(choice.bits[int(index)]): layer.geometry.cout}
    slot = layer.input_slot
    act_bits = int(slot.bits[int(slot.choice.assignment())])
    value = model.exact_layer_cost(layer.geometry, counts, layer.kept_in_channels(), act_bits)
    return torch.tensor(float(value), dtype=torch.float64)
