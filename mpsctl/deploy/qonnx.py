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

Convolutions, ``Gemm``, pooling, ``Relu``, ``Add`` and ``Flatten`` are standard float ONNX
ops between the ``Quant`` nodes. The file is verified the way its readers see it: ``qonnx``
cleans it (shape inference, constant folding, unique names), executes it on validation
data, and the export fails, writing nothing, unless top-1 agreement with the fake-quant
model reaches 99 %.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, fx

from mpsctl.deploy import QONNX_MISSING, MissingExtraError
from mpsctl.deploy.integer import IntegerExportError, IntegerLayer, act_grid, integer_layer
from mpsctl.deploy.onnx_export import (
    MIN_TOP1_AGREEMENT,
    OPSET,
    OnnxMismatchError,
    _Exporter,
    _Value,
    compare_with_model,
    export_inputs,
)
from mpsctl.search.graph import shape_of
from mpsctl.search.layers import ActivationSlot, SearchableLayer
from mpsctl.search.supernet import Supernet

try:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model
except ImportError:  # qonnx is part of the optional deploy extra
    raise MissingExtraError(QONNX_MISSING) from None

#: The operator domain of QONNX's custom ops (the one ``qonnx`` executes).
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Widest quantizer the export writes (the recipe schema's limit).
MAX_BITS = 16
#: Bias codes are int32, as in the integer variant.
BIAS_BITS = 32


class QonnxExporter(_Exporter):
    """The fx walk of the other variants, with ``Quant`` nodes for quantizers and layers."""

    variants = ("qonnx",)
    opsets = (("", OPSET), (QONNX_DOMAIN, 1))

    def __init__(self, model: Supernet, example: Tensor) -> None:
        super().__init__(model, example, "qonnx")

    def _quant(self, x: str, scale: np.ndarray, bits: int, hint: str, *, signed: bool,
               narrow: bool, rounding: str, doc: str = "") -> str:
        g = self.g
        inputs = [x, g.const(f"{hint}/scale", np.asarray(scale, dtype=np.float32)),
                  g.const(f"{hint}/zeropt", np.float32(0)),
                  g.const(f"{hint}/bitwidth", np.float32(bits))]
        return g.op("Quant", inputs, f"{hint}/quant", domain=QONNX_DOMAIN, signed=int(signed),
                    narrow=int(narrow), rounding_mode=rounding, doc_string=doc)

    # -- activation quantizers ---------------------------------------------------------------
    def _slot(self, node: fx.Node, value: _Value, slot: ActivationSlot,
              relu: bool = False) -> _Value:
        grid = act_grid(slot)
        key = self.slot_names[id(slot)]
        if grid.bits == 1 and grid.signed:
            raise IntegerExportError(
                f"activation quantizer '{key}' is 1-bit signed (codes -1, 0, 1): QONNX reads "
                "a 1-bit signed Quant as bipolar ±1 (give it 2 bits or more)"
            )
        if grid.bits > MAX_BITS:
            raise IntegerExportError(
                f"activation quantizer '{key}' has {grid.bits} bits (QONNX export: up to "
                f"{MAX_BITS})"
            )
        hint, rank = node.name, len(shape_of(node))
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
                          narrow=narrow, rounding=rounding, doc=f"mpsctl activation {node.name}")
        self.codes[f"{hint}/quant"] = {"node": node.name, "slot": key, **grid.describe()}
        self.tensors[out] = {"role": "activation", "slot": key, **grid.describe()}
        return _Value(out, "float", rank, grid=grid, slot=slot)

    # -- layers -------------------------------------------------------------------------------
    def _layer(self, node: fx.Node, value: _Value, layer: SearchableLayer) -> _Value:
        name = str(node.target)
        if value is None or value.slot is not layer.input_slot or value.grid is None:
            raise IntegerExportError(
                f"layer '{name}' does not read the output of its own input quantizer "
                "(an op between them that QONNX export cannot express)"
            )
        il = integer_layer(name, layer, max_bits=MAX_BITS)
        rank = len(shape_of(node))
        weight = self._weights(il)
        inputs = [value.name, weight]
        if il.bias is not None:
            inputs.append(self._bias(il, layer))
        if il.op == "linear":
            out = self.g.op("Gemm", inputs, f"{name}/out", transB=1)
        else:
            out = self.g.op("Conv", inputs, f"{name}/out", **self._conv_attrs(il))
        self.layers.append({
            "name": name, "op": il.op,
            "w_bits": il.w_bits if len(set(il.w_bits)) > 1 else il.w_bits[0],
            "in_bits": il.in_grid.bits, "in_signed": il.in_grid.signed,
            "out_channels": il.channels,
        })
        return _Value(out, "float", rank, il.acc_scale, -1 if il.op == "linear" else 1)

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

    def _bias(self, il: IntegerLayer, layer: SearchableLayer) -> str:
        """The int32 bias as a 32-bit ``Quant`` of the values the fake-quant layer adds."""
        hint = f"{il.name}.bias"
        with torch.no_grad():
            _, bias = layer.quantized_parameters()
        scale = np.where(il.acc_scale > 0, il.acc_scale, 1.0).astype(np.float32)
        values = bias.detach().float().cpu().numpy()
        self.tensors[hint] = {"role": "bias", "layer": il.name, "bits": BIAS_BITS,
                              "scale": il.acc_scale.tolist()}
        return self._quant(self.g.const(hint, values), scale, BIAS_BITS, hint, signed=True,
                           narrow=False, rounding="ROUND")


