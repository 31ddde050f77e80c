"""The ``qdq`` ONNX variant: the same quantizers as QuantizeLinear / DequantizeLinear pairs
around float Conv / Gemm with dequantized int8 weights and int32 biases. See
``mpsctl.deploy.export``.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from mpsctl.deploy.integer import ActGrid, IntegerLayer
from mpsctl.deploy.onnx_graph import FloatGraphExporter, Value
from mpsctl.search.layers import ActivationSlot


class QDQExporter(FloatGraphExporter):
    """Quantize-dequantize pairs on float tensors: the form other runtimes fuse."""

    variant = "qdq"

    def _quantizer(self, node: fx.Node, value: Value, slot: ActivationSlot, grid: ActGrid,
                   relu: bool) -> Value:
        return self._qdq_slot(node, value, slot, grid, relu)

    def _write_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
        return self._qdq_layer(il, value, rank)

    def _qdq_slot(self, node: fx.Node, value: Value, slot: ActivationSlot,
                  grid: ActGrid, relu: bool) -> Value:
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
        return Value(out, "float", value.rank, grid=grid, slot=slot)

    def _qdq_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
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
        return Value(out, "float", rank, il.acc_scale, -1 if il.op == "linear" else 1)
