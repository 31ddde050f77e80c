"""Deployment: integer-only (or QDQ) ONNX export of a fixed-precision model, checked with
onnxruntime. Needs the ``deploy`` extra (onnx, onnxruntime); importing this package does not.

By job: ``integer`` (integer arithmetic of a fixed model: grids, layers, requantisers),
``onnx_graph`` (the graph under construction and the walk both exporters share),
``onnx_integer`` and ``onnx_qdq`` (one exporter per variant), ``onnx_verify`` (onnxruntime
against the fake-quant model), ``export`` (pick the exporter, write, verify).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.deploy.extra import DEPLOY_EXTRA, ONNX_MISSING, MissingExtraError

__all__ = ["DEPLOY_EXTRA", "ONNX_MISSING", "MissingExtraError", "export_onnx", "verify_onnx"]


def export_onnx(
    model, example, path: Path, variant: str = "integer", labels=None
) -> dict[str, Any]:
    """Write ``model`` (a fixed-precision Supernet) as ONNX and check it on ``example``
    (top-1 agreement with the fake-quant model must reach 99 %, else nothing is written)."""
    from mpsctl.deploy.export import export_onnx as _export

    return _export(model, example, path, variant, labels)


def verify_onnx(path: Path, model, batch, labels=None) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare it with ``model``."""
    from mpsctl.deploy.onnx_verify import verify_onnx as _verify

    return _verify(path, model, batch, labels)
