"""Cost models (docs/algorithm.md#expected-cost): params_bit and bitops, expected under θ
and exact under the argmax, pruning counted once, flatten-aware input channels, gradients to
α, and short searches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpsctl.cost.base import LayerGeometry
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.targets import available_cost_models, build_cost_model, register_cost

E1 = LayerGeometry("conv", cin=16, cout=32, kernel=(3, 3), out_hw=(32, 32))


def _f(name, geom, p_in, p_w, cin, cout) -> float:
    t = torch.tensor
    f = build_cost_model(name).group_costs
    return f(geom, t(float(p_in)), t(float(p_w)), t(float(cin)), t(float(cout))).item()


class E1Net(nn.Module):
    """The worked example's conv (16→32, 3×3, 32×32 output) and a 1×1 head so it may prune."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)))


class FlattenNet(nn.Module):
    """conv (3→8) → ReLU → 2×2 max-pool → flatten (8 channels × 16) → Linear(128 → 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(F.max_pool2d(F.relu(self.conv(x)), 2), 1))


class Chain(nn.Module):
    """Three convs and a Linear: every layer but the first has a searchable producer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1, groups=4)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = F.relu(self.c3(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _set_assignment(choice, index) -> None:
    """Make the argmax of ``choice`` equal ``index`` (per layer or per channel)."""
    index = torch.as_tensor(index)
    with torch.no_grad():
        choice.alpha.zero_()
        if choice.per_channel:
            choice.alpha[index, torch.arange(choice.channels)] = 10.0
        else:
            choice.alpha[index] = 10.0
    assert torch.equal(choice.assignment(), index)


# -- formulas by hand -----------------------------------------------------------------------------


def test_worked_example_e1_formulas():
    assert [_f("params_bit", E1, 8, p, 16, 32) for p in (2, 4, 8)] == [9216, 18432, 36864]
    assert _f("bitops", E1, 8, 8, 16, 32) == 301_989_888
    assert _f("bitops", E1, 4, 2, 16, 32) == 9 * 16 * 32 * 2 * 4 * 1024


def test_grouped_depthwise_and_linear_formulas():
    grouped = LayerGeometry("conv", 8, 16, (3, 3), (5, 5), groups=4)
    assert _f("params_bit", grouped, 8, 4, 8, 16) == 9 * 2 * 16 * 4
    assert _f("bitops", grouped, 4, 4, 8, 16) == 9 * 2 * 16 * 4 * 4 * 25
    dw = LayerGeometry("depthwise", 16, 16, (3, 3), (5, 5), groups=16)
    assert _f("params_bit", dw, 8, 2, 16, 16) == 9 * 16 * 2
    assert _f("bitops", dw, 8, 2, 16, 16) == 9 * 16 * 2 * 8 * 25
    linear = LayerGeometry("linear", 128, 5)
    assert _f("params_bit", linear, 8, 4, 128, 5) == 128 * 5 * 4
    assert _f("bitops", linear, 2, 4, 128, 5) == 128 * 5 * 4 * 2


def test_registry():
    assert {"params_bit", "bitops", "ne16"} <= set(available_cost_models())
    with pytest.raises(KeyError, match="unknown cost model 'nope'"):
        build_cost_model("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_cost("params_bit")(lambda *a: None)


# -- supernet costs ------------------------------------------------------------------------------


def _e1(space: SearchSpace):
    return build_supernet(E1Net(), torch.rand(1, 16, 32, 32), space)


@pytest.mark.parametrize(("index", "bits"), [(0, 2), (1, 4), (2, 8)])
def test_e1_hard_cost_in_the_supernet(index, bits):
    net = _e1(SearchSpace(act_bits=(8,)))
    _set_assignment(net.weight_choices["conv"], index)
    assert net.layer_costs("params_bit", hard=True)["conv"].item() == 4608 * bits
    if bits == 8:
        assert net.layer_costs("bitops", hard=True)["conv"].item() == 301_989_888


def test_e1_soft_cost_at_init():
    net = _e1(SearchSpace(act_bits=(8,))).train()
    net.sample_choices()
    cost = net.layer_costs("params_bit")["conv"]
    assert cost.item() == pytest.approx(25204.18, abs=0.01)
    assert cost.item() == pytest.approx(4608 * 5.469657, abs=0.01)
    # Per channel, at init every channel has the same θ: the same expected cost.
    per_channel = _e1(SearchSpace(act_bits=(8,), per_channel=True)).train()
    per_channel.sample_choices()
    assert per_channel.layer_costs("params_bit")["conv"].item() == pytest.approx(25204.18, abs=0.02)


def test_pruning_is_counted_once():
    """8 channels pruned and 8 each at 2/4/8 bits: 9·16·8·(2+4+8) = 16128 bits (the reference
    reports 12096 by multiplying by Cout_eff/Cout on top)."""
    net = _e1(SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True))
    choice = net.weight_choices["conv"]
    _set_assignment(choice, torch.arange(32) % 4)
    assert net.layer_costs("params_bit", hard=True)["conv"].item() == 16128
    # Straight-through hard θ in training gives the same (differentiable) number.
    net.train()
    net.set_mode("hard")
    net.sample_choices()
    cost = net.layer_costs("params_bit")["conv"]
    assert cost.item() == pytest.approx(16128)
    # The consumer reads 24 live channels.
    assert net.layer_costs("params_bit", hard=True)["head"].item() == 24 * 4 * 8
    fixed = net.harden()
    assert fixed.layer_costs("params_bit", hard=True)["conv"].item() == 16128
    assert fixed.net.conv.weight.shape == (24, 16, 3, 3)


def test_grouped_depthwise_and_linear_in_the_supernet():
    net = build_supernet(Chain(), torch.rand(1, 3, 8, 8), SearchSpace(act_bits=(8,)))
    assert set(net.weight_choices) == {"c1", "c2", "fc"}  # the depthwise c3 shares c2's
    for name in ("c1", "c2", "fc"):
        _set_assignment(net.weight_choices[name], 1)  # 4 bits
    costs = {k: v.item() for k, v in net.layer_costs("params_bit", hard=True).items()}
    assert costs == {"c1": 9 * 3 * 8 * 4, "c2": 9 * 2 * 16 * 4, "c3": 9 * 16 * 4,
                     "fc": 16 * 3 * 4}
    bitops = {k: v.item() for k, v in net.layer_costs("bitops", hard=True).items()}
    assert bitops["c2"] == 9 * 2 * 16 * 4 * 8 * 64
    assert bitops["fc"] == 16 * 3 * 4 * 8
    assert net.cost("params_bit", hard=True).item() == sum(costs.values())


def test_per_layer_costs_of_layers_with_searchable_producers():
    """Regression: a per-layer producer (no channel count) made its consumers cost 0."""
    net = build_supernet(Chain(), torch.rand(1, 3, 8, 8), SearchSpace(act_bits=(8,))).train()
    net.sample_choices()
    soft = net.layer_costs("params_bit")
    mean_bits = float((torch.tensor([2.0, 4.0, 8.0]) * torch.tensor([0.227220, 0.291756,
                                                                     0.481024])).sum())
    assert soft["c2"].item() == pytest.approx(9 * 2 * 16 * mean_bits, rel=1e-5)
    assert soft["fc"].item() == pytest.approx(16 * 3 * mean_bits, rel=1e-5)


def test_linear_after_flatten_sees_pruned_channels_times_spatial_size():
    space = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True)
    net = build_supernet(FlattenNet(), torch.rand(1, 3, 8, 8), space)
    conv = net.weight_choices["conv"]
    _set_assignment(conv, torch.tensor([0, 3, 0, 3, 3, 0, 3, 3]))  # 5 live channels
    _set_assignment(net.weight_choices["fc"], torch.full((5,), 1))  # fc at 4 bits
    assert net.layer_costs("params_bit", hard=True)["fc"].item() == 5 * 16 * 5 * 4
    assert net.layer_costs("params_bit", hard=True)["conv"].item() == 27 * 5 * 8
    # Soft: the expected live channels (8 − Σθ_0) × 16 features each.
    net.train()
    net.sample_choices()
    theta = conv.theta()
    live = 8 - theta[0].sum()
    fc_theta = net.weight_choices["fc"].theta()
    expected = live * 16 * (fc_theta * torch.tensor([2.0, 4.0, 8.0]).unsqueeze(1)).sum()
    assert net.layer_costs("params_bit")["fc"].item() == pytest.approx(expected.item(), rel=1e-5)
    fixed = net.harden()
    assert fixed.net.fc.weight.shape == (5, 80)
    assert fixed.cost("params_bit", hard=True) == net.cost("params_bit", hard=True)


# -- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
def test_cost_gradients_reach_every_alpha(per_channel):
    bits = (0, 2, 4, 8) if per_channel else (2, 4, 8)
    net = build_supernet(FlattenNet(), torch.rand(1, 3, 8, 8),
                         SearchSpace(weight_bits=bits, per_channel=per_channel)).train()
    net.sample_choices()
    net.cost("bitops").backward()
    for name, choice in net.choices():
        grad = choice.alpha.grad
        if name == "act.conv":  # params and bitops of fc depend on it through p_in
            assert grad is not None and grad.abs().sum() > 0
        else:
            assert grad is not None and grad.abs().sum() > 0, name
    conv = net.weight_choices["conv"].alpha.grad
    if per_channel:
        # Each channel gets its own share: shape (n, Cout), every column non-zero.
        assert conv.shape == (4, 8) and (conv.abs().sum(0) > 0).all()
        # Pruning a conv channel also shrinks fc's input: the 0-bit logit is pushed up.
        assert (conv[0] < 0).all()
    # Cheaper precisions are pushed up, dearer ones down (gradient descent lowers the cost).
    assert (conv[-1] > 0).all() and (conv[1 if per_channel else 0] < 0).all()


def test_per_channel_gradient_is_per_channel():
    """Changing one channel's logits changes only that column of the cost gradient."""
    space = SearchSpace(weight_bits=(2, 4, 8), act_bits=(8,), per_channel=True)
    net = _e1(space).train()
    with torch.no_grad():
        net.weight_choices["conv"].alpha[:, 5] = torch.tensor([3.0, 0.0, 0.0])
    net.sample_choices()
    net.layer_costs("params_bit")["conv"].backward()
    grad = net.weight_choices["conv"].alpha.grad
    others = torch.cat([grad[:, :5], grad[:, 6:]], 1)
    assert torch.allclose(others, others[:, :1].expand_as(others))
    assert not torch.allclose(grad[:, 5], grad[:, 0])


# -- short optimisations ---------------------------------------------------------------------------


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.b(F.relu(self.a(x))))
        return self.fc(torch.flatten(F.max_pool2d(x, 2), 1))


