"""How the converter reads an fx graph: which ops pass values, channels or neither through.

- *value* ops keep a quantized tensor on its grid (ReLU, max-pool, dropout, flatten, zero
  padding, nearest upsampling, …);
- *channel* ops keep channel ``c`` in channel ``c`` but change values (average pooling, a
  mean over the spatial axes);
- *flatten* ops turn ``(N, C, H, W)`` into ``(N, C·H·W)`` (a channel becomes H·W features);
- *add* ops merge residual branches; *concat* ops join tensors along the channel axis;
  *shape* ops only read sizes;
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
    CONCAT = "concat"
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
CONCAT_FUNCTIONS = {torch.cat, torch.concat}
#: Modules (by class name, so that torchvision need not be imported) that are the identity
#: in eval mode: torchvision's StochasticDepth drops whole residual branches in training.
EVAL_IDENTITY_MODULES = {"StochasticDepth"}
#: ... and functions (traced with ``training=False``: the model is converted in eval mode).
EVAL_IDENTITY_FUNCTIONS = {"stochastic_depth": ("input", "p", "mode", "training")}
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
        if isinstance(module, VALUE_MODULES) or _zero_pad_module(node, module) or (
                _nearest_module(module)) or type(module).__name__ in EVAL_IDENTITY_MODULES or (
                relu_bound(node, modules) is not None):
            return NodeKind.VALUE
        if isinstance(module, CHANNEL_MODULES):
            return NodeKind.CHANNEL
        return NodeKind.BARRIER
    if node.op == "call_function":
        fn = node.target
        if shape_of(node) is None or (fn in SHAPE_FUNCTIONS and fn is not operator.getitem):
            return NodeKind.SHAPE
        if fn is operator.getitem:  # a tensor out of chunk/split, or a slice
            return NodeKind.BARRIER
        if fn in ADD_FUNCTIONS and len(tensor_args(node)) == 2:
            return NodeKind.ADD
        if fn in CONCAT_FUNCTIONS and _channel_concat(node):
            return NodeKind.CONCAT
        if fn is torch.flatten:
            return NodeKind.FLATTEN if _is_flatten(node) else NodeKind.BARRIER
        if (fn in VALUE_FUNCTIONS or _zero_pad_call(node) or _nearest_call(node)
                or is_eval_identity(node, modules) or relu_bound(node, modules) is not None):
            return NodeKind.VALUE
        if fn in CHANNEL_FUNCTIONS or spatial_mean(node):
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
    if spatial_mean(node):
        return NodeKind.CHANNEL
    return NodeKind.BARRIER


def is_eval_identity(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """An op that passes its input unchanged in eval mode (stochastic depth)."""
    if node.op == "call_module":
        return type(modules.get(node.target)).__name__ in EVAL_IDENTITY_MODULES
    names = EVAL_IDENTITY_FUNCTIONS.get(getattr(node.target, "__name__", ""))
    if node.op != "call_function" or names is None:
        return False
    return call_args(node, names, {"training": True})["training"] is False


def _channel_concat(node: fx.Node) -> bool:
    """``torch.cat(tensors, dim=1)`` of tensors with a channel axis."""
    a = call_args(node, ("tensors", "dim"), {"dim": 0})
    shape = shape_of(node)
    parts = a["tensors"]
    return (shape is not None and len(shape) >= 2 and isinstance(parts, (list, tuple))
            and all(isinstance(p, fx.Node) and shape_of(p) is not None for p in parts)
            and int(a["dim"]) % len(shape) == 1)


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


# -- ops the converter leaves in float (barriers) that export can still write ------------------
#: Element-wise functions, by the name the exporters know them by. On a quantized input an
#: element-wise function is a table over the input codes (exact for ≤ 8-bit codes).
ELEMENTWISE_MODULES: dict[type, str] = {
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.GELU: "gelu",
    nn.BatchNorm1d: "batchnorm", nn.BatchNorm2d: "batchnorm",
}
ELEMENTWISE_FUNCTIONS: dict = {
    F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", F.silu: "silu",
    torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh",
    F.gelu: "gelu",
}
ELEMENTWISE_METHODS = {"sigmoid": "sigmoid", "tanh": "tanh"}
MUL_FUNCTIONS = {operator.mul, torch.mul}
MUL_METHODS = {"mul", "__mul__"}
RESHAPE_FUNCTIONS = {torch.reshape, torch.flatten}
TRANSPOSE_FUNCTIONS = {torch.transpose, torch.permute}
TRANSPOSE_METHODS = {"transpose", "permute"}
SPLIT_METHODS = {"chunk", "split"}
SPLIT_FUNCTIONS = {torch.chunk, torch.split}


def barrier_op(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    """What a barrier node is, for export: ``(kind, name)`` with kind one of
    ``elementwise`` (name: the function), ``mul``, ``reshape``/``transpose`` (kind = name),
    ``slice`` (one part of a chunk/split), ``identity``; None when export cannot write it."""
    if node.op == "call_module":
        module = modules.get(node.target)
        name = ELEMENTWISE_MODULES.get(type(module))
        if name == "gelu" and getattr(module, "approximate", "none") != "none":
            return None
        if name == "batchnorm" and not module.track_running_stats:
            return None
        if type(module).__name__ in EVAL_IDENTITY_MODULES:
            return ("identity", "identity")
        return ("elementwise", name) if name else None
    if node.op == "call_function":
        fn = node.target
        if fn in ELEMENTWISE_FUNCTIONS and len(tensor_args(node)) == 1:
            if fn is F.gelu and node.kwargs.get("approximate", "none") != "none":
                return None
            return ("elementwise", ELEMENTWISE_FUNCTIONS[fn])
        if fn in MUL_FUNCTIONS and len(tensor_args(node)) == 2:
            return ("mul", "mul")
        if fn in RESHAPE_FUNCTIONS:
            return ("reshape", "reshape")
        if fn in TRANSPOSE_FUNCTIONS:
            return ("transpose", "transpose")
        if fn is operator.getitem and _is_split(node.args[0]):
            return ("slice", "slice")
        return None
    if node.op == "call_method":
        name = node.target
        if name in ELEMENTWISE_METHODS and len(tensor_args(node)) == 1:
            return ("elementwise", ELEMENTWISE_METHODS[name])
        if name in MUL_METHODS and len(tensor_args(node)) == 2:
            return ("mul", "mul")
        if name in RESHAPE_METHODS:
            return ("reshape", "reshape")
        if name in TRANSPOSE_METHODS:
            return ("transpose", "transpose")
    return None


def _is_split(node) -> bool:
    return isinstance(node, fx.Node) and (
        (node.op == "call_method" and node.target in SPLIT_METHODS)
        or (node.op == "call_function" and node.target in SPLIT_FUNCTIONS))


def permutation(node: fx.Node, rank: int) -> list[int]:
    """The axis order of a transpose/permute node."""
    args = list(node.args[1:]) + [v for k, v in node.kwargs.items() if k != "input"]
    if node.target == "permute" or node.target is torch.permute:
        dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        return [int(d) % rank for d in dims]
    a, b = (int(d) % rank for d in args[:2])
    perm = list(range(rank))
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def slice_bounds(node: fx.Node) -> tuple[int, int, int]:
    """``(start, end, axis)`` of ``x.chunk(n, dim)[i]`` or ``x.split(size, dim)[i]``."""
    split, index = node.args[0], int(node.args[1])
    source = split.all_input_nodes[0]
    shape = shape_of(source)
    args = call_args(split, ("input", "n", "dim"), {"dim": 0})
    axis = int(args["dim"]) % len(shape)
    length = shape[axis]
    if split.target in ("chunk", torch.chunk):
        size = -(-length // int(args["n"]))
        sizes = [min(size, length - i) for i in range(0, length, size)]
    elif isinstance(args["n"], int):
        sizes = [min(int(args["n"]), length - i) for i in range(0, length, int(args["n"]))]
    else:
        sizes = [int(v) for v in args["n"]]
    start = sum(sizes[:index])
    return start, start + sizes[index], axis
