"""Hardening / export (docs/algorithm.md#export): the fixed-precision model equals the
supernet's argmax model, 0-bit channels are physically removed in order, and the hard cost
is the real size."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from tiny_nets import (
    DepthwiseNet,
    GroupedResidualNet,
    PlainCNN,
    ResidualNet,
    calibrate_bn,
    randomize_alpha,
    randomize_bn,
)
from torch import nn

from mpsctl.models.registry import build_model
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.search.supernet import Supernet
from mpsctl.stages.export import RELATIVE_TOLERANCE, output_difference

SPACES = {
    "per_layer": SearchSpace(act_clip=2.0),
    "per_channel": SearchSpace(per_channel=True, act_clip=2.0),
    "prune": SearchSpace(weight_bits=(0, 2, 4, 8), per_channel=True, act_clip=2.0),
}
TINY = {
    "plain": (PlainCNN, (2, 3, 16, 16)),
    "residual": (ResidualNet, (2, 3, 16, 16)),
    "depthwise": (DepthwiseNet, (2, 3, 8, 8)),
    "grouped": (GroupedResidualNet, (2, 3, 16, 16)),
}


def _tiny(name: str, space: str, seed: int = 0) -> tuple[Supernet, torch.Tensor]:
    torch.manual_seed(seed)
    cls, shape = TINY[name]
    x = torch.rand(shape)
    net = build_supernet(randomize_bn(cls(), seed), x, SPACES[space])
    randomize_alpha(net, seed, scale=1.5)
    return net, x


def _relative_gap(net: Supernet, x: torch.Tensor, dtype: torch.dtype) -> float:
    net = copy.deepcopy(net).to(dtype).eval()
    fixed = net.harden()
    with torch.no_grad():
        expected, got = net(x.to(dtype)), fixed(x.to(dtype))
    scale = expected.abs().max()
    assert scale > 0 and expected.std() > 0, "degenerate test: the output is constant"
    return ((got - expected).abs().max() / scale).item()


def _true_size(net: Supernet) -> int:
    """Bits of all weights of a hardened model, read off its tensors."""
    total = 0
    for _, layer in net.layers():
        bits = torch.tensor(layer.choice.bits)[layer.choice.assignment()]
        per_channel = layer.weight[0].numel()
        total += int(bits.expand(layer.weight.shape[0]).sum()) * per_channel
    return total


def _prunes_something(net: Supernet) -> bool:
    return any(
        (c.assignment() == 0).any() for _, c in net.weight_choices.items() if c.can_prune
    )


# -- equivalence -----------------------------------------------------------------------------


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("model", list(TINY))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hardened_equals_supernet_argmax(model, space, dtype):
    net, x = _tiny(model, space)
    if space == "prune":
        assert _prunes_something(net)
    assert _relative_gap(net, x, dtype) <= 1e-5


@pytest.mark.parametrize("seed", range(4))
def test_hardened_equals_supernet_for_many_assignments(seed):
    net, x = _tiny("residual", "prune", seed)
    assert _relative_gap(net, x, torch.float32) <= 1e-5


def _torchvision(name: str) -> tuple[Supernet, torch.Tensor]:
    torch.manual_seed(0)
    factory = getattr(torchvision.models, name)
    model = calibrate_bn(factory(num_classes=10), torch.rand(8, 3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    net = build_supernet(model, x, SPACES["prune"])
    randomize_alpha(net, 0, scale=1.5)
    return net, x


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_torchvision_hardened_equals_supernet(name):
    net, x = _torchvision(name)
    assert _prunes_something(net)
    gap32 = _relative_gap(net, x, torch.float32)
    gap64 = _relative_gap(net, x, torch.float64)
    assert gap64 <= 1e-5
    assert gap32 <= 1e-5  # float32 matched too (summation order did not flip a code)
    fixed = net.harden()
    assert fixed.cost("params_bit", hard=True) == net.cost("params_bit", hard=True)
    assert fixed.cost("params_bit", hard=True).item() == _true_size(fixed)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [("resnet8", {}, (2, 3, 32, 32)), ("mnist_cnn", {}, (2, 1, 28, 28)),
     ("ds_cnn", {"width": 16, "depth": 2}, (2, 1, 16, 16))],
)
def test_builtin_models_harden_exactly(name, kwargs, shape):
    torch.manual_seed(0)
    x = torch.rand(shape)
    model = calibrate_bn(build_model(name, kwargs), torch.rand((8,) + shape[1:]))
    net = build_supernet(model, x, SPACES["prune"])
    randomize_alpha(net, 0, scale=1.5)
    assert _prunes_something(net)
    assert _relative_gap(net, x, torch.float32) <= 1e-5
    fixed = net.harden()
    assert net.cost("params_bit", hard=True).item() == _true_size(fixed)


class _Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(2, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.dw = nn.Conv1d(8, 8, 3, padding=1, groups=8)
        self.b = nn.Conv1d(8, 6, 1)
        self.fc = nn.Linear(6 * 10, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.a(x)))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.b(x))
        return self.fc(x.flatten(1))


def test_conv1d_network_hardens_exactly():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 10)
    net = build_supernet(randomize_bn(_Conv1dNet()), x, SPACES["prune"])
    randomize_alpha(net, 0, scale=1.5)
    assert _prunes_something(net)
    assert _relative_gap(net, x, torch.float32) <= 1e-5
    fixed = net.harden()
    ka, kb = (len(k) for k in net.kept_channels().values())
    layers = dict(fixed.layers())
    assert layers["dw"].weight.shape == (ka, 1, 3) and layers["b"].weight.shape == (kb, ka, 1)
    assert layers["fc"].weight.shape == (3, 10 * kb)
    assert layers["a"].geometry.kernel == (3, 1) and layers["a"].geometry.out_hw == (10, 1)
    assert net.cost("params_bit", hard=True).item() == _true_size(fixed)


def test_hard_training_mode_equals_eval_argmax():
    """Straight-through hard θ runs the mixture at one-hot weights: the argmax model."""
    net, x = _tiny("residual", "prune")
    net.eval()
    with torch.no_grad():
        expected = net(x)
    net.train()
    net.set_mode("hard")
    out = net(x)
    assert torch.allclose(out, expected, atol=1e-6 * expected.abs().max().item())
    out.sum().backward()
    assert all(c.alpha.grad is not None for _, c in net.choices())


def test_hardened_model_is_fixed_in_training_mode_too():
    net, x = _tiny("depthwise", "prune")
    fixed = net.eval().harden()
    assert fixed.is_fixed and not fixed.training
    with torch.no_grad():
        expected = fixed(x)
        fixed.train()
        assert torch.equal(fixed(x), expected)
    # Only the activation clips remain architecture parameters.
    assert len(fixed.arch_parameters()) == sum(1 for _ in fixed.activation_slots())


# -- pruning: shapes, order, zeros ---------------------------------------------------------------


def test_depthwise_pruned_shapes_and_order():
    net, x = _tiny("depthwise", "prune")
    kept = net.kept_channels()
    ks, kp = torch.tensor(kept["weight.stem"]), torch.tensor(kept["weight.pw"])
    assert 0 < len(ks) < 8 and 0 < len(kp) < 12
    assert ks.tolist() == sorted(ks.tolist())
    fixed = net.harden()
    src, dst = net.net, fixed.net
    assert dst.stem.weight.shape == (len(ks), 3, 3, 3)
    assert torch.equal(dst.stem.weight, src.stem.weight[ks])
    assert torch.equal(dst.stem.bias, src.stem.bias[ks])
    assert dst.dw.weight.shape == (len(ks), 1, 3, 3) and dst.dw.conv_args["groups"] == len(ks)
    assert torch.equal(dst.dw.weight, src.dw.weight[ks])
    assert dst.pw.weight.shape == (len(kp), len(ks), 1, 1)
    assert torch.equal(dst.pw.weight, src.pw.weight[kp][:, ks])
    features = (kp.unsqueeze(1) * 16 + torch.arange(16)).flatten()
    assert dst.fc.weight.shape == (3, 16 * len(kp))
    assert torch.equal(dst.fc.weight, src.fc.weight[:, features])
    g = dst.pw.geometry
    assert (g.cin, g.cout) == (len(ks), len(kp))
    assert dst.fc.geometry.cin == 16 * len(kp)
    # Nothing left to prune: every remaining channel is live.
    assert fixed.kept_channels() == {"weight.stem": list(range(len(ks))),
                                     "weight.pw": list(range(len(kp)))}
    assert all((torch.tensor(c.bits)[c.assignment()] != 0).all()
               for _, c in fixed.weight_choices.items())


def test_residual_pruned_shapes_follow_the_shared_choice():
    net, _ = _tiny("residual", "prune")
    kept = {k: torch.tensor(v) for k, v in net.kept_channels().items()}
    ks, ka, kb1, kb2 = (kept[f"weight.{n}"] for n in ("stem", "a1", "b1", "b2"))
    dst, src = net.harden().net, net.net
    assert dst.stem.weight.shape[0] == dst.a2.weight.shape[0] == len(ks)
    assert torch.equal(dst.a1.weight, src.a1.weight[ka][:, ks])
    assert torch.equal(dst.a2.weight, src.a2.weight[ks][:, ka])
    assert torch.equal(dst.b1.weight, src.b1.weight[kb1][:, ks])
    assert torch.equal(dst.b2.weight, src.b2.weight[kb2][:, kb1])
    assert torch.equal(dst.shortcut.weight, src.shortcut.weight[kb2][:, ks])
    assert torch.equal(dst.fc.weight, src.fc.weight[:, kb2])


def test_supernet_pruned_channels_are_exactly_zero():
    """A 0-bit channel outputs exactly 0, bias included, in eval and hard mode
    (docs/algorithm.md#pruning-with-0-bits)."""
    net, x = _tiny("plain", "prune")
    index = net.net.conv1.choice.assignment()
    assert (index == 0).any()
    outputs = {}
    net.net.conv1.register_forward_hook(lambda m, i, o: outputs.__setitem__("y", o))
    for mode in ("eval", "hard"):
        if mode == "eval":
            net.eval()
        else:
            net.train()
            net.set_mode("hard")
        net(x)
        pruned = outputs["y"][:, index == 0]
        assert torch.equal(pruned, torch.zeros_like(pruned))
        assert (outputs["y"][:, index != 0] != 0).any()


def test_min_keep_survives_hardening():
    net, x = _tiny("residual", "prune")
    with torch.no_grad():
        for _, c in net.weight_choices.items():
            if c.can_prune:
                c.alpha[0] = 10.0  # every channel prefers to be pruned
    fixed = net.harden()
    for name, keep in net.kept_channels().items():
        assert len(keep) == 1, name
    with torch.no_grad():
        assert torch.isfinite(fixed(x)).all()
    space = SearchSpace(weight_bits=(0, 8), per_channel=True, min_channels=3)
    net3 = build_supernet(ResidualNet(), x, space)
    with torch.no_grad():
        for _, c in net3.weight_choices.items():
            if c.can_prune:
                c.alpha[0] = 10.0
    assert all(len(k) == 3 for k in net3.kept_channels().values())
    assert net3.harden().net.stem.weight.shape[0] == 3


# -- costs of the hardened model ------------------------------------------------------------------


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("model", list(TINY))
def test_hard_cost_equals_hardened_model_size(model, space):
    net, _ = _tiny(model, space)
    fixed = net.harden()
    for cost in ("params_bit", "bitops"):
        hard = net.layer_costs(cost, hard=True)
        assert hard == fixed.layer_costs(cost, hard=True)
        assert fixed.layer_costs(cost, hard=False) == hard  # nothing soft left
    assert net.cost("params_bit", hard=True).item() == _true_size(fixed)


# -- the harden API -------------------------------------------------------------------------------


def test_harden_after_a_training_step_leaves_the_supernet_alone():
    net, x = _tiny("residual", "prune")
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss = net(x).square().mean() + 1e-6 * net.cost("params_bit")
    loss.backward()
    opt.step()
    before = copy.deepcopy(net.state_dict())
    fixed = net.harden()  # a step's θ is cached in every choice: copying must still work
    assert fixed.is_fixed and not net.is_fixed
    assert net.training
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert all(c.alpha is not None for _, c in net.choices())


def test_harden_with_an_explicit_assignment():
    net, x = _tiny("plain", "prune")
    assignment = net.assignment()
    assignment["weight.conv1"] = torch.tensor([0, 1, 2, 3, 0, 3, 3, 0])
    assignment["act.conv1"] = torch.tensor(0)
    fixed = net.harden(assignment)
    assert fixed.net.conv1.weight.shape[0] == 5
    assert fixed.net.conv2.weight.shape[1] == 5
    assert fixed.assignment()["weight.conv1"].tolist() == [1, 2, 3, 3, 3]
    assert fixed.net.act_quants["conv1"].choice.assignment().item() == 0
    # The supernet frozen at the same assignment computes the same function.
    ref = copy.deepcopy(net).eval()
    for name, choice in ref.choices():
        choice.freeze(assignment[name])
    with torch.no_grad():
        assert torch.allclose(fixed(x), ref(x), atol=1e-6)
    del assignment["act.input"]
    with pytest.raises(KeyError, match="act.input"):
        net.harden(assignment)


def test_compensation_scales_weights_of_pruning_layers():
    torch.manual_seed(0)
    model = randomize_bn(PlainCNN())
    x = torch.rand(1, 3, 16, 16)
    plain = build_supernet(model, x, SPACES["prune"])
    space = SearchSpace(weight_bits=(0, 2, 4, 8), per_channel=True, compensate=True)
    compensated = build_supernet(model, x, space)
    ratio = compensated.net.conv1.weight / plain.net.conv1.weight
    assert torch.allclose(ratio, torch.full_like(ratio, 1.17696), atol=1e-5)
    assert torch.equal(compensated.net.fc.weight, plain.net.fc.weight)  # fc cannot prune


@pytest.mark.parametrize("model", ["residual", "depthwise"])
def test_lsq_weights_harden_exactly(model):
    torch.manual_seed(0)
    cls, shape = TINY[model]
    x = torch.rand(shape)
    space = SearchSpace(weight_bits=(0, 2, 4, 8), per_channel=True, act_clip=2.0,
                        weight_quantizer="lsq")
    net = build_supernet(randomize_bn(cls()), x, space)
    randomize_alpha(net, 1, scale=1.5)
    assert _prunes_something(net)
    assert _relative_gap(net, x, torch.float32) <= 1e-5
    fixed = net.harden()
    for _, layer in fixed.layers():
        assert layer.weight_quantizer.step.shape[1] == layer.weight.shape[0]


def test_single_precision_is_plain_qat_and_exports_exactly():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    net = build_supernet(randomize_bn(ResidualNet()), x,
                         SearchSpace(weight_bits=(8,), act_bits=(8,), act_clip=2.0))
    net.train()
    soft = net(x)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(soft, net(x), atol=1e-6)
        assert torch.equal(net.harden()(x), net(x))
    assert isinstance(net.harden().net.fc, nn.Module)


def test_residual_chain_pruned_to_nothing_exports_exactly():
    """Issue 19 (regnet_x_400mf): every channel of a residual chain — the projection and the
    conv after a grouped conv, which share one choice — prefers 0 bits by so much that the
    float32 softmax underflows; min_channels revives one channel. `export` hardens in float32
    and checks in float64: both must keep the same channel."""
    net, x = _tiny("grouped", "prune")
    chain = net.net.proj.choice
    assert chain is net.net.c.choice and chain.can_prune
    assert not net.net.b.choice.can_prune and not net.net.a.choice.can_prune  # grouped conv
    with torch.no_grad():
        chain.alpha[0] = chain.alpha[1:].amax(0) + 120.0
    net.eval()
    fixed = net.harden()
    assert fixed.net.proj.weight.shape[0] == 1 and fixed.net.fc.weight.shape[1] == 1
    check = output_difference(net, fixed, x)
    assert check["output_scale"] > 0
    assert check["max_abs_diff"] <= RELATIVE_TOLERANCE * max(check["output_scale"], 1.0)
