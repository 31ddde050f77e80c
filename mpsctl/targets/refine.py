"""Latency refinement of a per-channel precision assignment (docs/algorithm.md#refine-for-ne16).

NE16 computes output channels in tiles, so a partially filled tile wastes cycles: promoting a
few channels to a higher precision can make the layer *cheaper*. This module searches such
promotions in integer channel counts, for any latency function of the counts, decides which
channels move, and applies that to every per-channel choice of a supernet under a target's
cost model (:func:`refine_supernet`). It knows nothing of checkpoints or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mpsctl.cost.base import CostModel
from mpsctl.errors import UserError
from mpsctl.targets import catalog

if TYPE_CHECKING:  # the supernet imports the cost registry, which imports targets
    from mpsctl.search.supernet import Supernet


#: Latency of a layer given its output channels per precision, ``{bits: count}``.
LatencyFn = Callable[[dict[int, int]], int]

#: One promotion step: ``count`` channels from sorted index ``src`` to sorted index ``dst``.
Move = tuple[int, int, int]


def channel_counts(assign: Tensor, bits: Sequence[int]) -> dict[int, int]:
    """Output channels per precision, ``{bits[i]: count}``, every candidate listed (even 0)."""
    counts = torch.bincount(assign.detach().cpu().long(), minlength=len(bits)).tolist()
    return {int(b): int(n) for b, n in zip(bits, counts, strict=True)}


def refine_channel_assignment(
    assign: Tensor,
    bits: Sequence[int],
    logits: Tensor,
    latency: LatencyFn,
) -> Tensor:
    """Promote channels to higher precisions where that strictly lowers ``latency``.

    ``assign[c]`` indexes ``bits`` (any order, may contain 0); ``logits`` is ``(len(bits),
    Cout)`` and picks which channels move: within a source precision, those with the highest
    logit for the destination (ties: lower channel index). Each round runs pass A
    and pass B from the current counts and applies the strictly cheapest configuration seen;
    rounds repeat until one finds nothing cheaper, so refining a refined assignment is a no-op.
    No channel's precision decreases and 0-bit (pruned) channels never move in or out.
    """
    bit_list = [int(b) for b in bits]
    _validate(assign, bit_list, logits)
    order = sorted(range(len(bit_list)), key=bit_list.__getitem__)
    rank = [0] * len(order)
    for position, index in enumerate(order):
        rank[index] = position
    sorted_bits = [bit_list[i] for i in order]
    sorted_logits = logits.detach().cpu()[order]
    current = torch.tensor(rank, dtype=torch.long)[assign.detach().cpu().long()]
    while True:
        counts = torch.bincount(current, minlength=len(order)).tolist()
        moves = _cheapest_moves(counts, sorted_bits, latency)
        if not moves:
            break
        current = _apply_moves(current, moves, sorted_logits)
    result = torch.tensor(order, dtype=torch.long)[current]
    return result.to(assign.device)


def _validate(assign: Tensor, bits: list[int], logits: Tensor) -> None:
    if len(set(bits)) != len(bits):
        raise ValueError(f"refine: duplicate precisions in {bits}")
    if any(b < 0 for b in bits):
        raise ValueError(f"refine: negative precision in {bits}")
    if assign.dim() != 1:
        raise ValueError(f"refine: assignment must be 1-D (Cout,), got shape {tuple(assign.shape)}")
    if assign.is_floating_point() or assign.dtype == torch.bool:
        raise ValueError(f"refine: assignment must hold integer indices, got {assign.dtype}")
    if assign.numel() and (int(assign.min()) < 0 or int(assign.max()) >= len(bits)):
        raise ValueError(f"refine: assignment indices must lie in [0, {len(bits)})")
    if tuple(logits.shape) != (len(bits), assign.numel()):
        raise ValueError(
            f"refine: logits must have shape ({len(bits)}, {assign.numel()}), "
            f"got {tuple(logits.shape)}"
        )


def _pairs(sorted_bits: list[int]) -> list[tuple[int, int]]:
    """Every (lower, higher) pair of non-zero precisions, outer loop over the lower one."""
    live = [i for i, b in enumerate(sorted_bits) if b != 0]
    return [(i, j) for n, i in enumerate(live) for j in live[n + 1 :]]


def _cheapest_moves(counts: list[int], sorted_bits: list[int], latency: LatencyFn) -> list[Move]:
    """The moves reaching the strictly cheapest configuration of passes A and B ([] if none)."""

    def cost(c: list[int]) -> int:
        return latency(dict(zip(sorted_bits, c, strict=True)))

    best_cost = cost(counts)
    best: list[Move] = []
    pairs = _pairs(sorted_bits)
    for i, j in pairs:  # pass A: each pair from the original counts
        trial = list(counts)
        for moved in range(1, counts[i] + 1):
            trial[i] -= 1
            trial[j] += 1
            value = cost(trial)
            if value < best_cost:
                best_cost, best = value, [(i, j, moved)]
    trial, done = list(counts), []
    for i, j in pairs:  # pass B: the same loop, cascading
        moved = 0
        while trial[i] > 0:
            trial[i] -= 1
            trial[j] += 1
            moved += 1
            value = cost(trial)
            if value < best_cost:
                best_cost, best = value, [*done, (i, j, moved)]
        if moved:
            done.append((i, j, moved))
    return best


def _apply_moves(current: Tensor, moves: list[Move], logits: Tensor) -> Tensor:
    """Move channels: per step, the source's channels most inclined to the destination."""
    current = current.clone()
    for src, dst, count in moves:
        candidates = (current == src).nonzero().flatten().tolist()
        scores = logits[dst].tolist()
        chosen = sorted(candidates, key=lambda c: (-scores[c], c))[:count]
        current[chosen] = dst
    return current


