"""How the converter reads an fx graph: which ops pass values, channels or neither through.

- *value* ops keep a quantized tensor on its grid (ReLU, max-pool, dropout, flatten, zero
  padding, nearest upsampling, …);
- *channel* ops keep channel ``c`` in channel ``c`` but change values (average pooling, a
  mean over the spatial axes);
- *flatten* ops turn ``(N, C, H, W)`` into ``(N, C·H·W)`` (a channel becomes H·W features);
- *add* ops merge residual branches; *shape* ops only read sizes;
- everything else is a *barrier*: computed in float, and no channel can be removed across it.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from mpsctl.search.layers import ActivationSlot

VALUE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity,
)
CHANNEL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
RELU_MODULES = (nn.ReLU, nn.ReLU6)

VALUE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.max_pool1d, F.max_pool2d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.dropout, F.dropout1d, F.dropout2d,
}
CHANNEL_FUNCTIONS = {F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d}
RELU_FUNCTIONS = {F.relu, torch.relu, F.relu6}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
SHAPE_FUNCTIONS = {getattr, operator.getitem, len}

VALUE_METHODS = {"relu", "relu_", "contiguous", "clone"}
RELU_METHODS = {"relu", "relu_"}
RESHAPE_METHODS = {"flatten", "view", "reshape"}
SHAPE_METHODS = {"size", "dim", "numel"}
ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}


class ShapeRecorder(fx.Interpreter):
    """Runs the graph once and stores each tensor result's shape in ``node.meta["shape"]``
    (torch's ShapeProp does the same but pulls in the symbolic-shapes machinery, half a
    second of imports on every command)."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            n.meta["shape"] = tuple(out.shape)
        return out


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    return node.meta.get("shape")


def tensor_args(node: fx.Node) -> list[fx.Node]:
    """Arguments of ``node`` that are tensors flowing through the graph."""
    args = [a for a in node.all_input_nodes if shape_of(a) is not None]
    return args


def _is_flatten(node: fx.Node) -> bool:
    """A reshape that keeps the batch axis and folds channels and space into axis 1."""
    src = node.all_input_nodes[0] if node.all_input_nodes else None
    before, after = (shape_of(src) if src is not None else None), shape_of(node)
    if before is None or after is None or len(before) < 2 or len(after) != 2:
        return False
    return after[0] == before[0] and after[1] == _prod(before[1:])


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def flatten_factor(node: fx.Node) -> int:
    """Features per channel produced by a flatten node."""
    src = node.all_input_nodes[0]
    return _prod(shape_of(src)[2:])


def classify(node: fx.Node, modules: dict[str, nn.Module], layers: set[str]) -> str:
    """One of: input, output, layer, quant, value, channel, flatten, add, shape, barrier."""
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "get_attr":
        return "shape"
    if node.op == "call_module":
        if node.target in layers:
            return "layer"
        module = modules[node.target]
        if isinstance(module, ActivationSlot):
            return "quant"
        if isinstance(module, nn.Flatten):
            return "flatten" if _is_flatten(node) else "barrier"
        if isinstance(module, VALUE_MODULES) or _zero_pad_module(node, module) or (
                _nearest_module(module)):
            return "value"
        if isinstance(module, CHANNEL_MODULES):
            return "channel"
        return "barrier"
    if node.op == "call_function":
        fn = node.target
        if shape_of(node) is None or (fn in SHAPE_FUNCTIONS and fn is not operator.getitem):
            return "shape"
        if fn is operator.getitem:  # a tensor out of chunk/split, or a slice
            return "barrier"
        if fn in ADD_FUNCTIONS and len(tensor_args(node)) == 2:
            return "add"
        if fn is torch.flatten:
            return "flatten" if _is_flatten(node) else "barrier"
        if fn in VALUE_FUNCTIONS or _zero_pad_call(node) or _nearest_call(node):
            return "value"
        if fn in CHANNEL_FUNCTIONS or spatial_mean(node):
            return "channel"
        return "barrier"
    # call_method
    name = node.target
    if name in SHAPE_METHODS or shape_of(node) is None:
        return "shape"
    if name in ADD_METHODS and len(tensor_args(node)) == 2:
        return "add"
    if name in RESHAPE_METHODS:
        if shape_of(node) == shape_of(node.all_input_nodes[0]):
            return "value"
        return "flatten" if _is_flatten(node) else "barrier"
    if name in VALUE_METHODS:
        return "value"
    if spatial_mean(node):
        return "channel"
    return "barrier"


def call_args(node: fx.Node, names: tuple[str, ...], defaults: dict) -> dict:
    """The arguments of a call_function / call_method node by parameter name (``names`` in
    positional order, the input first), with ``defaults`` for those not given."""
    out = dict(defaults)
    out.update(zip(names, node.args, strict=False))
    out.update(node.kwargs)
    return out


_PAD_ARGS = ("input", "pad", "mode", "value")
_INTERPOLATE_ARGS = ("input", "size", "scale_factor", "mode", "align_corners")


def _spatial_pad(pad, rank: int) -> bool:
    return len(pad) <= 2 * (rank - 2) and all(int(p) >= 0 for p in pad)


def _zero_pad_module(node: fx.Node, module: nn.Module) -> bool:
    """nn.ZeroPad*d / ConstantPad*d with value 0: zero is a code of every grid."""
    if not isinstance(module, nn.modules.padding._ConstantPadNd) or float(module.value) != 0:
        return False
    shape = shape_of(node)
    return shape is not None and _spatial_pad(module.padding, len(shape))


def _zero_pad_call(node: fx.Node) -> bool:
    if node.target is not F.pad:
        return False
    a = call_args(node, _PAD_ARGS, {"mode": "constant", "value": None})
    shape = shape_of(node)
    return (a["mode"] == "constant" and not a["value"] and shape is not None
            and _spatial_pad(a["pad"], len(shape)))


def _nearest_module(module: nn.Module) -> bool:
    return isinstance(module, nn.Upsample) and module.mode == "nearest"


def _nearest_call(node: fx.Node) -> bool:
    if node.target is not F.interpolate:
        return False
    return call_args(node, _INTERPOLATE_ARGS, {"mode": "nearest"})["mode"] == "nearest"


def spatial_mean(node: fx.Node) -> bool:
    """``x.mean((2, 3))`` / ``torch.mean(x, [2, 3], keepdim)``: global average pooling."""
    if not ((node.op == "call_method" and node.target == "mean")
            or (node.op == "call_function" and node.target is torch.mean)):
        return False
    src = node.all_input_nodes[0] if node.all_input_nodes else None
    shape = shape_of(src) if src is not None else None
    dims = call_args(node, ("input", "dim", "keepdim"), {"dim": None})["dim"]
    if shape is None or len(shape) < 3 or dims is None:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    return sorted(d % len(shape) for d in dims) == list(range(2, len(shape)))


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), RELU_MODULES)
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    return node.op == "call_method" and node.target in RELU_METHODS


def module_path(node: fx.Node) -> str:
    """Where an op sits in the user's model, for error messages."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        return list(stack.values())[-1][0] or "<top level>"
    return node.target if node.op == "call_module" else "<top level>"
