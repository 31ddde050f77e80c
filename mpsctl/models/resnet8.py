"""``resnet8``: the MLPerf Tiny image-classification ResNet-8 for 32x32 CIFAR-10 inputs."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from mpsctl.models.layers import check_positive, classifier, conv_bn_relu
from mpsctl.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN (ReLU after the first), shortcut add, ReLU.

    The shortcut is the identity, or a strided 1x1 conv + BN when the shape changes. The
    second conv has no ReLU before the add, so its output is signed (quantizers must know).
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(cin, cout, 1, stride, bias=False), bn=nn.BatchNorm2d(cout)
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet8(nn.Module):
    """Stem conv (16) and three one-block stages of 16, 32, 64 channels (strides 1, 2, 2)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, in_channels=in_channels)
        self.stem = conv_bn_relu(in_channels, 16)
        self.stage1 = BasicBlock(16, 16, 1)
        self.stage2 = BasicBlock(16, 32, 2)
        self.stage3 = BasicBlock(32, 64, 2)
        self.head = classifier(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.head(x)


@register_model("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 3) -> ResNet8:
    """MLPerf Tiny ResNet-8 (about 78k parameters) for 32x32 images."""
    return ResNet8(num_classes=num_classes, in_channels=in_channels)
