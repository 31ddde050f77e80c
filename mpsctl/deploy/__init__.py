"""Deployment: integer-only, QDQ or QONNX export of a fixed-precision model, each checked by
running the file (onnxruntime; ``qonnx``'s executor for QONNX). Needs the ``deploy`` extra
(onnx, onnxruntime, qonnx); importing this package does not.

By job: ``integer`` (integer arithmetic of a fixed model: grids, layers, requantisers),
``onnx_graph`` (the graph under construction and the walk the exporters share),
``onnx_integer``, ``onnx_qdq`` and ``onnx_qonnx`` (one exporter per variant), ``onnx_verify``
(onnxruntime against the fake-quant model, and the comparison every check shares),
``qonnx_verify`` (``qonnx``'s cleanup and executor), ``export`` (pick the exporter, write,
verify).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpsctl.deploy.extra import DEPLOY_EXTRA, ONNX_MISSING
from mpsctl.errors import MissingPackageError

__all__ = ["DEPLOY_EXTRA", "ONNX_MISSING", "MissingPackageError", "deployment_support",
           "export_onnx", "verify_onnx"]


def export_onnx(
    model, example, path: Path, variant: str = "integer", labels=None
) -> dict[str, Any]:
    """Write ``model`` (a fixed-precision Supernet) as ONNX (``variant``: integer, qdq or
    qonnx) and check it on ``example`` (given the same input codes, every quantizer within
    1 LSB of the fake-quant model and 99 % of top-1 predictions agreeing, else nothing is
    written)."""
    from mpsctl.deploy.export import export_onnx as _export

    return _export(model, example, path, variant, labels)


def verify_onnx(path: Path, model, batch, labels=None) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare it with ``model``."""
    from mpsctl.deploy.onnx_verify import verify_onnx as _verify

    return _verify(path, model, batch, labels)


def deployment_support(model, example) -> dict[str, str | None]:
    """Per ONNX variant, None when ``model`` can be written, else why not (the first op that
    blocks it); without the deploy extra, that reason for every variant."""
    try:
        from mpsctl.deploy.export import deployment_support as _support
    except MissingPackageError as exc:
        return {variant: str(exc) for variant in ("integer", "qdq", "qonnx")}
    return _support(model, example)