def build_qonnx(model: Supernet, example: Tensor) -> onnx.ModelProto:
    """The QONNX model of a fixed-precision ``model`` (``example`` fixes the input shape)."""
    return QonnxExporter(model, example).build()


def export_qonnx(model: Supernet, example: Tensor, path: Path,
                 labels: Tensor | None = None) -> dict[str, Any]:
    """Write ``model`` to ``path`` as QONNX, run it with ``qonnx`` on ``example`` and compare.

    Raises :class:`OnnxMismatchError` (and leaves no file) unless the QONNX model's top-1
    agrees with the fake-quant model's on at least 99 % of ``example``.
    """
    proto = build_qonnx(model, example)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    try:
        check = verify_qonnx(tmp, model, example, labels)
        if check["top1_agreement"] < MIN_TOP1_AGREEMENT:
            raise OnnxMismatchError(
                f"the QONNX model agrees with the fake-quant model on only "
                f"{check['top1_agreement']:.1%} of {check['samples']} samples (need "
                f"{MIN_TOP1_AGREEMENT:.0%}; max error {check['max_error_lsb']:g} LSB): "
                "a bug in mpsctl, please report it with the checkpoint"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    return {"onnx": str(path), "variant": "qonnx", "opset": OPSET,
            "bytes": path.stat().st_size, "layers": json.loads(meta["mpsctl.layers"]), **check}


def verify_qonnx(path: Path, model: Supernet, batch: Tensor,
                 labels: Tensor | None = None) -> dict[str, Any]:
    """Clean the QONNX file with ``qonnx`` (shape inference and constant folding, at the
    batch's size), execute it with ``qonnx``'s executor on ``batch`` and compare with the
    fake-quant model.

    Returns what :func:`mpsctl.deploy.verify_onnx` returns: ``top1_agreement``,
    ``max_error_lsb`` (largest difference of any activation code over every quantizer, in
    that quantizer's LSBs), ``code_mismatch``, ``output_max_error_lsb``,
    ``output_max_abs_error`` and, with ``labels``, both models' accuracy.
    """
    x = batch.detach().float().cpu()
    wrapper = cleanup_model(ModelWrapper(str(path)), override_inpsize=int(x.shape[0]))
    meta = {p.key: p.value for p in wrapper.model.metadata_props}
    codes = json.loads(meta.get("mpsctl.codes", "{}"))
    lsb = json.loads(meta.get("mpsctl.outputs", "{}"))
    by_node = {info["node"]: info for info in codes.values()}
    quant_out = {n.doc_string.removeprefix("mpsctl activation "): n.output[0]
                 for n in wrapper.graph.node
                 if n.op_type == "Quant" and n.doc_string.startswith("mpsctl activation ")}
    missing = set(by_node) - set(quant_out)
    if missing:
        raise OnnxMismatchError(f"qonnx's cleanup lost activation quantizers {sorted(missing)}")
    context = execute_onnx(wrapper, {wrapper.graph.input[0].name: x.numpy()},
                           return_full_exec_context=True)
    file_codes = {
        node: (np.round(np.asarray(context[quant_out[node]], np.float64) / info["scale"]),
               info["scale"])
        for node, info in by_node.items()
    }
    output = context[wrapper.graph.output[0].name]
    unit = next(iter(lsb.values()), None)
    return {"executor": "qonnx",
            **compare_with_model(model, x, output, unit, file_codes, labels)}


def run_qonnx_export(checkpoint: Path, out: Path, samples: int = 512) -> dict[str, Any]:
    """`mpsctl export --onnx FILE --onnx-variant qonnx` on an export/finetune checkpoint."""
    ckpt, net, batch, labels = export_inputs(checkpoint, samples)
    summary = export_qonnx(net, batch, Path(out), labels=labels)
    return {"source": str(checkpoint), "stage": ckpt["stage"], **summary}
