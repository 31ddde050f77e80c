"""The search's validation passes leave the model as they found it (issue 19: densenet121's
last search loss 2.3106 against 2.3277 from `mpsctl eval` of the same checkpoint)."""

from __future__ import annotations

import torch
from torch import nn

from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.stages.search import evaluate_soft
from mpsctl.training.epoch import evaluate


class PreActNet(nn.Module):
    """DenseNet's BN → ReLU → conv order: the BatchNorm follows no conv, so it stays float."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv1(torch.relu(self.norm(self.conv0(x) + x.mean(1, keepdim=True))))
        return self.fc(self.drop(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


def test_soft_evaluation_keeps_float_batchnorm_statistics():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 4, (16,))
    net = build_supernet(PreActNet().eval(), x[:2], SearchSpace(act_clip=2.0))
    norm = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = [(x[:8], y[:8]), (x[8:], y[8:])]
    argmax = evaluate(net, loader, torch.device("cpu"))
    seen = []
    hook = norm.register_forward_hook(lambda m, i, o: seen.append(m.training))
    evaluate_soft(net, loader, torch.device("cpu"))
    hook.remove()
    assert seen and not any(seen)  # the float BatchNorm ran in eval mode
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert evaluate(net, loader, torch.device("cpu")) == argmax  # what `mpsctl eval` sees
    assert not net.training


def test_soft_evaluation_mixes_precisions():
    """soft_eval leaves the choices in training mode: the θ mixture, not the argmax."""
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    net = build_supernet(PreActNet().eval(), x[:2], SearchSpace(act_clip=2.0))
    net.eval()
    with torch.no_grad():
        hard = net(x)
        net.soft_eval()
        soft = net(x)
    assert not torch.allclose(hard, soft)
    assert all(c.training for _, c in net.choices())


def test_constant_output_is_warned_about():
    """Every channel of conv2 prefers 0 bits; min_channels keeps one, which is dead (its
    folded bias is very negative, so the ReLU zeroes it): the output no longer depends on the
    input, and the export check would pass vacuously."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "search"))
    from tiny_nets import PlainCNN, randomize_bn

    from mpsctl.stages.export import output_difference
    from mpsctl.stages.summary import constant_output_warning

    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16)
    space = SearchSpace(weight_bits=(0, 2, 8), per_channel=True, act_clip=2.0)
    net = build_supernet(randomize_bn(PlainCNN()), x[:2], space).eval()
    assert constant_output_warning(net, x) is None
    choice = net.net.conv2.choice
    with torch.no_grad():
        choice.alpha[0] = choice.alpha[1:].amax(0) + 5.0
        net.net.conv2.bias.fill_(-100.0)
    warning = constant_output_warning(net, x)
    assert warning is not None and "weight.conv2" in warning and "min_channels" in warning
    check = output_difference(net, net.harden(), x)
    assert check["output_spread"] == 0.0 and check["max_abs_diff"] == 0.0


def test_export_check_runs_in_the_default_layout_and_restores_it():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    net = build_supernet(PreActNet().eval(), x[:2], SearchSpace(act_clip=2.0)).eval()
    fixed = net.harden()
    net.set_channels_last(True)
    layouts = []
    hooks = [layer.register_forward_hook(lambda m, i, o: layouts.append(
        (m.channels_last, i[0].is_contiguous()))) for _, layer in net.layers()]
    from mpsctl.stages.export import output_difference

    check = output_difference(net, fixed, x)
    for h in hooks:
        h.remove()
    assert layouts and all(not cl and contiguous for cl, contiguous in layouts)
    assert all(layer.channels_last for _, layer in net.layers() if layer.op == "conv2d")
    assert check["max_abs_diff"] == 0.0
