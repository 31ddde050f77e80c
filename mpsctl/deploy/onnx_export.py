"""ONNX export of a fixed-precision fake-quant model, checked with onnxruntime.

Two variants:

- ``integer`` (default): integer-only arithmetic from the first quantizer to the last layer.
  The float input is quantized to codes (the same float32 operations as the fake-quant
  forward), convs run as ``ConvInteger`` and linear layers as ``MatMulInteger`` on uint8
  (unsigned PACT) or int8 (signed PACT) activation codes and int8 weight codes (no zero
  points: every grid is symmetric or starts at 0), the int32 bias is added, and each
  activation quantizer becomes an integer requantisation: int64 multiply by ``m[c] < 2^23``,
  add the rounding offset, arithmetic right shift by ``shift[c]`` (``BitShift`` on uint64 after
  adding 2^62, since ONNX shifts only unsigned integers), clamp, cast. Residual adds are int32
  adds of two codes on the same grid (the add's quantizer is shared with its inputs) followed
  by a clamp; average pools are integer sums followed by a requantisation. Only the last
  layer's int32 accumulator is turned back into float (``Cast`` and ``Mul`` by its
  per-channel scale), which gives the logits. onnxruntime's CPU provider runs all of these
  (ConvInteger / MatMulInteger take any mix of int8 and uint8 but only per-tensor zero
  points, which symmetric codes do not need; it has no int32 Conv, which is why the integer
  convs go through ConvInteger rather than float or int32 Conv).
- ``qdq``: the same quantizers as QuantizeLinear / DequantizeLinear pairs around float
  Conv / Gemm with dequantized int8 weights and int32 biases, the form other runtimes fuse
  into their own integer kernels. QuantizeLinear divides and rounds half to even, so the
  unsigned PACT floor is emulated by shifting by ``ε − ½`` of a step first.

Every export is run with onnxruntime against the fake-quant model; see :func:`verify_onnx`.
Per-tensor bit-widths, scales and the requantisation constants are written to the model's
``metadata_props``.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from mpsctl.deploy import ONNX_MISSING, MissingExtraError
from mpsctl.deploy.integer import (
    INT32_MAX,
    MAX_CODE_BITS,
    MAX_SHIFT,
    ActGrid,
    IntegerExportError,
    IntegerLayer,
    IntegerOverflowError,
    act_grid,
    integer_layer,
    requantizer,
)
from mpsctl.errors import UserError
from mpsctl.search.graph import ShapeRecorder, classify, is_relu, relu_bound, shape_of
from mpsctl.search.layers import ActivationSlot, SearchableLayer
from mpsctl.search.supernet import Supernet

try:
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper
except ImportError:  # the deploy extra is optional
    raise MissingExtraError(ONNX_MISSING) from None

VARIANTS = ("integer", "qdq")
OPSET = 17
IR_VERSION = 8
#: Export fails unless the ONNX model's top-1 agrees with the fake-quant model this often.
MIN_TOP1_AGREEMENT = 0.99
FORMAT = "mpsctl-onnx/1"

_ELEM = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8, "int32": TensorProto.INT32,
         "int64": TensorProto.INT64, "uint64": TensorProto.UINT64, "float32": TensorProto.FLOAT}
_IDENTITY_METHODS = {"contiguous", "clone", "flatten", "view", "reshape"}
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d)
_ADAPTIVE_MAXPOOLS = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d)
_ADAPTIVE_AVGPOOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_PASS_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d}


class OnnxExportError(UserError):
    """The model holds an op that the ONNX export cannot write as quantized arithmetic."""


class OnnxMismatchError(RuntimeError):
    """The exported ONNX model does not reproduce the fake-quant model: a bug in mpsctl."""


@dataclass
class _Value:
    """What an fx node's output is in the ONNX graph.

    kind: ``float`` (real values), ``codes`` (uint8/int8 codes on ``grid``), ``int`` (an
    int32 sum with real unit ``scale``; ``slot`` set when the unit is that slot's step) or
    ``acc`` (a layer's int32 accumulator, one real unit per channel along ``axis``).
    """

    name: str
    kind: str
    rank: int
    scale: np.ndarray | None = None
    axis: int = 1
    grid: ActGrid | None = None
    slot: ActivationSlot | None = None
    bound: float = 0.0


class _Graph:
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


def _view(channels: int, rank: int, axis: int) -> tuple[int, ...]:
    """Shape that broadcasts ``channels`` values along ``axis`` of a rank-``rank`` tensor."""
    if channels == 1:
        return ()
    shape = [1] * rank
    shape[axis % rank] = channels
    return tuple(shape)


def _ints(value, n: int) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    return [int(v) for v in value]


class _Exporter:
    """Walks the fixed model's fx graph in order and writes each node as ONNX."""

    def __init__(self, model: Supernet, example: Tensor, variant: str) -> None:
        if variant not in VARIANTS:
            raise UserError(
                f"unknown ONNX variant {variant!r} (choose one of {', '.join(VARIANTS)})"
            )
        if not model.is_fixed:
            raise UserError(
                "only a fixed-precision model can be exported to ONNX (run `mpsctl export` "
                "on the search checkpoint first)"
            )
        self.variant = variant
        self.integer = variant == "integer"
        self.model = copy.deepcopy(model).float().eval()
        self.gm: fx.GraphModule = self.model.net
        with torch.no_grad():  # shapes after pruning, where the graph's are the supernet's
            ShapeRecorder(self.gm).run(example[:1].float())
        self.modules = dict(self.gm.named_modules())
        self.layer_names = {n for n, m in self.modules.items() if isinstance(m, SearchableLayer)}
        self.slot_names = {id(m): n.removeprefix("act_quants.")
                           for n, m in self.modules.items() if isinstance(m, ActivationSlot)}
        self.g = _Graph()
        self.inputs: list = []
        self.outputs: list = []
        self.tensors: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.layers: list[dict] = []
        self.output_lsb: dict[str, Any] = {}

    # -- walk ---------------------------------------------------------------------------------
    def build(self) -> onnx.ModelProto:
        env: dict[fx.Node, _Value | None] = {}
        for node in self.gm.graph.nodes:
            kind = classify(node, self.modules, self.layer_names)
            args = [env.get(a) for a in node.all_input_nodes]
            if kind == "input":
                env[node] = self._input(node)
            elif kind == "output":
                self._output(node, env)
            elif kind == "shape":
                env[node] = None
            elif kind == "quant":
                # relu: a ReLU the converter folded into the quantizer call
                relu = bool(node.kwargs.get("relu"))
                env[node] = self._slot(node, args[0], self.modules[node.target], relu)
            elif kind == "layer":
                env[node] = self._layer(node, args[0], self.modules[node.target])
            elif kind == "add":
                env[node] = self._add(node, *[env[a] for a in node.all_input_nodes])
            elif kind in ("value", "flatten"):
                env[node] = self._value(node, args[0], kind)
            elif kind == "channel":
                env[node] = self._avgpool(node, args[0])
            else:
                raise self._unsupported(node)
        graph = helper.make_graph(self.g.nodes, "mpsctl", self.inputs, self.outputs,
                                  self.g.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mpsctl"
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, self._metadata())
        onnx.checker.check_model(model)
        return model

    def _unsupported(self, node: fx.Node, why: str = "") -> OnnxExportError:
        if node.op == "call_module":
            what = f"{node.target} ({type(self.modules[node.target]).__name__})"
        else:
            what = getattr(node.target, "__name__", str(node.target))
        reason = f": {why}" if why else ""
        return OnnxExportError(
            f"op '{what}' (node {node.name}) cannot be exported as quantized ONNX{reason} "
            f"(supported: conv/linear layers, activation quantizers, ReLU, max/avg pooling, "
            f"flatten, residual add)"
        )

    # -- inputs and outputs ----------------------------------------------------------------
    def _input(self, node: fx.Node) -> _Value:
        shape = shape_of(node)
        dims = ["batch", *shape[1:]]
        name = self.g.unique(node.name)
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        return _Value(name, "float", len(shape))

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

    def _to_float(self, value: _Value, hint: str) -> str:
        """Dequantize an integer value (Cast and per-channel Mul); float values pass."""
        if value.kind == "float":
            return self.g.op("Identity", [value.name], hint)
        as_float = self.g.op("Cast", [value.name], f"{hint}/float", to=TensorProto.FLOAT)
        scale = value.scale.astype(np.float32)
        scale = self.g.const(f"{hint}/scale", scale.reshape(_view(scale.size, value.rank,
                                                                  value.axis)))
        return self.g.op("Mul", [as_float, scale], hint)

    # -- activation quantizers ---------------------------------------------------------------
    def _slot(self, node: fx.Node, value: _Value, slot: ActivationSlot,
              relu: bool = False) -> _Value:
        grid = act_grid(slot)
        if grid.bits > MAX_CODE_BITS:
            raise IntegerExportError(
                f"activation quantizer '{self.slot_names[id(slot)]}' has {grid.bits} bits; "
                f"ONNX export stores codes as int8/uint8 (up to {MAX_CODE_BITS} bits)"
            )
        if not self.integer:
            return self._qdq_slot(node, value, slot, grid, relu)
        out = self._integer_slot(node, value, slot)
        return self._folded_relu(node, out) if relu else out

    def _integer_slot(self, node: fx.Node, value: _Value, slot: ActivationSlot) -> _Value:
        grid = act_grid(slot)
        hint = node.name
        rank = len(shape_of(node))
        key = self.slot_names[id(slot)]
        if value.kind == "codes" and value.slot is slot:
            return value  # already on this grid: quantizing again changes nothing
        if value.kind == "float":
            codes = self._quantize_float(value.name, grid, hint)
            requant = None
        elif value.kind == "int" and value.slot is slot:
            clipped = self.g.op("Clip", [value.name, self.g.const(f"{hint}/lo", np.int32(grid.low)),
                                         self.g.const(f"{hint}/hi", np.int32(grid.high))],
                                f"{hint}/clip")
            codes = self.g.op("Cast", [clipped], f"{hint}/codes", to=_ELEM[grid.storage])
            requant = None
        else:
            if value.kind == "codes":
                value = _Value(self.g.op("Cast", [value.name], f"{hint}/wide",
                                         to=TensorProto.INT32),
                               "int", value.rank, value.scale, value.axis, bound=value.bound)
            codes, requant = self._requantize(value, grid, rank, hint)
        self.codes[codes] = {"node": node.name, "slot": key, "storage": grid.storage,
                             **grid.describe()}
        self.tensors[codes] = {"role": "activation", "slot": key, **grid.describe()}
        if requant is not None:
            self.tensors[codes]["requant"] = requant
        return _Value(codes, "codes", rank, np.array([grid.scale]), grid=grid, slot=slot,
                      bound=float(max(-grid.low, grid.high)))

    def _quantize_float(self, x: str, grid: ActGrid, hint: str) -> str:
        """Float → codes with the fake-quant forward's own float32 operations."""
        g = self.g
        clip = np.float32(grid.clip)
        lo = g.const(f"{hint}/min", -clip if grid.signed else np.float32(0))
        clipped = g.op("Clip", [x, lo, g.const(f"{hint}/max", clip)], f"{hint}/clip")
        scaled = g.op("Mul", [clipped, g.const(f"{hint}/inv_scale", np.float32(grid.inv_scale))],
                      f"{hint}/scaled")
        if grid.signed:
            rounded = g.op("Round", [scaled], f"{hint}/round")
        else:
            shifted = g.op("Add", [scaled, g.const(f"{hint}/eps", np.float32(grid.floor_eps))],
                           f"{hint}/eps_add")
            rounded = g.op("Floor", [shifted], f"{hint}/floor")
        return g.op("Cast", [rounded], f"{hint}/codes", to=_ELEM[grid.storage])

    def _requantize(self, value: _Value, grid: ActGrid, rank: int, hint: str) -> tuple[str, dict]:
        """int32 → codes: ``clamp(⌊(v·m + r) / 2^shift⌋)`` in int64, per channel."""
        g = self.g
        rq = requantizer(value.scale * grid.inv_scale, grid)
        view = _view(rq.multiplier.size, rank, value.axis)
        top = np.int64(1) << np.int64(MAX_SHIFT)
        wide = g.op("Cast", [value.name], f"{hint}/int64", to=TensorProto.INT64)
        prod = g.op("Mul", [wide, g.const(f"{hint}/multiplier", rq.multiplier.reshape(view))],
                    f"{hint}/mul")
        biased = g.op("Add", [prod, g.const(f"{hint}/offset", (rq.offset + top).reshape(view))],
                      f"{hint}/round")
        unsigned = g.op("Cast", [biased], f"{hint}/uint64", to=TensorProto.UINT64)
        shifted = g.op("BitShift", [unsigned, g.const(f"{hint}/shift",
                                                      rq.shift.astype(np.uint64).reshape(view))],
                       f"{hint}/shift_right", direction="RIGHT")
        signed = g.op("Cast", [shifted], f"{hint}/shifted", to=TensorProto.INT64)
        floor = g.op("Sub", [signed, g.const(f"{hint}/unbias", (top >> rq.shift).reshape(view))],
                     f"{hint}/floor")
        clipped = g.op("Clip", [floor, g.const(f"{hint}/lo", np.int64(grid.low)),
                                g.const(f"{hint}/hi", np.int64(grid.high))], f"{hint}/clip")
        codes = g.op("Cast", [clipped], f"{hint}/codes", to=_ELEM[grid.storage])
        info = {"multiplier": rq.multiplier.tolist(), "shift": rq.shift.tolist(),
                "offset": rq.offset.tolist(), "max_relative_error": rq.max_relative_error}
        return codes, info

    def _qdq_slot(self, node: fx.Node, value: _Value, slot: ActivationSlot,
                  grid: ActGrid, relu: bool) -> _Value:
        g, hint = self.g, node.name
        x = self._to_float(value, f"{hint}/in") if value.kind != "float" else value.name
        clip = np.float32(grid.clip)
        # With a folded ReLU a signed grid keeps only codes ≥ 0: clipping at 0 first does it.
        lo = g.const(f"{hint}/min", -clip if grid.signed and not relu else np.float32(0))
        x = g.op("Clip", [x, lo, g.const(f"{hint}/max", clip)], f"{hint}/clip")
        scale = g.const(f"{hint}/scale", np.float32(grid.scale))
        zero = g.const(f"{hint}/zero_point", np.zeros((), dtype=grid.storage))
        if not grid.signed:  # QuantizeLinear rounds x/S; PACT floors x·s + ε
            offset = np.float32((grid.floor_eps - 0.5) * grid.scale)
            x = g.op("Add", [x, g.const(f"{hint}/floor_offset", offset)], f"{hint}/offset")
        codes = g.op("QuantizeLinear", [x, scale, zero], f"{hint}/codes")
        out = g.op("DequantizeLinear", [codes, scale, zero], f"{hint}/dq")
        key = self.slot_names[id(slot)]
        self.codes[codes] = {"node": node.name, "slot": key, "storage": grid.storage,
                             **grid.describe()}
        self.tensors[codes] = {"role": "activation", "slot": key, **grid.describe()}
        return _Value(out, "float", value.rank, grid=grid, slot=slot)

    # -- layers -----------------------------------------------------------------------------
    def _layer(self, node: fx.Node, value: _Value, layer: SearchableLayer) -> _Value:
        name = str(node.target)
        if value is None or value.slot is not layer.input_slot or value.grid is None:
            raise IntegerExportError(
                f"layer '{name}' does not read the codes of its own input quantizer "
                "(an op between them that ONNX export cannot express)"
            )
        il = integer_layer(name, layer)
        il.check_overflow()
        rank = len(shape_of(node))
        build = self._integer_layer if self.integer else self._qdq_layer
        out = build(il, value, rank)
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
        pads = _ints(il.conv_args["padding"], spatial)
        return {
            "kernel_shape": list(il.weight.shape[2:]),
            "strides": _ints(il.conv_args["stride"], spatial),
            "pads": pads + pads,
            "dilations": _ints(il.conv_args["dilation"], spatial),
            "group": int(il.conv_args["groups"]),
        }

    def _integer_layer(self, il: IntegerLayer, value: _Value, rank: int) -> _Value:
        g, hint = self.g, il.name
        axis = -1 if il.op == "linear" else 1
        if il.op == "linear":
            weight = g.const(f"{hint}.weight", np.ascontiguousarray(il.weight.T))
            acc = g.op("MatMulInteger", [value.name, weight], f"{hint}/acc")
        else:
            weight = g.const(f"{hint}.weight", il.weight)
            acc = g.op("ConvInteger", [value.name, weight], f"{hint}/acc", **self._conv_attrs(il))
        bias = None
        if il.bias is not None:
            bias = g.const(f"{hint}.bias", il.bias.reshape(_view(il.channels, rank, axis)
                                                          or (1,)))
            acc = g.op("Add", [acc, bias], f"{hint}/acc_bias")
        self._weight_meta(il, weight, bias)
        return _Value(acc, "acc", rank, il.acc_scale, axis,
                      bound=float(il.accumulator_bound().max()))

    def _qdq_layer(self, il: IntegerLayer, value: _Value, rank: int) -> _Value:
        g, hint = self.g, il.name
        w_scale = np.where(il.w_scale > 0, il.w_scale, 1.0).astype(np.float32)
        weight = g.const(f"{hint}.weight", il.weight)
        w_float = g.op("DequantizeLinear", [weight, g.const(f"{hint}.weight_scale", w_scale)],
                       f"{hint}/weight", axis=0)
        inputs = [value.name, w_float]
        bias = None
        if il.bias is not None:
            bias = g.const(f"{hint}.bias", il.bias)
            b_scale = np.where(il.acc_scale > 0, il.acc_scale, 1.0).astype(np.float32)
            inputs.append(g.op("DequantizeLinear", [bias, g.const(f"{hint}.bias_scale", b_scale)],
                               f"{hint}/bias", axis=0))
        if il.op == "linear":
            out = g.op("Gemm", inputs, f"{hint}/out", transB=1)
        else:
            out = g.op("Conv", inputs, f"{hint}/out", **self._conv_attrs(il))
        self._weight_meta(il, weight, bias)
        return _Value(out, "float", rank, il.acc_scale, -1 if il.op == "linear" else 1)

    # -- value ops, pooling, add -----------------------------------------------------------------
    def _value(self, node: fx.Node, value: _Value, kind: str) -> _Value:
        module = self.modules.get(node.target) if node.op == "call_module" else None
        if kind == "flatten":
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
        if isinstance(module, _ADAPTIVE_MAXPOOLS):
            return self._global_max(node, value, module.output_size)
        if (isinstance(module, _PASS_MODULES) or node.target in _PASS_FUNCTIONS
                or (node.op == "call_method" and node.target in _IDENTITY_METHODS)):
            return value
        raise self._unsupported(node)

    def _flatten(self, node: fx.Node, value: _Value) -> _Value:
        if value.kind == "acc" or (value.scale is not None and value.scale.size > 1):
            value = _Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        out = self.g.op("Flatten", [value.name], node.name, axis=1)
        return _Value(out, value.kind, 2, value.scale, value.axis, value.grid, value.slot,
                      value.bound)

    def _folded_relu(self, node: fx.Node, value: _Value) -> _Value:
        """The ReLU of a quantizer call with ``relu=True``; the codes checked against the
        PyTorch model at this node are then the ones after it."""
        out = self._relu(f"{node.name}/relu", value, None)
        info = self.codes.get(value.name)
        if out.name != value.name and info is not None and info["node"] == node.name:
            self.codes[out.name] = self.codes.pop(value.name)
        return out

    def _relu(self, name: str, value: _Value, top: float | None) -> _Value:
        """ReLU, or a ReLU bounded at ``top``; on codes of an unsigned grid that ends at or
        below ``top`` (checked by the caller) it is a no-op."""
        if value.kind == "acc":
            value = _Value(self._to_float(value, f"{name}/float"), "float", value.rank)
        if value.kind == "float":
            if top is not None:
                lo, hi = np.float32(0), np.float32(top)
                out = self.g.op("Clip", [value.name, self.g.const(f"{name}/lo", lo),
                                         self.g.const(f"{name}/hi", hi)], name)
            else:
                out = self.g.op("Relu", [value.name], name)
            return _Value(out, "float", value.rank, value.scale, value.axis, value.grid,
                          value.slot)
        if value.kind == "codes" and not value.grid.signed:
            return value
        out = self.g.op("Relu", [value.name], name)
        return _Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                      value.slot, value.bound)

    def _maxpool(self, node: fx.Node, value: _Value, module: nn.Module) -> _Value:
        if value.kind in ("acc", "int"):
            value = _Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        if getattr(module, "return_indices", False):
            raise self._unsupported(node, "return_indices")
        spatial = value.rank - 2
        kernel = _ints(module.kernel_size, spatial)
        stride = _ints(module.stride if module.stride is not None else module.kernel_size,
                       spatial)
        pads = _ints(module.padding, spatial)
        out = self.g.op("MaxPool", [value.name], node.name, kernel_shape=kernel, strides=stride,
                        pads=pads + pads, dilations=_ints(module.dilation, spatial),
                        ceil_mode=int(module.ceil_mode))
        return _Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                      value.slot, value.bound)

    def _global_max(self, node: fx.Node, value: _Value, size) -> _Value:
        if any(s != 1 for s in _ints(size, value.rank - 2)):
            raise self._unsupported(node, "adaptive max pooling to more than 1x1")
        if value.kind in ("acc", "int"):
            value = _Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
        out = self.g.op("ReduceMax", [value.name], node.name,
                        axes=list(range(2, value.rank)), keepdims=1)
        return _Value(out, value.kind, value.rank, value.scale, value.axis, value.grid,
                      value.slot, value.bound)

    def _avgpool(self, node: fx.Node, value: _Value) -> _Value:
        """Average pooling as an integer sum; the quantizer after it divides (requantises)."""
        module = self.modules.get(node.target) if node.op == "call_module" else None
        spatial = value.rank - 2
        in_shape = shape_of(node.all_input_nodes[0])
        if isinstance(module, _ADAPTIVE_AVGPOOLS) or node.target in (
            F.adaptive_avg_pool1d, F.adaptive_avg_pool2d
        ):
            size = module.output_size if module is not None else node.args[1]
            if any(s != 1 for s in _ints(size, spatial)):
                raise self._unsupported(node, "adaptive average pooling to more than 1x1")
            window, attrs = int(np.prod(in_shape[2:])), None
        elif isinstance(module, _AVGPOOLS):
            if module.ceil_mode or getattr(module, "divisor_override", None):
                raise self._unsupported(node, "ceil_mode / divisor_override")
            kernel = _ints(module.kernel_size, spatial)
            pads = _ints(module.padding, spatial)
            if any(pads) and not module.count_include_pad:
                raise self._unsupported(node, "padding with count_include_pad=False")
            stride = _ints(module.stride if module.stride is not None else module.kernel_size,
                           spatial)
            window = int(np.prod(kernel))
            attrs = {"kernel_shape": kernel, "strides": stride, "pads": pads + pads}
        else:
            raise self._unsupported(node)
        if not self.integer or value.kind in ("float", "acc"):
            if value.kind != "float":
                value = _Value(self._to_float(value, f"{node.name}/float"), "float", value.rank)
            if attrs is None:
                out = self.g.op("GlobalAveragePool", [value.name], node.name)
            else:
                out = self.g.op("AveragePool", [value.name], node.name, count_include_pad=1,
                                **attrs)
            return _Value(out, "float", value.rank)
        if value.scale.size > 1:
            raise self._unsupported(node, "average of per-channel accumulators")
        if value.bound * window > INT32_MAX:
            raise IntegerOverflowError(
                f"average pooling '{node.name}' sums {window} codes up to {value.bound:g}: "
                "that can overflow its int32 accumulator"
            )
        if attrs is None:
            wide = self.g.op("Cast", [value.name], f"{node.name}/wide", to=TensorProto.INT32)
            axes = self.g.const(f"{node.name}/axes", np.arange(2, value.rank, dtype=np.int64))
            out = self.g.op("ReduceSum", [wide, axes], node.name, keepdims=1)
        else:
            if value.kind != "codes":
                raise self._unsupported(node, "pooling of an unquantized integer sum")
            channels = in_shape[1]
            ones = np.ones((channels, 1, *attrs["kernel_shape"]), dtype=np.int8)
            out = self.g.op("ConvInteger", [value.name, self.g.const(f"{node.name}/ones", ones)],
                            node.name, group=channels, **attrs)
        return _Value(out, "int", value.rank, value.scale / window, bound=value.bound * window)

    def _add(self, node: fx.Node, a: _Value, b: _Value) -> _Value:
        if not self.integer or "float" in (a.kind, b.kind) or "acc" in (a.kind, b.kind):
            if self.integer:
                raise self._unsupported(node, "a residual add of unquantized values")
            out = self.g.op("Add", [a.name, b.name], node.name)
            return _Value(out, "float", a.rank)
        if a.slot is None or a.slot is not b.slot:
            raise self._unsupported(node, "the two branches are on different grids")
        wide = [self.g.op("Cast", [v.name], f"{node.name}/wide", to=TensorProto.INT32)
                if v.kind == "codes" else v.name for v in (a, b)]
        out = self.g.op("Add", wide, node.name)
        return _Value(out, "int", a.rank, a.scale, slot=a.slot, bound=a.bound + b.bound)

    # -- metadata ---------------------------------------------------------------------------------
    def _metadata(self) -> dict[str, str]:
        from mpsctl import __version__

        return {
            "mpsctl.format": FORMAT,
            "mpsctl.version": __version__,
            "mpsctl.variant": self.variant,
            "mpsctl.tensors": json.dumps(self.tensors),
            "mpsctl.layers": json.dumps(self.layers),
            "mpsctl.codes": json.dumps(self.codes),
            "mpsctl.outputs": json.dumps(self.output_lsb),
        }