def _act_bits(layer) -> int:
    """The precision of the activations a layer reads, at the current assignment."""
    slot = layer.input_slot
    return slot.bits[int(slot.choice.assignment())]


def exact_layer_costs(net: Supernet, model: CostModel) -> dict[str, float | int]:
    """Exact cost of every layer under ``model`` at the current (argmax or frozen) assignment."""
    out = {}
    for name, layer in net.layers():
        choice = layer.choice
        index = choice.assignment()
        if choice.per_channel:
            counts = channel_counts(index, choice.bits)
        else:
            counts = {choice.bits[int(index)]: layer.geometry.cout}
        out[name] = model.exact_layer_cost(layer.geometry, counts, layer.kept_in_channels(),
                                           _act_bits(layer))
    return out


def refine_supernet(net: Supernet, model: CostModel) -> tuple[list[str], list[str]]:
    """Refine every per-channel choice in place under ``model`` (frozen afterwards); returns
    refined and left-alone choice names."""
    members: dict[int, list] = {}
    for _, layer in net.layers():
        members.setdefault(id(layer.choice), []).append(layer)
    refined, skipped = [], []
    for name, choice in list(net.choices()):
        if not name.startswith("weight.") or not choice.per_channel:
            choice.freeze()
            if name.startswith("weight."):
                skipped.append(name)
            continue
        layers = members.get(id(choice), [])
        cins = [layer.kept_in_channels() for layer in layers]
        acts = [_act_bits(layer) for layer in layers]

        def latency(counts: dict[int, int], layers=layers, cins=cins, acts=acts) -> int:
            return sum(model.exact_layer_cost(layer.geometry, counts, cin, act)
                       for layer, cin, act in zip(layers, cins, acts, strict=True))

        before = choice.assignment()
        # A refined (frozen) choice has no logits left; its one-hot serves, and a second
        # refine finds nothing to move anyway.
        logits = choice.alpha.detach() if choice.alpha is not None else choice.one_hot()
        after = refine_channel_assignment(before, choice.bits, logits, latency)
        choice.freeze(after)
        refined.append(name)
    return refined, skipped


def latency_model(target: str, targets: dict[str, str], net: Supernet) -> CostModel:
    """The latency model refine minimises for ``target`` (built in, or one of the recipe's
    YAML ``targets``), with the recipe's constants; a UserError when the target is unknown
    or promoting channels cannot make it faster (which targets can: :mod:`catalog`)."""
    found = catalog.get_target(target, targets)
    if found is None:
        names = [*catalog.BUILTIN, *(n for n in targets if n not in catalog.BUILTIN)]
        raise UserError(f"--target: unknown target '{target}' (available: {', '.join(names)})")
    catalog.refuse_unrefinable(found, found.load(targets.get(target)))
    return net.cost_model(found.costs[0])
