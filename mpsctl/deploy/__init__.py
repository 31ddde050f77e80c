"""Deployment: integer-only, QDQ or QONNX export of a fixed-precision model, each checked by
running the file (onnxruntime; ``qonnx``'s executor for QONNX). Needs the ``deploy`` extra
(onnx, onnxruntime, qonnx); importing this package does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.errors import UserError

DEPLOY_EXTRA = "pip install 'mpsctl[deploy]'"
ONNX_MISSING = f"ONNX export needs the deploy extra: {DEPLOY_EXTRA}"
QONNX_MISSING = f"QONNX export needs the qonnx package (in the deploy extra): {DEPLOY_EXTRA}"
#: ``integer`` and ``qdq`` run on onnxruntime; ``qonnx`` keeps the real bit-widths.
VARIANTS = ("integer", "qdq", "qonnx")

__all__ = ["VARIANTS", "MissingExtraError", "export_onnx", "run_onnx_export", "verify_onnx"]


class MissingExtraError(UserError):
    """An optional dependency (the ``deploy`` extra) is not installed."""


def check_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else a one-line :class:`UserError`."""
    if variant not in VARIANTS:
        raise UserError(
            f"unknown ONNX variant {variant!r} (--onnx-variant: choose one of "
            f"{', '.join(VARIANTS)})"
        )
    return variant


def export_onnx(
    model, example, path: Path, variant: str = "integer", labels=None
) -> dict[str, Any]:
    """Write ``model`` (a fixed-precision Supernet) as ONNX and check it on ``example``
    (top-1 agreement with the fake-quant model must reach 99 %, else nothing is written)."""
    if check_variant(variant) == "qonnx":
        from mpsctl.deploy.qonnx import export_qonnx

        return export_qonnx(model, example, path, labels)
    from mpsctl.deploy.onnx_export import export_onnx as _export

    return _export(model, example, path, variant, labels)


def verify_onnx(path: Path, model, batch, labels=None) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare it with ``model``."""
    from mpsctl.deploy.onnx_export import verify_onnx as _verify

    return _verify(path, model, batch, labels)


def run_onnx_export(checkpoint: Path, out: Path, variant: str = "integer") -> dict[str, Any]:
    """`mpsctl export --onnx`: an export/finetune checkpoint → a verified ONNX file."""
    if check_variant(variant) == "qonnx":
        from mpsctl.deploy.qonnx import run_qonnx_export

        return run_qonnx_export(checkpoint, out)
    from mpsctl.deploy.onnx_export import run_onnx_export as _run

    return _run(checkpoint, out, variant)