@pytest.mark.parametrize("per_channel", [False, True])
def test_cost_only_search_goes_to_the_cheapest_precisions(per_channel):
    torch.manual_seed(0)
    bits = (0, 2, 4, 8) if per_channel else (2, 4, 8)
    space = SearchSpace(weight_bits=bits, per_channel=per_channel, min_channels=2)
    net = build_supernet(_Residual(), torch.rand(1, 3, 8, 8), space).train()
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    start = net.cost("bitops", hard=True).item()
    for _ in range(150):
        net.sample_choices()
        loss = net.cost("bitops") / start
        opt.zero_grad()
        loss.backward()
        opt.step()
    assignment = net.assignment()
    feeding = {id(layer.input_slot.choice) for _, layer in net.layers()}
    for name, choice in net.choices():
        index = assignment[name]
        if name.startswith("act.") and id(choice) not in feeding:
            continue  # quantizes a value no layer reads directly: no cost sees it
        if choice.can_prune:
            assert int((index != 0).sum()) == 2, name  # all pruned but min_channels
        else:
            assert (index == 0).all(), name  # the lowest precision
    # Every layer went from 8×8 to 2×2 bit products (and per channel, most were pruned).
    assert net.cost("bitops", hard=True).item() <= start / 16


def test_task_and_cost_search_keeps_learning():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 256
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    x[y == 1, :, :, :4] += 0.5  # class 1 is bright on the left, class 0 on the right
    x[y == 0, :, :, 4:] += 0.5

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = F.relu(self.bn(self.c1(x)))
            x = F.relu(self.c2(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    space = SearchSpace(weight_bits=(0, 2, 4, 8), per_channel=True, act_clip=2.0)
    net = build_supernet(Tiny(), x[:2], space).train()
    weights = torch.optim.Adam(net.weight_parameters(), lr=1e-2)
    arch = torch.optim.Adam(net.arch_parameters(), lr=1e-2)
    start = net.cost("params_bit", hard=True).item()
    losses = []
    for _ in range(100):
        idx = torch.randint(0, n, (32,), generator=g)
        task = F.cross_entropy(net(x[idx]), y[idx])
        loss = task + 0.1 * net.cost("params_bit") / start
        weights.zero_grad()
        arch.zero_grad()
        loss.backward()
        weights.step()
        arch.step()
        losses.append(task.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    net.eval()
    with torch.no_grad():
        accuracy = (net(x).argmax(1) == y).float().mean().item()
        fixed_accuracy = (net.harden()(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.8 and fixed_accuracy == accuracy
    assert net.cost("params_bit", hard=True).item() < start


def test_exact_layer_cost_adds_the_precision_groups():
    params, bitops = build_cost_model("params_bit"), build_cost_model("bitops")
    counts = {0: 2, 2: 10, 8: 20}  # 0-bit channels cost nothing
    assert params.exact_layer_cost(E1, counts, cin=16, act_bits=8) == 9 * 16 * (10 * 2 + 20 * 8)
    assert bitops.exact_layer_cost(E1, counts, cin=16, act_bits=4) == (
        9 * 16 * (10 * 2 + 20 * 8) * 32 * 32 * 4
    )
    assert params.exact_layer_cost(E1, {0: 32}, cin=16, act_bits=8) == 0
    assert params.combine_groups(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist() == [3.0, 7.0]
    with pytest.raises(ValueError, match="takes no constants file"):
        build_cost_model("params_bit", "some.yaml")
