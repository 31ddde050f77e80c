"""Cost budgets: exact costs of any assignment, the adaptive strength that steers the search
toward a budget, and the projection that makes the exported model meet it.

Plain numbers only: the recipe layer turns ``24KiB`` or ``10%`` into a :class:`Budget`.

- :class:`AssignmentCosts` prices an assignment (an index into each choice's ``bits``)
  exactly, layer by layer, so that changing one choice re-prices only the layers it touches.
- :class:`DualAscent` adds ``Σ_b λ_b · cost_b / budget_b`` to the search loss and moves
  ``log λ_b`` after every step by ``rate / steps_per_epoch · log(cost_b / budget_b)`` (the
  log clipped to ±1, ``rate`` 0.5, more for short searches: :func:`rate_for`): up while the
  model is over budget, down while it is under, by at most a factor e^rate per epoch. The
  cost followed is the expected one by default: it moves smoothly with the logits, while
  the argmax cost jumps when the channels of a layer (all starting from the same logits)
  flip together; at the search's low final temperatures the two agree.
  ``λ`` starts at a hundredth of the strength whose gradient on the logits is as large as
  the task loss's on the first batch (one batch's gradient is mostly noise that Adam
  averages away; its steady part is far smaller).
- :func:`project` changes the argmax assignment until every budget holds. It lowers, one
  channel (or one per-layer choice) at a time, the choice whose logit margin over the
  lower candidate is smallest per unit of excess cost it removes: the search was least sure
  of it, and it buys the most. When the result uses less than ``fill`` of its binding
  budget, it then promotes the least-confident choices (smallest margin to a higher
  candidate) as long as every budget still holds, and where no promotion fits, trades one
  for cheaper ones (kept only when the budget ends up better used). Kept channels are
  promoted first; pruned channels are revived only when that cannot reach ``fill``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mpsctl.search.choice import PrecisionChoice
from mpsctl.search.expected import layer_cost
from mpsctl.search.supernet import Supernet

Assignment = dict[str, Tensor]

#: The exported model should use at least this share of its tightest budget.
DEFAULT_FILL = 0.95


@dataclass(frozen=True)
class Budget:
    """An upper bound on one cost: absolute, or a fraction of the highest-precision model."""

    cost: str
    amount: float
    relative: bool = False

    def resolve(self, highest: float) -> float:
        """The bound in the cost's own unit, given the cost of the highest-precision model."""
        return self.amount * highest if self.relative else self.amount


# ----------------------------------------------------------------------- assignments


def lowest_assignment(net: Supernet) -> Assignment:
    """The cheapest model the space can express: every choice at its lowest precision, and
    where 0 bits prunes, only ``min_keep`` channels left (at the lowest non-zero precision).
    Every cost is monotone in channel counts and bits, so this is the minimum of each."""
    return {
        name: choice.assignment().cpu().clone() if choice.is_fixed else _lowest_for(choice)
        for name, choice in net.choices()
    }


def highest_assignment(net: Supernet) -> Assignment:
    """Every choice at its highest precision, every channel kept (what ``10%`` refers to)."""
    out = {}
    for name, choice in net.choices():
        top = len(choice.bits) - 1
        if choice.is_fixed:
            out[name] = choice.assignment().clone()
        elif choice.per_channel:
            out[name] = torch.full((choice.channels,), top, dtype=torch.long)
        else:
            out[name] = torch.tensor(top, dtype=torch.long)
    return out


def argmax_assignment(net: Supernet) -> Assignment:
    return {name: choice.assignment().detach().cpu().clone() for name, choice in net.choices()}


