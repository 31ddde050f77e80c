"""L1-norm channel pruning to a budget: the prune-then-quantize baseline a search must beat.

Every prunable layer keeps the same share of its output channels (at least ``min_keep``),
those whose weights have the largest L1 norm (Li et al., "Pruning Filters for Efficient
ConvNets", ICLR 2017); the share is the largest one whose exact cost fits every budget.
Kept channels and all other choices take their highest candidate precision, so in a space
with weight bits ``[0, p]`` the result is uniform ``p``-bit weights with pruned channels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mpsctl.search.budget import Assignment, AssignmentCosts
from mpsctl.search.supernet import Supernet

_STEPS = 40


def channel_l1(net: Supernet) -> dict[str, Tensor]:
    """L1 norm of each output channel's weights, summed over the layers sharing a choice."""
    names = {id(c): n for n, c in net.choices()}
    out: dict[str, Tensor] = {}
    for _, layer in net.layers():
        choice = layer.choice
        if not (choice.per_channel and choice.can_prune):
            continue
        w = layer.weight.detach().cpu()
        norms = w.abs().reshape(w.shape[0], -1).sum(1)
        name = names[id(choice)]
        out[name] = out.get(name, torch.zeros_like(norms)) + norms
    return out


def _assignment(net: Supernet, norms: Mapping[str, Tensor], share: float) -> Assignment:
    out = {}
    for name, choice in net.choices():
        top = len(choice.bits) - 1
        if choice.is_fixed:
            out[name] = choice.assignment().cpu().clone()
        elif name in norms:
            keep = max(min(choice.min_keep, choice.channels), round(share * choice.channels))
            index = torch.zeros(choice.channels, dtype=torch.long)
            index[norms[name].topk(keep).indices] = top
            out[name] = index
        elif choice.per_channel:
            out[name] = torch.full((choice.channels,), top, dtype=torch.long)
        else:
            out[name] = torch.tensor(top, dtype=torch.long)
    return out


def l1_pruned_assignment(
    net: Supernet, budgets: Mapping[str, float]
) -> tuple[Assignment, float] | None:
    """The assignment keeping the largest uniform share of channels (by L1 norm) whose cost
    fits ``budgets``, and that share; None when even ``min_keep`` channels do not fit."""
    norms = channel_l1(net)
    costs = AssignmentCosts(net, list(budgets))

    def fits(share: float) -> bool:
        total = costs.total(_assignment(net, norms, share))
        return all(total[b] <= v for b, v in budgets.items())

    if fits(1.0):
        return _assignment(net, norms, 1.0), 1.0
    if not fits(0.0):
        return None
    low, high = 0.0, 1.0
    for _ in range(_STEPS):
        mid = (low + high) / 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return _assignment(net, norms, low), low


def freeze(net: Supernet, assignment: Assignment) -> None:
    """Fix every choice of ``net`` at ``assignment`` (no logits left to train)."""
    for name, choice in net.choices():
        choice.freeze(assignment[name].to(_device(choice)))


def _device(choice) -> torch.device:
    return choice.alpha.device if choice.alpha is not None else choice.fixed_index.device
