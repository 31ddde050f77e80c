"""Expected costs where a layer's input and output channels are one choice: the exact
expectation agrees with Monte Carlo sampling of θ; the product of expectations does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpsctl.search.convert import build_supernet
from mpsctl.search.expected import expected_theta, hard_theta, kept_channels, layer_cost
from mpsctl.search.space import SearchSpace
from mpsctl.targets import build_cost_model

SPACE = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(4, 8), per_channel=True)


class SelfResidual(nn.Module):
    """``conv(x) + x``: the conv reads and writes channels of one shared choice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 3, padding=1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        return self.head(F.relu(self.conv(x) + x))


class SeparableResidual(nn.Module):
    """stem → depthwise → pointwise → add stem: all three share one choice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 3, padding=1)
        self.dw = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.pw = nn.Conv2d(3, 3, 1)
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = self.pw(F.relu(self.dw(x)))
        return self.head(torch.flatten(F.relu(x + y), 1))


class Residual(nn.Module):
    """A two-conv residual block: conv1 reads the stem's choice, conv2 shares it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.conv2(F.relu(self.conv1(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


GRAPHS = {"self_residual": SelfResidual, "separable": SeparableResidual, "residual": Residual}


def _net(cls, seed: int = 0):
    torch.manual_seed(seed)
    net = build_supernet(cls().eval(), torch.rand(1, 3, 4, 4), SPACE)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, choice in net.choices():
            choice.alpha.copy_(torch.randn(choice.alpha.shape, generator=g))
            if choice.can_prune:  # about half the channels pruned: a visible difference
                choice.alpha[0] += 1.5
    net.train()
    return net


COSTS = ("params_bit", "bitops")


def _per_layer(net, theta_fn) -> dict[tuple[str, str], float]:
    return {(cost, name): float(layer_cost(layer, build_cost_model(cost), theta_fn))
            for cost in COSTS for name, layer in net.layers()}


def _monte_carlo(net, samples: int, seed: int = 0):
    """Mean and standard error of every layer's hard cost over assignments drawn from θ
    (each channel of each choice independently; a shared choice is drawn once per sample)."""
    g = torch.Generator().manual_seed(seed)
    draws = {}
    for _, choice in net.choices():
        theta = choice.soft_theta()
        probs = theta.T if theta.dim() == 2 else theta.unsqueeze(0)
        draws[id(choice)] = torch.multinomial(probs, samples, replacement=True, generator=g)
    values: dict[tuple[str, str], list[float]] = {}
    for s in range(samples):
        def theta_fn(choice, s=s):
            one_hot = F.one_hot(draws[id(choice)][:, s], len(choice.bits)).T.double()
            return one_hot if choice.per_channel else one_hot[:, 0]

        for key, value in _per_layer(net, theta_fn).items():
            values.setdefault(key, []).append(value)
    out = {}
    for key, v in values.items():
        v = torch.tensor(v, dtype=torch.float64)
        out[key] = (float(v.mean()), float(v.std()) / samples**0.5)
    return out


def _product_of_expectations(layer, cost: str) -> float:
    """The earlier formula for a layer reading its own choice: E[Cin] · E[n_j]."""
    slot, choice = layer.input_slot, layer.choice
    p_in = torch.tensor(slot.bits, dtype=torch.float32).unsqueeze(1)
    p_w = torch.tensor(choice.bits, dtype=torch.float32).unsqueeze(0)
    cin = kept_channels(choice, expected_theta) * layer.cin_source[1]
    f = build_cost_model(cost).group_costs(layer.geometry, p_in, p_w, cin,
                                          choice.theta().sum(1).unsqueeze(0))
    return float((slot.choice.theta().unsqueeze(1) * f * (p_w > 0)).sum())


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_exact_expectation_agrees_with_monte_carlo(graph) -> None:
    net = _net(GRAPHS[graph])
    with torch.no_grad():
        net.sample_choices()
        exact = _per_layer(net, expected_theta)
        sampled = _monte_carlo(net, samples=600)
        shared = [name for name, layer in net.layers()
                  if layer.cin_source and layer.cin_source[0] is layer.choice]
        assert bool(shared) == (graph != "residual")
        for key, value in exact.items():
            mean, error = sampled[key]
            assert abs(value - mean) < 4 * error + 1e-9 * mean, key
        layers = dict(net.layers())
        for cost in COSTS:
            for name in shared:  # the product of expectations is biased low
                old = _product_of_expectations(layers[name], cost)
                mean, error = sampled[(cost, name)]
                assert old < exact[(cost, name)] and mean - old > 4 * error


def test_hard_costs_are_exact_integers_at_1e12_bitops() -> None:
    """A 512→512 3×3 conv on a 78×78 output at 8×8 bits: 918,653,239,296 bit-operations
    (float32 is off by thousands there)."""
    from mpsctl.cost.base import LayerGeometry
    from mpsctl.quant.modules import PACTActivationQuantizer, make_weight_quantizer
    from mpsctl.search.choice import PrecisionChoice
    from mpsctl.search.layers import ActivationSlot, SearchableLayer

    conv = nn.Conv2d(512, 512, 3)
    geom = LayerGeometry("conv", 512, 512, (3, 3), (78, 78))
    layer = SearchableLayer(conv, make_weight_quantizer("minmax", (8,), conv.weight), geom)
    layer.attach(PrecisionChoice((8,)), ActivationSlot(PACTActivationQuantizer((8,)),
                                                       PrecisionChoice((8,))))
    exact = 9 * 512 * 512 * 8 * 8 * 78 * 78
    assert exact == 918_653_239_296
    assert float(layer_cost(layer, build_cost_model("bitops"), hard_theta)) == exact
