"""Budgets in the core: exact costs of assignments, the projection under budgets, the
adaptive (dual ascent) strength, and the L1-pruned baseline."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny_nets import DepthwiseNet, PlainCNN, ResidualNet, randomize_alpha, randomize_bn

from mpsctl.search.budget import (
    AssignmentCosts,
    DualAscent,
    apply_assignment,
    argmax_assignment,
    cost_range,
    highest_assignment,
    lowest_assignment,
    project,
)
from mpsctl.search.convert import build_supernet
from mpsctl.search.pruning import channel_l1, l1_pruned_assignment
from mpsctl.search.space import SearchSpace

NETS = {"plain": (PlainCNN, (2, 3, 16, 16)), "residual": (ResidualNet, (2, 3, 16, 16)),
        "depthwise": (DepthwiseNet, (2, 3, 8, 8))}
SPACES = {
    # ne16 needs 8-bit activations; per layer the activations are searched too
    "per_channel": (SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True,
                                min_channels=2), ("params_bit", "ne16")),
    "per_layer": (SearchSpace(weight_bits=(2, 4, 8), act_bits=(2, 4, 8)),
                  ("params_bit", "bitops")),
}


def _net(model: str, space: str, seed: int):
    torch.manual_seed(seed)
    cls, shape = NETS[model]
    net = build_supernet(randomize_bn(cls(), seed), torch.rand(shape), SPACES[space][0])
    randomize_alpha(net, seed, scale=1.5)
    return net


def _exported_costs(net, assignment, names) -> dict[str, float]:
    """Costs of the model export writes: hardened at ``assignment``, channels removed."""
    fixed = net.harden(assignment)
    return {n: float(fixed.cost(n, hard=True)) for n in names}


def test_assignment_costs_match_the_supernet_hard_cost():
    net = _net("residual", "per_channel", 0)
    names = ["params_bit", "bitops", "ne16"]
    exact = AssignmentCosts(net, names).total(argmax_assignment(net))
    for n in names:
        assert exact[n] == pytest.approx(float(net.cost(n, hard=True)), rel=1e-6)


def test_cost_range_is_the_cheapest_and_the_top_model():
    net = _net("plain", "per_channel", 0)
    (low, high), = cost_range(net, ["params_bit"]).values()
    # PlainCNN: conv1 3->8 3x3, conv2 8->16 3x3, fc 256->5; min_channels 2 at 2 bits,
    # the head (not prunable) at 2 bits with the 2 kept channels of conv2 (x 4x4 pixels)
    assert high == 8 * (27 * 8 + 72 * 16 + 256 * 5)
    assert low == 2 * (27 * 2 + 9 * 2 * 2 + 2 * 16 * 5)
    for assignment in (lowest_assignment(net), highest_assignment(net)):
        costs = _exported_costs(net, assignment, ["params_bit"])
        assert costs["params_bit"] in (low, high)


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("model", list(NETS))
def test_projection_never_leaves_the_exported_model_above_budget(model, space):
    names = SPACES[space][1]
    for seed in range(3):
        net = _net(model, space, seed)
        ranges = cost_range(net, names)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(2):
            budgets = {}
            for n in names:
                low, high = ranges[n]
                budgets[n] = low + float(torch.rand((), generator=gen)) ** 2 * (high - low)
            result = project(net, budgets)
            exported = _exported_costs(net, result.assignment, names)
            for n in names:
                assert exported[n] == pytest.approx(result.costs[n], rel=1e-6)
                assert exported[n] <= budgets[n] * (1 + 1e-9), (seed, n)
            if space == "per_channel":  # fine-grained: the tightest budget is nearly used
                assert max(exported[n] / budgets[n] for n in names) >= 0.95


def test_projection_leaves_a_model_within_budget_and_well_used_alone():
    net = _net("plain", "per_channel", 1)
    names = ["params_bit"]
    cost = AssignmentCosts(net, names).total(argmax_assignment(net))["params_bit"]
    result = project(net, {"params_bit": cost / 0.97})
    assert (result.lowered, result.promoted) == (0, 0)
    assert all(torch.equal(result.assignment[k], v) for k, v in argmax_assignment(net).items())


def test_projection_changes_the_least_confident_channel_first():
    net = _net("plain", "per_channel", 2)
    names = ["params_bit"]
    costs = AssignmentCosts(net, names)
    before = argmax_assignment(net)
    cost = costs.total(before)["params_bit"]
    result = project(net, {"params_bit": cost - 1}, fill=0.0)  # one step down is enough
    assert result.lowered == 1
    changed = [(k, torch.nonzero(before[k] != v).flatten().tolist())
               for k, v in result.assignment.items() if not torch.equal(before[k], v)]
    assert len(changed) == 1 and len(changed[0][1]) == 1


@pytest.mark.parametrize("model", list(NETS))
def test_promotion_raises_kept_channels_before_reviving_pruned_ones(model):
    net = _net(model, "per_channel", 0)
    before = argmax_assignment(net)
    prunable = {k for k, c in net.choices() if c.per_channel and c.can_prune and not c.is_fixed}
    pruned = {k: v == 0 for k, v in before.items() if k in prunable}
    assert any(bool(m.any()) for m in pruned.values())
    # the budget: every kept channel at 8 bits, nothing revived; room enough to fill it
    top = {k: torch.where(v == 0, v, torch.full_like(v, 3)) if k in pruned else v
           for k, v in before.items()}
    ceiling = AssignmentCosts(net, ["params_bit"]).total(top)["params_bit"]
    result = project(net, {"params_bit": ceiling})
    assert result.promoted > 0
    assert result.costs["params_bit"] >= 0.95 * ceiling
    for k, was_pruned in pruned.items():
        assert bool((result.assignment[k][was_pruned] == 0).all()), k


def test_promotion_revives_pruned_channels_when_nothing_else_fills_the_budget():
    net = _net("plain", "per_channel", 0)
    (_, high), = cost_range(net, ["params_bit"]).values()
    result = project(net, {"params_bit": high})  # only the full model uses 95 % of it
    assert result.costs["params_bit"] >= 0.95 * high
    prunable = {k for k, c in net.choices() if c.per_channel and c.can_prune and not c.is_fixed}
    revived = sum(int(((v == 0) & (result.assignment[k] != 0)).sum())
                  for k, v in argmax_assignment(net).items() if k in prunable)
    assert revived > 0


def test_projection_refuses_a_budget_below_the_cheapest_model():
    net = _net("plain", "per_channel", 0)
    (low, _), = cost_range(net, ["params_bit"]).values()
    with pytest.raises(ValueError, match="cheapest"):
        project(net, {"params_bit": low - 1})


def test_apply_assignment_makes_it_the_argmax_without_changing_logit_values():
    net = _net("residual", "per_channel", 0)
    (low, high), = cost_range(net, ["params_bit"]).values()
    result = project(net, {"params_bit": low + 0.2 * (high - low)})
    values = {k: sorted(c.alpha.detach().flatten().tolist()) for k, c in net.choices()}
    changed = apply_assignment(net, result.assignment)
    assert changed > 0
    after = argmax_assignment(net)
    assert all(torch.equal(after[k], result.assignment[k]) for k in after)
    assert values == {k: sorted(c.alpha.detach().flatten().tolist()) for k, c in net.choices()}


def _dual(net, budget_share: float, follow: str = "expected") -> DualAscent:
    (low, high), = cost_range(net, ["params_bit"]).values()
    return DualAscent(net, {"params_bit": low + budget_share * (high - low)}, start=1.0,
                      follow=follow)


def _task_loss(net) -> torch.Tensor:
    net.train()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return net(x).square().mean()


@pytest.mark.parametrize("follow", ["expected", "hard"])
def test_dual_ascent_starts_from_the_gradient_scales_then_rises_over_budget(follow):
    net = _net("plain", "per_channel", 0)
    dual = _dual(net, 0.05, follow)  # the random model is far above 5 % of the range
    task = _task_loss(net)
    term = dual.penalty(task)
    start = dual.log_strength["params_bit"]
    assert math.isfinite(start) and term.requires_grad
    # λ · ∇(cost/budget) has the task gradient's norm on the logits
    alphas = [c.alpha for _, c in net.choices() if c.alpha is not None]
    g_task = torch.autograd.grad(task, alphas, retain_graph=True, allow_unused=True)
    g_term = torch.autograd.grad(term, alphas, allow_unused=True)

    def norm(gs):
        return math.sqrt(sum(float((g ** 2).sum()) for g in gs if g is not None))

    assert norm(g_term) == pytest.approx(norm(g_task), rel=1e-4)
    assert dual.usage["params_bit"] > 1 and dual.expected["params_bit"] > 1
    for _ in range(3):
        dual.penalty(_task_loss(net))
    assert dual.log_strength["params_bit"] > start


@pytest.mark.parametrize("follow", ["expected", "hard"])
def test_dual_ascent_falls_under_budget_and_resumes_from_its_state(follow):
    net = _net("plain", "per_channel", 0)
    dual = _dual(net, 1.0, follow)  # the whole model fits
    dual.penalty(_task_loss(net))
    start = dual.log_strength["params_bit"]
    dual.penalty(_task_loss(net))
    assert dual.usage["params_bit"] < 1 and dual.expected["params_bit"] < 1
    assert dual.log_strength["params_bit"] < start
    again = _dual(net, 1.0)
    again.load_state_dict(copy.deepcopy(dual.state_dict()))
    assert again.strengths == dual.strengths


def test_l1_pruning_keeps_the_largest_channels_within_budget():
    space = SearchSpace(weight_bits=(0, 4), act_bits=(8,), per_channel=True)
    torch.manual_seed(0)
    net = build_supernet(randomize_bn(PlainCNN(), 0), torch.rand(2, 3, 16, 16), space)
    (low, high), = cost_range(net, ["params_bit"]).values()
    bound = 0.4 * high
    assignment, share = l1_pruned_assignment(net, {"params_bit": bound})
    assert 0 < share < 1
    costs = AssignmentCosts(net, ["params_bit"]).total(assignment)
    assert low <= costs["params_bit"] <= bound
    for name, norms in channel_l1(net).items():
        kept = assignment[name] != 0
        assert kept.any() and not kept.all()
        assert norms[kept].min() >= norms[~kept].max()
    assert l1_pruned_assignment(net, {"params_bit": low - 1}) is None
    full, share = l1_pruned_assignment(net, {"params_bit": high})
    assert share == 1.0 and all(bool((full[n] != 0).all()) for n in channel_l1(net))


def test_short_searches_get_a_faster_strength_rate():
    from mpsctl.search.budget import STRENGTH_RANGE, rate_for

    assert rate_for(20) == 0.5  # long searches: the documented e^0.5 per epoch
    assert rate_for(4) == pytest.approx(STRENGTH_RANGE / 4)
    assert rate_for(4) * 4 >= math.log(1000.0) - 1e-9  # λ can cross 3 decades in 4 epochs
    assert rate_for(0) == pytest.approx(STRENGTH_RANGE)
