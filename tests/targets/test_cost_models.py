"""The targets' cost models inside a supernet: exact hard costs, soft costs that match them at
one-hot θ, gradients to α, DIANA's max rule, a YAML target equal to MPIC, and refine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.targets import build_cost_model
from mpsctl.targets.catalog import yaml_cost_models
from mpsctl.targets.constants import MacsPerCycle
from mpsctl.targets.custom import CustomConstants, CustomEnergy, CustomLatency
from mpsctl.targets.diana import DianaConstants, DianaLatency, diana_layer_cycles
from mpsctl.targets.gap8 import GAP8Latency
from mpsctl.targets.mpic import MPIC_TABLE, MPICEnergy, MPICLatency
from mpsctl.targets.refine import channel_counts, refine_channel_assignment


class Net(nn.Module):
    """conv 3→16 (3×3 on 8×8), conv 16→24 (3×3), flatten 24×4×4 → Linear(384 → 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 24, 3, padding=1)
        self.fc = nn.Linear(24 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def _net(weight_bits, act_bits=(8,), per_channel=True):
    torch.manual_seed(0)
    space = SearchSpace(weight_bits=tuple(weight_bits), act_bits=tuple(act_bits),
                        per_channel=per_channel)
    return build_supernet(Net(), torch.rand(1, 3, 8, 8), space)


def _set(choice, index) -> None:
    index = torch.as_tensor(index)
    with torch.no_grad():
        choice.alpha.zero_()
        if choice.per_channel:
            choice.alpha[index, torch.arange(choice.channels)] = 30.0
        else:
            choice.alpha[index] = 30.0


def _hard_soft(net, name):
    """Exact costs, and the soft costs at (almost) one-hot θ and a low temperature."""
    hard = {k: v.item() for k, v in net.layer_costs(name, hard=True).items()}
    net.train()
    net.set_temperature(0.01)
    net.sample_choices()
    soft = {k: v.item() for k, v in net.layer_costs(name).items()}
    return hard, soft


DIANA_ASSIGN = torch.tensor([0, 1, 2, 2] * 4)  # c1: 4 pruned, 4 analog, 8 digital


def test_registered_with_the_shipped_constants(tmp_path) -> None:
    for name, cls in (("mpic_latency", MPICLatency), ("mpic_energy", MPICEnergy),
                      ("gap8_latency", GAP8Latency), ("diana_latency", DianaLatency)):
        model = build_cost_model(name)
        assert isinstance(model, cls) and model.name == name
    variant = tmp_path / "diana.yaml"
    variant.write_text("digital_array: 8\n")
    assert build_cost_model("diana_latency", variant).constants.digital_array == 8


@pytest.mark.parametrize("name", ["mpic_latency", "mpic_energy", "gap8_latency",
                                  "diana_latency"])
def test_soft_cost_matches_the_exact_cost_at_one_hot_theta(name: str) -> None:
    bits = (0, 2, 8) if name != "mpic_latency" else (0, 2, 4, 8)
    net = _net(bits)
    _set(net.weight_choices["c1"], DIANA_ASSIGN)
    _set(net.weight_choices["c2"], torch.arange(24) % len(bits))
    _set(net.weight_choices["fc"], torch.full((5,), len(bits) - 2))
    hard, soft = _hard_soft(net, name)
    assert all(v > 0 for v in hard.values())
    rel = 0.06 if name == "diana_latency" else 1e-4  # the smooth max exceeds the max a little
    for layer in hard:
        assert soft[layer] == pytest.approx(hard[layer], rel=rel), layer
        assert soft[layer] >= hard[layer] * (1 - 1e-5)


def test_hard_cost_is_the_exact_formula() -> None:
    net = _net((0, 2, 8))
    _set(net.weight_choices["c1"], DIANA_ASSIGN)
    _set(net.weight_choices["c2"], torch.full((24,), 2))
    hard = net.layer_costs("diana_latency", hard=True)
    geom = dict(net.layers())["c1"].geometry
    assert hard["c1"].item() == diana_layer_cycles(geom, {0: 4, 2: 4, 8: 8}, 3,
                                                   DianaConstants())
    # c2 reads the 12 channels c1 keeps
    geom2 = dict(net.layers())["c2"].geometry
    assert hard["c2"].item() == diana_layer_cycles(geom2, {8: 24}, 12, DianaConstants())
    mpic = net.layer_costs("mpic_latency", hard=True)["c2"].item()
    assert mpic == pytest.approx(64 * 24 * (9 * 12 + 1) / 2.1)


@pytest.mark.parametrize(("name", "bits", "act_bits", "per_channel"), [
    ("mpic_latency", (2, 4, 8), (2, 4, 8), False),
    ("mpic_energy", (0, 2, 4, 8), (8,), True),
    ("gap8_latency", (0, 8), (8,), True),
    ("diana_latency", (0, 2, 8), (8,), True),
    ("diana_latency", (2, 8), (8,), False),
])
def test_gradients_reach_alpha(name, bits, act_bits, per_channel) -> None:
    net = _net(bits, act_bits, per_channel).train()
    net.sample_choices()
    net.cost(name).backward()
    for choice_name, choice in net.choices():
        if choice_name.startswith("weight.") and len(choice.bits) > 1:
            assert choice.alpha.grad is not None and choice.alpha.grad.abs().sum() > 0, \
                choice_name
    if name.startswith("mpic") and not per_channel:  # MPIC's table depends on input bits
        grad = dict(net.choices())["act.c1"].alpha.grad
        assert grad is not None and grad.abs().sum() > 0


def test_gap8_only_rewards_pruning() -> None:
    net = _net((0, 2, 8))
    _set(net.weight_choices["c1"], torch.full((16,), 1))
    at_2 = net.cost("gap8_latency", hard=True).item()
    _set(net.weight_choices["c1"], torch.full((16,), 2))
    assert net.cost("gap8_latency", hard=True).item() == at_2
    _set(net.weight_choices["c1"], torch.tensor([0] * 8 + [2] * 8))
    assert net.cost("gap8_latency", hard=True).item() < at_2
    net.train()
    net.sample_choices()
    net.cost("gap8_latency").backward()
    grad = net.weight_choices["c1"].alpha.grad
    # pushing 2-bit or 8-bit up changes nothing; pushing 0-bit up (pruning) lowers the cost
    assert torch.allclose(grad[1], grad[2]) and (grad[0] < grad[1]).all()


def test_diana_layer_is_the_max_of_digital_and_analog_sides() -> None:
    net = _net((0, 2, 8))
    geom = dict(net.layers())["c2"].geometry
    model = DianaLatency()
    both = model.exact_layer_cost(geom, {2: 12, 8: 12}, 16, 8)
    digital = model.exact_layer_cost(geom, {8: 12}, 16, 8)
    analog = model.exact_layer_cost(geom, {2: 12}, 16, 8)
    assert both == max(digital, analog) < digital + analog
    _set(net.weight_choices["c2"], torch.tensor([1, 2] * 12))
    hard, soft = _hard_soft(net, "diana_latency")
    assert hard["c2"] == both
    assert both <= soft["c2"] <= both * (1 + 0.05 * 0.7)  # LSE of two: at most t·max·log 2


def test_diana_search_moves_channels_off_the_slower_side() -> None:
    """With 20 of c2's channels digital (the slower side by far), the smooth max passes
    the digital side's gradient: its channels are pushed from 8 towards 2 bits."""
    net = _net((0, 2, 8)).train()
    with torch.no_grad():
        alpha = net.weight_choices["c2"].alpha
        alpha.zero_()
        alpha[2, :20] = 2.0
        alpha[1, 20:] = 2.0
    net.set_temperature(1.0)
    net.sample_choices()
    net.layer_costs("diana_latency")["c2"].backward()
    grad = net.weight_choices["c2"].alpha.grad
    assert (grad[2, :20] > 0).all() and (grad[2, :20] > grad[1, :20]).all()


def test_diana_per_layer_soft_cost_is_the_expectation() -> None:
    net = _net((2, 8), per_channel=False).train()
    net.sample_choices()
    theta = net.weight_choices["c2"].theta()
    geom = dict(net.layers())["c2"].geometry
    model = DianaLatency()
    expected = (theta[0] * model.exact_layer_cost(geom, {2: 24}, 16, 8)
                + theta[1] * model.exact_layer_cost(geom, {8: 24}, 16, 8))
    assert net.layer_costs("diana_latency")["c2"].item() == pytest.approx(expected.item(),
                                                                          rel=1e-5)


# ----------------------------------------------------------------------- YAML targets

MPIC_AS_YAML = CustomConstants(MacsPerCycle.from_mapping(
    {2: {2: 6.5, 4: 4.0, 8: 2.2}, 4: {2: 3.9, 4: 3.5, 8: 2.1}, 8: {2: 2.5, 4: 2.3, 8: 2.1}},
    "test"), energy_per_cycle=5.3825e-3 / 250e6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_the_yaml_form_of_mpic_equals_the_built_in_model(per_channel: bool) -> None:
    assert MPIC_AS_YAML.macs_per_cycle == MPIC_TABLE
    bits = (0, 2, 4, 8) if per_channel else (2, 4, 8)
    net = _net(bits, (2, 4, 8), per_channel)
    net.cost_models.update({"mine": CustomLatency("mine", MPIC_AS_YAML),
                            "mine_energy": CustomEnergy("mine_energy", MPIC_AS_YAML),
                            "mpic_latency": MPICLatency(), "mpic_energy": MPICEnergy()})
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            for _, choice in net.choices():
                choice.alpha.normal_(0, 3)
        for a, b in (("mine", "mpic_latency"), ("mine_energy", "mpic_energy")):
            assert net.cost(a, hard=True).item() == pytest.approx(
                net.cost(b, hard=True).item(), rel=1e-12)
            net.train()
            net.sample_choices()
            assert net.cost(a).item() == pytest.approx(net.cost(b).item(), rel=1e-6)
            net.eval()


def test_rounded_yaml_target_soft_matches_exact_with_overhead_once() -> None:
    net = _net((0, 2, 4, 8))
    net.cost_models["r"] = CustomLatency("r", CustomConstants(MacsPerCycle.from_mapping(
        {8: {2: 6.0, 4: 3.5, 8: 2.0}}, "t"), overhead_per_layer=100, cout_multiple=8,
        cin_multiple=4))
    _set(net.weight_choices["c1"], DIANA_ASSIGN)  # 4 pruned, 4 at 2 bits, 8 at 4 bits
    _set(net.weight_choices["c2"], torch.arange(24) % 4)
    hard, soft = _hard_soft(net, "r")
    # c1: 4 channels at 2 bits round to 8, 8 at 4 bits stay 8; 3 inputs round to 4
    assert hard["c1"] == 100 + 64 * 8 * (9 * 4 + 1) / 6.0 + 64 * 8 * (9 * 4 + 1) / 3.5
    for layer in hard:
        assert soft[layer] == pytest.approx(hard[layer], rel=1e-4), layer


def test_recipe_yaml_targets_build_cost_models(tmp_path) -> None:
    path = tmp_path / "mcu.yaml"
    path.write_text("macs_per_cycle: {8: {8: 2.0}}\noverhead_per_layer: 50\n")
    models = yaml_cost_models({"mcu": str(path), "diana": "ignored: built in"})
    assert set(models) == {"mcu"}
    net = _net((0, 8))
    _set(net.weight_choices["c1"], torch.tensor([0, 1] * 8))
    _set(net.weight_choices["c2"], torch.ones(24, dtype=torch.long))
    net.cost_models.update(models)
    hard = net.layer_costs("mcu", hard=True)
    # overhead + 8×8 outputs × kept channels × (weights + bias) / 2 MACs per cycle
    assert hard["c1"].item() == 50 + 64 * 8 * (27 + 1) / 2
    assert hard["c2"].item() == 50 + 64 * 24 * (9 * 8 + 1) / 2


# ----------------------------------------------------------------------- refine


def _refined_latency(model, geom, cin, assign, bits):
    def latency(counts):
        return model.exact_layer_cost(geom, counts, cin, 8)

    logits = torch.zeros(len(bits), assign.numel())
    after = refine_channel_assignment(assign, bits, logits, latency)
    return latency(channel_counts(assign, bits)), latency(channel_counts(after, bits)), after


@pytest.mark.parametrize("seed", range(6))
def test_refine_is_never_slower_on_diana_and_a_rounded_yaml_target(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    net = _net((0, 2, 8))
    geom = dict(net.layers())["c2"].geometry
    rounded = CustomLatency("r", CustomConstants(MacsPerCycle.from_mapping(
        {8: {2: 6.0, 4: 3.5, 8: 2.0}}, "t"), overhead_per_layer=10, cout_multiple=8))
    for model, bits in ((DianaLatency(), (0, 2, 8)), (rounded, (0, 2, 4, 8))):
        assign = torch.randint(0, len(bits), (24,), generator=g)
        before, after, refined = _refined_latency(model, geom, 16, assign, bits)
        assert after <= before
        moved = refined != assign
        assert (torch.tensor(bits)[refined[moved]] > torch.tensor(bits)[assign[moved]]).all()
        assert ((assign == 0) == (refined == 0)).all()  # pruned channels stay pruned


def test_refine_gains_on_diana_when_the_analog_side_is_slower() -> None:
    # a wide conv: the analog array reprograms 8·Cin·9 weights, the digital side is cheap
    from mpsctl.cost.base import LayerGeometry

    geom = LayerGeometry("conv", cin=256, cout=32, kernel=(3, 3), out_hw=(2, 2))
    model = DianaLatency()
    assign = torch.tensor([1] * 30 + [2] * 2)
    before, after, refined = _refined_latency(model, geom, 256, assign, (0, 2, 8))
    assert after < before
    assert int((refined == 2).sum()) > 2


def test_reports_list_the_targets_that_run_the_model_as_it_is() -> None:
    from mpsctl.stages.summary import cost_names

    net = _net((0, 2, 4, 8))
    for choice in net.weight_choices.values():  # every channel at 8 bits
        _set(choice, torch.full((choice.channels,), len(choice.bits) - 1))
    everything = cost_names({}, net)
    assert {"ne16", "mpic_latency", "mpic_energy", "gap8_latency", "diana_latency"} <= set(
        everything)
    _set(net.weight_choices["c2"], torch.full((24,), 2))  # 4 bits: not a DIANA precision
    names = cost_names({}, net)
    assert "diana_latency" not in names and "mpic_latency" in names
    for name in names:  # each listed cost can be computed exactly
        assert net.cost(name, hard=True).item() >= 0
