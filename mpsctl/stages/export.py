"""`mpsctl export`: argmax (or refined) choices → fixed-precision model, 0-bit channels removed.

Before anything is written, the exported model's output must equal the supernet's eval
output on a validation batch (SPEC §6). The check runs in float64 so that the summation
order of a smaller convolution cannot flip a quantization code; the float32 difference is
reported beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mpsctl.checkpoint import state
from mpsctl.console import Reporter
from mpsctl.search.supernet import Supernet
from mpsctl.stages import common, summary
from mpsctl.training.epoch import evaluate

RELATIVE_TOLERANCE = 1e-5


class ExportMismatchError(RuntimeError):
    """The exported model does not compute what the supernet computes: a bug, not bad input."""


def output_difference(net: Supernet, fixed: Supernet, x: torch.Tensor) -> dict[str, float]:
    """Max |supernet − exported| on ``x`` in float64 and float32, and the output's scale."""
    net, fixed = net.eval(), fixed.eval()
    with torch.no_grad():
        y32 = net(x)
        d32 = (y32 - fixed(x)).abs().max().item()
        ref = net.double()(x.double())
        d64 = (ref - fixed.double()(x.double())).abs().max().item()
    net.float()
    fixed.float()
    return {"max_abs_diff": d64, "max_abs_diff_float32": d32,
            "output_scale": ref.abs().max().item()}


def _accuracy(ckpt: dict[str, Any], fixed: Supernet, loader) -> dict[str, Any]:
    """Validation metrics of the exported model. After a search they are the search's last
    argmax metrics (the outputs were just shown equal), so export does not re-run the whole
    validation set; a refined assignment is new and is evaluated."""
    searched = ckpt.get("metrics", {})
    if ckpt["stage"] == "search" and "accuracy" in searched and "val_loss" in searched:
        return {"accuracy": searched["accuracy"], "loss": searched["val_loss"],
                "from": "search (argmax model, identical outputs)"}
    return evaluate(fixed, loader, torch.device("cpu"))


def run_export(path: Path, reporter: Reporter) -> dict[str, Any]:
    ckpt = state.read(path, command="export")
    recipe, net = state.rebuild(ckpt)
    fixed = net.harden()
    bundle, loader = common.val_loader(recipe)
    check = output_difference(net, fixed, common.first_batch(loader))
    if check["max_abs_diff"] > RELATIVE_TOLERANCE * max(check["output_scale"], 1.0):
        raise ExportMismatchError(
            f"exported model differs from the supernet by {check['max_abs_diff']:.3g} "
            "(this is a bug in mpsctl; please report it with the checkpoint)"
        )
    reporter.log(f"export check: max |supernet − exported| = {check['max_abs_diff']:.3g} "
                 f"(float64), {check['max_abs_diff_float32']:.3g} (float32)")
    metrics = _accuracy(ckpt, fixed, loader)
    names = summary.cost_names(recipe.search.cost, fixed)
    cost = summary.costs(fixed, names, hard=True)
    data = state.payload("export", recipe, fixed, bundle.input_shape,
                         metrics=metrics, cost=cost, check=check,
                         history=ckpt.get("history", []),
                         search_metrics=ckpt.get("metrics", {}),
                         lineage=state.extend_lineage(ckpt, "export", metrics, cost))
    out = state.write(Path(path).parent / "export.pt", data)
    return {"checkpoint": str(out), "metrics": metrics, "cost": cost, "check": check,
            "layers": summary.layer_rows(fixed),
            "layer_costs": summary.per_layer_costs(fixed, names)}


def run_export_command(
    path: Path, reporter: Reporter, onnx: str | None = None, variant: str = "integer"
) -> dict[str, Any]:
    """`mpsctl export [--onnx FILE]`: export a search/refine checkpoint, and/or write the
    verified integer ONNX graph of an exported (or fine-tuned) model."""
    stage = state.read(path)["stage"] if onnx else None
    if onnx and stage in ("export", "finetune"):
        result = run_onnx_export(Path(path), Path(onnx), variant)
        reporter.log(_onnx_line(result))
        return {"checkpoint": str(path), **result}
    result = run_export(path, reporter)
    if onnx:
        result["onnx"] = run_onnx_export(Path(result["checkpoint"]), Path(onnx), variant)
        reporter.log(_onnx_line(result["onnx"]))
    return result


def run_onnx_export(checkpoint: Path, out: Path, variant: str = "integer",
                    samples: int = 512) -> dict[str, Any]:
    """`mpsctl export --onnx`: load an export/finetune checkpoint, export it, check it on up to
    ``samples`` validation samples."""
    from mpsctl.deploy import export_onnx

    ckpt = state.read(checkpoint, command="export --onnx")
    recipe, net = state.rebuild(ckpt)
    _, loader = common.val_loader(recipe)
    xs, ys, seen = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        seen += x.shape[0]
        if seen >= samples:
            break
    batch, labels = torch.cat(xs)[:samples], torch.cat(ys)[:samples]
    result = export_onnx(net, batch, Path(out), variant, labels=labels)
    return {"source": str(checkpoint), "stage": ckpt["stage"], **result}


def _onnx_line(result: dict[str, Any]) -> str:
    return (f"ONNX ({result['variant']}) written to {result['onnx']}: top-1 agreement "
            f"{result['top1_agreement']:.4f}, max error {result['max_error_lsb']:g} LSB")
