"""Checking a QONNX file the way its readers see it: ``qonnx`` cleans it (shape inference,
constant folding, unique names), executes it on a batch, and the result is compared with the
fake-quant model it came from. Needs the ``qonnx`` package (in the deploy extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from mpsctl.deploy.extra import QONNX_MISSING
from mpsctl.deploy.onnx_qonnx import ACTIVATION_DOC
from mpsctl.deploy.onnx_verify import OnnxMismatchError, compare_with_model
from mpsctl.errors import MissingPackageError
from mpsctl.search.supernet import Supernet

try:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model
except ImportError:  # qonnx is part of the optional deploy extra
    raise MissingPackageError(QONNX_MISSING) from None


def verify_qonnx(path: Path, model: Supernet, batch: Tensor,
                 labels: Tensor | None = None) -> dict[str, Any]:
    """Clean the QONNX file with ``qonnx`` (at the batch's size), execute it with ``qonnx``'s
    executor on ``batch`` and compare with the fake-quant model: the report of
    :func:`mpsctl.deploy.onnx_verify.verify_onnx`, plus ``executor``."""
    x = batch.detach().float().cpu()
    wrapper = cleanup_model(ModelWrapper(str(path)), override_inpsize=int(x.shape[0]))
    meta = {p.key: p.value for p in wrapper.model.metadata_props}
    codes = json.loads(meta.get("mpsctl.codes", "{}"))
    lsb = json.loads(meta.get("mpsctl.outputs", "{}"))
    quant_out = {n.doc_string.removeprefix(ACTIVATION_DOC): n.output[0]
                 for n in wrapper.graph.node
                 if n.op_type == "Quant" and n.doc_string.startswith(ACTIVATION_DOC)}
    missing = set(codes) - set(quant_out)
    if missing:
        raise OnnxMismatchError(f"qonnx's cleanup lost activation quantizers {sorted(missing)}")
    context = execute_onnx(wrapper, {wrapper.graph.input[0].name: x.numpy()},
                           return_full_exec_context=True)
    file_codes = {
        node: (np.round(np.asarray(context[quant_out[node]], np.float64) / info["scale"]),
               info["scale"])
        for node, info in codes.items()
    }
    output = context[wrapper.graph.output[0].name]
    unit = next(iter(lsb.values()), None)
    return {"executor": "qonnx",
            **compare_with_model(model, x, output, unit, file_codes, labels)}
