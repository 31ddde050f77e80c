"""Building blocks the built-in models share; plain modules so torch.fx traces them."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def conv_bn_relu(
    cin: int,
    cout: int,
    kernel: int | tuple[int, int] = 3,
    stride: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Conv (no bias: BN follows) + BatchNorm + ReLU, 'same' padding for odd kernels."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = nn.Conv2d(cin, cout, (kh, kw), stride, (kh // 2, kw // 2), groups=groups, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(cout), relu=nn.ReLU()))


def depthwise_separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (+BN+ReLU) then pointwise 1x1 (+BN+ReLU), as in MobileNetV1 / DS-CNN."""
    return nn.Sequential(
        OrderedDict(
            dw=conv_bn_relu(cin, cin, 3, stride, groups=cin),
            pw=conv_bn_relu(cin, cout, 1),
        )
    )


def classifier(features: int, num_classes: int) -> nn.Sequential:
    """Global average pool, flatten, one Linear layer."""
    return nn.Sequential(
        OrderedDict(
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(features, num_classes)
        )
    )


def check_positive(**values: object) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive int."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
