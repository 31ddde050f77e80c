"""Checking an exported ONNX file with onnxruntime against the fake-quant model it came from,
and the comparison every runtime's check shares (:func:`compare_with_model`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx

from mpsctl.deploy.extra import ONNX_MISSING
from mpsctl.deploy.onnx_graph import ELEM, channel_shape
from mpsctl.errors import MissingPackageError
from mpsctl.quant.activation import act_scale
from mpsctl.search.supernet import Supernet

try:
    import onnx
    import onnxruntime
    from onnx import helper
except ImportError:  # the deploy extra is optional
    raise MissingPackageError(ONNX_MISSING) from None

#: Export fails unless the ONNX model's top-1 agrees with the fake-quant model this often.
MIN_TOP1_AGREEMENT = 0.99
#: ... and unless, given the same input codes, every quantizer is within this many LSBs.
MAX_ERROR_LSB = 1


class OnnxMismatchError(RuntimeError):
    """The exported ONNX model does not reproduce the fake-quant model: a bug in mpsctl."""


def verify_onnx(
    path: Path, model: Supernet, batch: Tensor, labels: Tensor | None = None
) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime on ``batch`` and compare with the fake-quant model.

    Two comparisons. *Arithmetic*: the fake-quant model is run with every quantizer's output
    replaced by the ONNX model's codes, so each quantizer is judged on the same input as the
    ONNX graph: ``max_error_lsb`` (largest code difference, in that quantizer's LSBs; 0 when
    the integer model is exact), ``code_mismatch`` (fraction of codes that differ) and
    ``forced_top1_agreement``. *Free-running*: both models run on their own, so a code that
    float32 round-off flipped early propagates: ``top1_agreement``, ``drift_max_lsb``,
    ``drift_code_mismatch``. Also ``output_max_error_lsb`` (the output difference in the
    output's own LSBs, arithmetic), ``output_max_abs_error`` (free-running) and, with
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
    file_codes = {info["node"]: (got[name], info["scale"]) for name, info in codes.items()}
    return compare_with_model(model, x, got[output_names[0]], lsb.get(output_names[0]),
                              file_codes, labels)


def compare_with_model(
    model: Supernet, x: Tensor, output: np.ndarray, unit: dict | None,
    codes: dict[str, tuple[np.ndarray, float]], labels: Tensor | None = None,
) -> dict[str, Any]:
    """What an exported file computed on ``x``, against the fake-quant model (the report
    :func:`verify_onnx` describes), whichever runtime ran the file.

    ``output``: the file's first output; ``unit``: its LSB (``{"lsb", "axis"}``, or None);
    ``codes``: fx node of each activation quantizer → (the codes the file computed there,
    that quantizer's scale).
    """
    by_node = {node: np.asarray(got) for node, (got, _) in codes.items()}
    free_out, free_nodes = _reference(model, x, set(by_node))
    forced_out, forced_nodes = _reference(model, x, set(by_node), force=by_node)
    ours = np.asarray(output, dtype=np.float64)
    forced, free = forced_out.double().numpy(), free_out.double().numpy()
    diff = np.abs(ours - forced)
    if unit is not None:
        scale = np.asarray(unit["lsb"], dtype=np.float64)
        scale = scale.reshape(channel_shape(scale.size, diff.ndim, unit["axis"]))
        out_lsb = float((diff / scale).max()) if diff.size else 0.0
    else:
        out_lsb = float("nan")
    per_slot: dict[str, dict[str, float]] = {}
    totals = {"forced": [0, 0, 0], "free": [0, 0, 0]}  # mismatched, total, worst
    for node, (got, step) in codes.items():
        entry = per_slot.setdefault(node, {})
        for label, ref_nodes in (("forced", forced_nodes), ("free", free_nodes)):
            ref = torch.round(ref_nodes[node].double() / step).numpy()
            err = np.abs(np.asarray(got).astype(np.int64) - ref.astype(np.int64))
            bad, worst = int((err > 0).sum()), int(err.max(initial=0))
            prefix = "" if label == "forced" else "drift_"
            entry[f"{prefix}mismatch"] = bad / max(err.size, 1)
            entry[f"{prefix}max_error_lsb"] = worst
            t = totals[label]
            t[0], t[1], t[2] = t[0] + bad, t[1] + err.size, max(t[2], worst)
    pred_onnx = ours.argmax(1)
    report = {
        "samples": int(x.shape[0]),
        "top1_agreement": float((pred_onnx == free.argmax(1)).mean()),
        "forced_top1_agreement": float((pred_onnx == forced.argmax(1)).mean()),
        "max_error_lsb": float(totals["forced"][2]),
        "code_mismatch": totals["forced"][0] / max(totals["forced"][1], 1),
        "drift_max_lsb": float(totals["free"][2]),
        "drift_code_mismatch": totals["free"][0] / max(totals["free"][1], 1),
        "output_max_error_lsb": out_lsb,
        "output_max_abs_error": float(np.abs(ours - free).max()) if diff.size else 0.0,
        "per_quantizer": per_slot,
    }
    if labels is not None:
        y = labels.cpu().numpy()
        report["onnx_accuracy"] = float((pred_onnx == y).mean())
        report["model_accuracy"] = float((free.argmax(1) == y).mean())
    return report


class _Recorder(fx.Interpreter):
    """Runs the fx graph and keeps the outputs of the named nodes; with ``force``, each of
    those outputs is then replaced by the given codes times the node's step, so that the
    nodes after it compute from the same codes as the ONNX model."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str],
                 force: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.force = force or {}
        self.seen: dict[str, Tensor] = {}
        self.modules = dict(gm.named_modules())

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted:
            self.seen[n.name] = out.detach()
        if n.name in self.force:
            slot = self.modules[str(n.target)]
            quantizer = slot.quantizer
            bits = slot.bits[int(slot.choice.assignment())]
            step = act_scale(quantizer._clip().detach().to(out.dtype), bits, quantizer.signed)
            codes = torch.from_numpy(self.force[n.name].astype(np.float32)).to(out.dtype)
            out = codes.reshape(out.shape) * step
        return out


def _reference(
    model: Supernet, x: Tensor, wanted: set[str], force: dict[str, np.ndarray] | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    model = copy.deepcopy(model).float().eval()
    model.sample_choices()
    recorder = _Recorder(model.net, wanted, force)
    with torch.no_grad():
        out = recorder.run(x)
    return out, recorder.seen
