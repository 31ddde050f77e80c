"""Cost of a supernet layer: expected under θ in the search, exact under an assignment.

``Σ_i Σ_j θin_i · w_j · f(p_i, p_j, Cin_eff, Cout_j)`` where, per layer, ``w_j = θ_j`` and
``Cout_j = Cout``; per channel, ``w_j = 1`` and ``Cout_j = Σ_c θ_{j,c}`` (each channel counted
once, see docs/algorithm.md#expected-cost). ``Cin_eff`` is the producer's non-pruned
channel mass (× the spatial size where a flatten sits between). 0-bit groups cost nothing.

Where a layer's input channels and its output channels are one choice (a pointwise conv in a
depthwise→pointwise→add group, ``conv(x) + x``), they are not independent: a channel kept at
the output is also kept at the input. The product of the two expectations then undercounts;
the layer gets, per weight group ``j``, the exact ``E[Cin · n_j] / E[n_j]`` instead (``n_j``
the channels at precision ``j``), which makes costs bilinear in (Cin, Cout), like
``params_bit`` and ``bitops``, equal to their expectation over channels sampled from θ.

Hard costs (one-hot θ) are counted in float64, so that they are exact integers for any layer
a model can have (float32 is off by thousands at 1e12 bit-operations).
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
    """One-hot θ of the argmax assignment (what export produces), in float64."""
    return choice.one_hot().to(_device(choice), torch.float64)


@functools.lru_cache(maxsize=256)
def _bits_tensor(bits: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Candidate precisions as a float tensor, built once per (bits, device, dtype): the cost
    is evaluated every step and should not rebuild constants."""
    return torch.tensor(bits, dtype=dtype, device=device)


def _device(choice: PrecisionChoice) -> torch.device:
    source = choice.alpha if choice.alpha is not None else choice.fixed_index
    return source.device


def kept_channels(choice: PrecisionChoice, theta_fn: ThetaFn) -> Tensor:
    """Expected (or exact) number of output channels that are not pruned."""
    theta = theta_fn(choice)
    if not (choice.per_channel and choice.can_prune):
        return torch.tensor(float(choice.channels or 0), device=theta.device, dtype=theta.dtype)
    return choice.channels - theta[0].sum()


def shared_input_channels(theta: Tensor) -> Tensor:
    """``E[kept · n_j] / E[n_j]`` per precision ``j`` (shape ``(n,)``), where one per-channel
    pruning choice θ ``(n, C)`` (0 bits first) gives both a layer's input and output channels.

    With ``q_c = 1 - θ_{0,c}`` and channels drawn independently,
    ``E[kept · n_j] = Σ_c θ_{j,c} (Σ_{c'≠c} q_{c'} + [j ≠ 0])``: a channel counted at a
    non-zero precision is itself kept. Where ``E[n_j] = 0`` this is the plain ``E[kept]``.
    """
    keep = 1 - theta[0]
    total = keep.sum()
    mass = theta.sum(1)
    live = torch.ones_like(mass)
    live[0] = 0
    joint = total * mass - (theta * keep).sum(1) + live * mass
    return torch.where(mass > 0, joint / mass.clamp_min(1e-30), total.expand_as(mass))


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
    device, dtype = theta_w.device, theta_w.dtype
    p_w = _bits_tensor(choice.bits, device, dtype)
    p_in = _bits_tensor(slot.bits, device, dtype).unsqueeze(1)
    producer = cin_source[0] if cin_source is not None else None
    if producer is None or not (producer.per_channel and producer.can_prune):
        # A producer that cannot prune (e.g. a per-layer choice, whose ``channels`` is None)
        # passes every channel: the layer's own static input count is exact.
        cin = torch.tensor(float(geom.cin), device=device, dtype=dtype)
    elif producer is choice:
        cin = (shared_input_channels(theta_w) * cin_source[1]).unsqueeze(0)
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
