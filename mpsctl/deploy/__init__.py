"""Deployment: integer-only (or QDQ) ONNX export of a fixed-precision model, checked with
onnxruntime. Needs the ``deploy`` extra (onnx, onnxruntime); importing this package does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.errors import UserError

DEPLOY_EXTRA = "pip install 'mpsctl[deploy]'"
ONNX_MISSING = f"ONNX export needs the deploy extra: {DEPLOY_EXTRA}"

__all__ = ["MissingExtraError", "export_onnx", "run_onnx_export", "verify_onnx"]


class MissingExtraError(UserError):
    """An optional dependency (the ``deploy`` extra) is not installed."""


def export_onnx(
    model, example, path: Path, variant: str = "integer", labels=None
) -> dict[str, Any]:
    """Write ``model`` (a fixed-precision Supernet) as ONNX and check it on ``example``
    (given the same input codes, every quantizer within 1 LSB of the fake-quant model and
    99 % of top-1 predictions agreeing, else nothing is written)."""
    from mpsctl.deploy.onnx_export import export_onnx as _export

    return _export(model, example, path, variant, labels)


def verify_onnx(path: Path, model, batch, labels=None) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare it with ``model``."""
    from mpsctl.deploy.onnx_export import verify_onnx as _verify

    return _verify(path, model, batch, labels)


def run_onnx_export(checkpoint: Path, out: Path, variant: str = "integer") -> dict[str, Any]:
    """`mpsctl export --onnx`: an export/finetune checkpoint → a verified ONNX file."""
    from mpsctl.deploy.onnx_export import run_onnx_export as _run

    return _run(checkpoint, out, variant)
