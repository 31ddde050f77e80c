"""ONNX export of a fixed-precision fake-quant model, checked by running the file.

Three variants:

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
- ``qonnx``: QONNX ``Quant`` nodes with the real bit-width of every weight group, bias and
  activation (``mpsctl.deploy.onnx_qonnx``), for arbitrary-precision toolchains.

Every export is run against the fake-quant model, with onnxruntime (:func:`verify_onnx`) or,
for QONNX, with ``qonnx``'s executor (``mpsctl.deploy.qonnx_verify``).
Per-tensor bit-widths, scales and the requantisation constants are written to the model's
``metadata_props``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpsctl.deploy.onnx_graph import OPSET, GraphExporter, OnnxExportError, onnx
from mpsctl.deploy.onnx_integer import IntegerExporter
from mpsctl.deploy.onnx_qdq import QDQExporter
from mpsctl.deploy.onnx_qonnx import QonnxExporter
from mpsctl.deploy.onnx_verify import (
    MAX_ERROR_LSB,
    MIN_TOP1_AGREEMENT,
    OnnxMismatchError,
    verify_onnx,
)
from mpsctl.errors import UserError
from mpsctl.search.supernet import Supernet

#: Each ``--onnx-variant`` and the exporter that writes it.
EXPORTERS: dict[str, type[GraphExporter]] = {
    "integer": IntegerExporter, "qdq": QDQExporter, "qonnx": QonnxExporter,
}
VARIANTS = tuple(EXPORTERS)

__all__ = ["EXPORTERS", "VARIANTS", "OnnxExportError", "OnnxMismatchError", "build_onnx",
           "check_variant", "deployment_support", "export_onnx", "verify_onnx"]


def check_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else a one-line :class:`UserError`."""
    if variant not in EXPORTERS:
        raise UserError(
            f"unknown ONNX variant {variant!r} (--onnx-variant: choose one of "
            f"{', '.join(VARIANTS)})"
        )
    return variant


def build_onnx(model: Supernet, example: Tensor, variant: str = "integer") -> onnx.ModelProto:
    """The ONNX model of a fixed-precision ``model`` (``example`` fixes the input shape)."""
    return EXPORTERS[check_variant(variant)](model, example).build()


def _verifier(variant: str) -> Callable[..., dict[str, Any]]:
    """How a file of ``variant`` is checked: QONNX by ``qonnx`` (imported only then: a
    missing package is a one-line error before anything is written), the others by
    onnxruntime."""
    if variant == "qonnx":
        from mpsctl.deploy.qonnx_verify import verify_qonnx

        return verify_qonnx
    return verify_onnx


def export_onnx(
    model: Supernet, example: Tensor, path: Path, variant: str = "integer",
    labels: Tensor | None = None,
) -> dict[str, Any]:
    """Write ``model`` to ``path`` as ONNX, run it (onnxruntime; ``qonnx`` for QONNX) on
    ``example`` and compare.

    Raises :class:`OnnxMismatchError` (and leaves no file) when the ONNX arithmetic differs
    from the fake-quant model's: some quantizer more than ``MAX_ERROR_LSB`` off given the same
    input codes, or the top-1 given the same codes agreeing on less than 99 % of ``example``.
    A free-running disagreement (round-off of the float32 fake-quant model grown along the
    network) is reported as a warning: it says how far the PyTorch evaluation can be trusted.
    """
    verify = _verifier(check_variant(variant))
    onnx_model = build_onnx(model, example, variant)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(onnx_model, str(tmp))
    try:
        check = verify(tmp, model, example, labels)
        if (check["max_error_lsb"] > MAX_ERROR_LSB
                or check["forced_top1_agreement"] < MIN_TOP1_AGREEMENT):
            raise OnnxMismatchError(
                f"the ONNX model's arithmetic differs from the fake-quant model's: given the "
                f"same input codes, a quantizer is off by {check['max_error_lsb']:g} LSB (at "
                f"most {MAX_ERROR_LSB} allowed) and the top-1 agrees on "
                f"{check['forced_top1_agreement']:.1%} of {check['samples']} samples (need "
                f"{MIN_TOP1_AGREEMENT:.0%}): a bug in mpsctl, please report it with the checkpoint"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    summary = {
        "onnx": str(path),
        "variant": variant,
        "opset": OPSET,
        "bytes": path.stat().st_size,
        "layers": json.loads(meta["mpsctl.layers"]),
        **check,
    }
    if check["top1_agreement"] < MIN_TOP1_AGREEMENT:
        summary["warning"] = (
            f"run on its own, the ONNX model agrees with the fake-quant model on "
            f"{check['top1_agreement']:.1%} of the top-1 predictions (codes drift by up to "
            f"{check['drift_max_lsb']:g} LSB): float32 round-off flips a code now and then and "
            "this network amplifies a one-code difference layer by layer, so its PyTorch "
            "accuracy is only an estimate of the deployed one; measure accuracy on the ONNX "
            "model"
        )
    return summary


def deployment_support(model: Supernet, example: Tensor) -> dict[str, str | None]:
    """Per ONNX variant: None when the model's ops can be written, else the one-line reason
    that names the first op that blocks it. Said before a search (``--dry-run``, the start
    of ``search``) and by ``report``, so that nobody learns it after hours of training.

    The graph is built (not run) from ``model`` hardened at the lowest non-zero precision of
    every choice, so that what is judged is the graph, not precisions a search may change.
    """
    fixed = model if model.is_fixed else model.harden(_lowest_assignment(model))
    out: dict[str, str | None] = {}
    for variant, exporter in EXPORTERS.items():
        try:
            exporter(fixed, example[:1]).build()
        except UserError as exc:
            out[variant] = str(exc)
        else:
            out[variant] = None
    return out


def _lowest_assignment(model: Supernet) -> dict[str, Tensor]:
    assignment = {}
    for name, choice in model.choices():
        live = [i for i, b in enumerate(choice.bits) if b != 0]
        index = torch.tensor(min(live, key=lambda i: choice.bits[i]))
        assignment[name] = index.expand(choice.channels).clone() if choice.per_channel \
            else index
    return assignment
