"""Random fixed-precision models for the ONNX export tests: per layer and per channel (with
pruned channels), BN statistics away from identity, activation clips calibrated and logits
centred so that predictions vary, and the agreement check every export test applies.

A test module uses the fixtures by importing them (``from fixed_models import
mixed_mnist_fixture``; pytest finds them under the name in ``name=``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpsctl.models import build_model
from mpsctl.search.convert import build_supernet
from mpsctl.search.layers import ActivationSlot
from mpsctl.search.space import SearchSpace

PER_LAYER = SearchSpace(weight_bits=(2, 4, 8), act_bits=(2, 4, 8))
PER_CHANNEL = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(4, 8), per_channel=True)
#: 8-bit activations: at 4 bits, the pooled features of a random DS-CNN barely vary.
PER_CHANNEL_A8 = SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True)


def randomize(model: nn.Module) -> nn.Module:
    """BN statistics away from identity; a zero-bias classifier so predictions vary."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            elif isinstance(m, nn.Linear):
                m.weight.mul_(4)
                if m.bias is not None:
                    m.bias.zero_()
    return model


def calibrate(net, x: torch.Tensor) -> None:
    """Set each activation clip to 80 % of the largest value that reaches it."""
    for slot in [m for m in net.modules() if isinstance(m, ActivationSlot)]:
        peak: list[torch.Tensor] = []
        hook = slot.register_forward_hook(lambda m, i, o, peak=peak: peak.append(i[0].abs().max()))
        with torch.no_grad():
            net(x)
        hook.remove()
        slot.quantizer.clip.data.fill_(0.8 * float(max(peak)) + 1e-3)


def fixed_model(name: str, shape, space: SearchSpace, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = randomize(build_model(name, kwargs, None))
    x = torch.rand(64, *shape) * torch.rand(64, 1, *([1] * (len(shape) - 1)))
    net = build_supernet(model, x[:2], space)
    for i, (_, choice) in enumerate(net.choices()):
        alpha = torch.randn_like(choice.alpha)
        if not choice.per_channel:  # per layer: walk through the candidates, layer by layer
            alpha[i % len(choice.bits)] += 10
        choice.alpha.data = alpha
    fixed = net.harden()
    calibrate(fixed, x)
    center_logits(fixed, x)
    return net, fixed, x


def center_logits(fixed, x: torch.Tensor) -> None:
    """Subtract the mean logit from the classifier's bias, so that the argmax depends on
    the sample (a random network otherwise predicts one class for everything)."""
    _, head = list(fixed.layers())[-1]
    with torch.no_grad():
        head.bias -= fixed(x).mean(0)


def assert_agrees(summary: dict, fixed=None, x=None) -> None:
    if fixed is not None:  # the check means something only if predictions vary
        with torch.no_grad():
            assert fixed(x).argmax(1).unique().numel() >= 3
    assert summary["top1_agreement"] >= 0.99
    # Only float32 round-off in the fake-quant model at exact rounding ties can flip a code.
    assert summary["code_mismatch"] < 1e-3
    assert summary["samples"] == 64


@pytest.fixture(scope="module", name="mixed_mnist")
def mixed_mnist_fixture():
    return fixed_model("mnist_cnn", (1, 28, 28), PER_LAYER)


@pytest.fixture(scope="module", name="pruned_resnet")
def pruned_resnet_fixture():
    return fixed_model("resnet8", (3, 16, 16), PER_CHANNEL, seed=1)


@pytest.fixture(scope="module", name="pruned_dscnn")
def pruned_dscnn_fixture():
    return fixed_model("ds_cnn", (1, 20, 10), PER_CHANNEL_A8, seed=2, width=16, depth=2)
