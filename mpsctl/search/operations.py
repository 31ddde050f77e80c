"""The operations mpsctl knows, and what each stage does with them: the README's table is
rendered from here (``scripts/op_table.py``), from the very sets the converter
(:func:`mpsctl.search.graph.classify`) and the ONNX exporters (``barrier_op``) dispatch on;
``tests/deploy/test_operations.py`` checks that the README shows this table, and
``tests/deploy/test_vocabulary.py`` exports models written with these ops.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mpsctl.search import graph


@dataclass(frozen=True)
class Operation:
    """One row of the table: the forms a model may write, and what each stage does."""

    title: str
    forms: tuple[str, ...]
    search: str
    integer: str
    qdq: str
    #: QONNX keeps floats between ``Quant`` nodes like QDQ; where it writes something else,
    #: this says what
    qonnx: str = ""


def _names(items: Iterable) -> list[str]:
    """How a model writes each item (``nn.X``, ``F.x``, ``torch.x``, ``.x()``), sorted."""
    out = set()
    for item in items:
        if isinstance(item, str):
            out.add(f".{item}()")
        elif isinstance(item, type):
            out.add(f"nn.{item.__name__}")
        else:
            name = getattr(item, "__name__", str(item))
            home = next((prefix for prefix, space in (("F", F), ("torch", torch),
                                                      ("operator", operator))
                         if getattr(space, name, None) is item), "torch")
            out.add(f"{home}.{name}")
    return sorted(out)


def operations() -> list[Operation]:
    """The table's rows, forms read off the converter's and exporters' own sets."""
    relu = _names([*graph.RELU_MODULES, *graph.RELU_FUNCTIONS]) + _names(graph.RELU_METHODS)
    maxpool = _names([m for m in graph.VALUE_MODULES if "MaxPool" in m.__name__]) + _names(
        [f for f in graph.VALUE_FUNCTIONS if "max_pool" in f.__name__])
    avgpool = _names(graph.CHANNEL_MODULES) + _names(graph.CHANNEL_FUNCTIONS) + [
        ".mean(spatial axes)", "torch.mean(x, spatial axes)"]
    passing = _names([m for m in graph.VALUE_MODULES if m.__name__.startswith(("Dropout",
                                                                              "Identity"))])
    passing += _names([f for f in graph.VALUE_FUNCTIONS if "dropout" in f.__name__])
    passing += sorted(graph.EVAL_IDENTITY_MODULES) + ["torchvision.ops.stochastic_depth",
                                                      ".contiguous()", ".clone()"]
    rows = [
        Operation("convolution, linear", ("nn.Conv1d", "nn.Conv2d", "nn.Linear"),
                  "searched (padding 'same'/'valid' made explicit)", "ConvInteger / "
                  "MatMulInteger, int32 bias, requantisation", "Conv / Gemm on DQ weights",
                  "Conv / Gemm on Quant weights (one per bit-width), 32-bit Quant bias"),
        Operation("BatchNorm after a conv/linear", ("nn.BatchNorm1d", "nn.BatchNorm2d"),
                  "folded into the layer", "(folded)", "(folded)"),
        Operation("ReLU, ReLU6", tuple(relu), "kept on the grid (ReLU6 clips at 6)",
                  "Relu on codes, or nothing", "Relu / Clip"),
        Operation("max pooling", tuple(maxpool + ["adaptive to 1×1"]), "kept on the grid",
                  "MaxPool / ReduceMax on codes", "MaxPool / ReduceMax"),
        Operation("average pooling, spatial mean", tuple(avgpool),
                  "channels kept, new quantizer after", "integer sum, requantised",
                  "AveragePool / GlobalAveragePool"),
        Operation("flatten, view, reshape", tuple(
            ["nn.Flatten", "torch.flatten", "torch.reshape"] + _names(graph.RESHAPE_METHODS)),
            "kept on the grid (channels followed through a flatten)", "Flatten / Reshape "
            "on codes", "Flatten / Reshape"),
        Operation("dropout, identity, stochastic depth", tuple(passing),
                  "identity in eval", "(nothing)", "(nothing)"),
        Operation("residual add", tuple(_names(graph.ADD_FUNCTIONS) + _names(graph.ADD_METHODS)),
                  "one quantizer shared by the add and its inputs",
                  "int32 add of codes, clamp", "Add"),
        Operation("concatenation along channels", tuple(_names(graph.CONCAT_FUNCTIONS)),
                  "one quantizer shared by the concatenation and its inputs; no pruning of "
                  "its inputs", "Concat of codes (a part on another grid requantised)",
                  "Concat"),
        Operation("zero padding", ("nn.ZeroPad1d/2d", "nn.ConstantPad*d(value=0)",
                                   "F.pad(mode='constant', value=0)"),
                  "kept on the grid", "Pad on codes", "Pad"),
        Operation("nearest upsampling", ("nn.Upsample(mode='nearest')",
                                         "F.interpolate(mode='nearest')"),
                  "kept on the grid", "Resize on codes", "Resize"),
        Operation("activations, unfoldable BatchNorm", tuple(
            _names(graph.ELEMENTWISE_MODULES) + _names(graph.ELEMENTWISE_FUNCTIONS)
            + _names(graph.ELEMENTWISE_METHODS)),
            "float, quantized before the next layer", "look-up table on the input codes "
            "(Gather)", "the float op between DQ and Q"),
        Operation("element-wise multiply (squeeze-and-excitation)", tuple(
            _names(graph.MUL_FUNCTIONS) + _names(graph.MUL_METHODS)), "float",
            "int32 product, requantised", "Mul"),
        Operation("transpose, permute, chunk, split", tuple(
            _names(graph.TRANSPOSE_FUNCTIONS) + _names(graph.TRANSPOSE_METHODS)
            + _names(graph.SPLIT_FUNCTIONS) + _names(graph.SPLIT_METHODS)),
            "float, no pruning across", "Transpose / Slice on codes", "Transpose / Slice"),
        Operation("anything else", ("any other op",), "float, no pruning across",
                  "refused (the message names the op)", "refused (the message names the op)",
                  "refused (the message names the op)"),
    ]
    return rows


def _qonnx_from_qdq(qdq: str) -> str:
    """QONNX writes the QDQ variant's float ops (one exporter base), Quant for Q/DQ."""
    return qdq.replace("between DQ and Q", "between Quant nodes")


def markdown_table() -> str:
    """The README table (between its ``ops-table`` markers)."""
    lines = ["| operation | forms | search and export | integer ONNX | QDQ ONNX | QONNX |",
             "|---|---|---|---|---|---|"]
    for op in operations():
        forms = ", ".join(f"`{f}`" for f in op.forms)
        qonnx = op.qonnx or _qonnx_from_qdq(op.qdq)
        lines.append(f"| {op.title} | {forms} | {op.search} | {op.integer} | {op.qdq} "
                     f"| {qonnx} |")
    return "\n".join(lines)

