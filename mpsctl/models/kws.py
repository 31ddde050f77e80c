"""``ds_cnn1d``: a depthwise-separable Conv1d keyword-spotting net for ``[channels, time]``.

The input is a spectrogram-like feature map (e.g. 40 MFCC coefficients × 49 frames of one
second of audio) with the coefficients as channels, so every convolution slides along time
only: a strided stem, ``depth`` blocks of depthwise (kernel 3) + pointwise convolutions, global
average pooling over time and one Linear layer. Written with modules only (no ``x.view``),
so it converts, exports and becomes an integer ONNX graph like the 2-D models.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from mpsctl.models.layers import check_positive
from mpsctl.models.registry import register_model


def conv1d_bn_relu(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv1d (no bias: BN follows) + BatchNorm1d + ReLU, 'same' padding for odd kernels."""
    conv = nn.Conv1d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm1d(cout), relu=nn.ReLU()))


class DSCNN1d(nn.Module):
    """Stem Conv1d, depthwise-separable Conv1d blocks, average pool over time, Linear."""

    def __init__(
        self, in_channels: int, width: int, depth: int, num_classes: int, stem_kernel: int
    ) -> None:
        super().__init__()
        self.stem = conv1d_bn_relu(in_channels, width, stem_kernel, stride=2)
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, depth + 1):
            blocks[f"block{i}"] = nn.Sequential(OrderedDict(
                dw=conv1d_bn_relu(width, width, 3, groups=width),
                pw=conv1d_bn_relu(width, width, 1),
            ))
        self.blocks = nn.Sequential(blocks)
        self.head = nn.Sequential(OrderedDict(
            pool=nn.AdaptiveAvgPool1d(1), flatten=nn.Flatten(), fc=nn.Linear(width, num_classes)
        ))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


@register_model("ds_cnn1d")
def ds_cnn1d(
    num_classes: int = 12,
    in_channels: int = 40,
    width: int = 64,
    depth: int = 4,
    stem_kernel: int = 5,
) -> DSCNN1d:
    """1-D DS-CNN for ``[in_channels, time]`` inputs (defaults: 40 MFCCs, 12 keywords;
    about 31k parameters)."""
    check_positive(num_classes=num_classes, in_channels=in_channels, width=width, depth=depth,
                   stem_kernel=stem_kernel)
    return DSCNN1d(in_channels, width, depth, num_classes, stem_kernel)
