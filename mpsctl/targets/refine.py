"""Latency refinement of a per-channel precision assignment (docs/algorithm.md#refine-for-ne16).

NE16 computes output channels in tiles, so a partially filled tile wastes cycles: promoting a
few channels to a higher precision can make the layer *cheaper*. This module finds the
cheapest per-precision channel counts that promotions can reach, exactly, for any latency
function of the counts, decides which channels move, and applies that to every per-channel
choice of a supernet under a target's cost model (:func:`refine_supernet`). It knows nothing
of checkpoints or the CLI.

Which counts are reachable: channels only move to a *higher* non-zero precision and 0-bit
(pruned) channels stay where they are, so with the non-zero precisions in ascending order and
original counts ``n``, counts ``m`` are reachable exactly when every prefix sum of ``m`` is at
most that of ``n`` (no more channels at or below any precision than there were) and the
totals agree. The cheapest reachable counts are found by a dynamic programme over those prefix
sums when the latency is a sum of one term per precision group (:class:`Additive`, e.g. NE16:
one job per group), and by enumerating every reachable count vector otherwise (e.g. a target
whose groups run concurrently, where the layer takes the slowest).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mpsctl.cost.base import CostModel
from mpsctl.errors import UserError
from mpsctl.targets import catalog

if TYPE_CHECKING:  # the supernet imports the cost registry, which imports targets
    from mpsctl.search.supernet import Supernet


#: Latency of a layer given its output channels per precision, ``{bits: count}``.
LatencyFn = Callable[[dict[int, int]], float]

#: Most count vectors a non-additive latency is evaluated on before refine gives up.
ENUMERATION_LIMIT = 250_000


@dataclass(frozen=True)
class Additive:
    """A latency that is a sum of one term per precision group, ``Σ_b group(b, count_b)``.

    Declaring a latency additive lets refine find the optimum with a dynamic programme that
    evaluates ``group`` only ``(Cout + 1)`` times per precision, instead of enumerating every
    reachable count vector. ``group(b, 0)`` should normally be 0.
    """

    group: Callable[[int, int], float]

    def __call__(self, counts: dict[int, int]) -> float:
        return sum(self.group(int(b), int(n)) for b, n in counts.items())


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
    """Promote channels so that ``latency`` is the lowest that upward moves can reach.

    ``assign[c]`` indexes ``bits`` (any order, may contain 0); ``logits`` is ``(len(bits),
    Cout)`` and picks which channels move (see :func:`promote`). The counts are those of
    :func:`optimal_counts`: the original unless something is strictly cheaper, so refining a
    refined assignment changes nothing. No channel's precision decreases and 0-bit (pruned)
    channels never move in or out.
    """
    bit_list = [int(b) for b in bits]
    _validate(assign, bit_list, logits)
    target = optimal_counts(channel_counts(assign, bit_list), latency)
    return promote(assign, bit_list, logits, target)


def optimal_counts(counts: dict[int, int], latency: LatencyFn) -> dict[int, int]:
    """The cheapest channel counts reachable from ``counts`` by promotions (``{bits: n}``).

    Among equally cheap counts the one with the fewest weight bits wins, so the original
    (the fewest bits of all) is kept unless something is strictly cheaper.
    """
    groups = _Groups(counts)
    if groups.k < 2:
        return dict(counts)
    if isinstance(latency, Additive):
        best = _additive_optimum(groups, latency)
    else:
        best = _enumerated_optimum(groups, latency)
    candidate = groups.counts(best)
    return candidate if latency(candidate) < latency(dict(counts)) else dict(counts)


def heuristic_counts(counts: dict[int, int], latency: LatencyFn) -> dict[int, int]:
    """The counts the earlier two-pass heuristic reached (passes A and B of
    docs/algorithm.md#refine-for-ne16, repeated until a round finds nothing cheaper); kept to
    report what the exact search buys."""
    groups = _Groups(counts)
    current = list(groups.live_counts)
    while True:
        moves = _cheapest_moves(current, groups, latency)
        if not moves:
            return groups.counts(current)
        for src, dst, count in moves:
            current[src] -= count
            current[dst] += count


def promote(
    assign: Tensor, bits: Sequence[int], logits: Tensor, target: dict[int, int]
) -> Tensor:
    """Move channels upwards until the counts per precision are ``target``.

    Precisions that lose channels give them to precisions that gain (none does both).
    The gaining precisions are filled from the lowest up; each takes, among the channels the
    precisions below it still have to give, those with the highest logit for it (ties: the
    lower channel index).
    """
    bit_list = [int(b) for b in bits]
    original = channel_counts(assign, bit_list)
    groups = _Groups(original)
    if set(target) != set(original) or sum(target.values()) != sum(original.values()):
        raise ValueError(f"refine: target counts {target} do not match precisions {bit_list}")
    if target.get(0, 0) != original.get(0, 0):
        raise ValueError("refine: pruned (0-bit) channels cannot be moved")
    want = [target[b] for b in groups.live_bits]
    if not groups.reachable(want):
        raise ValueError(f"refine: {target} is not reachable from {original} by promotions")
    index_of = {b: i for i, b in enumerate(bit_list)}
    current = assign.detach().cpu().long().tolist()
    scores = logits.detach().cpu().float()
    give = {b: max(0, original[b] - target[b]) for b in groups.live_bits}
    for rank, dst in enumerate(groups.live_bits):
        need = target[dst] - original[dst]
        if need <= 0:
            continue
        sources = {index_of[b] for b in groups.live_bits[:rank] if give[b] > 0}
        candidates = [c for c, i in enumerate(current) if i in sources]
        row = scores[index_of[dst]].tolist()
        for c in sorted(candidates, key=lambda c: (-row[c], c)):
            src = bit_list[current[c]]
            if give[src] == 0:
                continue
            give[src] -= 1
            current[c] = index_of[dst]
            need -= 1
            if need == 0:
                break
    return torch.tensor(current, dtype=torch.long, device=assign.device)


# --------------------------------------------------------------------------- internals


class _Groups:
    """The non-zero precisions of a count dict in ascending order, and their counts."""

    def __init__(self, counts: dict[int, int]) -> None:
        bits = [int(b) for b in counts]
        if len(set(bits)) != len(bits):
            raise ValueError(f"refine: duplicate precisions in {bits}")
        if any(b < 0 for b in bits):
            raise ValueError(f"refine: negative precision in {bits}")
        if any(int(n) < 0 for n in counts.values()):
            raise ValueError(f"refine: negative channel count in {counts}")
        self.pruned = {b: int(n) for b, n in counts.items() if int(b) == 0}
        self.live_bits = sorted(b for b in bits if b != 0)
        self.live_counts = [int(counts[b]) for b in self.live_bits]
        self.k = len(self.live_bits)
        self.total = sum(self.live_counts)
        #: Channels at or below each precision originally: the most any reachable counts
        #: may have there.
        self.prefix = list(itertools.accumulate(self.live_counts))

    def counts(self, live: Sequence[int]) -> dict[int, int]:
        return {**self.pruned, **{b: int(n) for b, n in zip(self.live_bits, live, strict=True)}}

    def reachable(self, live: Sequence[int]) -> bool:
        if sum(live) != self.total or any(n < 0 for n in live):
            return False
        return all(p <= q for p, q in zip(itertools.accumulate(live), self.prefix, strict=True))

    def weight_bits(self, live: Sequence[int]) -> int:
        return sum(b * n for b, n in zip(self.live_bits, live, strict=True))


def _additive_optimum(groups: _Groups, latency: Additive) -> list[int]:
    """Dynamic programme over prefix sums ``P_t`` (channels in the lowest ``t`` groups).

    ``cost[P]`` is the cheapest way to place ``P`` channels in the groups seen so far, with
    ``size[P]`` (weight bits) breaking ties; a group adds ``m`` channels for ``group(b, m)``.
    """
    total = groups.total
    cost = np.zeros(1)
    size = np.zeros(1)
    back: list[np.ndarray] = []
    for t, bits in enumerate(groups.live_bits):
        last = t == groups.k - 1
        # A group holds at most the channels originally at or below it.
        most = total if last else groups.prefix[t]
        values = np.array([float(latency.group(bits, m)) for m in range(most + 1)])
        before = np.arange(cost.size)[:, None]  # P_t
        after = np.array([[total]]) if last else np.arange(most + 1)[None, :]  # P_{t+1}
        added = after - before
        valid = added >= 0
        trial = np.where(valid, cost[:, None] + values[np.clip(added, 0, most)], np.inf)
        trial_size = np.where(valid, size[:, None] + bits * added, np.inf)
        best = trial.min(axis=0)
        tied = np.where(trial == best[None, :], trial_size, np.inf)
        choice = tied.argmin(axis=0)
        back.append(choice)
        cols = np.arange(after.size)
        cost, size = trial[choice, cols], trial_size[choice, cols]
    live = [0] * groups.k
    position = total
    for t in range(groups.k - 1, -1, -1):
        previous = int(back[t][0 if t == groups.k - 1 else position])
        live[t] = position - previous
        position = previous
    return live


def _enumerated_optimum(groups: _Groups, latency: LatencyFn) -> list[int]:
    """Every reachable count vector, evaluated (for latencies that are not additive)."""
    size = _reachable_size(groups)
    if size > ENUMERATION_LIMIT:
        raise ValueError(
            f"refine: {size:,} reachable channel counts are too many to enumerate; "
            "declare the latency as refine.Additive if it is a sum over precision groups"
        )
    best_key: tuple[float, int] | None = None
    best: list[int] = list(groups.live_counts)
    for live in _reachable(groups):
        key = (latency(groups.counts(live)), groups.weight_bits(live))
        if best_key is None or key < best_key:
            best_key, best = key, live
    return best


def _reachable(groups: _Groups):
    """Yield every reachable count vector (lowest precision first)."""

    def extend(t: int, placed: int, prefix: list[int]):
        if t == groups.k - 1:
            yield [*prefix, groups.total - placed]
            return
        for m in range(groups.prefix[t] - placed + 1):
            yield from extend(t + 1, placed + m, [*prefix, m])

    yield from extend(0, 0, [])


def _reachable_size(groups: _Groups) -> int:
    """How many count vectors :func:`_reachable` yields (a count over prefix sums)."""
    ways = [1]  # ways[P]: prefixes of the groups so far summing to P
    for t in range(groups.k - 1):
        reach = groups.prefix[t]
        ways = list(itertools.accumulate(ways + [0] * (reach + 1 - len(ways))))[: reach + 1]
    return sum(ways)


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


def _cheapest_moves(
    counts: list[int], groups: _Groups, latency: LatencyFn
) -> list[tuple[int, int, int]]:
    """Moves ``(src, dst, count)`` between live groups reaching the strictly cheapest
    configuration of passes A and B ([] if none)."""

    def cost(live: list[int]) -> float:
        return latency(groups.counts(live))

    best_cost = cost(counts)
    best: list[tuple[int, int, int]] = []
    pairs = [(i, j) for i in range(groups.k) for j in range(i + 1, groups.k)]
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


def refine_supernet(
    net: Supernet, model: CostModel, budgets: Mapping[str, float] | None = None
) -> tuple[list[str], list[str], dict[str, float | int]]:
    """Refine every per-channel choice in place under ``model`` (frozen afterwards).

    Each choice is refined on the summed cost of every layer that shares it. Promotions
    add weight bits, so with ``budgets`` (``{cost: bound}``, e.g. the search's
    ``params_bit`` budget) a choice whose refinement would take the model over a bound
    stays as searched. Returns the refined and the left-alone choice names (per-layer
    choices, and per-channel ones held back by a budget), and each layer's cost at the
    counts the earlier two-pass heuristic reaches (to report what the exact search buys).
    """
    members: dict[int, list] = {}
    for name, layer in net.layers():
        members.setdefault(id(layer.choice), []).append((name, layer))
    refined, skipped = [], []
    heuristic = exact_layer_costs(net, model)
    for name, choice in list(net.choices()):
        if not name.startswith("weight.") or not choice.per_channel:
            choice.freeze()
            if name.startswith("weight."):
                skipped.append(name)
            continue
        named = members.get(id(choice), [])
        layers = [layer for _, layer in named]
        cins = [layer.kept_in_channels() for layer in layers]
        acts = [_act_bits(layer) for layer in layers]

        def latency(counts: dict[int, int], layers=layers, cins=cins, acts=acts) -> float:
            return sum(model.exact_layer_cost(layer.geometry, counts, cin, act)
                       for layer, cin, act in zip(layers, cins, acts, strict=True))

        if model.groups_add_up:
            latency = Additive(lambda bits, count, latency=latency: latency({bits: count}))
        before = choice.assignment()
        old = heuristic_counts(channel_counts(before, choice.bits), latency)
        for (layer_name, layer), cin, act in zip(named, cins, acts, strict=True):
            heuristic[layer_name] = model.exact_layer_cost(layer.geometry, old, cin, act)
        # A refined (frozen) choice has no logits left; its one-hot serves, and a second
        # refine finds nothing to move anyway.
        logits = choice.alpha.detach() if choice.alpha is not None else choice.one_hot()
        after = refine_channel_assignment(before, choice.bits, logits, latency)
        choice.freeze(after)
        if budgets and any(float(net.cost(cost, hard=True)) > bound
                           for cost, bound in budgets.items()):
            choice.freeze(before)
            skipped.append(name)
            continue
        refined.append(name)
    return refined, skipped, heuristic


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
