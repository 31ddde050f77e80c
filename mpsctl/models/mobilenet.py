"""Depthwise-separable CNNs: ``ds_cnn`` (MLPerf Tiny keyword spotting) and ``mobilenet_v1``."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from mpsctl.models.layers import check_positive, classifier, conv_bn_relu, depthwise_separable
from mpsctl.models.registry import register_model

#: MobileNetV1 blocks at width 1.0: (output channels, stride), after a 32-channel stem.
_MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


class DepthwiseSeparableCNN(nn.Module):
    """A strided stem conv, depthwise-separable blocks, global average pool, Linear."""

    def __init__(
        self,
        in_channels: int,
        stem_channels: int,
        blocks: list[tuple[int, int]],
        num_classes: int,
        stem_kernel: int | tuple[int, int] = 3,
    ) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, stem_channels, stem_kernel, stride=2)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin = stem_channels
        for i, (cout, stride) in enumerate(blocks, start=1):
            layers[f"block{i}"] = depthwise_separable(cin, cout, stride)
            cin = cout
        self.blocks = nn.Sequential(layers)
        self.head = classifier(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model("ds_cnn")
def ds_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    width: int = 64,
    depth: int = 4,
    stem_kernel: int | tuple[int, int] | list[int] = 3,
) -> DepthwiseSeparableCNN:
    """DS-CNN: stride-2 stem and ``depth`` blocks of ``width`` channels.

    MLPerf Tiny's keyword-spotting model is ``num_classes=12, stem_kernel=[10, 4]`` on
    49x10 MFCC inputs (about 23k parameters).
    """
    check_positive(num_classes=num_classes, in_channels=in_channels, width=width, depth=depth)
    if isinstance(stem_kernel, (list, tuple)):
        if len(stem_kernel) != 2:
            raise ValueError(f"stem_kernel must be an int or [height, width], got {stem_kernel!r}")
        for side in stem_kernel:
            check_positive(stem_kernel=side)
        stem_kernel = (stem_kernel[0], stem_kernel[1])
    else:
        check_positive(stem_kernel=stem_kernel)
    blocks = [(width, 1)] * depth
    return DepthwiseSeparableCNN(in_channels, width, blocks, num_classes, stem_kernel)


@register_model("mobilenet_v1")
def mobilenet_v1(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 0.25
) -> DepthwiseSeparableCNN:
    """MobileNetV1; at ``width_mult=0.25`` on 96x96 inputs it is MLPerf Tiny's wake-word model."""
    check_positive(num_classes=num_classes, in_channels=in_channels)
    if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
        raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")

    def scaled(channels: int) -> int:
        return max(1, int(channels * width_mult))

    blocks = [(scaled(c), s) for c, s in _MOBILENET_V1_BLOCKS]
    return DepthwiseSeparableCNN(in_channels, scaled(32), blocks, num_classes)
