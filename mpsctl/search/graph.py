"""How the converter reads an fx graph: which ops pass values, channels or neither through.

- *value* ops keep a quantized tensor on its grid (ReLU, max-pool, dropout, flatten, …);
- *channel* ops keep channel ``c`` in channel ``c`` but change values (average pooling);
- *flatten* ops turn ``(N, C, H, W)`` into ``(N, C·H·W)`` (a channel becomes H·W features);
- *add* ops merge residual branches; *shape* ops only read sizes;
- everything else is a *barrier*: computed in float, and no channel can be removed across it.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from mpsctl.enums import StrEnum
from mpsctl.search.layers import ActivationSlot


class NodeKind(StrEnum):
    """What an fx node is to the converter (see the module docstring)."""

    INPUT = "input"
    OUTPUT = "output"
    LAYER = "layer"
    QUANT = "quant"
    VALUE = "value"
    CHANNEL = "channel"
    FLATTEN = "flatten"
    ADD = "add"
    SHAPE = "shape"
    BARRIER = "barrier"

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


def classify(node: fx.Node, modules: dict[str, nn.Module], layers: set[str]) -> NodeKind:
    """What ``node`` is to the converter and the exporters (see :class:`NodeKind`)."""
    if node.op == "placeholder":
        return NodeKind.INPUT
    if node.op == "output":
        return NodeKind.OUTPUT
    if node.op == "get_attr":
        return NodeKind.SHAPE
    if node.op == "call_module":
        if node.target in layers:
            return NodeKind.LAYER
        module = modules[node.target]
        if isinstance(module, ActivationSlot):
            return NodeKind.QUANT
        if isinstance(module, nn.Flatten):
            return NodeKind.FLATTEN if _is_flatten(node) else NodeKind.BARRIER
        if isinstance(module, VALUE_MODULES) or relu_bound(node, modules) is not None:
            return NodeKind.VALUE
        if isinstance(module, CHANNEL_MODULES):
            return NodeKind.CHANNEL
        return NodeKind.BARRIER
    if node.op == "call_function":
        fn = node.target
        if fn in SHAPE_FUNCTIONS or shape_of(node) is None:
            return NodeKind.SHAPE
        if fn in ADD_FUNCTIONS and len(tensor_args(node)) == 2:
            return NodeKind.ADD
        if fn is torch.flatten:
            return NodeKind.FLATTEN if _is_flatten(node) else NodeKind.BARRIER
        if fn in VALUE_FUNCTIONS or relu_bound(node, modules) is not None:
            return NodeKind.VALUE
        if fn in CHANNEL_FUNCTIONS:
            return NodeKind.CHANNEL
        return NodeKind.BARRIER
    # call_method
    name = node.target
    if name in SHAPE_METHODS or shape_of(node) is None:
        return NodeKind.SHAPE
    if name in ADD_METHODS and len(tensor_args(node)) == 2:
        return NodeKind.ADD
    if name in RESHAPE_METHODS:
        if shape_of(node) == shape_of(node.all_input_nodes[0]):
            return NodeKind.VALUE
        return NodeKind.FLATTEN if _is_flatten(node) else NodeKind.BARRIER
    if name in VALUE_METHODS:
        return NodeKind.VALUE
    return NodeKind.BARRIER


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """ReLU, ReLU6 or a Hardtanh whose lower end is 0 (a ReLU clipped above)."""
    return relu_bound(node, modules) is not None


def relu_bound(node: fx.Node, modules: dict[str, nn.Module]) -> float | None:
    """Upper end of a ReLU-like op: ``inf`` for ReLU, 6 for ReLU6, ``max_val`` for a
    ``Hardtanh(0, max_val)``; None if ``node`` is no ReLU."""
    if node.op == "call_module":
        module = modules.get(node.target)
        if isinstance(module, nn.ReLU6):
            return 6.0
        if isinstance(module, nn.ReLU):
            return float("inf")
        if isinstance(module, nn.Hardtanh) and module.min_val == 0 and module.max_val > 0:
            return float(module.max_val)
        return None
    if node.op == "call_function":
        if node.target is F.relu6:
            return 6.0
        if node.target in RELU_FUNCTIONS:
            return float("inf")
        if node.target is F.hardtanh:
            low, high = _hardtanh_range(node)
            return high if low == 0 and high > 0 else None
        return None
    return float("inf") if node.op == "call_method" and node.target in RELU_METHODS else None


def _hardtanh_range(node: fx.Node) -> tuple[float | None, float | None]:
    args = list(node.args[1:3])
    low = node.kwargs.get("min_val", args[0] if args else -1.0)
    high = node.kwargs.get("max_val", args[1] if len(args) > 1 else 1.0)
    if not all(isinstance(v, int | float) for v in (low, high)):
        return None, None
    return float(low), float(high)


def module_path(node: fx.Node) -> str:
    """Where an op sits in the user's model, for error messages."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        return list(stack.values())[-1][0] or "<top level>"
    return node.target if node.op == "call_module" else "<top level>"
