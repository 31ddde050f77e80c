"""Checking an exported ONNX file with onnxruntime against the fake-quant model it came from."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx

from mpsctl.deploy.extra import ONNX_MISSING, MissingExtraError
from mpsctl.deploy.onnx_graph import ELEM, channel_shape
from mpsctl.search.supernet import Supernet

try:
    import onnx
    import onnxruntime
    from onnx import helper
except ImportError:  # the deploy extra is optional
    raise MissingExtraError(ONNX_MISSING) from None

#: Export fails unless the ONNX model's top-1 agrees with the fake-quant model this often.
MIN_TOP1_AGREEMENT = 0.99


class OnnxMismatchError(RuntimeError):
    """The exported ONNX model does not reproduce the fake-quant model: a bug in mpsctl."""


def verify_onnx(
    path: Path, model: Supernet, batch: Tensor, labels: Tensor | None = None
) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare with the fake-quant model.

    Returns ``top1_agreement`` (fraction of samples with the same argmax), ``max_error_lsb``
    (largest difference of any activation code, in that activation's LSBs, over every
    quantizer of the network: 0 when the integer model is exact), ``code_mismatch`` (fraction
    of activation codes that differ), ``output_max_error_lsb`` (largest output difference in
    the output's own LSBs — the last layer's accumulator unit, so float32 summation noise
    of the fake-quant model shows as a fraction of an LSB), ``output_max_abs_error`` and, with
    ``labels``, both models' accuracy on the batch.
    """
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    codes = json.loads(meta.get("mpsctl.codes", "{}"))
    lsb = json.loads(meta.get("mpsctl.outputs", "{}"))
    output_names = [o.name for o in proto.graph.output]
    for name, info in codes.items():
        proto.graph.output.append(
            helper.make_tensor_value_info(name, ELEM[info["storage"]], None)
        )
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = batch.detach().float().cpu()
    results = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    got = dict(zip(output_names + list(codes), results, strict=True))
    wanted = {info["node"] for info in codes.values()}
    ref_out, ref_nodes = _reference(model, x, wanted)

    ours = got[output_names[0]].astype(np.float64)
    theirs = ref_out.double().numpy()
    diff = np.abs(ours - theirs)
    unit = lsb.get(output_names[0])
    if unit is not None:
        scale = np.asarray(unit["lsb"], dtype=np.float64)
        scale = scale.reshape(channel_shape(scale.size, diff.ndim, unit["axis"]))
        out_lsb = float((diff / scale).max()) if diff.size else 0.0
    else:
        out_lsb = float("nan")
    per_slot, mismatched, total, worst = {}, 0, 0, 0
    for name, info in codes.items():
        ref = torch.round(ref_nodes[info["node"]].double() / info["scale"]).numpy()
        err = np.abs(got[name].astype(np.int64) - ref.astype(np.int64))
        bad = int((err > 0).sum())
        per_slot[info["node"]] = {"mismatch": bad / max(err.size, 1),
                                  "max_error_lsb": int(err.max(initial=0))}
        mismatched, total = mismatched + bad, total + err.size
        worst = max(worst, int(err.max(initial=0)))
    pred_onnx, pred_ref = ours.argmax(1), theirs.argmax(1)
    report = {
        "samples": int(x.shape[0]),
        "top1_agreement": float((pred_onnx == pred_ref).mean()),
        "max_error_lsb": float(worst),
        "code_mismatch": mismatched / max(total, 1),
        "output_max_error_lsb": out_lsb,
        "output_max_abs_error": float(diff.max()) if diff.size else 0.0,
        "per_quantizer": per_slot,
    }
    if labels is not None:
        y = labels.cpu().numpy()
        report["onnx_accuracy"] = float((pred_onnx == y).mean())
        report["model_accuracy"] = float((pred_ref == y).mean())
    return report


class _Recorder(fx.Interpreter):
    """Runs the fx graph and keeps the outputs of the named nodes."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.seen: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted:
            self.seen[n.name] = out.detach()
        return out


def _reference(model: Supernet, x: Tensor, wanted: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
    model = copy.deepcopy(model).float().eval()
    model.sample_choices()
    recorder = _Recorder(model.net, wanted)
    with torch.no_grad():
        out = recorder.run(x)
    return out, recorder.seen