# -- public API --------------------------------------------------------------------------------
def build_onnx(model: Supernet, example: Tensor, variant: str = "integer") -> onnx.ModelProto:
    """The ONNX model of a fixed-precision ``model`` (``example`` fixes the input shape)."""
    return _Exporter(model, example, variant).build()


def export_onnx(
    model: Supernet, example: Tensor, path: Path, variant: str = "integer",
    labels: Tensor | None = None,
) -> dict[str, Any]:
    """Write ``model`` to ``path`` as ONNX, run it with onnxruntime on ``example`` and compare.

    Raises :class:`OnnxMismatchError` (and leaves no file) unless the ONNX model's top-1
    agrees with the fake-quant model's on at least 99 % of ``example``.
    """
    onnx_model = build_onnx(model, example, variant)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(onnx_model, str(tmp))
    try:
        check = verify_onnx(tmp, model, example, labels)
        if check["top1_agreement"] < MIN_TOP1_AGREEMENT:
            raise OnnxMismatchError(
                f"the ONNX model agrees with the fake-quant model on only "
                f"{check['top1_agreement']:.1%} of {check['samples']} samples (need "
                f"{MIN_TOP1_AGREEMENT:.0%}; max error {check['max_error_lsb']:g} LSB): "
                "a bug in mpsctl, please report it with the checkpoint"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    return {
        "onnx": str(path),
        "variant": variant,
        "opset": OPSET,
        "bytes": path.stat().st_size,
        "layers": json.loads(meta["mpsctl.layers"]),
        **check,
    }


def verify_onnx(
    path: Path, model: Supernet, batch: Tensor, labels: Tensor | None = None
) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare with the fake-quant model.

    Returns ``top1_agreement`` (fraction of samples with the same argmax), ``max_error_lsb``
    (largest difference of any activation code, in that activation's LSBs, over every
    quantizer of the network: 0 when the integer model is exact), ``code_mismatch`` (fraction
    of activation codes that differ), ``output_max_error_lsb`` (largest output difference in
    the output's own LSBs — the last layer's accumulator unit, so float32 summation noise
    of the fake-quant model shows as a fraction of an LSB), ``output_max_abs_error`` and, with
    ``labels``, both models' accuracy on the batch.
    """
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    codes = json.loads(meta.get("mpsctl.codes", "{}"))
    lsb = json.loads(meta.get("mpsctl.outputs", "{}"))
    output_names = [o.name for o in proto.graph.output]
    for name, info in codes.items():
        proto.graph.output.append(
            helper.make_tensor_value_info(name, _ELEM[info["storage"]], None)
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = batch.detach().float().cpu()
    results = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    got = dict(zip(output_names + list(codes), results, strict=True))
    wanted = {info["node"] for info in codes.values()}
    ref_out, ref_nodes = _reference(model, x, wanted)

    ours = got[output_names[0]].astype(np.float64)
    theirs = ref_out.double().numpy()
    diff = np.abs(ours - theirs)
    unit = lsb.get(output_names[0])
    if unit is not None:
        scale = np.asarray(unit["lsb"], dtype=np.float64)
        scale = scale.reshape(_view(scale.size, diff.ndim, unit["axis"]))
        out_lsb = float((diff / scale).max()) if diff.size else 0.0
    else:
        out_lsb = float("nan")
    per_slot, mismatched, total, worst = {}, 0, 0, 0
    for name, info in codes.items():
        ref = torch.round(ref_nodes[info["node"]].double() / info["scale"]).numpy()
        err = np.abs(got[name].astype(np.int64) - ref.astype(np.int64))
        bad = int((err > 0).sum())
        per_slot[info["node"]] = {"mismatch": bad / max(err.size, 1),
                                  "max_error_lsb": int(err.max(initial=0))}
        mismatched, total = mismatched + bad, total + err.size
        worst = max(worst, int(err.max(initial=0)))
    pred_onnx, pred_ref = ours.argmax(1), theirs.argmax(1)
    report = {
        "samples": int(x.shape[0]),
        "top1_agreement": float((pred_onnx == pred_ref).mean()),
        "max_error_lsb": float(worst),
        "code_mismatch": mismatched / max(total, 1),
        "output_max_error_lsb": out_lsb,
        "output_max_abs_error": float(diff.max()) if diff.size else 0.0,
        "per_quantizer": per_slot,
    }
    if labels is not None:
        y = labels.cpu().numpy()
        report["onnx_accuracy"] = float((pred_onnx == y).mean())
        report["model_accuracy"] = float((pred_ref == y).mean())
    return report


class _Recorder(fx.Interpreter):
    """Runs the fx graph and keeps the outputs of the named nodes."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.seen: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted:
            self.seen[n.name] = out.detach()
        return out


def _reference(model: Supernet, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
    model = copy.deepcopy(model).float().eval()
    model.sample_choices()
    recorder = _Recorder(model.net, wanted)
    with torch.no_grad():
        out = recorder.run(x)
    return out, recorder.seen


def run_onnx_export(checkpoint: Path, out: Path, variant: str = "integer",
                    samples: int = 512) -> dict[str, Any]:
    """`mpsctl export --onnx`: load an export/finetune checkpoint, export it, check it on up to
    ``samples`` validation samples."""
    from mpsctl.stages import common, state

    ckpt = state.read(checkpoint, expect=("export", "finetune"), command="export --onnx")
    recipe, net = state.rebuild(ckpt)
    _, loader = common.val_loader(recipe)
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        seen += x.shape[0]
        if seen >= samples:
            break
    batch, labels = torch.cat(xs)[:samples], torch.cat(ys)[:samples]
    summary = export_onnx(net, batch, Path(out), variant, labels=labels)
    return {"source": str(checkpoint), "stage": ckpt["stage"], **summary}
