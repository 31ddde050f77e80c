"""Settings travel inside each supernet: two supernets with different NE16 constants and
different quantizer paths live in one process, each with its own costs and path."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_nets import PlainCNN, randomize_alpha

from mpsctl.quant import fused
from mpsctl.quant.modules import PACTActivationQuantizer, WeightQuantizer
from mpsctl.search.convert import build_supernet
from mpsctl.search.space import SearchSpace
from mpsctl.targets.ne16 import NE16Constants, NE16CostModel, ne16_layer_cycles
from mpsctl.targets.refine import channel_counts

SPACE = dict(weight_bits=(2, 4, 8), act_bits=(8,), per_channel=True)
STOCK = NE16Constants()
SLOW = dataclasses.replace(STOCK, stream_out=STOCK.stream_out + 1000, k_body=16)


def _exact_ne16(net, constants: NE16Constants) -> int:
    """The NE16 cycles of the argmax assignment, computed here from the constants."""
    total = 0
    for _, layer in net.layers():
        counts = channel_counts(layer.choice.assignment(), layer.choice.bits)
        total += ne16_layer_cycles(layer.geometry, counts, layer.kept_in_channels(), constants)
    return total


def _paths(net) -> set[bool]:
    return {m.compiled for m in net.modules()
            if isinstance(m, (WeightQuantizer, PACTActivationQuantizer))}


@pytest.fixture
def two_supernets(monkeypatch):
    monkeypatch.setenv("MPSCTL_FUSED", "1")  # the suite runs eager; allow the compiler here
    torch.manual_seed(0)
    model, x = PlainCNN(), torch.randn(2, 3, 16, 16)
    eager = build_supernet(model, x, SearchSpace(**SPACE, compile=False),
                           {"ne16": NE16CostModel(STOCK)})
    compiled = build_supernet(model, x, SearchSpace(**SPACE, compile=True),
                              {"ne16": NE16CostModel(SLOW)})
    for net in (eager, compiled):
        randomize_alpha(net, seed=1)
    return eager, compiled, x


def test_each_supernet_keeps_its_own_ne16_constants(two_supernets):
    eager, compiled, _ = two_supernets
    a, b = eager.cost("ne16", hard=True).item(), compiled.cost("ne16", hard=True).item()
    assert a == _exact_ne16(eager, STOCK) and b == _exact_ne16(compiled, SLOW) and a != b
    # A third supernet with the default model changes neither.
    build_supernet(PlainCNN(), torch.randn(2, 3, 16, 16), SearchSpace(**SPACE))
    assert eager.cost("ne16", hard=True).item() == a
    assert compiled.cost("ne16", hard=True).item() == b
    assert eager.cost_model("ne16").constants == STOCK
    assert compiled.cost_model("ne16").constants == SLOW


def test_each_supernet_keeps_its_own_quantizer_path(two_supernets, monkeypatch):
    eager, compiled, x = two_supernets
    assert _paths(eager) == {False} and _paths(compiled) == {True}
    asked: list[str] = []

    def no_compiler(kind, key):  # stands in for torch.compile: record, then fail
        asked.append(kind)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused, "_compiled", no_compiler)
    monkeypatch.setitem(fused._state, "broken", False)
    eager.train()
    eager(x).sum().backward()
    assert asked == []  # the eager supernet never asks for a compiled body
    compiled.train()
    with pytest.warns(RuntimeWarning, match="using the eager path"):
        compiled(x).sum().backward()
    assert asked  # the compiled one does (and falls back to eager when that fails)
