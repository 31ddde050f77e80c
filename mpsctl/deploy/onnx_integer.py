"""The ``integer`` ONNX variant: integer-only arithmetic from the first quantizer to the last
layer (``ConvInteger`` / ``MatMulInteger`` on activation codes, integer requantisation with a
multiplier and a shift, int32 residual adds and pooling sums). See ``mpsctl.deploy.export``.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from mpsctl.deploy.integer import (
    INT32_MAX,
    MAX_SHIFT,
    ActGrid,
    IntegerLayer,
    IntegerOverflowError,
    act_grid,
    requantizer,
)
from mpsctl.deploy.onnx_graph import ELEM, GraphExporter, TensorProto, Value, channel_shape
from mpsctl.search.graph import shape_of
from mpsctl.search.layers import ActivationSlot


class IntegerExporter(GraphExporter):
    """Activations as uint8/int8 codes, layers as integer convolutions and products."""

    variant = "integer"
    integer = True

    def _quantizer(self, node: fx.Node, value: Value, slot: ActivationSlot, grid: ActGrid,
                   relu: bool) -> Value:
        out = self._integer_slot(node, value, slot)
        return self._folded_relu(node, out) if relu else out

    def _write_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
        return self._integer_layer(il, value, rank)

    def _average(self, node: fx.Node, value: Value, window: int, attrs: dict | None,
                 in_shape: tuple[int, ...]) -> Value:
        """Average pooling as an integer sum; the quantizer after it divides (requantises)."""
        if value.kind in ("float", "acc"):
            return self._float_average(node, value, attrs)
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
        return Value(out, "int", value.rank, value.scale / window, bound=value.bound * window)

    def _integer_slot(self, node: fx.Node, value: Value, slot: ActivationSlot) -> Value:
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
            codes = self.g.op("Cast", [clipped], f"{hint}/codes", to=ELEM[grid.storage])
            requant = None
        else:
            if value.kind == "codes":
                value = Value(self.g.op("Cast", [value.name], f"{hint}/wide",
                                         to=TensorProto.INT32),
                               "int", value.rank, value.scale, value.axis, bound=value.bound)
            codes, requant = self._requantize(value, grid, rank, hint)
        self.codes[codes] = {"node": node.name, "slot": key, "storage": grid.storage,
                             **grid.describe()}
        self.tensors[codes] = {"role": "activation", "slot": key, **grid.describe()}
        if requant is not None:
            self.tensors[codes]["requant"] = requant
        return Value(codes, "codes", rank, np.array([grid.scale]), grid=grid, slot=slot,
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
        return g.op("Cast", [rounded], f"{hint}/codes", to=ELEM[grid.storage])

    def _requantize(self, value: Value, grid: ActGrid, rank: int, hint: str) -> tuple[str, dict]:
        """int32 → codes: ``clamp(⌊(v·m + r) / 2^shift⌋)`` in int64, per channel."""
        g = self.g
        rq = requantizer(value.scale * grid.inv_scale, grid)
        view = channel_shape(rq.multiplier.size, rank, value.axis)
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
        codes = g.op("Cast", [clipped], f"{hint}/codes", to=ELEM[grid.storage])
        info = {"multiplier": rq.multiplier.tolist(), "shift": rq.shift.tolist(),
                "offset": rq.offset.tolist(), "max_relative_error": rq.max_relative_error}
        return codes, info

    def _integer_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
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
            bias = g.const(f"{hint}.bias", il.bias.reshape(channel_shape(il.channels, rank, axis)
                                                          or (1,)))
            acc = g.op("Add", [acc, bias], f"{hint}/acc_bias")
        self._weight_meta(il, weight, bias)
        return Value(acc, "acc", rank, il.acc_scale, axis,
                      bound=float(il.accumulator_bound().max()))

    def _folded_relu(self, node: fx.Node, value: Value) -> Value:
        """The ReLU of a quantizer call with ``relu=True``; the codes checked against the
        PyTorch model at this node are then the ones after it."""
        out = self._relu(f"{node.name}/relu", value, None)
        info = self.codes.get(value.name)
        if out.name != value.name and info is not None and info["node"] == node.name:
            self.codes[out.name] = self.codes.pop(value.name)
        return out

    def _add(self, node: fx.Node, a: Value, b: Value) -> Value:
        if "float" in (a.kind, b.kind) or "acc" in (a.kind, b.kind):
            raise self._unsupported(node, "a residual add of unquantized values")
        if a.slot is None or a.slot is not b.slot:
            raise self._unsupported(node, "the two branches are on different grids")
        wide = [self.g.op("Cast", [v.name], f"{node.name}/wide", to=TensorProto.INT32)
                if v.kind == "codes" else v.name for v in (a, b)]
        out = self.g.op("Add", wide, node.name)
        return Value(out, "int", a.rank, a.scale, slot=a.slot, bound=a.bound + b.bound)
