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

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from mpsctl.deploy.onnx_graph import OPSET, GraphExporter, OnnxExportError, onnx
from mpsctl.deploy.onnx_integer import IntegerExporter
from mpsctl.deploy.onnx_qdq import QDQExporter
from mpsctl.deploy.onnx_verify import MIN_TOP1_AGREEMENT, OnnxMismatchError, verify_onnx
from mpsctl.errors import UserError
from mpsctl.search.supernet import Supernet

#: Each ``--onnx-variant`` and the exporter that writes it.
EXPORTERS: dict[str, type[GraphExporter]] = {"integer": IntegerExporter, "qdq": QDQExporter}
VARIANTS = tuple(EXPORTERS)

__all__ = ["EXPORTERS", "VARIANTS", "OnnxExportError", "OnnxMismatchError", "build_onnx",
           "export_onnx", "verify_onnx"]


def build_onnx(model: Supernet, example: Tensor, variant: str = "integer") -> onnx.ModelProto:
    """The ONNX model of a fixed-precision ``model`` (``example`` fixes the input shape)."""
    if variant not in EXPORTERS:
        raise UserError(
            f"unknown ONNX variant {variant!r} (choose one of {', '.join(VARIANTS)})"
        )
    return EXPORTERS[variant](model, example).build()


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