class AssignmentCosts:
    """Exact costs of arbitrary assignments of ``net``'s choices under the named cost models."""

    def __init__(self, net: Supernet, names: list[str] | tuple[str, ...]) -> None:
        self.net = net
        self.names = tuple(names)
        self._models = {n: net.cost_model(n) for n in self.names}
        self._layers = dict(net.layers())
        self._choice_name = {id(c): n for n, c in net.choices()}
        #: choice name → the layers whose cost depends on it (own weights, input
        #: activations, or input channels it prunes).
        self.touches: dict[str, list[str]] = {n: [] for n, _ in net.choices()}
        for lname, layer in self._layers.items():
            deps = {id(layer.choice), id(layer.input_slot.choice)}
            if layer.cin_source is not None:
                deps.add(id(layer.cin_source[0]))
            for dep in deps:
                if dep in self._choice_name:
                    self.touches[self._choice_name[dep]].append(lname)

    def layer(self, name: str, assignment: Assignment) -> dict[str, float]:
        layer = self._layers[name]

        def theta(choice: PrecisionChoice) -> Tensor:
            return choice.one_hot(assignment[self._choice_name[id(choice)]].cpu())

        with torch.no_grad():
            return {c: float(layer_cost(layer, m, theta)) for c, m in self._models.items()}

    def per_layer(self, assignment: Assignment) -> dict[str, dict[str, float]]:
        return {name: self.layer(name, assignment) for name in self._layers}

    def total(self, assignment: Assignment) -> dict[str, float]:
        return _sum(self.per_layer(assignment), self.names)


def _sum(per_layer: Mapping[str, Mapping[str, float]], names: tuple[str, ...]) -> dict[str, float]:
    return {c: sum(row[c] for row in per_layer.values()) for c in names}


