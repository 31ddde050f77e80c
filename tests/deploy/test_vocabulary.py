"""Functional and method forms, zero padding, nearest upsampling, 'same' padding and mean
pooling convert like their module forms and export to integer and QDQ ONNX (issue 19)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from mpsctl.deploy import export_onnx  # noqa: E402
from mpsctl.errors import ConversionError  # noqa: E402
from mpsctl.search.convert import build_supernet  # noqa: E402
from mpsctl.search.space import SearchSpace  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "search"))
from tiny_nets import calibrate_bn  # noqa: E402

SPACES = {
    "per_layer": SearchSpace(act_clip=2.0),
    "prune": SearchSpace(weight_bits=(0, 2, 4, 8), act_bits=(8,), per_channel=True,
                         act_clip=2.0),
}


class FunctionalNet(nn.Module):
    """'same' conv, F.relu6, F.max_pool2d, ZeroPad2d, nearest Upsample, F.pad, F.interpolate,
    F.avg_pool2d, x.view(n, -1), and a second head on x.mean((2, 3))."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding="same")
        self.b1 = nn.BatchNorm2d(8)
        self.pad = nn.ZeroPad2d((1, 1, 1, 1))
        self.c2 = nn.Conv2d(8, 8, 3)
        self.b2 = nn.BatchNorm2d(8)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c3 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.fc = nn.Linear(12 * 4 * 4, 5)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        x = F.relu6(self.b1(self.c1(x)))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.b2(self.c2(self.pad(x))))
        x = F.interpolate(F.pad(self.up(x), (1, 0, 0, 1)), size=(16, 16))
        y = torch.relu(self.c3(x))
        z = F.avg_pool2d(y, 2)
        return self.fc(z.view(z.size(0), -1)) + self.fc2(y.mean((2, 3)))


class MeanHead(nn.Module):
    """A MnasNet-style head: conv, ReLU, ``x.mean([2, 3])``, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.c(x)).mean([2, 3]))


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("cls", [FunctionalNet, MeanHead])
def test_functional_forms_export_exactly(cls, space, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 3, 16, 16)
    net = build_supernet(calibrate_bn(cls(), x), x[:2], SPACES[space])
    fixed = net.eval().harden()
    with torch.no_grad():
        assert torch.equal(fixed(x), net(x))  # exported == supernet
    for variant in ("integer", "qdq"):
        summary = export_onnx(fixed, x, tmp_path / f"{variant}.onnx", variant)
        assert summary["max_error_lsb"] <= 1 and summary["top1_agreement"] >= 0.99


@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_same_padding_is_made_explicit_and_even_kernels_refused() -> None:
    x = torch.rand(2, 3, 8, 8)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same", dilation=2), nn.ReLU(),
                         nn.Conv2d(4, 4, 1, padding="valid"))
    net = build_supernet(conv, x, SearchSpace())
    layers = dict(net.layers())
    assert layers["0"].conv_args["padding"] == (2, 2)
    assert layers["2"].conv_args["padding"] == (0, 0)
    assert conv[0].padding == "same"  # the user's model is left alone
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4, 8, 8)
    even = nn.Sequential(nn.Conv2d(3, 4, 2, padding="same"))
    with pytest.raises(ConversionError, match="padding='same' with kernel \\(2, 2\\)"):
        build_supernet(even, x, SearchSpace())


class ModernBlock(nn.Module):
    """One of each of the newer vocabulary: a channel shuffle (view, transpose, chunk),
    concatenation, an activation ``act``, squeeze-and-excitation (mean, sigmoid-like gate,
    multiply), a BatchNorm after a concatenation (not foldable), stochastic depth."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.act = act
        self.norm = nn.BatchNorm2d(8)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.gate = nn.Hardsigmoid()
        self.proj = nn.Conv2d(8, 8, 1)
        self.drop = StochasticDepth(0.2, "row")
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([a, self.act(self.branch(b))], 1)
        y = self.act(self.norm(x))
        s = self.gate(self.fc2(torch.relu(self.fc1(y.mean((2, 3), keepdim=True)))))
        x = x + self.drop(self.proj(y * s))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(torch.relu(x), 1), 1))


ACTIVATIONS = {"hardswish": nn.Hardswish(), "silu": nn.SiLU(), "sigmoid": nn.Sigmoid(),
               "gelu": nn.GELU(), "tanh": nn.Tanh(), "hardsigmoid": nn.Hardsigmoid()}


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_modern_vocabulary_exports_exactly(act, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 3, 12, 12)
    model = calibrate_bn(ModernBlock(ACTIVATIONS[act]), x)
    net = build_supernet(model, x[:2], SPACES["prune"])
    fixed = net.eval().harden()
    with torch.no_grad():
        assert torch.equal(fixed(x), net(x))
        fixed.net.head.bias -= fixed(x).mean(0)  # so that predictions vary over the batch
        assert fixed(x).argmax(1).unique().numel() > 1
    variants = ["integer", "qdq"]
    if importlib.util.find_spec("qonnx") is not None:
        variants.append("qonnx")
    for variant in variants:
        summary = export_onnx(fixed, x, tmp_path / f"{variant}.onnx", variant)
        assert summary["max_error_lsb"] <= 1 and summary["forced_top1_agreement"] >= 0.99
        ops = {n.op_type for n in onnx.load(str(tmp_path / f"{variant}.onnx")).graph.node}
        if variant == "integer":  # integer only: tables, no float activation or Conv
            assert {"Gather", "Concat", "Transpose", "Slice"} <= ops
            assert not ops & {"Conv", "Sigmoid", "HardSwish", "HardSigmoid", "Tanh", "Erf"}
        elif variant == "qdq":
            assert {"Concat", "QuantizeLinear", "DequantizeLinear"} <= ops
        else:  # QONNX: the float ops between Quant nodes
            assert {"Concat", "Mul", "Quant"} <= ops


class KeywordNet(nn.Module):
    """A Conv1d keyword-spotting net written with ``x.view`` and functional pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(10, 16, 5, padding="same")
        self.b1 = nn.BatchNorm1d(16)
        self.c2 = nn.Conv1d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16 * 8, 4)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = F.max_pool1d(F.relu(self.c2(x)), 2)
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("space", list(SPACES))
def test_conv1d_keyword_net_with_view_exports(space, tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(32, 10, 16)
    net = build_supernet(calibrate_bn(KeywordNet(), x), x[:2], SPACES[space])
    fixed = net.eval().harden()
    for variant in ("integer", "qdq"):
        summary = export_onnx(fixed, x, tmp_path / f"{variant}.onnx", variant)
        assert summary["max_error_lsb"] <= 1 and summary["forced_top1_agreement"] >= 0.99
