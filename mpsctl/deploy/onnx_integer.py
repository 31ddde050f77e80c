"""The ``integer`` ONNX variant: integer-only arithmetic from the first quantizer to the last
layer (``ConvInteger`` / ``MatMulInteger`` on activation codes, integer requantisation with a
multiplier and a shift, int32 residual adds and pooling sums). See ``mpsctl.deploy.export``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import fx, nn

from mpsctl.deploy.integer import (
    INT32_MAX,
    MAX_SHIFT,
    ActGrid,
    IntegerLayer,
    IntegerOverflowError,
    act_grid,
    requantizer,
)
from mpsctl.deploy.onnx_graph import (
    ELEM,
    PASS_FUNCTIONS,
    PASS_MODULES,
    GraphExporter,
    TensorProto,
    Value,
    channel_shape,
)
from mpsctl.quant.activation import act_scale
from mpsctl.search.graph import is_relu, shape_of
from mpsctl.search.layers import ActivationSlot


class IntegerExporter(GraphExporter):
    """Activations as uint8/int8 codes, layers as integer convolutions and products."""

    variant = "integer"
    integer = True

    def _quantizer(self, node: fx.Node, value: Value, slot: ActivationSlot, grid: ActGrid,
                   relu: bool) -> Value:
        if value.kind == "lazy":
            return self._lut_slot(node, value, slot, grid, relu)
        out = self._integer_slot(node, value, slot)
        return self._folded_relu(node, out) if relu else out

    def _write_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
        return self._integer_layer(il, value, rank)

    def _integer_average(self, node: fx.Node, value: Value, window: int, attrs: dict | None,
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

    # -- element-wise functions as tables, products, concatenation -----------------------------
    def _elementwise(self, node: fx.Node, value: Value, name: str) -> Value:
        """Deferred: the functions are composed until a consumer needs the result, then
        evaluated once for every input code (see :meth:`_table`)."""
        if value.kind == "lazy":
            return replace(value, name=node.name, fns=value.fns + (node,))
        if value.kind == "codes" and value.grid is not None and value.slot is not None:
            return Value(node.name, "lazy", value.rank, source=value, fns=(node,))
        if value.kind in ("float", "acc"):  # after the last layer: plain float ops
            x = self._float(value, f"{node.name}/float")
            return Value(self._float_elementwise(node, x.name, name), "float", value.rank)
        raise self._unsupported(node, "an element-wise function of an unquantized sum")

    def _value(self, node: fx.Node, value: Value, kind: str) -> Value:
        if value is not None and value.kind == "lazy":
            module = self.modules.get(node.target) if node.op == "call_module" else None
            if is_relu(node, self.modules):
                return replace(value, name=node.name, fns=value.fns + (node,))
            if isinstance(module, PASS_MODULES) or node.target in PASS_FUNCTIONS:
                return value
            value = self._settle(node, value)
        return super()._value(node, value, kind)

    def _average(self, node: fx.Node, value: Value, window: int, attrs: dict | None,
                 in_shape: tuple[int, ...]) -> Value:
        return self._integer_average(node, self._settle(node, value), window, attrs, in_shape)

    def _table(self, value: Value) -> torch.Tensor:
        """The real output of ``value.fns`` for every code of the source grid, computed with
        the model's own float32 operations: ``(channels, codes)``, channels 1 unless a
        function differs per channel (BatchNorm)."""
        source = value.source
        grid, slot = source.grid, source.slot
        quantizer = slot.quantizer
        step = act_scale(quantizer._clip().detach().float(), grid.bits, grid.signed)
        codes = torch.arange(grid.low, grid.high + 1, dtype=torch.float32)
        per_channel = any(isinstance(self.modules.get(n.target), nn.modules.batchnorm._BatchNorm)
                          for n in value.fns if n.op == "call_module")
        channels = shape_of(value.fns[0])[1] if per_channel else 1
        x = (codes * step).reshape((-1, 1) + (1,) * (source.rank - 2))
        x = x.expand((-1, channels) + (1,) * (source.rank - 2)).contiguous()
        with torch.no_grad():
            for n in value.fns:
                x = self._call(n, x)
        return x.reshape(codes.numel(), channels).T.contiguous()

    def _call(self, node: fx.Node, x: torch.Tensor) -> torch.Tensor:
        """Run one element-wise node of the model on ``x`` (its other arguments are
        constants: the converter's barrier_op admits no second tensor)."""
        rest = list(node.args[1:])
        if node.op == "call_module":
            return self.modules[node.target](x)
        if node.op == "call_function":
            return node.target(x, *rest, **node.kwargs)
        return getattr(x, node.target)(*rest, **node.kwargs)

    def _gather(self, value: Value, table: np.ndarray, hint: str) -> str:
        """``table[c, code − low]`` for every element of ``value.source`` (channel axis 1)."""
        source, g = value.source, self.g
        idx = g.op("Cast", [source.name], f"{hint}/index", to=TensorProto.INT64)
        if source.grid.low:
            idx = g.op("Sub", [idx, g.const(f"{hint}/low", np.int64(source.grid.low))],
                       f"{hint}/from_zero")
        channels, width = table.shape
        if channels > 1:
            offsets = (np.arange(channels, dtype=np.int64) * width).reshape(
                channel_shape(channels, source.rank, 1))
            idx = g.op("Add", [idx, g.const(f"{hint}/row", offsets)], f"{hint}/row_index")
        return g.op("Gather", [g.const(f"{hint}/table", table.reshape(-1)), idx], hint, axis=0)

    def _lut_slot(self, node: fx.Node, value: Value, slot: ActivationSlot, grid: ActGrid,
                  relu: bool) -> Value:
        """A quantizer after element-wise functions of codes: one look-up table from the
        input code to the output code, exactly what the fake-quant model computes."""
        quantizer = slot.quantizer
        with torch.no_grad():
            out = quantizer.fixed(self._table(value), int(slot.choice.assignment()))
            if relu:
                out = torch.relu(out)
            step = act_scale(quantizer._clip().detach().float(), grid.bits, grid.signed)
            codes = torch.round(out / step).numpy().astype(grid.storage)
        name = self._gather(value, codes, node.name)
        key = self.slot_names[id(slot)]
        info = {"slot": key, "storage": grid.storage, **grid.describe()}
        self.codes[name] = {"node": node.name, **info}
        self.tensors[name] = {"role": "activation", "table": value.source.name, **info}
        return Value(name, "codes", value.rank, np.array([grid.scale]), grid=grid, slot=slot,
                     bound=float(max(-grid.low, grid.high)))

    def _settle(self, node: fx.Node | None, value: Value, hint: str | None = None) -> Value:
        """A pending element-wise value read by something other than a quantizer: a table
        of int32 values in a fine fixed-point unit (2^15 steps for the largest magnitude,
        so rounding moves a value by at most 2^-16 of the table's range)."""
        if value is None or value.kind != "lazy":
            return value
        table = self._table(value).double().numpy()
        peak = float(np.abs(table).max())
        unit = peak / 2**15 if peak > 0 else 1.0
        ints = np.round(table / unit).astype(np.int32)
        name = self._gather(value, ints, f"{hint or node.name}/fixed")
        return Value(name, "int", value.rank, np.array([unit]),
                     bound=float(np.abs(ints).max(initial=0)))

    def _to_float(self, value: Value, hint: str) -> str:
        if value.kind == "lazy":
            value = self._settle(None, value, hint)
        return super()._to_float(value, hint)

    def _as_int(self, node: fx.Node, value: Value) -> Value:
        """Codes or a pending table as an int32 value with one real unit (per tensor)."""
        value = self._settle(node, value)
        if value.kind == "codes":
            wide = self.g.op("Cast", [value.name], f"{node.name}/wide", to=TensorProto.INT32)
            return Value(wide, "int", value.rank, value.scale, bound=value.bound)
        if value.kind != "int" or value.scale.size > 1:
            raise self._unsupported(node, "a product of unquantized values")
        return value

    def _mul(self, node: fx.Node, a: Value, b: Value) -> Value:
        """An int32 product; its unit is the product of the units (requantised after)."""
        a, b = self._as_int(node, a), self._as_int(node, b)
        bound = a.bound * b.bound
        if bound > INT32_MAX:
            raise IntegerOverflowError(
                f"product '{node.name}' of values up to {a.bound:g} and {b.bound:g} can "
                "overflow int32"
            )
        out = self.g.op("Mul", [a.name, b.name], node.name)
        return Value(out, "int", max(a.rank, b.rank), a.scale * b.scale, bound=bound)

    def _concat(self, node: fx.Node, parts: list[Value]) -> Value:
        """Codes on the concatenation's own (shared) grid; a part on another grid is
        requantised to it first, which is what quantizing the joined tensor does."""
        users = list(node.users)
        slot = self.modules.get(str(users[0].target)) if len(users) == 1 else None
        rank = len(shape_of(node))
        if not isinstance(slot, ActivationSlot):
            floats = [self._float(p, f"{node.name}/part{i}").name for i, p in enumerate(parts)]
            return Value(self.g.op("Concat", floats, node.name, axis=1), "float", rank)
        grid = act_grid(slot)
        names = []
        for i, part in enumerate(parts):
            part = self._settle(node, part)
            hint = f"{node.name}/part{i}"
            if part.kind == "codes" and part.slot is slot:
                names.append(part.name)
            elif part.kind == "float":
                names.append(self._quantize_float(part.name, grid, hint))
            else:
                if part.kind == "codes":
                    part = self._as_int(node, part)
                names.append(self._requantize(part, grid, part.rank, hint)[0])
        out = self.g.op("Concat", names, node.name, axis=1)
        info = {"slot": self.slot_names[id(slot)], "storage": grid.storage, **grid.describe()}
        self.codes[out] = {"node": users[0].name, **info}  # what its quantizer outputs
        self.tensors[out] = {"role": "activation", **info}
        return Value(out, "codes", rank, np.array([grid.scale]), grid=grid, slot=slot,
                     bound=float(max(-grid.low, grid.high)))
