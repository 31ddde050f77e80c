"""What both ONNX exporters share: the graph under construction, the walk over the fixed
model's fx graph, and the ops written the same way in every variant (input and output,
flatten, ReLU, max pooling, metadata). Each variant (``onnx_integer``, ``onnx_qdq``) says
how quantizers, layers, average pooling and residual adds become ONNX.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from mpsctl.deploy.extra import ONNX_MISSING
from mpsctl.deploy.integer import (
    MAX_CODE_BITS,
    ActGrid,
    IntegerExportError,
    IntegerLayer,
    act_grid,
    integer_layer,
)
from mpsctl.errors import MissingPackageError, UserError
from mpsctl.search.graph import (
    NodeKind,
    ShapeRecorder,
    barrier_op,
    call_args,
    classify,
    is_eval_identity,
    is_relu,
    permutation,
    relu_bound,
    shape_of,
    slice_bounds,
    spatial_mean,
)
from mpsctl.search.layers import ActivationSlot, SearchableLayer
from mpsctl.search.supernet import Supernet
from mpsctl.version import __version__

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # the deploy extra is optional
    raise MissingPackageError(ONNX_MISSING) from None

OPSET = 17
IR_VERSION = 8
FORMAT = "mpsctl-onnx/1"

ELEM = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8, "int32": TensorProto.INT32,
        "int64": TensorProto.INT64, "uint64": TensorProto.UINT64, "float32": TensorProto.FLOAT}
_IDENTITY_METHODS = {"contiguous", "clone", "flatten", "view", "reshape"}
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d)
_ADAPTIVE_MAXPOOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d)
ADAPTIVE_AVGPOOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_MAXPOOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d}
_ADAPTIVE_MAXPOOL_FUNCTIONS = {F.adaptive_max_pool1d, F.adaptive_max_pool2d}
_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                 "return_indices")
_MAXPOOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                     "return_indices": False}
_AVGPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                 "divisor_override")
_AVGPOOL_DEFAULTS = {"stride": None, "padding": 0, "ceil_mode": False,
                     "count_include_pad": True, "divisor_override": None}
PASS_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d}


class OnnxExportError(UserError):
    """The model holds an op that the ONNX export cannot write as quantized arithmetic."""


@dataclass
class Value:
    """What an fx node's output is in the ONNX graph.

    kind: ``float`` (real values), ``codes`` (uint8/int8 codes on ``grid``), ``int`` (an
    int32 sum with real unit ``scale``; ``slot`` set when the unit is that slot's step),
    ``acc`` (a layer's int32 accumulator, one real unit per channel along ``axis``) or
    ``lazy`` (element-wise functions ``fns`` of the codes in ``source``, not yet written:
    the integer exporter turns them into one table look-up where they are consumed).
    """

    name: str
    kind: str
    rank: int
    scale: np.ndarray | None = None
    axis: int = 1
    grid: ActGrid | None = None
    slot: ActivationSlot | None = None
    bound: float = 0.0
    source: Value | None = None
    fns: tuple = ()


class Graph:
    """Accumulates ONNX nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()

    def unique(self, hint: str) -> str:
        name, i = hint, 1
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.unique(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        out = self.unique(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def channel_shape(channels: int, rank: int, axis: int) -> tuple[int, ...]:
    """Shape that broadcasts ``channels`` values along ``axis`` of a rank-``rank`` tensor."""
    if channels == 1:
        return ()
    shape = [1] * rank
    shape[axis % rank] = channels
    return tuple(shape)


def ints(value, n: int) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    return [int(v) for v in value]



class GraphExporter:
    """Walks the fixed model's fx graph in order and writes each node as ONNX; subclasses
    write the quantizers, layers, average pools and adds of their variant."""

    #: The ``--onnx-variant`` name, and whether activations travel as integer codes.
    variant = ""
    integer = False
    #: The operator sets the graph imports; the widest codes the variant stores; whether
    #: the runtimes it targets accumulate in int32 (then a possible overflow is refused).
    opsets: tuple[tuple[str, int], ...] = (("", OPSET),)
    max_code_bits = MAX_CODE_BITS
    int32_accumulators = True

    def __init__(self, model: Supernet, example: Tensor) -> None:
        if not model.is_fixed:
            raise UserError(
                "only a fixed-precision model can be exported to ONNX (run `mpsctl export` "
                "on the search checkpoint first)"
            )
        self.model = copy.deepcopy(model).float().eval()
        self.gm: fx.GraphModule = self.model.net
        with torch.no_grad():  # shapes after pruning, where the graph's are the supernet's
            ShapeRecorder(self.gm).run(example[:1].float())
        self.modules = dict(self.gm.named_modules())
        self.layer_names = {n for n, m in self.modules.items() if isinstance(m, SearchableLayer)}
        self.slot_names = {id(m): n.removeprefix("act_quants.")
                           for n, m in self.modules.items() if isinstance(m, ActivationSlot)}
        self.g = Graph()
        self.inputs: list = []
        self.outputs: list = []
        self.tensors: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.layers: list[dict] = []
        self.output_lsb: dict[str, Any] = {}

    def build(self) -> onnx.ModelProto:
        env: dict[fx.Node, Value | None] = {}
        for node in self.gm.graph.nodes:
            kind = classify(node, self.modules, self.layer_names)
            args = [env.get(a) for a in node.all_input_nodes]
            if kind == NodeKind.INPUT:
                env[node] = self._input(node)
            elif kind == NodeKind.OUTPUT:
                self._output(node, env)
            elif kind == NodeKind.SHAPE:
                env[node] = None
            elif kind == NodeKind.QUANT:
                # relu: a ReLU the converter folded into the quantizer call
                relu = bool(node.kwargs.get("relu"))
                env[node] = self._slot(node, args[0], self.modules[node.target], relu)
            elif kind == NodeKind.LAYER:
                env[node] = self._layer(node, args[0], self.modules[node.target])
            elif kind == NodeKind.ADD:
                env[node] = self._add(node, *[env[a] for a in node.all_input_nodes])
            elif kind in (NodeKind.VALUE, NodeKind.FLATTEN):
                env[node] = self._value(node, args[0], kind)
            elif kind == NodeKind.CHANNEL:
                env[node] = self._avgpool(node, args[0])
            elif kind == NodeKind.CONCAT:
                parts = call_args(node, ("tensors", "dim"), {})["tensors"]
                env[node] = self._concat(node, [env[p] for p in parts])
            else:
                env[node] = self._barrier(node, env)
        graph = helper.make_graph(self.g.nodes, "mpsctl", self.inputs, self.outputs,
                                  self.g.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets],
            producer_name="mpsctl",
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, self._metadata())
        onnx.checker.check_model(model)
        return model

    # -- element-wise functions, data movement, products ------------------------------------
    def _barrier(self, node: fx.Node, env: dict) -> Value:
        """An op the converter left in float: an element-wise function, a move of data
        (reshape, transpose, chunk), or a product; anything else is refused."""
        op = barrier_op(node, self.modules)
        if op is None:
            raise self._unsupported(node)
        kind, name = op
        if kind == "elementwise":
            return self._elementwise(node, env[node.all_input_nodes[0]], name)
        if kind == "identity":
            return env[node.all_input_nodes[0]]
        if kind == "mul":
            a, b = (env[n] for n in node.all_input_nodes)
            return self._mul(node, a, b)
        if kind == "slice":
            return self._slice(node, env)
        return self._move(node, env[node.all_input_nodes[0]], name)

    def _elementwise(self, node: fx.Node, value: Value, name: str) -> Value:
        """An element-wise function (activation, unfolded BatchNorm) of ``value``."""
        raise self._unsupported(node, "an element-wise function: not in this ONNX variant yet")

    def _mul(self, node: fx.Node, a: Value, b: Value) -> Value:
        """An element-wise product (squeeze-and-excitation)."""
        raise self._unsupported(node, "an element-wise product: not in this ONNX variant yet")

    def _concat(self, node: fx.Node, parts: list[Value]) -> Value:
        """A concatenation along the channel axis."""
        raise self._unsupported(node, "a concatenation: not in this ONNX variant yet")

    def _float(self, value: Value, hint: str) -> Value:
        """``value`` as real numbers (dequantized where it is integer)."""
        if value.kind == "float":
            return value
        return Value(self._to_float(value, hint), "float", value.rank)

    def _float_elementwise(self, node: fx.Node, x: str, name: str) -> str:
        """The float ONNX ops of element-wise function ``name`` applied to ``x``."""
        g, hint = self.g, node.name
        if name == "batchnorm":
            bn = self.modules[node.target]
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else (
                    1 / torch.sqrt(bn.running_var + bn.eps))
                shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
            view = channel_shape(scale.numel(), len(shape_of(node)), 1)
            mul = g.op("Mul", [x, g.const(f"{hint}/scale", scale.numpy().reshape(view))],
                       f"{hint}/mul")
            return g.op("Add", [mul, g.const(f"{hint}/shift", shift.numpy().reshape(view))],
                        hint)
        if name == "hardswish":
            return g.op("HardSwish", [x], hint)
        if name == "hardsigmoid":
            return g.op("HardSigmoid", [x], hint, alpha=1.0 / 6, beta=0.5)
        if name == "sigmoid":
            return g.op("Sigmoid", [x], hint)
        if name == "tanh":
            return g.op("Tanh", [x], hint)
        if name == "silu":
            return g.op("Mul", [x, g.op("Sigmoid", [x], f"{hint}/sigmoid")], hint)
        if name == "gelu":  # 0.5·x·(1 + erf(x/√2)); opset 17 has no Gelu
            half = g.op("Mul", [x, g.const(f"{hint}/half", np.float32(0.5))], f"{hint}/half_x")
            erf = g.op("Erf", [g.op("Mul", [x, g.const(f"{hint}/rsqrt2",
                                                       np.float32(1 / np.sqrt(2)))],
                                    f"{hint}/scaled")], f"{hint}/erf")
            one = g.op("Add", [erf, g.const(f"{hint}/one", np.float32(1))], f"{hint}/one_erf")
            return g.op("Mul", [half, one], hint)
        raise self._unsupported(node)

    def _move(self, node: fx.Node, value: Value, name: str) -> Value:
        """Reshape / transpose of ``value``: codes stay codes on their grid."""
        if value.kind == "acc" or (value.scale is not None and value.scale.size > 1):
            value = self._float(value, f"{node.name}/float")
        value = self._settle(node, value)
        out_shape = shape_of(node)
        if name == "reshape":
            target = self.g.const(f"{node.name}/shape",
                                  np.array([0, *out_shape[1:]], dtype=np.int64))
            out = self.g.op("Reshape", [value.name, target], node.name)
        else:
            perm = permutation(node, value.rank)
            if perm[0] != 0:
                raise self._unsupported(node, "moves the batch axis")
            out = self.g.op("Transpose", [value.name], node.name, perm=perm)
        return Value(out, value.kind, len(out_shape), value.scale, 1, value.grid, value.slot,
                     value.bound)

    def _slice(self, node: fx.Node, env: dict) -> Value:
        """``x.chunk(n, dim)[i]`` / ``x.split(size, dim)[i]``: one slice of ``x``."""
        source = node.args[0]
        value = env[source.all_input_nodes[0]]
        value = self._settle(node, value)
        start, end, axis = slice_bounds(node)
        g, hint = self.g, node.name
        out = g.op("Slice", [value.name, g.const(f"{hint}/start", np.array([start], np.int64)),
                             g.const(f"{hint}/end", np.array([end], np.int64)),
                             g.const(f"{hint}/axis", np.array([axis], np.int64))], hint)
        return Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                     value.slot, value.bound)

    def _settle(self, node: fx.Node, value: Value) -> Value:
        """``value`` in a form that data can be moved in (the integer variant evaluates a
        pending element-wise function here)."""
        return value

    def _unsupported(self, node: fx.Node, why: str = "") -> OnnxExportError:
        if node.op == "call_module":
            what = f"{node.target} ({type(self.modules[node.target]).__name__})"
        else:
            what = getattr(node.target, "__name__", str(node.target))
        reason = f": {why}" if why else ""
        return OnnxExportError(
            f"op '{what}' (node {node.name}) cannot be exported as quantized ONNX{reason}; "
            "replace it in the model by an op that the README's operation table lists for "
            "this format"
        )

    def _input(self, node: fx.Node) -> Value:
        shape = shape_of(node)
        dims = ["batch", *shape[1:]]
        name = self.g.unique(node.name)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        return Value(name, "float", len(shape))

    def _output(self, node: fx.Node, env: dict) -> None:
        results = node.args[0]
        results = list(results) if isinstance(results, (tuple, list)) else [results]
        for i, result in enumerate(results):
            value = env[result]
            name = "output" if len(results) == 1 else f"output_{i}"
            final = self._to_float(value, name)
            dims = ["batch", *shape_of(result)[1:]]
            self.outputs.append(helper.make_tensor_value_info(final, TensorProto.FLOAT, dims))
            if value.scale is not None:
                lsb = value.scale.tolist()
                self.output_lsb[final] = {"lsb": lsb if len(lsb) > 1 else lsb[0],
                                          "axis": value.axis}

    def _to_float(self, value: Value, hint: str) -> str:
        """Dequantize an integer value (Cast and per-channel Mul); float values pass."""
        if value.kind == "float":
            return self.g.op("Identity", [value.name], hint)
        as_float = self.g.op("Cast", [value.name], f"{hint}/float", to=TensorProto.FLOAT)
        scale = value.scale.astype(np.float32)
        scale = self.g.const(f"{hint}/scale", scale.reshape(channel_shape(scale.size, value.rank,
                                                                  value.axis)))
        return self.g.op("Mul", [as_float, scale], hint)

    def _slot(self, node: fx.Node, value: Value, slot: ActivationSlot,
              relu: bool = False) -> Value:
        grid = act_grid(slot)
        if grid.bits > self.max_code_bits:
            raise IntegerExportError(
                f"activation quantizer '{self.slot_names[id(slot)]}' has {grid.bits} bits; "
                f"ONNX export stores codes as int8/uint8 (up to {self.max_code_bits} bits)"
            )
        return self._quantizer(node, value, slot, grid, relu)

    def _quantizer(self, node: fx.Node, value: Value, slot: ActivationSlot, grid: ActGrid,
                   relu: bool) -> Value:
        """An activation quantizer (followed by the ReLU folded into it, with ``relu``)."""
        raise NotImplementedError

    def _write_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
        """A conv or linear layer reading the codes (or dequantized codes) in ``value``."""
        raise NotImplementedError

    def _average(self, node: fx.Node, value: Value, window: int, attrs: dict | None,
                 in_shape: tuple[int, ...]) -> Value:
        """An average pool over ``window`` values (``attrs`` None: a global pool)."""
        raise NotImplementedError

    def _add(self, node: fx.Node, a: Value, b: Value) -> Value:
        """A residual add."""
        raise NotImplementedError

    def _layer(self, node: fx.Node, value: Value, layer: SearchableLayer) -> Value:
        name = str(node.target)
        if value is None or value.slot is not layer.input_slot or value.grid is None:
            raise IntegerExportError(
                f"layer '{name}' does not read the codes of its own input quantizer "
                "(an op between them that ONNX export cannot express)"
            )
        il = integer_layer(name, layer, self.max_code_bits)
        if self.int32_accumulators:
            il.check_overflow()
        rank = len(shape_of(node))
        out = self._write_layer(il, value, rank)
        bound = il.accumulator_bound()
        self.layers.append({
            "name": name, "op": il.op,
            "w_bits": il.w_bits if len(set(il.w_bits)) > 1 else il.w_bits[0],
            "in_bits": il.in_grid.bits, "in_signed": il.in_grid.signed,
            "out_channels": il.channels, "acc_bound": int(bound.max()),
        })
        return out

    def _weight_meta(self, il: IntegerLayer, weight: str, bias: str | None) -> None:
        per_channel = len(set(il.w_bits)) > 1
        self.tensors[weight] = {
            "role": "weight", "layer": il.name,
            "bits": il.w_bits if per_channel else il.w_bits[0],
            "scale": il.w_scale.tolist(), "layout": "in,out" if il.op == "linear" and
            self.integer else "out,in,...",
        }
        if bias is not None:
            self.tensors[bias] = {"role": "bias", "layer": il.name, "bits": 32,
                                  "scale": il.acc_scale.tolist()}

    def _conv_attrs(self, il: IntegerLayer) -> dict[str, Any]:
        spatial = il.weight.ndim - 2
        pads = ints(il.conv_args["padding"], spatial)
        return {
            "kernel_shape": list(il.weight.shape[2:]),
            "strides": ints(il.conv_args["stride"], spatial),
            "pads": pads + pads,
            "dilations": ints(il.conv_args["dilation"], spatial),
            "group": int(il.conv_args["groups"]),
        }

    def _value(self, node: fx.Node, value: Value, kind: str) -> Value:
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if kind == NodeKind.FLATTEN:
            return self._flatten(node, value)
        if is_relu(node, self.modules):
            bound = relu_bound(node, self.modules)
            top = None if bound == float("inf") else bound
            if top is not None and (value.kind not in ("float", "acc") and (
                    value.grid is None or value.grid.high * value.grid.scale > top * (1 + 1e-6))):
                raise self._unsupported(
                    node, f"a ReLU bounded at {top:g} cuts a quantized range that reaches above it")
            return self._relu(node.name, value, top)
        if isinstance(module, _MAXPOOLS):
            return self._maxpool(node, value, module)
        if node.target in _MAXPOOL_FUNCTIONS:
            return self._maxpool(node, value, SimpleNamespace(
                **call_args(node, _MAXPOOL_ARGS, _MAXPOOL_DEFAULTS)))
        if isinstance(module, _ADAPTIVE_MAXPOOLS):
            return self._global_max(node, value, module.output_size)
        if node.target in _ADAPTIVE_MAXPOOL_FUNCTIONS:
            return self._global_max(node, value, call_args(node, ("input", "output_size"),
                                                           {})["output_size"])
        if isinstance(module, nn.modules.padding._ConstantPadNd) or node.target is F.pad:
            pad = module.padding if module is not None else call_args(
                node, ("input", "pad"), {})["pad"]
            return self._zero_pad(node, value, pad)
        if isinstance(module, nn.Upsample) or node.target is F.interpolate:
            return self._nearest(node, value)
        if (isinstance(module, PASS_MODULES) or node.target in PASS_FUNCTIONS
                or is_eval_identity(node, self.modules)
                or (node.op == "call_method" and node.target in _IDENTITY_METHODS)):
            return value
        raise self._unsupported(node)

    def _zero_pad(self, node: fx.Node, value: Value, pad) -> Value:
        """Zero padding of spatial axes: 0 is a code of every grid, and a real 0 in float."""
        if value.kind == "acc":
            value = Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        spatial = value.rank - 2
        pad = ints(pad, 2 * spatial) if isinstance(pad, int) else [int(p) for p in pad]
        pad = pad + [0] * (2 * spatial - len(pad))
        # F.pad lists (begin, end) from the last axis backwards; ONNX all begins, then ends.
        begins = [0, 0] + [pad[2 * (spatial - 1 - i)] for i in range(spatial)]
        ends = [0, 0] + [pad[2 * (spatial - 1 - i) + 1] for i in range(spatial)]
        pads = self.g.const(f"{node.name}/pads", np.array(begins + ends, dtype=np.int64))
        out = self.g.op("Pad", [value.name, pads], node.name, mode="constant")
        return Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                     value.slot, value.bound)

    def _nearest(self, node: fx.Node, value: Value) -> Value:
        """Nearest upsampling: each output picks input ``⌊i · in / out⌋`` (PyTorch's rule)."""
        if value.kind == "acc":
            value = Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        out_shape = shape_of(node)
        batch = self.g.op("Shape", [value.name], f"{node.name}/batch", start=0, end=2)
        full = self.g.op("Concat", [batch, self.g.const(
            f"{node.name}/spatial", np.array(out_shape[2:], dtype=np.int64))],
            f"{node.name}/size", axis=0)
        out = self.g.op("Resize", [value.name, "", "", full], node.name, mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                     value.slot, value.bound)

    def _flatten(self, node: fx.Node, value: Value) -> Value:
        if value.kind == "acc" or (value.scale is not None and value.scale.size > 1):
            value = Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        out = self.g.op("Flatten", [value.name], node.name, axis=1)
        return Value(out, value.kind, 2, value.scale, value.axis, value.grid, value.slot,
                      value.bound)

    def _relu(self, name: str, value: Value, top: float | None) -> Value:
        """ReLU, or a ReLU bounded at ``top``; on codes of an unsigned grid that ends at or
        below ``top`` (checked by the caller) it is a no-op."""
        if value.kind == "acc":
            value = Value(self._to_float(value, f"{name}/float"), "float", value.rank)
        if value.kind == "float":
            if top is not None:
                lo, hi = np.float32(0), np.float32(top)
                out = self.g.op("Clip", [value.name, self.g.const(f"{name}/lo", lo),
                                         self.g.const(f"{name}/hi", hi)], name)
            else:
                out = self.g.op("Relu", [value.name], name)
            return Value(out, "float", value.rank, value.scale, value.axis, value.grid,
                          value.slot)
        if value.kind == "codes" and not value.grid.signed:
            return value
        out = self.g.op("Relu", [value.name], name)
        return Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                      value.slot, value.bound)

    def _maxpool(self, node: fx.Node, value: Value, module: nn.Module) -> Value:
        if value.kind in ("acc", "int"):
            value = Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        if getattr(module, "return_indices", False):
            raise self._unsupported(node, "return_indices")
        spatial = value.rank - 2
        kernel = ints(module.kernel_size, spatial)
        stride = ints(module.stride if module.stride is not None else module.kernel_size,
                       spatial)
        pads = ints(module.padding, spatial)
        out = self.g.op("MaxPool", [value.name], node.name, kernel_shape=kernel, strides=stride,
                        pads=pads + pads, dilations=ints(module.dilation, spatial),
                        ceil_mode=int(module.ceil_mode))
        return Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                      value.slot, value.bound)

    def _global_max(self, node: fx.Node, value: Value, size) -> Value:
        if any(s != 1 for s in ints(size, value.rank - 2)):
            raise self._unsupported(node, "adaptive max pooling to more than 1x1")
        if value.kind in ("acc", "int"):
            value = Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        out = self.g.op("ReduceMax", [value.name], node.name,
                        axes=list(range(2, value.rank)), keepdims=1)
        return Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                      value.slot, value.bound)

    def _avgpool(self, node: fx.Node, value: Value) -> Value:
        """Average pooling as an integer sum; the quantizer after it divides (requantises)."""
        module = self.modules.get(node.target) if node.op == "call_module" else None
        spatial = value.rank - 2
        in_shape = shape_of(node.all_input_nodes[0])
        if isinstance(module, ADAPTIVE_AVGPOOLS) or node.target in (
            F.adaptive_avg_pool1d, F.adaptive_avg_pool2d
        ):
            size = module.output_size if module is not None else node.args[1]
            if any(s != 1 for s in ints(size, spatial)):
                raise self._unsupported(node, "adaptive average pooling to more than 1x1")
            window, attrs = int(np.prod(in_shape[2:])), None
        elif spatial_mean(node):
            window, attrs = int(np.prod(in_shape[2:])), None
            keep = call_args(node, ("input", "dim", "keepdim"), {"keepdim": False})["keepdim"]
            out = self._average(node, value, window, attrs, in_shape)
            if keep:
                return out
            flat = self.g.op("Flatten", [out.name], f"{node.name}/squeeze", axis=1)
            return Value(flat, out.kind, 2, out.scale, out.axis, out.grid, out.slot, out.bound)
        else:
            if module is None and node.target in (F.avg_pool1d, F.avg_pool2d):
                module = SimpleNamespace(**call_args(node, _AVGPOOL_ARGS, _AVGPOOL_DEFAULTS))
            if not isinstance(module, (*AVGPOOLS, SimpleNamespace)):
                raise self._unsupported(node)
            if module.ceil_mode or getattr(module, "divisor_override", None):
                raise self._unsupported(node, "ceil_mode / divisor_override")
            kernel = ints(module.kernel_size, spatial)
            pads = ints(module.padding, spatial)
            if any(pads) and not module.count_include_pad:
                raise self._unsupported(node, "padding with count_include_pad=False")
            stride = ints(module.stride if module.stride is not None else module.kernel_size,
                           spatial)
            window = int(np.prod(kernel))
            attrs = {"kernel_shape": kernel, "strides": stride, "pads": pads + pads}
        return self._average(node, value, window, attrs, in_shape)

    def _float_average(self, node: fx.Node, value: Value, attrs: dict | None) -> Value:
        if value.kind != "float":
            value = Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        if attrs is None:
            out = self.g.op("GlobalAveragePool", [value.name], node.name)
        else:
            out = self.g.op("AveragePool", [value.name], node.name, count_include_pad=1,
                            **attrs)
        return Value(out, "float", value.rank)

    def _metadata(self) -> dict[str, str]:
        return {
            "mpsctl.format": FORMAT,
            "mpsctl.version": __version__,
            "mpsctl.variant": self.variant,
            "mpsctl.tensors": json.dumps(self.tensors),
            "mpsctl.layers": json.dumps(self.layers),
            "mpsctl.codes": json.dumps(self.codes),
            "mpsctl.outputs": json.dumps(self.output_lsb),
        }


