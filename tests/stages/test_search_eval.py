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
