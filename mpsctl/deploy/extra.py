"""The optional ``deploy`` extra (onnx, onnxruntime, qonnx, matplotlib) and the error without
it."""

from __future__ import annotations

DEPLOY_EXTRA = "pip install 'mpsctl[deploy]'"
ONNX_MISSING = f"ONNX export needs the deploy extra: {DEPLOY_EXTRA}"
QONNX_MISSING = f"QONNX export needs the qonnx package (in the deploy extra): {DEPLOY_EXTRA}"
