"""QONNX export: the fixed-precision model with its real bit-widths, checked with ``qonnx``.

The integer and QDQ variants store every code in an 8-bit container. QONNX (the format
Brevitas exports and FINN / hls4ml read) instead carries each quantizer as a ``Quant`` node
whose inputs are the scale, the zero point (always 0 here) and the bit-width, so a 2-bit
weight stays a 2-bit weight:

- weights: ``Quant(signed=1, narrow=0, ROUND)`` on the fake-quantized float weights with the
  per-output-channel scale. ``Quant`` takes one bit-width per node, so a layer whose
  channels were searched to several precisions gets one ``Quant`` per precision over the
  channels that have it, concatenated (and put back in channel order by a ``Gather`` when
  the precisions interleave). Pruned channels are not in the graph at all: export already
  removed them and their consumers' inputs.
- biases: a 32-bit ``Quant`` with scale ``S_in · S_w[c]`` (the int32 bias of the integer
  variant).
- activations: one ``Quant`` per quantizer call. Signed PACT is ``Quant(signed=1,
  narrow=1, ROUND)`` (codes ``±(2^(p-1) − 1)``); unsigned PACT floors, so it is
  ``Quant(signed=0, narrow=0, FLOOR)`` after adding the same tiny margin ``ε · S`` the
  fake-quant forward adds before flooring (a value already on the grid keeps its code).

Convolutions, ``Gemm``, pooling, ``Relu``, ``Add``, ``Flatten``, element-wise functions
(``Sigmoid``, ``HardSwish``, ...), products and concatenations are standard float ONNX ops
between the ``Quant`` nodes (shared with the QDQ variant). The file is verified the way its
readers see it (``mpsctl.deploy.qonnx_verify``): ``qonnx`` cleans it (shape inference,
constant folding, unique names) and executes it on validation data.
"""

from __future__ import annotations

import numpy as np
from torch import fx

from mpsctl.deploy.integer import ActGrid, IntegerExportError, IntegerLayer
from mpsctl.deploy.onnx_graph import OPSET, FloatGraphExporter, Value
from mpsctl.search.layers import ActivationSlot