class FloatGraphExporter(GraphExporter):
    """The variants that keep real numbers between their quantizers (QDQ, QONNX): pooling,
    adds, element-wise functions, products and concatenations are the float ONNX ops, and
    the quantizer that follows puts the result back on its grid."""

    def _average(self, node: fx.Node, value: Value, window: int, attrs: dict | None,
                 in_shape: tuple[int, ...]) -> Value:
        return self._float_average(node, value, attrs)

    def _add(self, node: fx.Node, a: Value, b: Value) -> Value:
        out = self.g.op("Add", [a.name, b.name], node.name)
        return Value(out, "float", a.rank)

    def _elementwise(self, node: fx.Node, value: Value, name: str) -> Value:
        x = self._float(value, f"{node.name}/float")
        return Value(self._float_elementwise(node, x.name, name), "float", value.rank)

    def _mul(self, node: fx.Node, a: Value, b: Value) -> Value:
        a, b = self._float(a, f"{node.name}/a"), self._float(b, f"{node.name}/b")
        return Value(self.g.op("Mul", [a.name, b.name], node.name), "float",
                     max(a.rank, b.rank))

    def _concat(self, node: fx.Node, parts: list[Value]) -> Value:
        floats = [self._float(p, f"{node.name}/part{i}").name for i, p in enumerate(parts)]
        return Value(self.g.op("Concat", floats, node.name, axis=1), "float",
                     len(shape_of(node)))