def cost_range(net: Supernet, names: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """``{cost: (lowest reachable, highest-precision model)}`` of ``net``'s search space."""
    costs = AssignmentCosts(net, names)
    low, high = costs.total(lowest_assignment(net)), costs.total(highest_assignment(net))
    return {n: (low[n], high[n]) for n in costs.names}


# ----------------------------------------------------------------------- projection


@dataclass(frozen=True)
class Projection:
    """The projected assignment, its exact costs and what changed against the argmax."""

    assignment: Assignment
    costs: dict[str, float]
    lowered: int
    promoted: int


@dataclass(frozen=True)
class _Move:
    choice: str
    channel: int | None
    src: int
    dst: int
    margin: float


def _excess(costs: Mapping[str, float], budgets: Mapping[str, float]) -> float:
    return sum(max(0.0, costs[b] / budgets[b] - 1.0) for b in budgets)


def _usage(costs: Mapping[str, float], budgets: Mapping[str, float]) -> float:
    return max(costs[b] / budgets[b] for b in budgets)


class _Projector:
    def __init__(self, net: Supernet, budgets: Mapping[str, float]) -> None:
        self.budgets = dict(budgets)
        self.costs = AssignmentCosts(net, list(budgets))
        self.choices = {n: c for n, c in net.choices() if not c.is_fixed and len(c.bits) > 1}
        self.assignment = argmax_assignment(net)
        self.layer_costs = self.costs.per_layer(self.assignment)
        #: (choice, channel) pairs that lower() must not move
        self.locked: set[tuple[str, int | None]] = set()

    def total(self) -> dict[str, float]:
        return _sum(self.layer_costs, self.costs.names)

    def moves(
        self, name: str, down: bool, skip: frozenset | set = frozenset(), revive: bool = False
    ) -> list[_Move]:
        """For each (current → target) precision pair of a choice, the least-confident
        channel that could make it (logit margin of current over target smallest), leaving
        out the (choice, channel, target) triples in ``skip``. Upward moves leave pruned
        channels pruned unless ``revive``: their weights were not trained to be used."""
        choice = self.choices[name]
        index = self.assignment[name]
        alpha = choice.alpha.detach().cpu()
        out = []
        n = len(choice.bits)
        for src in sorted({int(i) for i in index.flatten()}):
            if not down and src == 0 and choice.per_channel and choice.can_prune and not revive:
                continue
            targets = range(src) if down else range(src + 1, n)
            for dst in targets:
                if not choice.per_channel:
                    if (name, None, dst) not in skip and (name, None) not in self.locked:
                        out.append(_Move(name, None, src, dst, float(alpha[src] - alpha[dst])))
                    continue
                if dst == 0 and choice.can_prune:
                    alive = int((index != 0).sum())
                    if alive <= min(choice.min_keep, choice.channels):
                        continue
                margin = (alpha[src] - alpha[dst]).masked_fill(index != src, math.inf)
                for key in (*skip, *self.locked):
                    if key[0] == name and key[1] is not None and (len(key) == 2 or key[2] == dst):
                        margin[key[1]] = math.inf
                channel = int(margin.argmin())
                if math.isfinite(float(margin[channel])):
                    out.append(_Move(name, channel, src, dst, float(margin[channel])))
        return out

    def priced(self, move: _Move) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Total costs after ``move`` and the re-priced layers."""
        trial = dict(self.assignment)
        trial[move.choice] = self._moved(move)
        changed = {layer: self.costs.layer(layer, trial) for layer in self.costs.touches[
            move.choice]}
        totals = _sum({**self.layer_costs, **changed}, self.costs.names)
        return totals, changed

    def _moved(self, move: _Move) -> Tensor:
        index = self.assignment[move.choice].clone()
        if move.channel is None:
            index.fill_(move.dst)
        else:
            index[move.channel] = move.dst
        return index

    def apply(self, move: _Move, changed: dict[str, dict[str, float]]) -> None:
        self.assignment[move.choice] = self._moved(move)
        self.layer_costs.update(changed)

    def lower(self, tight: bool = False) -> int:
        """Lower least-confident choices until every budget holds; returns the moves made.
        ``tight`` first avoids steps that would land below the budget (small steps until one
        just fits), at the price of more of them."""
        made = 0
        current = self.total()
        while _excess(current, self.budgets) > 0:
            excess = _excess(current, self.budgets)
            best = None
            for name in self.choices:
                for move in self.moves(name, down=True):
                    totals, changed = self.priced(move)
                    gain = excess - _excess(totals, self.budgets)
                    if gain <= 1e-12:
                        continue
                    key = (max(move.margin, 0.0) / gain, -gain)
                    if tight:
                        below = 0.0 if gain < excess else 1.0 - _usage(totals, self.budgets)
                        key = (below, *key)
                    if best is None or key < best[0]:
                        best = (key, move, totals, changed)
            if best is None:
                current = self._collapse(excess)
            else:
                _, move, current, changed = best
                self.apply(move, changed)
            made += 1
        return made

    def _collapse(self, excess: float) -> dict[str, float]:
        """No single step helps (a cost that is not monotone per channel): move the whole
        choice whose cheapest setting removes the most excess there; returns the new costs."""
        best = None
        for name, choice in self.choices.items():
            target = _lowest_for(choice)
            if torch.equal(target, self.assignment[name]):
                continue
            trial = {**self.assignment, name: target}
            changed = {layer: self.costs.layer(layer, trial) for layer in self.costs.touches[name]}
            totals = _sum({**self.layer_costs, **changed}, self.costs.names)
            gain = excess - _excess(totals, self.budgets)
            if gain > 1e-12 and (best is None or gain > best[0]):
                best = (gain, name, target, totals, changed)
        if best is None:
            raise ValueError("budget cannot be met from this assignment")
        _, name, target, totals, changed = best
        self.assignment[name] = target
        self.layer_costs.update(changed)
        return totals

    def promote(self, fill: float, revive: bool = False) -> int:
        """Raise least-confident choices while the tightest budget is used below ``fill``
        (reviving pruned channels only if ``revive``)."""
        made = 0
        current = self.total()
        while _usage(current, self.budgets) < fill:
            best = None
            for name in self.choices:
                for move in self.moves(name, down=False, revive=revive):
                    totals, changed = self.priced(move)
                    if any(totals[b] > v for b, v in self.budgets.items()):
                        continue
                    added = max(totals[b] / v - current[b] / v for b, v in self.budgets.items())
                    if added <= 0:
                        continue
                    key = (move.margin, added)
                    if best is None or key < best[0]:
                        best = (key, move, totals, changed)
            if best is None:
                break
            _, move, current, changed = best
            self.apply(move, changed)
            made += 1
        return made


    def exchange(self, fill: float, attempts: int = 32, revive: bool = False) -> int:
        """Where no single promotion fits: promote anyway (least-confident first), then lower
        other choices until the budgets hold again; keep the trade when the tightest budget
        ends up better used, else undo it. Returns the moves kept."""
        made = 0
        tried: set[tuple[str, int | None, int]] = set()
        for _ in range(attempts):
            before = _usage(self.total(), self.budgets)
            if before >= fill:
                break
            ups = [m for name in self.choices for m in self.moves(name, False, tried, revive)]
            if not ups:
                break
            move = min(ups, key=lambda m: m.margin)
            tried.add((move.choice, move.channel, move.dst))
            saved = ({k: v.clone() for k, v in self.assignment.items()}, dict(self.layer_costs))
            _, changed = self.priced(move)
            self.apply(move, changed)
            self.locked.add((move.choice, move.channel))
            try:
                lowered = self.lower(tight=True)
            except ValueError:
                lowered = None
            self.locked.clear()
            if lowered is not None and _usage(self.total(), self.budgets) > before + 1e-12:
                made += 1 + lowered + self.promote(fill, revive)
            else:
                self.assignment, self.layer_costs = saved
        return made


def _lowest_for(choice: PrecisionChoice) -> Tensor:
    if choice.per_channel and choice.can_prune:
        index = torch.zeros(choice.channels, dtype=torch.long)
        index[: min(choice.min_keep, choice.channels)] = 1
        return index
    if choice.per_channel:
        return torch.zeros(choice.channels, dtype=torch.long)
    return torch.zeros((), dtype=torch.long)


def project(net: Supernet, budgets: Mapping[str, float], fill: float = DEFAULT_FILL) -> Projection:
    """The assignment closest to ``net``'s argmax whose exact costs are within ``budgets``
    (``{cost: bound}``) and, where the space allows, use at least ``fill`` of the tightest.

    Raises ``ValueError`` when a budget is below the cheapest model the space can express.
    """
    projector = _Projector(net, budgets)
    lowest = projector.costs.total(lowest_assignment(net))
    short = [b for b, v in budgets.items() if lowest[b] > v]
    if short:
        raise ValueError(
            "budget below the cheapest model: "
            + ", ".join(f"{b} {lowest[b]:,.0f} > {budgets[b]:,.0f}" for b in short)
        )
    lowered = projector.lower()
    promoted = 0
    # Raise the precision of kept channels first; revive pruned ones only where that alone
    # cannot fill the budget: the search trained them to be dropped, and in the sweep,
    # models whose projection revived them first lost much of their accuracy.
    for revive in (False, True):
        promoted += projector.promote(fill, revive)
        promoted += projector.exchange(fill, revive=revive)
    return Projection(projector.assignment, projector.total(), lowered, promoted)


def apply_assignment(net: Supernet, assignment: Assignment) -> int:
    """Make ``assignment`` the argmax of ``net``'s logits by swapping, per changed channel,
    the logit of the old choice with that of the new one (the logits keep their values, so
    the margins stay readable). Returns the number of channels (or layers) changed."""
    changed = 0
    with torch.no_grad():
        for name, choice in net.choices():
            if choice.is_fixed:
                continue
            new = assignment[name].to(torch.long).to(choice.alpha.device)
            changed += int((choice.assignment() != new).sum())
            alpha = choice.alpha
            top = alpha.argmax(dim=0)
            if not choice.per_channel:
                a, b = int(top), int(new)
                alpha[[a, b]] = alpha[[b, a]].clone()
            else:
                # also the channels min_keep revived (kept although their argmax is 0)
                for c in torch.nonzero(top != new).flatten().tolist():
                    a, b = int(top[c]), int(new[c])
                    alpha[[a, b], c] = alpha[[b, a], c].clone()
            if not torch.equal(choice.assignment(), new):
                raise RuntimeError(f"could not make the projected assignment of {name} its argmax")
    return changed


# ----------------------------------------------------------------------- dual ascent


#: ``log λ`` stays within these bounds (λ from about 2e-9 to 5e8).
_LOG_BOUNDS = (-20.0, 20.0)

#: However short the search, λ can move by this factor over it (three orders of magnitude).
STRENGTH_RANGE = math.log(1000.0)


def rate_for(epochs: int, rate: float = 0.5) -> float:
    """The per-epoch rate of ``log λ``: ``rate``, raised for short searches so that λ can
    still cross :data:`STRENGTH_RANGE` in ``epochs`` epochs (at 0.5, a 4-epoch search could
    move λ by only e^2 and left a GAP8 search at the full model's latency, twice its
    budget, for the projection to cut)."""
    return max(rate, STRENGTH_RANGE / max(epochs, 1))


class DualAscent:
    """Adaptive strengths ``λ_b`` for the normalised costs ``cost_b / budget_b``.

    Call :meth:`penalty` once per training step with the task loss: it updates ``log λ`` from
    the current argmax model's exact costs, then returns the term to add to the loss.
    ``reduce`` sums numbers over processes (distributed training), so every rank starts at
    the same ``λ``.
    """

    def __init__(
        self,
        net: Supernet,
        budgets: Mapping[str, float],
        rate: float = 0.5,
        steps_per_epoch: int = 1,
        start: float = 0.01,
        reduce: Callable[[list[float]], list[float]] | None = None,
        follow: str = "expected",
    ) -> None:
        if follow not in ("expected", "hard"):
            raise ValueError(f"follow must be 'expected' or 'hard', got {follow!r}")
        self.net = net
        self.budgets = dict(budgets)
        self.follow = follow
        self.step_rate = rate / max(steps_per_epoch, 1)
        self.start = start
        self.reduce = reduce
        self.log_strength: dict[str, float] | None = None
        #: cost / budget of the argmax model and, expected under θ, of the supernet
        self.usage: dict[str, float] = {}
        self.expected: dict[str, float] = {}

    @property
    def strengths(self) -> dict[str, float]:
        if self.log_strength is None:
            return {}
        return {b: math.exp(v) for b, v in self.log_strength.items()}

    def hard_usage(self) -> dict[str, float]:
        with torch.no_grad():
            return {b: float(self.net.cost(b, hard=True)) / v for b, v in self.budgets.items()}

    def penalty(self, task: Tensor) -> Tensor:
        self.usage = self.hard_usage()
        normalised = {b: self.net.cost(b) / v for b, v in self.budgets.items()}
        self.expected = {b: float(v.detach()) for b, v in normalised.items()}
        if self.log_strength is None:
            self.log_strength = self._initial(task, normalised)
        else:
            low, high = _LOG_BOUNDS
            gap = self.expected if self.follow == "expected" else self.usage
            for b, u in gap.items():
                step = self.step_rate * min(max(math.log(max(u, 1e-6)), -1.0), 1.0)
                self.log_strength[b] = min(max(self.log_strength[b] + step, low), high)
        return sum(
            (math.exp(self.log_strength[b]) * value for b, value in normalised.items()),
            torch.zeros((), device=task.device),
        )

    def _initial(self, task: Tensor, normalised: Mapping[str, Tensor]) -> dict[str, float]:
        """``λ_b = start · |∇α task| / |∇α cost_b/budget_b| / #budgets``: with ``start = 1``
        the cost terms would pull on the logits as hard as one batch's task loss, shared
        among the budgets. The cost's pull is the same at every step while the task's is
        mostly noise, so a much smaller start lets the task lead while the strength adapts:
        with a tenth, the quickstart's argmax cost fell from 322 % to 14 % of a 10 % budget
        in its second epoch."""
        alphas = [c.alpha for _, c in self.net.choices() if c.alpha is not None]
        norms = [_grad_norm(task, alphas)]
        norms += [_grad_norm(normalised[b], alphas) for b in self.budgets]
        if self.reduce is not None:
            norms = self.reduce(norms)
        task_norm, cost_norms = norms[0], norms[1:]
        out = {}
        for b, norm in zip(self.budgets, cost_norms, strict=True):
            ratio = task_norm / norm / len(self.budgets) if norm > 0 and task_norm > 0 else 1.0
            ratio *= self.start
            out[b] = min(max(math.log(ratio), _LOG_BOUNDS[0]), _LOG_BOUNDS[1])
        return out

    def state_dict(self) -> dict:
        return {"log_strength": self.log_strength, "usage": dict(self.usage)}

    def load_state_dict(self, state: Mapping) -> None:
        saved = state.get("log_strength")
        self.log_strength = dict(saved) if saved is not None else None
        self.usage = dict(state.get("usage", {}))


def _grad_norm(value: Tensor, params: list[Tensor]) -> float:
    if not value.requires_grad or not params:
        return 0.0
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads if g is not None))