#: The operator domain of QONNX's custom ops (the one ``qonnx`` executes).
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Widest quantizer the export writes (the recipe schema's limit).
MAX_BITS = 16
#: Bias codes are int32, as in the integer variant.
BIAS_BITS = 32
#: Marks the activation ``Quant`` nodes (their doc string) so the check finds them after
#: ``qonnx`` renamed every tensor.
ACTIVATION_DOC = "mpsctl activation "


class QonnxExporter(FloatGraphExporter):
    """``Quant`` nodes with the real bit-widths around float ops."""

    variant = "qonnx"
    opsets = (("", OPSET), (QONNX_DOMAIN, 1))
    max_code_bits = MAX_BITS
    #: FINN and hls4ml size their accumulators themselves.
    int32_accumulators = False

    def _quant(self, x: str, scale: np.ndarray, bits: int, hint: str, *, signed: bool,
               narrow: bool, rounding: str, doc: str = "") -> str:
        g = self.g
        inputs = [x, g.const(f"{hint}/scale", np.asarray(scale, dtype=np.float32)),
                  g.const(f"{hint}/zeropt", np.float32(0)),
                  g.const(f"{hint}/bitwidth", np.float32(bits))]
        return g.op("Quant", inputs, f"{hint}/quant", domain=QONNX_DOMAIN, signed=int(signed),
                    narrow=int(narrow), rounding_mode=rounding, doc_string=doc)

    # -- activation quantizers ---------------------------------------------------------------
    def _slot(self, node: fx.Node, value: Value, slot: ActivationSlot,
              relu: bool = False) -> Value:
        bits, signed = slot.bits[int(slot.choice.assignment())], slot.quantizer.signed
        if bits == 1 and signed:
            raise IntegerExportError(
                f"activation quantizer '{self.slot_names[id(slot)]}' is 1-bit signed (codes "
                "-1, 0, 1): QONNX reads a 1-bit signed Quant as bipolar ±1 (give it 2 bits "
                "or more)"
            )
        return super()._slot(node, value, slot, relu)

    def _quantizer(self, node: fx.Node, value: Value, slot: ActivationSlot, grid: ActGrid,
                   relu: bool) -> Value:
        hint = node.name
        x = value.name if value.kind == "float" else self._to_float(value, f"{hint}/in")
        if relu and grid.signed:  # a folded ReLU keeps the codes ≥ 0
            x = self.g.op("Relu", [x], f"{hint}/relu")
        elif value.slot is slot:
            return value  # already on this grid: quantizing again changes nothing
        if grid.signed:
            rounding, narrow = "ROUND", True
        else:
            margin = self.g.const(f"{hint}/floor_margin", np.float32(grid.floor_eps * grid.scale))
            x = self.g.op("Add", [x, margin], f"{hint}/margin")
            rounding, narrow = "FLOOR", False
        out = self._quant(x, np.float32(grid.scale), grid.bits, hint, signed=grid.signed,
                          narrow=narrow, rounding=rounding, doc=ACTIVATION_DOC + node.name)
        key = self.slot_names[id(slot)]
        self.codes[node.name] = {"node": node.name, "slot": key, **grid.describe()}
        self.tensors[out] = {"role": "activation", "slot": key, **grid.describe()}
        return Value(out, "float", value.rank, grid=grid, slot=slot)

    # -- layers ----------------------------------------------------------------
    def _write_layer(self, il: IntegerLayer, value: Value, rank: int) -> Value:
        inputs = [value.name, self._weights(il)]
        if il.bias is not None:
            inputs.append(self._bias(il))
        if il.op == "linear":
            out = self.g.op("Gemm", inputs, f"{il.name}/out", transB=1)
        else:
            out = self.g.op("Conv", inputs, f"{il.name}/out", **self._conv_attrs(il))
        return Value(out, "float", rank, il.acc_scale, -1 if il.op == "linear" else 1)

    def _weights(self, il: IntegerLayer) -> str:
        """One weight ``Quant`` per bit-width of the layer, in channel order."""
        bits = np.asarray(il.w_bits)
        view = (-1,) + (1,) * (il.weight.ndim - 1)
        parts, order = [], []
        for p in sorted(set(il.w_bits)):
            channels = np.flatnonzero(bits == p)
            order.append(channels)
            hint = f"{il.name}.weight" + (f"_{p}bit" if len(set(il.w_bits)) > 1 else "")
            if p == 0:  # a fully pruned per-layer choice: zeros, no Quant
                parts.append(self.g.const(hint, np.zeros(il.weight[channels].shape, np.float32)))
                continue
            if p == 1:
                raise IntegerExportError(
                    f"layer '{il.name}' has 1-bit weights (codes -1, 0): QONNX reads a 1-bit "
                    "signed Quant as bipolar ±1 (give it 2 bits or more)"
                )
            scale = il.w_scale[channels].astype(np.float32).reshape(view)
            values = (il.weight[channels].astype(np.float32) * scale).astype(np.float32)
            parts.append(self._quant(self.g.const(hint, values), scale, p, hint, signed=True,
                                     narrow=False, rounding="ROUND"))
            self.tensors[hint] = {"role": "weight", "layer": il.name, "bits": int(p),
                                  "signed": True, "channels": channels.tolist(),
                                  "scale": il.w_scale[channels].tolist()}
        if len(parts) == 1:
            return parts[0]
        weight = self.g.op("Concat", parts, f"{il.name}/weight_groups", axis=0)
        position = np.concatenate(order)
        if np.any(position != np.arange(position.size)):
            inverse = np.argsort(position).astype(np.int64)
            weight = self.g.op("Gather", [weight, self.g.const(f"{il.name}/channel_order",
                                                                inverse)],
                               f"{il.name}/weight", axis=0)
        return weight

    def _bias(self, il: IntegerLayer) -> str:
        """The int32 bias codes as a 32-bit ``Quant`` with scale ``S_in · S_w[c]``."""
        hint = f"{il.name}.bias"
        scale = np.where(il.acc_scale > 0, il.acc_scale, 1.0).astype(np.float32)
        values = (il.bias.astype(np.float64) * scale).astype(np.float32)
        self.tensors[hint] = {"role": "bias", "layer": il.name, "bits": BIAS_BITS,
                              "scale": il.acc_scale.tolist()}
        return self._quant(self.g.const(hint, values), scale, BIAS_BITS, hint, signed=True,
                           narrow=False, rounding="ROUND")
