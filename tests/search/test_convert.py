"""Graph conversion (docs/algorithm.md#graph-conversion): BN folding, quantizer placement
and sharing, exclusion, overrides, error reporting, torchvision models, and never touching
the caller's model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from tiny_nets import (
    DepthwiseNet,
    PlainCNN,
    ResidualNet,
    calibrate_bn,
    randomize_bn,
    same_state,
    snapshot,
)
from torch import nn

from mpsctl.errors import ConversionError, UserError
from mpsctl.models.registry import build_model
from mpsctl.search.convert import build_supernet
from mpsctl.search.layers import ActivationSlot, SearchableLayer
from mpsctl.search.space import LayerOverride, SearchSpace
from mpsctl.search.supernet import Supernet

PRUNE = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8), per_channel=True)


def _graph_targets(net: Supernet) -> list[str]:
    return [str(n.target) for n in net.net.graph.nodes if n.op == "call_module"]


# -- BatchNorm folding and float equivalence at high precision ----------------------------------


def test_plain_cnn_folds_batchnorm_and_matches_float_at_high_precision():
    torch.manual_seed(0)
    model = randomize_bn(PlainCNN())
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    # 14 bits everywhere: the int32 bias (scale s_in·s_w) still fits; at 16/16 bits a folded
    # bias overflows int32 and saturates, as docs/algorithm.md#bias asks.
    space = SearchSpace(weight_bits=(14,), act_bits=(14,), act_clip=4.0, input_clip=1.0)
    net = build_supernet(model, x, space).eval()
    assert not any(t.startswith("bn") for t in _graph_targets(net))
    with torch.no_grad():
        out = net(x)
    assert (out - ref).abs().max() <= 2e-3 * ref.abs().max()

    # The folded parameters are W·γ/σ and (b − μ)·γ/σ + β.
    bn = model.bn1
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    layer = net.net.conv1
    assert torch.allclose(layer.weight, model.conv1.weight * factor.reshape(-1, 1, 1, 1))
    assert torch.allclose(layer.bias, (model.conv1.bias - bn.running_mean) * factor + bn.bias)
    bn2 = model.bn2  # conv2 has no bias of its own: the folded one is −μ·γ/σ + β
    factor2 = bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
    assert torch.allclose(net.net.conv2.bias, -bn2.running_mean * factor2 + bn2.bias)


def test_folding_uses_running_statistics_even_for_a_model_in_training_mode():
    model = randomize_bn(PlainCNN()).train()
    before = snapshot(model)
    x = torch.rand(2, 3, 16, 16)
    space = SearchSpace(weight_bits=(14,), act_bits=(14,), act_clip=4.0)
    net = build_supernet(model, x, space).eval()
    assert model.training, "the caller's model keeps its mode"
    assert same_state(model, before)
    with torch.no_grad():
        ref = model.eval()(x)
        assert (net(x) - ref).abs().max() <= 2e-3 * ref.abs().max()


def test_sixteen_bit_bias_saturates_int32():
    model = randomize_bn(PlainCNN())
    x = torch.rand(1, 3, 16, 16)
    space = SearchSpace(weight_bits=(16,), act_bits=(16,), act_clip=4.0)
    net = build_supernet(model, x, space).eval()
    layer = net.net.conv1
    _, bias = layer.quantized_parameters()
    s_in = layer.input_slot.scales()[0]
    s_w = layer.weight_quantizer.fixed_scales(layer.weight, torch.tensor(0))
    codes = bias / (s_in * s_w)
    assert codes.abs().max() <= 2**31 and (codes.abs() >= 2**31 - 128).any()


# -- quantizer placement, signedness and sharing ------------------------------------------------


def test_plain_cnn_quantizer_placement():
    net = build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16), SearchSpace())
    slots = dict(net.activation_slots())
    assert set(slots) == {"input", "conv1", "conv2"}  # fc feeds the output: not quantized
    assert slots["input"].quantizer.clip.item() == 1.0
    assert slots["conv1"].quantizer.clip.item() == 6.0
    assert not any(s.quantizer.signed for s in slots.values())  # all followed by ReLU
    layers = dict(net.layers())
    assert set(layers) == {"conv1", "conv2", "fc"}
    assert layers["conv1"].input_slot is slots["input"]
    assert layers["conv2"].input_slot is slots["conv1"]
    assert layers["fc"].input_slot is slots["conv2"]  # through relu, max-pool and flatten
    names = [n for n, _ in net.choices()]
    assert names == ["weight.conv1", "weight.conv2", "weight.fc",
                     "act.input", "act.conv1", "act.conv2"]


def test_residual_add_partners_share_quantizer_and_weight_choice():
    net = build_supernet(randomize_bn(ResidualNet()), torch.rand(1, 3, 16, 16), PRUNE)
    layers = dict(net.layers())
    slots = dict(net.activation_slots())
    # Identity block: stem output, a2 output and the add share one quantizer and one choice.
    assert layers["a2"].choice is layers["stem"].choice
    assert layers["a1"].choice is not layers["stem"].choice
    # Projection block: b2 and the 1×1 shortcut meet at the add.
    assert layers["shortcut"].choice is layers["b2"].choice
    assert layers["b1"].choice is not layers["b2"].choice
    assert set(slots) == {"input", "stem", "a1", "b1", "b2", "fc_input"}
    code = net.net.code
    assert code.count("self.act_quants.stem(") == 3  # stem, a2, add
    assert code.count("self.act_quants.b2(") == 3  # b2, shortcut, add
    # Signed: a2 and b2 are not followed by a ReLU (the reference would clip them at 0).
    assert slots["stem"].quantizer.signed and slots["b2"].quantizer.signed
    assert not slots["a1"].quantizer.signed and not slots["b1"].quantizer.signed
    # After the global average pool the values leave the grid: fc gets its own quantizer.
    assert layers["fc"].input_slot is slots["fc_input"]
    assert not slots["fc_input"].quantizer.signed
    assert layers["b1"].input_slot is slots["stem"] and layers["shortcut"].input_slot is slots[
        "stem"]
    # The group leader is the first member in graph order, the same on every build.
    again = build_supernet(randomize_bn(ResidualNet()), torch.rand(1, 3, 16, 16), PRUNE)
    assert [n for n, _ in again.choices()] == [n for n, _ in net.choices()]
    assert list(net.weight_choices) == ["stem", "a1", "b1", "b2", "fc"]


def test_depthwise_shares_with_its_producer():
    net = build_supernet(randomize_bn(DepthwiseNet()), torch.rand(1, 3, 8, 8), PRUNE)
    layers = dict(net.layers())
    assert layers["dw"].choice is layers["stem"].choice
    assert layers["dw"].geometry.kind == "depthwise"
    assert layers["pw"].choice is not layers["stem"].choice
    slots = dict(net.activation_slots())
    assert set(slots) == {"input", "stem", "pw"}
    assert net.net.code.count("self.act_quants.stem(") == 2
    assert layers["pw"].input_slot is slots["stem"]
    assert layers["stem"].choice.can_prune and layers["pw"].choice.can_prune
    assert layers["fc"].cin_source == (layers["pw"].choice, 16)  # 4×4 features per channel


def test_last_layer_never_prunes():
    for model, x in ((PlainCNN(), torch.rand(1, 3, 16, 16)),
                     (ResidualNet(), torch.rand(1, 3, 16, 16))):
        override = LayerOverride("fc", weight_bits=(0, 4, 8))
        space = SearchSpace(weight_bits=(0, 2, 4, 8), per_channel=True, overrides=(override,))
        net = build_supernet(model, x, space)
        layers = dict(net.layers())
        assert 0 not in layers["fc"].choice.bits
        assert layers["fc"].choice.bits == (4, 8)
        assert all(0 in layers[n].choice.bits for n in layers if n != "fc")


def test_per_layer_search_drops_zero_bits():
    net = build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16),
                         SearchSpace(weight_bits=(0, 2, 8)))
    assert all(c.bits == (2, 8) and not c.per_channel for _, c in net.weight_choices.items())


def test_grouped_conv_blocks_pruning_of_itself_and_its_producer():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
            self.b = nn.Conv2d(8, 4, 1)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(F.relu(self.b(F.relu(self.g(F.relu(self.a(x)))))))

    net = build_supernet(Grouped(), torch.rand(1, 3, 8, 8), PRUNE)
    layers = dict(net.layers())
    assert 0 not in layers["a"].choice.bits and 0 not in layers["g"].choice.bits
    assert 0 in layers["b"].choice.bits
    assert layers["g"].geometry.kind == "conv" and layers["g"].geometry.groups == 2


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        return self.head(F.relu(self.c(y)))


class _AvgPoolBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.b = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.b(self.pool(F.relu(self.a(x))))))


def test_barrier_op_blocks_pruning_of_its_producers():
    net = build_supernet(_Cat(), torch.rand(1, 3, 8, 8), PRUNE)
    layers = dict(net.layers())
    assert 0 not in layers["a"].choice.bits and 0 not in layers["b"].choice.bits
    assert 0 in layers["c"].choice.bits
    net.train()
    net(torch.rand(2, 3, 8, 8)).sum().backward()


def test_concatenation_shares_one_quantizer_with_its_inputs():
    """Issue 19: a channel concatenation is quantized like an add, on one grid shared with
    its inputs (unsigned: both parts come out of a ReLU), so that integer export joins codes."""
    net = build_supernet(_Cat(), torch.rand(1, 3, 8, 8), PRUNE)
    layers = dict(net.layers())
    slots = dict(net.activation_slots())
    assert not {"c_input", "b", "cat"} & set(slots)  # one slot, led by 'a'
    assert layers["c"].input_slot is slots["a"]
    assert not slots["a"].quantizer.signed
    net.train()
    net(torch.rand(2, 3, 8, 8)).sum().backward()
    net.eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net.harden()(x), net(x))


@pytest.mark.parametrize("model_cls", [_AvgPoolBetween])
def test_layer_after_off_grid_op_gets_own_input_quantizer(model_cls):
    """A searchable layer fed by an op that leaves the grid (average pool) gets its own
    input quantizer, distinct from the one on its output (regression: they collided)."""
    net = build_supernet(model_cls(), torch.rand(1, 3, 8, 8), PRUNE)
    layer = dict(net.layers())["b"]
    slots = dict(net.activation_slots())
    name = "b"
    assert slots[f"{name}_input"] is layer.input_slot
    assert slots[name] is not slots[f"{name}_input"]
    assert not slots[f"{name}_input"].quantizer.signed  # ReLU before the average pool
    net.train()
    net(torch.rand(2, 3, 8, 8)).sum().backward()
    net.eval()
    h = net.harden()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(h(x), net(x))


# -- exclusion and overrides --------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["a*", "a?"])
def test_exclude_by_glob_keeps_layers_float(pattern):
    model = randomize_bn(ResidualNet())
    net = build_supernet(model, torch.rand(1, 3, 16, 16), SearchSpace(exclude=(pattern,)))
    layers = dict(net.layers())
    assert "a1" not in layers and "a2" not in layers
    assert type(net.net.a1) is nn.Conv2d and torch.equal(net.net.a1.weight, model.a1.weight)
    targets = _graph_targets(net)
    assert "bn_a1" in targets and "bn_a2" in targets  # their BN is not folded either
    assert "bn_stem" not in targets
    net.eval()
    net(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (SearchSpace(exclude=("Conv2d-not-a-type",)),
         r"^search\.exclude\[0\]: 'Conv2d-not-a-type' matches no layer of the model; remove it "
         r"or use one of: stem, a1, a2, b1, b2, shortcut, fc$"),
        (SearchSpace(exclude=("fc", "sortcut")),
         r"^search\.exclude\[1\]: 'sortcut' matches no layer .*did you mean 'shortcut'"),
        (SearchSpace(overrides=(LayerOverride("stme", weight_bits=(8,)),)),
         r"^search\.layers\[stme\]: matches no layer .*did you mean 'stem'.*: stem, a1, "),
    ],
)
def test_patterns_that_match_nothing_are_refused(space, message):
    with pytest.raises(ConversionError, match=message):
        build_supernet(randomize_bn(ResidualNet()), torch.rand(1, 3, 16, 16), space)


@pytest.mark.parametrize("name", ["Linear", "nn.Linear", "torch.nn.Linear"])
def test_exclude_by_type_name(name):
    net = build_supernet(ResidualNet(), torch.rand(1, 3, 16, 16), SearchSpace(exclude=(name,)))
    assert type(net.net.fc) is nn.Linear
    assert "fc" not in dict(net.layers()) and "fc" not in dict(net.weight_choices)
    assert {"stem", "a1", "a2", "b1", "b2", "shortcut"} == set(dict(net.layers()))


def test_overrides_fix_first_and_last_layer_at_eight_bits():
    space = SearchSpace(
        weight_bits=(2, 4),
        act_bits=(2, 4),
        overrides=(
            LayerOverride("conv1", weight_bits=(8,)),
            LayerOverride("fc", weight_bits=(8,)),
            LayerOverride("input", act_bits=(8,)),
            LayerOverride("conv2", act_bits=(4, 8)),
        ),
    )
    net = build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16), space)
    bits = {n: c.bits for n, c in net.choices()}
    assert bits == {
        "weight.conv1": (8,), "weight.conv2": (2, 4), "weight.fc": (8,),
        "act.input": (8,), "act.conv1": (2, 4), "act.conv2": (4, 8),
    }
    assert space.weight_bits_for("conv1") == ((8,), True)
    assert space.weight_bits_for("conv2") == ((2, 4), False)


def test_overrides_must_agree_within_a_sharing_group():
    space = SearchSpace(overrides=(LayerOverride("a2", weight_bits=(8,)),
                                   LayerOverride("stem", weight_bits=(4, 8))))
    with pytest.raises(ConversionError, match="a2") as info:
        build_supernet(ResidualNet(), torch.rand(1, 3, 16, 16), space)
    assert "stem" in str(info.value)


def test_override_options_reach_the_quantizer():
    space = SearchSpace(overrides=(LayerOverride("conv2", options={"clip": 2.5}),))
    net = build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16), space)
    assert dict(net.activation_slots())["conv2"].quantizer.clip.item() == 2.5
    bad = SearchSpace(overrides=(LayerOverride("conv2", options={"nonsense": 1}),))
    with pytest.raises(ConversionError, match=r"search.layers\[conv2\]"):
        build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16), bad)


def test_unknown_quantizer_names_are_conversion_errors():
    with pytest.raises(ConversionError, match="unknown weight quantizer"):
        build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16), SearchSpace(weight_quantizer="x"))
    with pytest.raises(ConversionError, match="unknown activation quantizer"):
        build_supernet(PlainCNN(), torch.rand(1, 3, 16, 16), SearchSpace(act_quantizer="x"))


# -- errors -------------------------------------------------------------------------------------


class _Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.conv(x)
        return x


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.gate = _Gate()

    def forward(self, x):
        return self.gate(self.stem(x))


def test_untraceable_model_names_the_module():
    model = _Untraceable()
    before = snapshot(model)
    with pytest.raises(ConversionError, match="'gate'") as info:
        build_supernet(model, torch.rand(1, 3, 8, 8), SearchSpace())
    assert isinstance(info.value, UserError)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "\n" not in str(info.value)
    assert same_state(model, before)


@pytest.mark.parametrize(
    ("layer", "kind"),
    [(nn.ConvTranspose2d(4, 4, 2, stride=2), "ConvTranspose2d"), (nn.PReLU(), "PReLU"),
     (nn.LayerNorm([4, 6, 6]), "LayerNorm")],
)
def test_unsupported_parameterised_layer_names_its_path(layer, kind):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.block = nn.Sequential(nn.ReLU(), layer)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.block(self.stem(x)))

    with pytest.raises(ConversionError, match=rf"'block\.1' \({kind}\)"):
        build_supernet(Net(), torch.rand(1, 3, 8, 8), SearchSpace())
    # Excluding it keeps it in float and the conversion goes through.
    net = build_supernet(Net(), torch.rand(1, 3, 8, 8), SearchSpace(exclude=("block.1",)))
    assert set(dict(net.layers())) == {"stem", "head"}


def test_functional_conv_with_own_weight_is_refused():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.w)

    with pytest.raises(ConversionError, match="conv2d"):
        build_supernet(Functional(), torch.rand(1, 3, 8, 8), SearchSpace())


def test_non_zero_padding_is_refused():
    class Reflect(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.conv(x))

    with pytest.raises(ConversionError, match="'conv'.*padding"):
        build_supernet(Reflect(), torch.rand(1, 3, 8, 8), SearchSpace())


def test_wrong_example_shape_is_a_conversion_error():
    with pytest.raises(ConversionError, match=r"input of shape \(1, 5, 16, 16\)"):
        build_supernet(PlainCNN(), torch.rand(1, 5, 16, 16), SearchSpace())


# -- whole models -------------------------------------------------------------------------------


def _check_runs_and_untouched(model: nn.Module, x: torch.Tensor, space: SearchSpace) -> Supernet:
    before = snapshot(model)
    net = build_supernet(model, x, space)
    assert same_state(model, before), "the caller's model was modified"
    assert not any(isinstance(m, (SearchableLayer, ActivationSlot)) for m in model.modules())
    net.train()
    out = net(x)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    alphas = [c.alpha for _, c in net.choices() if c.alpha is not None]
    assert alphas and all(a.grad is not None for a in alphas)
    assert sum(a.grad.abs().sum() for a in alphas) > 0
    assert any(layer.weight.grad is not None for _, layer in net.layers())
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(x)).all()
    assert same_state(model, before)
    return net


@pytest.mark.parametrize("per_channel", [False, True])
def test_torchvision_mobilenet_v2(per_channel):
    torch.manual_seed(0)
    model = calibrate_bn(torchvision.models.mobilenet_v2(num_classes=10), torch.rand(8, 3, 32, 32))
    space = SearchSpace(weight_bits=(0, 2, 4, 8) if per_channel else (2, 4, 8),
                        per_channel=per_channel, act_clip=1.0)
    net = _check_runs_and_untouched(model, torch.rand(2, 3, 32, 32), space)
    layers = dict(net.layers())
    assert len(layers) == 53  # 52 convs + classifier
    # Depthwise convs share their producer's choice; linear bottlenecks are signed.
    assert layers["features.2.conv.1.0"].choice is layers["features.2.conv.0.0"].choice
    slots = dict(net.activation_slots())
    assert slots["features_1_conv_1"].quantizer.signed
    assert not slots["features_0_0"].quantizer.signed  # followed by ReLU6
    assert 0 not in layers["classifier.1"].choice.bits


def test_torchvision_resnet18():
    torch.manual_seed(0)
    model = calibrate_bn(torchvision.models.resnet18(num_classes=10), torch.rand(8, 3, 32, 32))
    net = _check_runs_and_untouched(model, torch.rand(2, 3, 32, 32), PRUNE)
    layers = dict(net.layers())
    assert len(layers) == 21
    assert layers["layer1.0.conv2"].choice is layers["conv1"].choice  # identity shortcut
    assert layers["layer2.0.downsample.0"].choice is layers["layer2.0.conv2"].choice
    assert layers["layer2.1.conv2"].choice is layers["layer2.0.conv2"].choice


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [("resnet8", {}, (2, 3, 32, 32)), ("mnist_cnn", {}, (2, 1, 28, 28)),
     ("ds_cnn", {"width": 16, "depth": 2}, (2, 1, 16, 16))],
)
def test_builtin_models_convert(name, kwargs, shape):
    torch.manual_seed(0)
    model = randomize_bn(build_model(name, kwargs))
    _check_runs_and_untouched(model, torch.rand(shape), PRUNE)


def test_tiny_models_convert_without_touching_the_caller():
    for model, x in ((PlainCNN(), torch.rand(2, 3, 16, 16)),
                     (ResidualNet(), torch.rand(2, 3, 16, 16)),
                     (DepthwiseNet(), torch.rand(2, 3, 8, 8))):
        _check_runs_and_untouched(randomize_bn(model), x, PRUNE)


def test_arch_and_weight_parameters_partition_the_parameters():
    net = build_supernet(ResidualNet(), torch.rand(1, 3, 16, 16), PRUNE)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    n_choices = sum(1 for _ in net.choices())
    n_slots = sum(1 for _ in net.activation_slots())
    assert len(arch) == n_choices + n_slots
    net.set_temperature(0.3)
    net.set_mode("gumbel")
    assert all(c.temperature == 0.3 and c.mode == "gumbel" for _, c in net.choices())


def test_overrides_merge_field_by_field():
    from mpsctl.search.space import LayerOverride, SearchSpace

    space = SearchSpace(overrides=(
        LayerOverride("conv1", weight_bits=(8,)),
        LayerOverride("conv*", act_bits=(4, 8)),
    ))
    assert space.weight_bits_for("conv1") == ((8,), True)
    assert space.act_bits_for("conv1") == ((4, 8), True)
    assert space.weight_bits_for("conv2") == ((2, 4, 8), False)


def _unfold_relus(net: Supernet) -> Supernet:
    """A copy of ``net`` whose quantizer calls with ``relu=True`` get a separate ReLU again."""
    import copy

    twin = copy.deepcopy(net)
    graph = twin.net.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and node.kwargs.get("relu"):
            node.kwargs = {}
            with graph.inserting_after(node):
                relu = graph.call_function(torch.relu, (node,))
            node.replace_all_uses_with(relu, delete_user_cb=lambda user, r=relu: user is not r)
    twin.net.recompile()
    return twin


def test_relu_after_signed_quantizer_is_folded_into_the_call_with_same_numbers():
    """ResNet-8's stem and block outputs are signed (shared with a residual branch) and a
    ReLU follows each: the converter folds it into the quantizer call, which trains exactly
    like the quantizer followed by the ReLU."""
    torch.manual_seed(0)
    net = build_supernet(build_model("resnet8", {"num_classes": 10}), torch.zeros(2, 3, 32, 32),
                         PRUNE)
    nodes = list(net.net.graph.nodes)
    folded = [n for n in nodes if n.op == "call_module" and n.kwargs.get("relu")]
    assert len(folded) == 4
    assert all(net.net.get_submodule(str(n.target)).quantizer.signed for n in folded)
    assert not any("relu" in str(n.target) for n in nodes if n.op == "call_module")
    twin = _unfold_relus(net)
    x = torch.rand(4, 3, 32, 32)
    grads = []
    for model in (net.train(), twin.train()):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # and the fixed (eval) path
        torch.testing.assert_close(net.eval()(x), twin.eval()(x))
