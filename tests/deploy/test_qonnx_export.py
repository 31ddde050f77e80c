"""QONNX export: real bit-widths in Quant nodes, executed by qonnx after its cleanup (issue 18)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("qonnx")

from fixed_models import (  # noqa: E402, F401 - the fixtures are used by their names
    assert_agrees,
    fixed_model,
    mixed_mnist_fixture,
    pruned_dscnn_fixture,
    pruned_resnet_fixture,
)
from onnx import numpy_helper  # noqa: E402

from mpsctl.deploy import export_onnx  # noqa: E402
from mpsctl.deploy.integer import act_grid  # noqa: E402
from mpsctl.errors import MissingPackageError, UserError  # noqa: E402
from mpsctl.search.space import SearchSpace  # noqa: E402


def _graph_bits(path: Path) -> tuple[dict[str, list[int]], list[tuple[int, int, int]]]:
    """From the file alone: each layer's bit-width per output channel (undoing the Concat /
    Gather of its precision groups), and (bits, signed, narrow) of each activation Quant."""
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def channel_bits(tensor: str) -> list[int]:
        node = producer[tensor]
        if node.op_type == "Quant":
            return [int(init[node.input[3]])] * init[node.input[0]].shape[0]
        if node.op_type == "Concat":
            return [b for part in node.input for b in channel_bits(part)]
        assert node.op_type == "Gather"
        grouped = channel_bits(node.input[0])
        return [grouped[i] for i in init[node.input[1]]]

    layers, acts = {}, []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm"):
            layers[node.name.removesuffix("/out")] = channel_bits(node.input[1])
        if node.op_type == "Quant" and node.input[0] not in init:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            acts.append((int(init[node.input[3]]), attrs["signed"], attrs["narrow"]))
    return layers, acts


def _assert_bits_match(fixed, path: Path) -> None:
    layers, acts = _graph_bits(path)
    for name, layer in fixed.layers():
        index = layer.choice.assignment().expand(layer.weight.shape[0])
        assert layers[name] == [layer.choice.bits[int(i)] for i in index], name
    wanted = sorted({(act_grid(slot).bits, int(act_grid(slot).signed),
                      int(act_grid(slot).signed)) for _, slot in fixed.activation_slots()})
    assert sorted(set(acts)) == wanted


def test_per_layer_mixed_model(mixed_mnist, tmp_path: Path) -> None:
    _, fixed, x = mixed_mnist
    path = tmp_path / "mixed.onnx"
    summary = export_onnx(fixed, x, path, "qonnx")
    assert_agrees(summary, fixed, x)
    assert summary["variant"] == "qonnx" and summary["executor"] == "qonnx"
    assert len(summary["per_quantizer"]) == len(list(fixed.activation_slots()))
    assert len({layer["w_bits"] for layer in summary["layers"]}) > 1  # really mixed
    _assert_bits_match(fixed, path)
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert "Quant" in ops and not ops & {"QuantizeLinear", "ConvInteger", "MatMulInteger"}
    domains = {node.domain for node in model.graph.node if node.op_type == "Quant"}
    assert domains == {"qonnx.custom_op.general"}
    # weights are stored as floats that the Quant nodes map onto their grids
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert all(types[f"{n}.weight"] == onnx.TensorProto.FLOAT for n, _ in fixed.layers())


@pytest.mark.parametrize("which", ["pruned_resnet", "pruned_dscnn"])
def test_pruned_per_channel_models(which, request, tmp_path: Path) -> None:
    net, fixed, x = request.getfixturevalue(which)
    path = tmp_path / f"{which}.onnx"
    summary = export_onnx(fixed, x, path, "qonnx")
    assert_agrees(summary, fixed, x)
    _assert_bits_match(fixed, path)
    layers, _ = _graph_bits(path)
    original = {n: layer.weight.shape[0] for n, layer in net.layers()}
    assert any(len(layers[n]) < original[n] for n in layers)  # pruned channels are absent
    assert all(0 not in bits for bits in layers.values())
    assert any(len(set(bits)) > 1 for bits in layers.values())  # groups keep their precisions
    if which == "pruned_dscnn":  # depthwise convolutions are in the graph as such
        groups = [a.i for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"
                  for a in n.attribute if a.name == "group"]
        assert max(groups) > 1


def test_sixteen_bits_keep_their_width(tmp_path: Path) -> None:
    space = SearchSpace(weight_bits=(4, 16), act_bits=(6, 16))
    _, fixed, x = fixed_model("mnist_cnn", (1, 28, 28), space, seed=3)
    path = tmp_path / "wide.onnx"
    summary = export_onnx(fixed, x, path, "qonnx")
    assert_agrees(summary, fixed, x)
    layers, acts = _graph_bits(path)
    assert 16 in {b for bits in layers.values() for b in bits} | {a[0] for a in acts}
    _assert_bits_match(fixed, path)


def test_a_wrong_graph_fails_and_writes_nothing(mixed_mnist, tmp_path: Path, monkeypatch) -> None:
    from mpsctl.deploy import export as export_module
    from mpsctl.deploy.onnx_verify import OnnxMismatchError

    _, fixed, x = mixed_mnist
    right = export_module.build_onnx

    def two_bit_activations(model, example, variant):  # every activation Quant cut to 2 bits
        proto = right(model, example, variant)
        quant_inputs = {n.input[3] for n in proto.graph.node
                        if n.op_type == "Quant" and "act_quants" in n.input[0]}
        for tensor in proto.graph.initializer:
            if tensor.name in quant_inputs:
                tensor.CopyFrom(numpy_helper.from_array(np.float32(2), tensor.name))
        return proto

    monkeypatch.setattr(export_module, "build_onnx", two_bit_activations)
    path = tmp_path / "wrong.onnx"
    with pytest.raises(OnnxMismatchError, match="arithmetic differs from the fake-quant model"):
        export_onnx(fixed, x, path, "qonnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_qonnx_is_one_line(mixed_mnist, tmp_path: Path, monkeypatch) -> None:
    for name in [n for n in sys.modules if n == "qonnx" or n.startswith("qonnx.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "qonnx", None)
    monkeypatch.delitem(sys.modules, "mpsctl.deploy.qonnx_verify", raising=False)
    _, fixed, x = mixed_mnist
    with pytest.raises(MissingPackageError) as err:
        export_onnx(fixed, x, tmp_path / "q.onnx", "qonnx")
    assert str(err.value) == (
        "QONNX export needs the qonnx package (in the deploy extra): "
        "pip install 'mpsctl[deploy]'"
    )
    assert list(tmp_path.iterdir()) == []
    export_onnx(fixed, x, tmp_path / "i.onnx", "integer")  # the other variants still work


def test_unknown_variant_lists_qonnx(mixed_mnist, tmp_path: Path) -> None:
    _, fixed, x = mixed_mnist
    with pytest.raises(UserError, match="integer, qdq, qonnx"):
        export_onnx(fixed, x, tmp_path / "a.onnx", variant="fp8")


def test_one_bit_signed_weights_are_refused(tmp_path: Path) -> None:
    from torch import nn

    from mpsctl.search.convert import build_supernet

    x = torch.rand(8, 3, 6, 6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    space = SearchSpace(weight_bits=(1,), act_bits=(8,))
    fixed = build_supernet(model, x, space).harden()
    with pytest.raises(UserError, match="1-bit weights") as err:
        export_onnx(fixed, x, tmp_path / "b.onnx", "qonnx")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "b.onnx").exists()
