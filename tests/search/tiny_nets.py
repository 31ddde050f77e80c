"""Small models shared by the search tests (a helper module, not a test file)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainCNN(nn.Module):
    """conv+BN+ReLU, strided conv+BN+ReLU, max-pool, flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


class ResidualNet(nn.Module):
    """Stem, an identity-shortcut block, a strided block with a 1×1 conv shortcut, head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn_stem = nn.BatchNorm2d(8)
        self.a1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a1 = nn.BatchNorm2d(8)
        self.a2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_a2 = nn.BatchNorm2d(8)
        self.b1 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn_b1 = nn.BatchNorm2d(16)
        self.b2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn_b2 = nn.BatchNorm2d(16)
        self.shortcut = nn.Conv2d(8, 16, 1, stride=2, bias=False)
        self.bn_shortcut = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.bn_stem(self.stem(x)))
        y = F.relu(self.bn_a1(self.a1(x)))
        x = F.relu(x + self.bn_a2(self.a2(y)))
        y = F.relu(self.bn_b1(self.b1(x)))
        y = self.bn_b2(self.b2(y))
        x = F.relu(y + self.bn_shortcut(self.shortcut(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DepthwiseNet(nn.Module):
    """Stem, depthwise 3×3, pointwise 1×1, max-pool, flatten (4×4 per channel), Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn1 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.bn2 = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(self.bn1(self.dw(x)))
        x = F.relu(self.bn2(self.pw(x)))
        x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def randomize_alpha(net, seed: int = 0, scale: float = 1.0) -> None:
    """Random logits everywhere, so assignments mix precisions; where 0 bits are allowed,
    every third channel is also made to prefer 0 so that each pruning layer loses some."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, choice in net.choices():
            if choice.alpha is not None:
                choice.alpha.copy_(torch.randn(choice.alpha.shape, generator=g) * scale)
                if choice.per_channel and choice.can_prune:
                    alpha = choice.alpha
                    alpha[0, seed % 3 :: 3] = alpha[:, seed % 3 :: 3].amax(0) + 1.0


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of batch ``x`` (eval mode after).

    Default-initialised torchvision models shrink activations layer by layer in eval mode
    (running var 1); calibrated, they stay O(1) and low-precision quantizers see real values.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


class GroupedResidualNet(nn.Module):
    """RegNet-X's block structure at toy size: stem, then a block whose 1×1 → grouped 3×3
    (groups=2, not depthwise) → 1×1 branch is added to a 1×1 strided projection, ReLU,
    global average pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn_stem = nn.BatchNorm2d(8)
        self.proj = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.bn_proj = nn.BatchNorm2d(12)
        self.a = nn.Conv2d(8, 12, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(12)
        self.b = nn.Conv2d(12, 12, 3, stride=2, padding=1, groups=2, bias=False)
        self.bn_b = nn.BatchNorm2d(12)
        self.c = nn.Conv2d(12, 12, 1, bias=False)
        self.bn_c = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.bn_stem(self.stem(x)))
        y = F.relu(self.bn_a(self.a(x)))
        y = F.relu(self.bn_b(self.b(y)))
        x = F.relu(self.bn_proj(self.proj(x)) + self.bn_c(self.c(y)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
