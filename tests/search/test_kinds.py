"""Node kinds, layer kinds and layer ops are enums that still read as their strings."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_nets import PlainCNN

from mpsctl.cost.base import LayerGeometry, LayerKind
from mpsctl.search.convert import build_supernet
from mpsctl.search.graph import NodeKind, classify
from mpsctl.search.layers import LayerOp
from mpsctl.search.space import SearchSpace


def test_layer_kind_is_an_enum_that_reads_as_its_string():
    geom = LayerGeometry("depthwise", 8, 8, (3, 3), (4, 4), 8)
    assert geom.kind is LayerKind.DEPTHWISE and geom.kind == "depthwise"
    assert f"{geom.kind}" == str(geom.kind) == "depthwise"
    assert json.dumps({"kind": geom.kind}) == '{"kind": "depthwise"}'
    with pytest.raises(ValueError, match="conv3d"):
        LayerGeometry("conv3d", 1, 1)


def test_classify_and_layers_use_the_enums():
    net = build_supernet(PlainCNN(), torch.randn(2, 3, 16, 16), SearchSpace())
    modules = dict(net.net.named_modules())
    layers = {name for name, _ in net.layers()}
    kinds = [classify(node, modules, layers) for node in net.net.graph.nodes]
    assert all(isinstance(k, NodeKind) for k in kinds)
    assert kinds[0] is NodeKind.INPUT and kinds[-1] is NodeKind.OUTPUT
    assert kinds.count(NodeKind.LAYER) == 3
    ops = {name: layer.op for name, layer in net.layers()}
    assert ops == {"conv1": LayerOp.CONV2D, "conv2": LayerOp.CONV2D, "fc": LayerOp.LINEAR}
    assert {layer.geometry.kind for _, layer in net.layers()} == {LayerKind.CONV,
                                                                  LayerKind.LINEAR}
