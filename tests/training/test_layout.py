"""Channels-last layout (recipe key ``channels_last``): on where asked and accepted, the same
numbers as the default layout, and a clear refusal or fallback where the model cannot run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mpsctl.errors import UserError
from mpsctl.models.registry import build_model
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.training.layout import use_channels_last

CPU = torch.device("cpu")
EXAMPLE = torch.zeros(2, 3, 32, 32)


class ViewsItsActivations(nn.Module):
    """Flattens a conv output with ``.view``, which a channels-last tensor cannot do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 32 * 32, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.shape[0], -1))


def _supernet():
    torch.manual_seed(0)
    space = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(2, 4, 8), per_channel=True)
    return build_supernet(build_model("resnet8", {"num_classes": 10}), EXAMPLE, space)


def test_auto_on_cpu_switches_the_supernet_and_keeps_its_numbers():
    net = _supernet().train()
    nchw = copy.deepcopy(net)
    assert use_channels_last("auto", net, EXAMPLE, CPU)
    assert all(layer.channels_last == (layer.op == "conv2d") for _, layer in net.layers())
    x = torch.rand(8, 3, 32, 32)
    outs = []
    for model in (net, nchw):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        outs.append((out.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-4)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert net.training  # the trial forward restores the mode


def test_auto_is_off_on_other_devices_and_false_is_off():
    net = _supernet()
    assert not use_channels_last("auto", net, EXAMPLE, torch.device("meta"))
    assert not use_channels_last(False, net, EXAMPLE, CPU)
    assert not any(layer.channels_last for _, layer in net.layers())


def test_float_model_weights_go_channels_last():
    model = build_model("resnet8", {"num_classes": 10})
    assert use_channels_last(True, model, EXAMPLE, CPU)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_model_that_views_falls_back_under_auto_and_is_refused_under_true():
    model = ViewsItsActivations()
    assert not use_channels_last("auto", model, EXAMPLE, CPU)
    assert model.conv.weight.is_contiguous()  # reverted
    model(EXAMPLE)  # and still runs
    with pytest.raises(UserError, match=r"^channels_last: .*set channels_last: false"):
        use_channels_last(True, model, EXAMPLE, CPU)


def test_supernet_of_a_model_that_views_falls_back():
    space = SearchSpace(weight_bits=(2, 4, 8), act_bits=(2, 4, 8))
    net = build_supernet(ViewsItsActivations(), EXAMPLE, space)
    assert not use_channels_last("auto", net, EXAMPLE, CPU)
    assert not any(layer.channels_last for _, layer in net.layers())
