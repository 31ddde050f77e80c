"""The soft supernet's accuracy is measured like any accuracy: dropout off."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.stages.search import evaluate_soft


class DropoutNet(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv(x)).mean((2, 3))
        return self.fc(self.drop(x))


def test_soft_accuracy_is_measured_without_dropout() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 3, 6, 6)
    space = SearchSpace(weight_bits=(2, 4, 8), act_bits=(8,))
    with_dropout = build_supernet(DropoutNet(0.9).eval(), x[:2], space)
    without = build_supernet(DropoutNet(0.0).eval(), x[:2], space)
    without.load_state_dict(with_dropout.state_dict())
    with torch.no_grad():
        y = without.train()(x).argmax(1)  # labels the dropout-free soft supernet gets right
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    assert evaluate_soft(without, loader, torch.device("cpu"))["accuracy"] == 1.0
    assert evaluate_soft(with_dropout, loader, torch.device("cpu"))["accuracy"] == 1.0
    assert not with_dropout.training and not with_dropout.net.drop.training
