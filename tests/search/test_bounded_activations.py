"""Bounded activations (ReLU6, Hardtanh(0, m)): the learned clip of the quantizer before them
is bounded by their range, so training cannot push it where the gradient is 0, and the
integer export accepts the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from mpsctl.quant.modules import PACTActivationQuantizer
from mpsctl.search.convert import build_supernet
from mpsctl.search.graph import relu_bound
from mpsctl.search.space import SearchSpace

HIGH_CLIP = SearchSpace(weight_bits=(2, 4, 8), act_bits=(4, 8), act_clip=8.0)


class Bounded(nn.Module):
    """ReLU6, F.relu6, Hardtanh(0, 4), F.hardtanh(0, 3), a plain ReLU and a signed Hardtanh."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6()
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3, self.a3 = nn.Conv2d(4, 4, 3, padding=1), nn.Hardtanh(0.0, 4.0)
        self.c4 = nn.Conv2d(4, 4, 3, padding=1)
        self.c5 = nn.Conv2d(4, 4, 3, padding=1)
        self.c6, self.a6 = nn.Conv2d(4, 4, 3, padding=1), nn.Hardtanh()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.a1(self.c1(x))
        x = F.relu6(self.c2(x))
        x = self.a3(self.c3(x))
        x = F.hardtanh(self.c4(x), 0.0, 3.0)
        x = torch.relu(self.c5(x))
        x = self.a6(self.c6(x))
        return self.fc(x.mean((2, 3)))


def _clips(net) -> dict[str, tuple[float | None, float]]:
    slots = dict(net.activation_slots())
    return {name: (slot.quantizer.clip_max, float(slot.quantizer.clip.detach())) for name, slot in
            slots.items()}


def test_bound_comes_from_the_activation_that_follows() -> None:
    net = build_supernet(Bounded(), torch.rand(2, 3, 8, 8), HIGH_CLIP)
    clips = {name.split(".")[-1]: value for name, value in _clips(net).items()}
    assert clips["c1"] == (6.0, 6.0) and clips["c2"] == (6.0, 6.0)
    assert clips["c3"] == (4.0, 4.0) and clips["c4"] == (3.0, 3.0)
    assert clips["c5"] == (None, 8.0) and clips["c6"] == (None, 8.0)
    # The bounded ReLUs after their (bounded, unsigned) quantizers cut nothing: removed.
    graph = net.net.graph
    modules = dict(net.net.named_modules())
    bounds = sorted(relu_bound(n, modules) or 0 for n in graph.nodes
                    if relu_bound(n, modules) not in (None, float("inf")))
    assert bounds == []
    # A signed Hardtanh(-1, 1) is no ReLU: its quantizer stays signed and unbounded.
    signed = {name.split(".")[-1]: slot.quantizer.signed
              for name, slot in net.activation_slots()}
    assert signed["c6"] and not signed["c1"]


class Monotone(nn.Module):
    """conv → ReLU6 → average → Linear with positive weights: the output grows with every
    activation, so the sign of the loss says which way the clip is pushed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6()
        self.fc = nn.Linear(4, 1)
        with torch.no_grad():  # conv outputs up to ~13 on inputs in [0, 1]: the clip matters
            self.conv.weight.uniform_(0.0, 1.0)
            self.fc.weight.uniform_(0.5, 1.0)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.act(self.conv(x)), 1), 1))


def test_clip_stays_in_range_under_training_with_a_high_initial_clip() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    net = build_supernet(Monotone(), x[:2], HIGH_CLIP)
    net.train()
    quantizer = next(s.quantizer for n, s in net.activation_slots() if n.endswith("conv"))
    assert quantizer.clip_max == 6.0 and float(quantizer.clip.detach()) == 6.0
    opt = torch.optim.SGD([quantizer.clip], lr=0.5)
    seen = []
    for step in range(8):
        opt.zero_grad()
        out = net(x).sum()
        (-out if step < 4 else out).backward()  # first push the clip up, then down
        opt.step()
        assert float(quantizer._clip().detach()) <= 6.0
        seen.append(float(quantizer._clip().detach()))
    assert max(seen[:4]) == 6.0  # pushed up, it stays at the bound
    assert seen[-1] < 5.0  # pushed down, it follows: its gradient is not stuck at 0


def test_quantizer_bound_is_checked() -> None:
    assert float(PACTActivationQuantizer((8,), clip=8.0, clip_max=6.0).clip.detach()) == 6.0
    assert float(PACTActivationQuantizer((8,), clip=2.0, clip_max=6.0).clip.detach()) == 2.0
    with pytest.raises(ValueError, match="clip_max"):
        PACTActivationQuantizer((8,), clip_max=0.0)


def test_mobilenet_v2_relu6_quantizers_are_bounded() -> None:
    model = torchvision.models.mobilenet_v2(num_classes=4, width_mult=0.25).eval()
    net = build_supernet(model, torch.rand(1, 3, 32, 32), HIGH_CLIP)
    clips = _clips(net)
    # One bounded slot per ReLU6 pair (a depthwise conv shares its producer's quantizer).
    bounded = [v for v in clips.values() if v[0] is not None]
    assert len(bounded) >= 15 and all(v == (6.0, 6.0) for v in bounded)
    # Linear bottlenecks and adds are signed, unbounded (no ReLU6 follows them).
    assert any(v == (None, 8.0) for v in clips.values())


def test_a_quantizer_shared_with_a_residual_add_is_bounded_by_the_relu6_it_feeds() -> None:
    """mobilenet_v2 at width 0.25 has a residual around features.1: the stem's quantizer
    (read by a ReLU6) is shared with the add of a signed, unbounded linear bottleneck. A clip
    above 6 there would let the ReLU6 cut the grid, which integer ONNX cannot express."""
    model = torchvision.models.mobilenet_v2(num_classes=4, width_mult=0.25).eval()
    net = build_supernet(model, torch.rand(1, 3, 32, 32), HIGH_CLIP)
    modules = dict(net.net.named_modules())
    feeding = set()
    for node in net.net.graph.nodes:
        if node.op == "call_module" and node.target.startswith("act_quants."):
            if any(relu_bound(u, modules) == 6.0 for u in node.users):
                feeding.add(node.target)
    assert "act_quants.features_0_0" in feeding
    for target in feeding:
        quantizer = modules[target].quantizer
        assert quantizer.clip_max == 6.0 and float(quantizer.clip.detach()) == 6.0, target
